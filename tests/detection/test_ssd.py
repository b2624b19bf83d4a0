"""SSD (vislab.detection.ssd) against hand computations and torchvision's SSD: the loss on
hand-made default boxes (positives, the 3:1 hard negatives, CE + smooth L1 over N), the matching
rule, the default boxes / matcher / head / loss / inference equal to torchvision's components, a
detector that overfits a handful of scenes (AP50 by pycocotools), and the recipe through the CLI."""

import json
import math

import pytest
import torch
from torch import nn

from tests.detection.overfit import check_detections, overfit_ap50
from tests.metrics.coco_oracle import pycocotools_eval
from vislab.detection.coder import BoxCoder
from vislab.detection.ssd import SSD, ssd_loss, ssd_match
from vislab.errors import UserError

SMALL = {"backbone": "resnet18", "backbone_kwargs": {"widths": [16, 32, 64, 128], "stem_width": 16},
         "extra_chs": (32, 32)}
CODER = BoxCoder((10.0, 10.0, 5.0, 5.0))


def _ce(logits: list[float], target: int) -> float:
    """Softmax cross-entropy, -log(exp(x_t) / sum exp(x))."""
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def _smooth_l1(d: float, beta: float = 1.0) -> float:
    return 0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta


# one object, seven default boxes: IoU 1 and 0.667 (positive), 0.444, then four of IoU 0
GT = {"boxes": torch.tensor([[10.0, 10, 30, 30]]), "labels": torch.tensor([2])}
BOXES = torch.tensor([[10.0, 10, 30, 30], [10, 10, 30, 40], [10, 10, 30, 55], [40, 40, 60, 60],
                      [35, 0, 55, 20], [0, 40, 20, 60], [44, 44, 64, 64]])


def test_loss_on_a_hand_made_case():
    """2 positives, so 6 negatives are kept of the 5: all; then with 1 positive, the 3 of highest
    background loss only."""
    torch.manual_seed(0)
    logits, deltas = torch.randn(1, 7, 4), torch.randn(1, 7, 4)
    assert ssd_match(GT["boxes"], BOXES).tolist() == [0, 0, -1, -1, -1, -1, -1]
    out = ssd_loss(logits, deltas, BOXES, [GT], CODER)
    lg = logits[0].tolist()
    n = 2
    cls = _ce(lg[0], 3) + _ce(lg[1], 3) + sum(_ce(lg[a], 0) for a in range(2, 7))   # label 2 -> column 3
    # targets by hand, weights (10, 10, 5, 5): box 0 is the object; box 1 has centre (20, 25), size 20 x 30
    targets = {0: (0.0, 0.0, 0.0, 0.0), 1: (0.0, 10 * (20 - 25) / 30, 0.0, 5 * math.log(20 / 30))}
    box = sum(_smooth_l1(float(deltas[0, a, j]) - t[j]) for a, t in targets.items() for j in range(4))
    assert out["cls"].item() == pytest.approx(cls / n, rel=1e-5)
    assert out["box"].item() == pytest.approx(box / n, rel=1e-5)
    assert out["loss"].item() == pytest.approx((cls + box) / n, rel=1e-5)

    # drop box 1: one positive (box 0), three negatives of the five kept, those of highest loss
    keep = [0, 2, 3, 4, 5, 6]
    out = ssd_loss(logits[:, keep], deltas[:, keep], BOXES[keep], [GT], CODER)
    neg = sorted((_ce(lg[a], 0) for a in keep[1:]), reverse=True)
    assert out["cls"].item() == pytest.approx(_ce(lg[0], 3) + sum(neg[:3]), rel=1e-5)
    assert out["box"].item() == pytest.approx(sum(_smooth_l1(float(deltas[0, 0, j])) for j in range(4)), rel=1e-5)


