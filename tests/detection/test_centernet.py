"""CenterNet (vislab.detection.centernet) against hand computations: the loss of one object by a
direct transcription of the paper's formulas, the prior bias, the output stride and head shapes,
the inference's limits, and a detector that overfits a handful of scenes (AP50 by pycocotools)."""

import math

import pytest
import torch
from torch import nn

from tests.detection.overfit import check_detections, overfit_ap50
from vislab.detection.centernet import CenterNet, centernet_loss
from vislab.errors import UserError

SMALL = {"backbone": "resnet18", "backbone_kwargs": {"widths": [16, 32, 64, 128], "stem_width": 16},
         "neck_chs": 32, "head_chs": 32}


def _paper_focal(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> float:
    """Eq. 1 of "Objects as Points", element by element, over the number of centres."""
    total, n = 0.0, 0
    for x, y in zip(logits.flatten().tolist(), target.flatten().tolist()):
        p = 1 / (1 + math.exp(-x))
        if y == 1:
            total += (1 - p) ** alpha * math.log(p)
            n += 1
        else:
            total += (1 - y) ** beta * p ** alpha * math.log(1 - p)
    return -total / max(n, 1)


def test_loss_on_a_hand_made_case():
    """One object in the first image, none in the second, 16 x 16 grid at stride 4."""
    torch.manual_seed(0)
    heat, size, offset = torch.randn(2, 3, 16, 16), torch.randn(2, 2, 16, 16) * 3 + 8, torch.rand(2, 2, 16, 16)
    targets = [{"boxes": torch.tensor([[6.0, 10, 62, 57]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    out = centernet_loss(heat, size, offset, targets, stride=4)
    # by hand: centre (34, 33.5) px = (8.5, 8.375) cells -> cell (8, 8), offset (0.5, 0.375);
    # size 56 x 47 px = (14, 11.75) cells; CornerNet's radius for 11.75 x 14 cells is 1.04 -> 1,
    # sigma (2 * 1 + 1) / 6 = 0.5: the 3 x 3 window holds exp(-(dx^2 + dy^2) / 0.5)
    target = torch.zeros(2, 3, 16, 16)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            target[0, 2, 8 + dy, 8 + dx] = math.exp(-(dx * dx + dy * dy) / (2 * 0.5 ** 2))
    focal = _paper_focal(heat, target)
    size_l1 = abs(size[0, 0, 8, 8].item() - 14) + abs(size[0, 1, 8, 8].item() - 11.75)
    off_l1 = abs(offset[0, 0, 8, 8].item() - 0.5) + abs(offset[0, 1, 8, 8].item() - 0.375)
    assert out["heatmap"].item() == pytest.approx(focal, rel=1e-5)
    assert out["size"].item() == pytest.approx(size_l1, rel=1e-5)
    assert out["offset"].item() == pytest.approx(off_l1, rel=1e-5)
    assert out["loss"].item() == pytest.approx(focal + 0.1 * size_l1 + off_l1, rel=1e-5)
    weighted = centernet_loss(heat, size, offset, targets, stride=4, size_weight=1.0, offset_weight=0.5)
    assert weighted["loss"].item() == pytest.approx(focal + size_l1 + 0.5 * off_l1, rel=1e-5)


def test_loss_without_objects_and_in_bfloat16():
    torch.manual_seed(0)
    heat, size, offset = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    out = centernet_loss(heat, size, offset, empty, stride=4)
    assert out["heatmap"].item() == pytest.approx(_paper_focal(heat, torch.zeros_like(heat)), rel=1e-5)
    assert out["size"].item() == 0 and out["offset"].item() == 0
    one = [{"boxes": torch.tensor([[4.0, 4, 20, 24]]), "labels": torch.tensor([1])}]
    half = centernet_loss(heat.bfloat16(), size.bfloat16(), offset.bfloat16(), one, stride=4)
    full = centernet_loss(heat.bfloat16().float(), size.bfloat16().float(), offset.bfloat16().float(), one, stride=4)
    assert all(v.dtype == torch.float32 for v in half.values())
    for k in full:
        assert half[k].item() == pytest.approx(full[k].item(), rel=1e-6)


def test_prior_bias_gives_initial_probability_one_tenth():
    torch.manual_seed(0)
    model = CenterNet(5, **SMALL).eval()
    bias = model.head.heatmap[-1].bias
    assert torch.allclose(torch.sigmoid(bias.double()), torch.full_like(bias.double(), 0.1))
    assert bias[0].item() == pytest.approx(-2.1972, abs=1e-4)          # the paper's -2.19
    with torch.no_grad():
        heat, _, _ = model.head(model.features(torch.randn(2, 3, 64, 64)))
    assert torch.sigmoid(heat).mean().item() == pytest.approx(0.1, abs=2e-3)


@pytest.mark.parametrize("strides,stride", [((4, 8, 16), 4), ((8, 16), 8), ((4, 8, 16, 32), 4)])
def test_output_stride_and_head_shapes(strides, stride):
    model = CenterNet(7, **SMALL, strides=strides).eval()
    assert model.stride == stride
    with torch.no_grad():
        heat, size, offset = model.head(model.features(torch.randn(2, 3, 64, 96)))
    grid = (64 // stride, 96 // stride)
    assert heat.shape == (2, 7, *grid) and size.shape == (2, 2, *grid) and offset.shape == (2, 2, *grid)


def test_inference_limits_sorts_and_clips():
    torch.manual_seed(0)
    model = CenterNet(3, **SMALL, detections_per_img=7).eval()
    for head in (model.head.heatmap, model.head.size):                 # many peaks, large boxes
        nn.init.normal_(head[-1].weight, std=0.5)
    nn.init.zeros_(model.head.heatmap[-1].bias)
    nn.init.constant_(model.head.size[-1].bias, 30.0)                 # 120 px boxes: clipped
    with torch.no_grad():
        dets = model(torch.randn(3, 3, 64, 80))
    assert len(dets) == 3
    for d in dets:
        check_detections(d, most=7)
        assert (d["boxes"][:, 0] == 0).any() or (d["boxes"][:, 2] == 80).any()    # the clipping did something
    model.score_thresh = 0.999
    with torch.no_grad():
        assert all(len(d["scores"]) == 0 for d in model(torch.randn(1, 3, 64, 64)))


def test_options_are_checked_and_registered():
    from vislab.models import create_model, list_models, model_kind
    assert "centernet" in list_models(kind="detection") and model_kind("centernet") == "detection"
    assert isinstance(create_model("centernet", num_classes=3, **SMALL), CenterNet)
    with pytest.raises(UserError, match="stride 64"):
        CenterNet(3, **SMALL, strides=(4, 8, 64))
    with pytest.raises(UserError, match="increase"):
        CenterNet(3, **SMALL, strides=(16, 8, 4))
    with pytest.raises(UserError, match="prior_prob"):
        CenterNet(3, **SMALL, prior_prob=1.0)
    with pytest.raises(ValueError, match="targets"):
        CenterNet(3, **SMALL).train()(torch.randn(1, 3, 64, 64))


def test_overfits_a_handful_of_scenes():
    """Eight scenes, 150 full-batch steps: AP50 on those scenes above 0.8, by pycocotools."""
    torch.manual_seed(0)
    ap50 = overfit_ap50(CenterNet(10, **SMALL), steps=150)
    assert ap50 > 0.8, ap50
