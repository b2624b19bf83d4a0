"""R-CNN (vislab.detection.rcnn): the warp against torchvision's roi_align and exact crops, the SVM
objective against scikit-learn's LinearSVC, the training windows' labels by hand, and a detector
that learns a handful of scenes with well-formed detections."""

import pytest
import torch
import torchvision
from sklearn.svm import LinearSVC

from tests.detection.overfit import check_detections
from vislab.detection.rcnn import RCNN, linear_svm_loss, warp_regions
from vislab.errors import UserError
from vislab.models.registry import create_model, list_models

TINY = {"backbone": "resnet18", "backbone_kwargs": {"widths": [8, 16, 32, 64], "stem_width": 8}}


def test_warp_equals_torchvision_roi_align_on_the_dilated_boxes():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 40, 48)
    boxes = [torch.tensor([[3.0, 4, 20, 30], [0, 0, 48, 40]]), torch.tensor([[30.5, 10, 47, 22.5]])]
    out = warp_regions(images, boxes, 16, context_pad=2)
    # dilated by 16 / (16 - 4) about the centre, read from the image zero-padded by 10 px
    ref = []
    for i, b in enumerate(boxes):
        c, half = (b[:, :2] + b[:, 2:]) / 2, (b[:, 2:] - b[:, :2]) * (16 / 12) / 2
        rois = torch.cat((torch.full((len(b), 1), float(i)), c - half + 10, c + half + 10), 1)
        ref.append(torchvision.ops.roi_align(torch.nn.functional.pad(images, (10,) * 4), rois, 16, 1.0, -1, True))
    torch.testing.assert_close(out, torch.cat(ref), rtol=1e-5, atol=1e-5)
    assert out[1, :, 0].abs().max() == 0 and out[1, :, -1].abs().max() == 0    # whole-image box: border is padding


def test_warp_of_an_integral_box_is_the_crop():
    images = torch.randn(1, 2, 20, 20)
    out = warp_regions(images, [torch.tensor([[3.0, 5, 11, 13]])], 8)
    torch.testing.assert_close(out[0], images[0, :, 5:13, 3:11])
    with pytest.raises(ValueError, match="context_pad"):
        warp_regions(images, [torch.tensor([[3.0, 5, 11, 13]])], 8, context_pad=4)


def test_svm_objective_has_linearsvc_minimiser():
    """Two SVM columns trained by Adam on ``linear_svm_loss`` to convergence give LinearSVC's
    weights (hinge loss, no intercept) with ``C = 1 / (l2 * n)``, where ``n`` counts the examples
    of both columns (the loss averages over all that count); column 1 leaves a third out."""
    g = torch.Generator().manual_seed(0)
    n, d, l2 = 150, 4, 0.05
    x = torch.randn(n, d, generator=g)
    y = torch.where(x @ torch.randn(d, 2, generator=g) + 0.5 * torch.randn(n, 2, generator=g) > 0, 1.0, -1.0)
    y[:50, 1] = 0                                                  # left out of SVM 1
    w = torch.zeros(2, d, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 1000)
    for _ in range(1000):
        loss = linear_svm_loss(x @ w.T, y, w, l2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    used = int((y != 0).sum())                                     # 250
    for k, rows in ((0, slice(None)), (1, slice(50, None))):
        ref = LinearSVC(C=1 / (l2 * used), loss="hinge", fit_intercept=False, tol=1e-8, max_iter=100_000)
        ref_w = torch.from_numpy(ref.fit(x[rows].numpy(), y[rows, k].numpy()).coef_[0]).float()
        assert (w[k].detach() - ref_w).norm() / ref_w.norm() < 0.01
        # a C off by a factor 2 moves the weights well beyond that tolerance
        other = LinearSVC(C=2 / (l2 * used), loss="hinge", fit_intercept=False, tol=1e-8, max_iter=100_000)
        other_w = torch.from_numpy(other.fit(x[rows].numpy(), y[rows, k].numpy()).coef_[0]).float()
        assert (other_w - ref_w).norm() / ref_w.norm() > 0.05


def test_training_windows_by_hand():
    model = RCNN(3, **TINY)
    props = [torch.tensor([[10.0, 10, 30, 30], [10, 10, 30, 34], [40, 40, 60, 60], [0, 0, 64, 64]])]
    target = {"boxes": torch.tensor([[10.0, 10, 30, 30], [40, 40, 60, 62]]), "labels": torch.tensor([2, 0])}
    rois, class_iou, gt_label, gt_box = model._label_windows(props, [target])
    assert rois[:, 0].tolist() == [0] * 6 and rois[4:, 1:].tolist() == target["boxes"].tolist()
    # window 1 overlaps object 0 (class 2) with IoU 400 / 480; window 2 object 1 (class 0) with 400 / 440
    torch.testing.assert_close(class_iou[:3], torch.tensor([[0, 0, 1.0], [0, 0, 400 / 480], [400 / 440, 0, 0]]))
    torch.testing.assert_close(class_iou[3], torch.tensor([440 / 4096, 0, 400 / 4096]))    # the whole image
    assert gt_label.tolist() == [2, 2, 0, 0, 2, 0] and gt_box[2].tolist() == [40, 40, 60, 62]
    out = model.loss(torch.randn(1, 3, 64, 64), props, [target])
    assert set(out) == {"loss", "finetune", "svm", "bbox"}
    assert out["loss"].item() == pytest.approx((out["finetune"] + out["svm"] + out["bbox"]).item())


def test_rcnn_learns_a_handful_of_scenes():
    from vislab.detection.scenes import SceneConfig, make_scenes
    torch.manual_seed(0)
    scenes = make_scenes("train", 6, SceneConfig(image_size=(64, 64), objects=(1, 3), scale=(0.8, 1.6)))
    x = scenes.images.float() / 255
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in scenes.targets]
    model = create_model("rcnn", num_classes=10, max_proposals=100, rois_per_batch=64, **TINY)
    assert not any("proposer" in k for k in model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = model(x, targets)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append({k: v.item() for k, v in out.items()})
    assert len(model.proposer.cache) == 6
    assert losses[-1]["finetune"] < 0.5 * losses[0]["finetune"] and losses[-1]["loss"] < 0.7 * losses[0]["loss"]
    with torch.no_grad():
        dets = model.eval()(x[:2])
    for d in dets:
        check_detections(d, most=100, width=64, height=64, num_classes=10)


def test_bad_kwargs_name_the_fix():
    assert "rcnn" in list_models(kind="detection")
    for kwargs, match in (({"classifier": "rf"}, "classifier"), ({"proposal_mode": "slow"}, "proposal_mode"),
                          ({"context_pad": 16}, "context_pad"), ({"fg_fraction": 0}, "fg_fraction")):
        with pytest.raises(UserError, match=match):
            RCNN(3, **TINY, **kwargs)