def test_matching_keeps_each_objects_best_box_below_half_and_no_positive_gives_zero():
    boxes = BOXES[[2, 3]]                               # IoU 0.444 and 0: no default box reaches 0.5
    assert ssd_match(GT["boxes"], boxes).tolist() == [0, -1]
    two = torch.tensor([[10.0, 10, 30, 30], [40, 40, 62, 60]])     # the second's best is box 3 (IoU 0.91)
    assert ssd_match(two, BOXES).tolist() == [0, 0, -1, 1, -1, -1, 1]   # box 6: IoU 0.52 with it
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    logits, deltas = torch.randn(2, 7, 4, requires_grad=True), torch.randn(2, 7, 4, requires_grad=True)
    out = ssd_loss(logits, deltas, BOXES, [empty, empty], CODER)
    assert out["loss"].item() == out["cls"].item() == out["box"].item() == 0   # N = 0: loss 0 (the paper)
    out["loss"].backward()
    assert logits.grad.abs().sum() == 0 and deltas.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="must be"):
        ssd_match(torch.zeros(4), BOXES)


def test_matcher_equals_torchvision_ssdmatcher():
    from torchvision.models.detection._utils import SSDMatcher
    from torchvision.ops import box_iou
    torch.manual_seed(0)
    model = SSD(4, **SMALL)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        boxes = model.default_boxes(images, model.features(images))
    for _ in range(5):
        xy = torch.rand(4, 2) * 40
        gt = torch.cat([xy, xy + 8 + torch.rand(4, 2) * 30], 1)
        assert torch.equal(ssd_match(gt, boxes), SSDMatcher(0.5)(box_iou(gt, boxes)))


def _tv_ssd(model: SSD, num_classes: int):
    """torchvision's SSD with our head's weights and default boxes (its DefaultBoxGenerator with
    the same settings)."""
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator as TvBoxes
    from torchvision.models.detection.ssd import SSD as TvSSD
    from torchvision.models.detection.ssd import SSDHead as TvHead
    gen = model.box_generator
    chs = [c.in_channels for c in model.head.cls_logits]
    head = TvHead(chs, gen.num_anchors_per_location(), num_classes + 1)
    with torch.no_grad():
        for ours, tv in ((model.head.cls_logits, head.classification_head.module_list),
                         (model.head.box_deltas, head.regression_head.module_list)):
            for c, t in zip(ours, tv):
                t.load_state_dict(c.state_dict())
    tv_gen = TvBoxes([list(r) for r in gen.aspect_ratios], min_ratio=0.25, max_ratio=0.9)
    return TvSSD(nn.Module(), tv_gen, (64, 64), num_classes + 1, head=head)


def test_default_boxes_head_loss_and_inference_equal_torchvision():
    """Same weights, same maps: torchvision's default boxes, head outputs, ``compute_loss`` (same
    matched indices, one image; labels shifted by one for its background 0) and
    ``postprocess_detections`` (its labels 1..C are ours + 1) give the same numbers."""
    from torchvision.models.detection.image_list import ImageList
    torch.manual_seed(0)
    k = 4
    model = SSD(k, **SMALL, detections_per_img=50).eval()
    for m in model.head.modules():                     # weights far from the init, so that scores spread
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.05)
            nn.init.normal_(m.bias, std=0.5)
    tv = _tv_ssd(model, k).eval()
    tv.detections_per_img, tv.score_thresh, tv.nms_thresh = 50, 0.05, 0.5
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.features(images)
        cls, box = model.head(feats)
        out = tv.head(feats)
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2, 1]
    assert torch.allclose(cls, out["cls_logits"], atol=1e-5) and torch.allclose(box, out["bbox_regression"], atol=1e-5)
    boxes = model.default_boxes(images, feats)
    theirs_boxes = tv.anchor_generator(ImageList(images, [(64, 64)]), feats)
    assert torch.allclose(boxes, theirs_boxes[0], atol=1e-4)

    targets = [{"boxes": torch.tensor([[4.0, 6, 30, 28], [33, 20, 50, 61], [10, 40, 22, 52]]),
                "labels": torch.tensor([0, 3, 1])}]
    ours = ssd_loss(cls, box, boxes, targets, model.coder, **model.loss_kwargs)
    matched = [ssd_match(targets[0]["boxes"], boxes)]
    tv_targets = [{"boxes": targets[0]["boxes"], "labels": targets[0]["labels"] + 1}]
    theirs = tv.compute_loss(tv_targets, {"cls_logits": cls, "bbox_regression": box}, [boxes], matched)
    assert int((matched[0] >= 0).sum()) > 3
    assert ours["cls"].item() == pytest.approx(theirs["classification"].item(), rel=1e-5)
    assert ours["box"].item() == pytest.approx(theirs["bbox_regression"].item(), rel=1e-5)

    det = model.postprocess(cls, box, boxes, (64, 64))[0]
    ref = tv.postprocess_detections({"cls_logits": cls, "bbox_regression": box}, [boxes], [(64, 64)])[0]
    assert 10 < len(det["scores"]) <= 50
    assert torch.equal(det["labels"], ref["labels"] - 1)
    assert torch.allclose(det["scores"], ref["scores"]) and torch.allclose(det["boxes"], ref["boxes"], atol=1e-4)


