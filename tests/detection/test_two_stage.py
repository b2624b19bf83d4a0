"""Two-stage detectors (vislab.detection.two_stage): the RoI heads against torchvision's RoIHeads
with the same weights (losses with the same sampler draws, eval detections), Fast R-CNN's
background rule by hand, the FPN model's RoI levels against assign_fpn_levels and torchvision's
MultiScaleRoIAlign, and fast_rcnn / faster_rcnn / faster_rcnn_fpn overfitting a few scenes."""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection import faster_rcnn as tv_frcnn
from torchvision.models.detection.roi_heads import RoIHeads as TvRoIHeads

from tests.detection.overfit import check_detections
from vislab.detection.roi import assign_fpn_levels
from vislab.detection.two_stage import (
    FasterRCNNFPN,
    FastRCNNPredictor,
    RoIHeads,
    RoIPooler,
    TwoMLPHead,
    fast_rcnn,
    faster_rcnn,
    faster_rcnn_fpn,
)
from vislab.errors import UserError

TINY = {"backbone": "resnet18", "backbone_kwargs": {"widths": [8, 16, 32, 64], "stem_width": 8}}
K, CHS, REP = 4, 8, 32
TARGETS = [{"boxes": torch.tensor([[4.0, 6, 30, 28], [33, 20, 50, 61]]), "labels": torch.tensor([0, 3])},
           {"boxes": torch.tensor([[10.0, 12, 52, 50]]), "labels": torch.tensor([2])}]


class _TvSingleLevelPool(nn.Module):
    """torchvision's roi_pool on the one stride-8 map, as torchvision's RoIHeads calls a pooler."""

    def forward(self, features, proposals, image_shapes):
        return torchvision.ops.roi_pool(features["0"], proposals, 7, 1 / 8)


def _heads(op: str):
    """Our RoIHeads and torchvision's with the same box head and predictor weights."""
    torch.manual_seed(0)
    pooler = RoIPooler(7, op, 2, 32, 3)
    ours = RoIHeads(pooler, TwoMLPHead(CHS * 49, REP), FastRCNNPredictor(REP, K), batch_size_per_image=32,
                    detections_per_img=30, score_thresh=0.02)
    for m in ours.modules():                               # far from the init, so that scores spread
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.15)
            nn.init.normal_(m.bias, std=0.5)
    tv_pool = (torchvision.ops.MultiScaleRoIAlign(["0", "1", "2"], 7, 2, canonical_scale=32, canonical_level=3)
               if op == "align" else _TvSingleLevelPool())
    head, predictor = tv_frcnn.TwoMLPHead(CHS * 49, REP), tv_frcnn.FastRCNNPredictor(REP, K + 1)
    head.load_state_dict(ours.box_head.state_dict())
    predictor.load_state_dict(ours.box_predictor.state_dict())
    theirs = TvRoIHeads(tv_pool, head, predictor, 0.5, 0.5, 32, 0.25, None, 0.02, 0.5, 30)
    return ours, theirs


