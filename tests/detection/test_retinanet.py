"""RetinaNet (vislab.detection.retinanet) against hand computations and torchvision's RetinaNet:
the loss on hand-made anchors, the prior bias, anchors / box coding / head / loss / inference
equal to torchvision's components, and a detector that overfits a handful of scenes (AP50 by
pycocotools)."""

import math

import pytest
import torch
from torch import nn

from tests.detection.overfit import check_detections, overfit_ap50
from vislab.detection.coder import BoxCoder
from vislab.detection.matcher import Matcher
from vislab.detection.retinanet import RetinaNet, match_anchors, retinanet_loss
from vislab.errors import UserError

SMALL = {"backbone": "resnet18", "backbone_kwargs": {"widths": [16, 32, 64, 128], "stem_width": 16},
         "fpn_chs": 32, "num_convs": 2}
MATCHER = Matcher(0.5, 0.4, allow_low_quality_matches=True)
CODER = BoxCoder((1.0, 1.0, 1.0, 1.0))


def _focal(x: float, t: int, alpha: float = 0.25, gamma: float = 2.0) -> float:
    """The weighted binary focal loss of the notes, -alpha_t (1 - p_t)^gamma log p_t."""
    p = 1 / (1 + math.exp(-x))
    p_t, a_t = (p, alpha) if t == 1 else (1 - p, 1 - alpha)
    return -a_t * (1 - p_t) ** gamma * math.log(p_t)


def _bce(x: float, t: int) -> float:
    p = 1 / (1 + math.exp(-x))
    return -math.log(p if t == 1 else 1 - p)


def _smooth_l1(d: float, beta: float) -> float:
    return 0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta


# one object, five anchors: IoU 1 and 0.667 (positive), 0.444 (ignored), 0 and 0.2 (negative)
GT = {"boxes": torch.tensor([[10.0, 10, 30, 30]]), "labels": torch.tensor([1])}
ANCHORS = torch.tensor([[10.0, 10, 30, 30], [10, 10, 30, 40], [10, 10, 30, 55], [40, 40, 60, 60], [10, 10, 30, 110]])


def test_loss_on_a_hand_made_case():
    torch.manual_seed(0)
    logits, deltas = torch.randn(1, 5, 2), torch.randn(1, 5, 4) * 0.3
    assert match_anchors(ANCHORS, [GT], MATCHER).tolist() == [[0, 0, -2, -1, -1]]
    out = retinanet_loss(logits, deltas, ANCHORS, [GT], MATCHER, CODER, beta=0.1)
    num_pos = 2
    cls = sum(_focal(float(logits[0, a, k]), int(a in (0, 1) and k == 1)) for a in (0, 1, 3, 4) for k in range(2))
    # targets by hand: anchor 0 is the box itself; anchor 1 has centre (20, 25), size 20 x 30
    targets = {0: (0.0, 0.0, 0.0, 0.0), 1: (0.0, (20 - 25) / 30, 0.0, math.log(20 / 30))}
    box = sum(_smooth_l1(float(deltas[0, a, j]) - t[j], 0.1) for a, t in targets.items() for j in range(4))
    assert out["cls"].item() == pytest.approx(cls / num_pos, rel=1e-5)
    assert out["box"].item() == pytest.approx(box / num_pos, rel=1e-5)
    assert out["loss"].item() == pytest.approx((cls + box) / num_pos, rel=1e-5)
    l1 = retinanet_loss(logits, deltas, ANCHORS, [GT], MATCHER, CODER, box_loss="l1")["box"]
    assert l1.item() == pytest.approx(sum(abs(float(deltas[0, a, j]) - t[j]) for a, t in targets.items()
                                          for j in range(4)) / num_pos, rel=1e-5)


def test_low_quality_match_keeps_the_best_anchor_and_no_positive_normalises_by_one():
    anchors = ANCHORS[[2, 3]]                           # IoU 0.444 and 0: no anchor reaches 0.5
    logits, deltas = torch.zeros(1, 2, 2), torch.zeros(1, 2, 4)
    assert match_anchors(anchors, [GT], MATCHER).tolist() == [[0, -1]]
    assert match_anchors(anchors, [GT], Matcher(0.5, 0.4)).tolist() == [[-2, -1]]
    out = retinanet_loss(logits, deltas, anchors, [GT], MATCHER, CODER)
    cls = sum(_focal(0.0, int(a == 0 and k == 1)) for a in range(2) for k in range(2))
    assert out["cls"].item() == pytest.approx(cls / 1, rel=1e-6)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    out = retinanet_loss(logits, deltas, anchors, [empty], MATCHER, CODER)
    assert out["cls"].item() == pytest.approx(4 * _focal(0.0, 0), rel=1e-6)   # 4 negatives, divided by max(0, 1)
    assert out["box"].item() == 0