def test_inference_limits_sorts_and_clips():
    torch.manual_seed(0)
    model = SSD(3, **SMALL).eval()
    for conv in (*model.head.cls_logits, *model.head.box_deltas):
        nn.init.normal_(conv.weight, std=0.3)            # scores spread, boxes grow past the image
    with torch.no_grad():
        dets = model(torch.randn(3, 3, 64, 80))
    assert len(dets) == 3
    for d in dets:
        check_detections(d, most=100, least=51)


def test_options_are_checked_and_registered():
    from vislab.models import create_model, list_models, model_kind
    assert "ssd" in list_models(kind="detection") and model_kind("ssd") == "detection"
    assert isinstance(create_model("ssd", num_classes=3, **SMALL), SSD)
    with pytest.raises(UserError, match="aspect_ratios"):
        SSD(3, **SMALL, aspect_ratios=((2.0,),) * 3)
    with pytest.raises(UserError, match="stride 64"):
        SSD(3, **SMALL, strides=(4, 8, 64))


def test_overfits_a_handful_of_scenes():
    """Eight scenes, 150 full-batch steps: AP50 on those scenes above 0.8, by pycocotools."""
    torch.manual_seed(0)
    ap50 = overfit_ap50(SSD(10, **SMALL), steps=150)
    assert ap50 > 0.8, ap50


def test_recipe_trains_and_evaluates_through_the_cli(run_cli, tmp_path):
    """``vislab train ssd`` one short epoch, then ``vislab evaluate``: eval.json holds COCO's
    numbers, equal to pycocotools' on the files it writes."""
    run = tmp_path / "ssd"
    small = ["--set", "model.kwargs.backbone_kwargs={widths: [16, 32, 64, 128], stem_width: 16}",
             "--set", "model.kwargs.extra_chs=[32, 32]", "--set", "data.kwargs.val=16",
             "--set", "data.kwargs.test=24", "--set", "train.batch_size=16", "--no-progress",
             "--set", "model.kwargs.score_thresh=0.001"]   # after one short epoch scores are low
    code, _, err = run_cli("train", "ssd", "--run-dir", run, "--set", "train.epochs=1",
                           "--set", "data.limit_train=64", *small)
    assert code == 0, err
    code, out, err = run_cli("evaluate", run)
    assert code == 0, err
    assert "24 test scenes" in out and "Average Precision" in out
    ev = json.loads((run / "eval.json").read_text())
    assert ev["task"] == "detection" and ev["model"] == "ssd" and ev["num_images"] == 24
    metrics = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train_loss", "train_cls", "train_box", "val_ap", "val_ap50"} <= set(metrics)
    gt = json.loads((run / "eval_gt.json").read_text())
    results = json.loads((run / "eval_detections.json").read_text())
    assert len(results) > 24
    ref = pycocotools_eval(gt, results).stats
    ours = [ev["coco"][k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
    assert ours == pytest.approx(list(ref[:6]), abs=1e-9)
