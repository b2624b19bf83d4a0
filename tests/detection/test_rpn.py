"""The Region Proposal Network (vislab.detection.rpn) against torchvision's RegionProposalNetwork
with the same head weights and anchors: the head's outputs, the proposals in eval and training
mode, and the losses with the same sampler draws (same global seed)."""

import pytest
import torch
from torch import nn
from torchvision.models.detection import rpn as tv_rpn
from torchvision.models.detection.anchor_utils import AnchorGenerator as TvAnchors
from torchvision.models.detection.image_list import ImageList

from vislab.detection.anchors import AnchorGenerator
from vislab.detection.rpn import RegionProposalNetwork, RPNHead

SIZES, RATIOS = ((12.0,), (24.0,), (48.0,)), ((0.5, 1.0, 2.0),) * 3
TARGETS = [{"boxes": torch.tensor([[4.0, 6, 30, 28], [33, 20, 50, 61], [40, 40, 46, 47]]),   # the last: 6x7 px,
            "labels": torch.tensor([0, 3, 1])},                                            # below 0.7 with every anchor
           {"boxes": torch.tensor([[10.0, 12, 52, 50]]), "labels": torch.tensor([2])}]


def _pair(chs: int = 8, batch_size: int = 256, pre: int = 300, post: int = 150):
    """A vislab RPN and torchvision's with the same head weights (spread out so that scores differ)."""
    torch.manual_seed(0)
    head = RPNHead(chs, 3)
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.3)
            nn.init.normal_(m.bias, std=0.3)
    tv_head = tv_rpn.RPNHead(chs, 3)
    with torch.no_grad():
        tv_head.conv[0][0].weight.copy_(head.conv.weight)
        tv_head.conv[0][0].bias.copy_(head.conv.bias)
        tv_head.cls_logits.load_state_dict(head.cls_logits.state_dict())
        tv_head.bbox_pred.load_state_dict(head.bbox_pred.state_dict())
    kw = {"batch_size_per_image": batch_size, "positive_fraction": 0.5,
          "pre_nms_top_n": {"training": pre, "testing": pre // 2}, "post_nms_top_n": {"training": post, "testing": post // 2}}
    ours = RegionProposalNetwork(AnchorGenerator(SIZES, RATIOS), head, 0.7, 0.3, nms_thresh=0.7, **kw)
    theirs = tv_rpn.RegionProposalNetwork(TvAnchors(SIZES, RATIOS), tv_head, 0.7, 0.3, nms_thresh=0.7, **kw)
    return ours, theirs


def _inputs(chs: int = 8):
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 64)
    feats = [torch.randn(2, chs, 64 // s, 64 // s) for s in (4, 8, 16)]
    return images, feats


def _tv_forward(rpn, images, feats, targets=None):
    return rpn(ImageList(images, [(64, 64)] * len(images)), {str(i): f for i, f in enumerate(feats)}, targets)


def test_head_outputs_equal_torchvision():
    ours, theirs = _pair()
    _, feats = _inputs()
    obj, deltas = ours.head(feats)
    tv_obj, tv_deltas = tv_rpn.concat_box_prediction_layers(*theirs.head(feats))
    assert obj.shape == (2, 3 * (256 + 64 + 16)) and deltas.shape == (2, obj.shape[1], 4)
    assert torch.allclose(obj.flatten(), tv_obj.flatten(), atol=1e-6)
    assert torch.allclose(deltas.reshape(-1, 4), tv_deltas, atol=1e-6)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_proposals_equal_torchvision(mode):
    ours, theirs = _pair()
    ours.train(mode == "train")
    theirs.train(mode == "train")
    images, feats = _inputs()
    targets = TARGETS if mode == "train" else None
    with torch.no_grad():
        props, _ = ours(images, feats, targets)
        tv_props, _ = _tv_forward(theirs, images, feats, targets)
    for p, t in zip(props, tv_props):
        assert 10 < len(p) <= (150 if mode == "train" else 75)
        assert p.shape == t.shape and torch.allclose(p, t, atol=1e-4)


@pytest.mark.parametrize("batch_size", [16, 10_000])
def test_losses_equal_torchvision_with_the_same_draws(batch_size):
    """Same global seed before each forward: the balanced sampler draws the same anchors (a
    batch larger than the anchors takes every one that is not ignored)."""
    ours, theirs = _pair(batch_size=batch_size)
    images, feats = _inputs()
    torch.manual_seed(5)
    _, losses = ours(images, feats, TARGETS)
    torch.manual_seed(5)
    _, tv_losses = _tv_forward(theirs, images, feats, TARGETS)
    assert losses["rpn_objectness"].item() == pytest.approx(tv_losses["loss_objectness"].item(), rel=1e-5)
    assert losses["rpn_box"].item() == pytest.approx(tv_losses["loss_rpn_box_reg"].item(), rel=1e-5)
    assert losses["rpn_box"].item() > 0
    losses["rpn_objectness"].backward()
    assert ours.head.cls_logits.weight.grad.abs().sum() > 0


def test_the_smallest_object_keeps_its_best_anchor():
    """The 6x7 px object overlaps no anchor by 0.7; the low-quality rule still makes its best
    anchor(s) positive, so that every object is learned."""
    from vislab.detection.boxes import box_iou
    ours, _ = _pair()
    images, feats = _inputs()
    anchors, per_level = ours.anchors(images, feats)
    assert per_level == [256 * 3, 64 * 3, 16 * 3]
    iou = box_iou(TARGETS[0]["boxes"], anchors)
    assert iou[2].max() < 0.7
    matched = ours.matcher(iou)
    assert (matched == 2).sum() >= 1 and (matched[iou[2] == iou[2].max()] == 2).all()