def test_bce_and_hard_negative_mining_by_hand():
    """One positive, five negatives of known loss: BCE counts all of them; 3:1 mining only the
    three negatives of highest loss."""
    anchors = torch.tensor([[10.0, 10, 30, 30]] + [[40.0 + 3 * i, 40, 60 + 3 * i, 60] for i in range(5)])
    gt = {"boxes": torch.tensor([[10.0, 10, 30, 30]]), "labels": torch.tensor([0])}
    logits = torch.tensor([0.3, -2.0, 1.0, -0.5, 2.0, -4.0])[None, :, None]
    deltas = torch.zeros(1, 6, 4)
    neg = sorted((_bce(float(x), 0) for x in logits[0, 1:, 0]), reverse=True)
    bce = retinanet_loss(logits, deltas, anchors, [gt], MATCHER, CODER, cls_loss="bce")["cls"]
    assert bce.item() == pytest.approx(_bce(0.3, 1) + sum(neg), rel=1e-6)
    hard = retinanet_loss(logits, deltas, anchors, [gt], MATCHER, CODER, cls_loss="bce_hard_negatives")["cls"]
    assert hard.item() == pytest.approx(_bce(0.3, 1) + sum(neg[:3]), rel=1e-6)


def test_prior_bias_gives_initial_probability_one_percent():
    torch.manual_seed(0)
    model = RetinaNet(5, **SMALL).eval()
    bias = model.head.cls_logits.bias
    assert torch.allclose(torch.sigmoid(bias.double()), torch.full_like(bias.double(), 0.01))
    assert bias[0].item() == pytest.approx(-math.log(99), rel=1e-6)
    with torch.no_grad():
        cls, _ = model.head(model.features(torch.randn(2, 3, 64, 64)))
    assert torch.sigmoid(cls).mean().item() == pytest.approx(0.01, abs=5e-4)


def _tv_anchor_generator(model: RetinaNet):
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TvAnchors
    return TvAnchors(tuple(model.anchor_generator.sizes), tuple(model.anchor_generator.aspect_ratios))


@pytest.mark.parametrize("size", [(64, 64), (96, 80)])
def test_anchors_and_box_coding_equal_torchvision(size):
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.image_list import ImageList
    torch.manual_seed(0)
    model = RetinaNet(3, **SMALL).eval()
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        feats = model.features(images)
    assert [f.shape[-1] for f in feats] == [size[1] // s for s in (4, 8, 16)]
    ours, per_level = model.anchors(images, feats)
    theirs = _tv_anchor_generator(model)(ImageList(images, [size] * 2), feats)
    assert len(theirs) == 2 and all(torch.equal(ours, t) for t in theirs)
    assert per_level == [f.shape[-2] * f.shape[-1] * 9 for f in feats]

    gt = torch.tensor([[5.0, 7, 30, 40], [20, 2, 60, 25]])[torch.randint(2, (len(ours),))]
    tv = det_utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    codes = model.coder.encode(gt, ours)
    assert torch.allclose(codes, tv.encode_single(gt, ours), atol=1e-6)
    assert torch.allclose(model.coder.decode(codes, ours), gt, atol=1e-4)           # decode(encode(gt)) == gt
    deltas = torch.randn_like(codes)
    assert torch.allclose(model.coder.decode(deltas, ours), tv.decode_single(deltas, ours), atol=1e-4)


def _tv_retinanet(model: RetinaNet, num_classes: int):
    """torchvision's RetinaNet with our head's weights (4 convs per subnet, no norm) and anchors."""
    from torchvision.models.detection.retinanet import RetinaNet as TvRetinaNet
    from torchvision.models.detection.retinanet import RetinaNetHead as TvHead
    chs = model.head.cls_logits.in_channels
    head = TvHead(chs, model.head.num_anchors, num_classes)
    with torch.no_grad():
        for ours, tv in ((model.head.cls_subnet, head.classification_head.conv),
                         (model.head.box_subnet, head.regression_head.conv)):
            convs = [m for m in ours if isinstance(m, nn.Conv2d)]
            assert len(convs) == len(tv) == 4
            for c, t in zip(convs, tv):
                t[0].weight.copy_(c.weight)
                t[0].bias.copy_(c.bias)
        head.classification_head.cls_logits.load_state_dict(model.head.cls_logits.state_dict())
        head.regression_head.bbox_reg.load_state_dict(model.head.box_deltas.state_dict())
    backbone = nn.Module()
    backbone.out_channels = chs
    return TvRetinaNet(backbone, num_classes, anchor_generator=_tv_anchor_generator(model), head=head)


def test_head_loss_and_inference_equal_torchvision():
    """Same weights, same pyramid: torchvision's head gives the same outputs, its
    ``compute_loss`` (L1 box loss, one image) the same loss, its ``postprocess_detections`` the
    same detections."""
    torch.manual_seed(0)
    k = 4
    model = RetinaNet(k, **{**SMALL, "num_convs": 4}, box_loss="l1", detections_per_img=50).eval()
    for m in model.head.modules():                     # weights far from the init, so that scores spread
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.08)
            nn.init.normal_(m.bias, std=0.5)
    tv = _tv_retinanet(model, k).eval()
    tv.detections_per_img = 50
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.features(images)
        cls, box = model.head(feats)
        out = tv.head(feats)
    assert torch.allclose(cls, out["cls_logits"], atol=1e-5) and torch.allclose(box, out["bbox_regression"], atol=1e-5)

    anchors, per_level = model.anchors(images, feats)
    targets = [{"boxes": torch.tensor([[4.0, 6, 30, 28], [33, 20, 50, 61], [10, 40, 22, 52]]),
                "labels": torch.tensor([0, 3, 1])}]
    ours = retinanet_loss(cls, box, anchors, targets, model.matcher, model.coder, **model.loss_kwargs)
    theirs = tv.compute_loss(targets, {"cls_logits": cls, "bbox_regression": box}, [anchors])
    assert ours["cls"].item() == pytest.approx(theirs["classification"].item(), rel=1e-5)
    assert ours["box"].item() == pytest.approx(theirs["bbox_regression"].item(), rel=1e-5)

    det = model.postprocess(cls, box, anchors, per_level, (64, 64))[0]
    split = {"cls_logits": list(cls.split(per_level, 1)), "bbox_regression": list(box.split(per_level, 1))}
    ref = tv.postprocess_detections(split, [list(anchors.split(per_level))], [(64, 64)])[0]
    assert 0 < len(det["scores"]) <= 50
    assert torch.equal(det["labels"], ref["labels"])
    assert torch.allclose(det["scores"], ref["scores"]) and torch.allclose(det["boxes"], ref["boxes"], atol=1e-4)