def _inputs(op: str):
    torch.manual_seed(1)
    feats = [torch.randn(2, CHS, 64 // s, 64 // s) for s in ((4, 8, 16) if op == "align" else (8,))]
    xy = torch.rand(2, 60, 2) * 48
    proposals = [torch.cat((p, p + 4 + torch.rand(60, 2) * 30), 1).clamp(max=64) for p in xy]
    return feats, proposals


@pytest.mark.parametrize("op", ["align", "pool"])
def test_roi_heads_equal_torchvision(op):
    ours, theirs = _heads(op)
    feats, proposals = _inputs(op)
    tv_feats = {str(i): f for i, f in enumerate(feats)}
    tv_targets = [{**t, "labels": t["labels"] + 1} for t in TARGETS]     # torchvision's background is 0
    torch.manual_seed(3)
    rois, matched, labels, _ = ours.select_training_samples(proposals, TARGETS)
    torch.manual_seed(3)
    tv_rois, tv_matched, tv_labels, _ = theirs.select_training_samples(list(proposals), tv_targets)
    for a, b, c, d in zip(rois, tv_rois, labels, tv_labels):
        assert torch.equal(a, b) and torch.equal(c, d) and (c > 0).any() and (c == 0).any()
    assert all(torch.equal(a, b) for a, b in zip(matched, tv_matched))

    torch.manual_seed(3)
    _, losses = ours.train()(feats, proposals, (64, 64), TARGETS)
    torch.manual_seed(3)
    _, tv_losses = theirs.train()(tv_feats, list(proposals), [(64, 64)] * 2, tv_targets)
    assert losses["cls"].item() == pytest.approx(tv_losses["loss_classifier"].item(), rel=1e-5)
    assert losses["box"].item() == pytest.approx(tv_losses["loss_box_reg"].item(), rel=1e-5)
    assert losses["box"].item() > 0

    with torch.no_grad():
        dets, _ = ours.eval()(feats, proposals, (64, 64))
        tv_dets, _ = theirs.eval()(tv_feats, list(proposals), [(64, 64)] * 2)
    for d, t in zip(dets, tv_dets):
        assert 5 < len(d["boxes"]) <= 30
        assert torch.equal(d["labels"], t["labels"] - 1)
        assert torch.allclose(d["scores"], t["scores"], atol=1e-6) and torch.allclose(d["boxes"], t["boxes"], atol=1e-4)
        check_detections(d, most=30, width=64, num_classes=K, score_thresh=0.02)


def test_fast_rcnn_background_lies_in_0_1_to_0_5():
    """IoUs 0.05 (ignored), 0.3 (background) and 0.6 (foreground, class 2 -> label 3) by hand."""
    heads = RoIHeads(RoIPooler(), nn.Identity(), nn.Identity(), bg_iou_low=0.1)
    gt = {"boxes": torch.tensor([[0.0, 0, 20, 20]]), "labels": torch.tensor([2])}
    props = torch.tensor([[0.0, 0, 20, 1], [0, 0, 20, 6], [0, 0, 20, 12]])      # IoU 0.05, 0.3, 0.6
    _, labels = heads.assign_targets([props], [gt])
    assert labels[0].tolist() == [-1, 0, 3]
    heads.bg_iou_low = 0.0                                                       # Faster R-CNN's rule
    assert heads.assign_targets([props], [gt])[1][0].tolist() == [0, 0, 3]


def test_fpn_rois_pool_from_the_level_assign_fpn_levels_picks():
    """RoIs of 12-70 px: the model's pooler equals RoIAlign from the level of
    ``assign_fpn_levels(k0=3, canonical 32)``, and torchvision's MultiScaleRoIAlign with that rule."""
    model = FasterRCNNFPN(3, **TINY, fpn_chs=CHS)
    pooler = model.roi_heads.box_roi_pool
    sizes = torch.tensor([12.0, 15.9, 16.0, 24, 31.9, 32, 42, 63.9, 64, 70])
    boxes = torch.stack((torch.zeros(10), torch.zeros(10), sizes, sizes), 1)
    levels = assign_fpn_levels(boxes, pooler.canonical_level, pooler.canonical_size, 2, 4)
    assert levels.tolist() == [2, 2, 2, 2, 2, 3, 3, 3, 4, 4]
    torch.manual_seed(0)
    feats = [torch.randn(1, CHS, 64 // s, 64 // s) for s in (4, 8, 16)]
    pooled = pooler(feats, [boxes], (64, 64))
    by_hand = torch.cat([torchvision.ops.roi_align(feats[lv - 2], [b[None]], 7, 1 / 2 ** lv, 2)
                         for b, lv in zip(boxes, levels.tolist())])
    assert torch.allclose(pooled, by_hand, atol=1e-5)
    tv = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2"], 7, 2, canonical_scale=32, canonical_level=3)
    assert torch.allclose(pooled, tv({str(i): f for i, f in enumerate(feats)}, [boxes], [(64, 64)]), atol=1e-5)


def test_options_are_checked_and_registered():
    from vislab.models import create_model, list_models, model_kind
    for name in ("fast_rcnn", "faster_rcnn", "faster_rcnn_fpn"):
        assert name in list_models(kind="detection") and model_kind(name) == "detection"
    assert isinstance(create_model("faster_rcnn_fpn", num_classes=3, **TINY), FasterRCNNFPN)
    with pytest.raises(UserError, match="stride 64"):
        faster_rcnn(3, **TINY, stride=64)
    with pytest.raises(UserError, match="one anchor size per level"):
        faster_rcnn_fpn(3, **TINY, anchor_sizes=(12, 24))
    with pytest.raises(UserError, match="double"):
        faster_rcnn_fpn(3, **TINY, strides=(4, 16), anchor_sizes=(12, 48))
    with pytest.raises(UserError, match="rpn_bg_iou"):
        faster_rcnn(3, **TINY, rpn_bg_iou=0.8)
    with pytest.raises(UserError, match="box_positive_fraction"):
        fast_rcnn(3, **TINY, box_positive_fraction=0)
    for bad in (5, (150,), (150, 150, 100)):
        with pytest.raises(UserError, match=r"\[training, testing\] pairs"):
            faster_rcnn_fpn(3, **TINY, rpn_pre_nms_top_n=bad)


def _scenes(n: int):
    from vislab.detection.scenes import SceneConfig, make_scenes
    scenes = make_scenes("train", n, SceneConfig(image_size=(64, 64), objects=(1, 3), scale=(0.8, 1.6)))
    x = scenes.images.float() / 255
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    return scenes, x, [scenes[i][1] for i in range(n)]    # the targets carry masks, which the models ignore


@pytest.mark.parametrize("factory, steps", [(fast_rcnn, 30), (faster_rcnn, 40), (faster_rcnn_fpn, 30)])
def test_overfits_a_handful_of_scenes(factory, steps):
    """Four scenes, full-batch AdamW: the loss halves (the box terms grow at first, as the RPN
    finds more foreground), and AP50 on those scenes by
    pycocotools is high."""
    from tests.metrics.coco_oracle import pycocotools_eval
    from vislab.detection.detect import coco_files
    torch.manual_seed(0)
    model = factory(10, **TINY, representation_size=64, **({"fpn_chs": 16} if factory is faster_rcnn_fpn else {}))
    scenes, x, targets = _scenes(4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        out = model.train()(x, targets)
        assert torch.isclose(out["loss"], sum(v for k, v in out.items() if k != "loss"))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert set(out) == ({"loss", "cls", "box"} if factory is fast_rcnn else
                        {"loss", "rpn_objectness", "rpn_box", "cls", "box"})
    assert sum(losses[-5:]) < sum(losses[:5]) / 2, losses
    with torch.no_grad():
        dets = model.eval()(x)
    for d in dets:
        check_detections(d, most=100, width=64, num_classes=10)
    ap50 = pycocotools_eval(*coco_files(scenes.targets, dets, scenes.categories, (64, 64))).stats[1]
    assert ap50 > 0.6, ap50