def test_inference_limits_sorts_and_clips():
    torch.manual_seed(0)
    model = RetinaNet(3, **SMALL, detections_per_img=7).eval()
    nn.init.normal_(model.head.cls_logits.weight, std=0.5)
    nn.init.zeros_(model.head.cls_logits.bias)                 # every class near 0.5: many candidates
    nn.init.normal_(model.head.box_deltas.weight, std=0.5)
    with torch.no_grad():
        dets = model(torch.randn(3, 3, 64, 80))
    assert len(dets) == 3
    for d in dets:
        check_detections(d, most=7)


def test_options_are_checked_and_registered():
    from vislab.models import create_model, list_models, model_kind
    assert "retinanet" in list_models(kind="detection") and model_kind("retinanet") == "detection"
    assert isinstance(create_model("retinanet", num_classes=3, **SMALL), RetinaNet)
    with pytest.raises(UserError, match="cls_loss"):
        RetinaNet(3, **SMALL, cls_loss="softmax")
    with pytest.raises(UserError, match="stride 64"):
        RetinaNet(3, **SMALL, strides=(4, 8, 64), anchor_sizes=(8, 16, 32))
    # beyond the backbone's deepest stage: extra levels, each twice the previous
    model = RetinaNet(3, **SMALL, strides=(8, 16, 32, 64, 128), anchor_sizes=(8, 16, 32, 64, 128))
    with torch.no_grad():
        feats = model.eval().features(torch.randn(1, 3, 128, 128))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2, 1]


def test_overfits_a_handful_of_scenes():
    """Eight scenes, 200 full-batch steps: AP50 on those scenes above 0.8, by pycocotools."""
    torch.manual_seed(0)
    ap50 = overfit_ap50(RetinaNet(10, **SMALL), steps=200)
    assert ap50 > 0.8, ap50


@pytest.mark.parametrize("extra", [0, 2])
def test_fpn_equals_torchvisions_with_copied_weights(extra):
    """vislab's FPN neck (lateral 1x1, top-down nearest + add, 3x3 smoothing; extra levels as
    RetinaNet's P6/P7) against ``torchvision.ops.FeaturePyramidNetwork`` with the same weights
    (and ``LastLevelP6P7`` on P5 for the extra levels)."""
    from collections import OrderedDict

    from torchvision.ops import FeaturePyramidNetwork
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    from vislab.detection.retinanet import FPN
    torch.manual_seed(0)
    in_chs, out = [8, 16, 32], 12
    ours = FPN(in_chs, out, extra)
    tv = FeaturePyramidNetwork(in_chs, out, LastLevelP6P7(out, out) if extra else None)
    with torch.no_grad():
        for i in range(len(in_chs)):
            for theirs, mine in ((tv.inner_blocks[i][0], ours.lateral[i]), (tv.layer_blocks[i][0], ours.smooth[i])):
                theirs.weight.copy_(mine.weight)
                theirs.bias.copy_(mine.bias)
        if extra:
            for theirs, mine in ((tv.extra_blocks.p6, ours.extra[0]), (tv.extra_blocks.p7, ours.extra[1])):
                theirs.weight.copy_(mine.weight)
                theirs.bias.copy_(mine.bias)
    feats = [torch.randn(2, c, s, s + 1) for c, s in zip(in_chs, (16, 8, 4))]
    want = list(tv(OrderedDict((str(i), f) for i, f in enumerate(feats))).values())
    got = ours(feats)
    assert len(got) == len(want) == len(in_chs) + extra
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
