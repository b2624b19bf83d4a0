"""EfficientNet and compound scaling against Tan & Le 2019 (eq. 3, Table 1) and torchvision."""

import math
import warnings

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from vislab.models import create_model
from vislab.models.efficientnet import (
    EFFICIENTNET_B0,
    compound_scale,
    compound_scaling_table,
)
from vislab.models.layers import make_divisible


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _macs(model: torch.nn.Module, side: int) -> float:
    """Multiply-adds of one image at ``side`` x ``side``, as torch's FlopCounterMode counts them
    (2 FLOPs per multiply-add, convolutions and linear layers; shapes only, on the meta device)."""
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.empty(1, 3, side, side, device="meta"))
    return counter.get_total_flops() / 2


def test_the_papers_coefficients_double_the_measured_flops_per_step():
    """Tan & Le Sec. 3.3: alpha beta^2 gamma^2 ~ 2, so FLOPs grow by about 2^phi; Table 2: B0 takes
    0.39 B multiply-adds.  Counted on the built models, channel and repeat rounding included."""
    with torch.device("meta"):
        b0, phi4 = compound_scale(0, num_classes=1000), compound_scale(4, num_classes=1000)
    macs = _macs(b0, b0.img_size)
    assert macs == pytest.approx(0.39e9, rel=0.02)                          # 0.386 B
    assert (_macs(phi4, phi4.img_size) / macs) ** (1 / 4) == pytest.approx(2, rel=0.05)   # 2.01


@pytest.mark.parametrize("phi", [0, 1, 3])
def test_compound_scale_derives_members_from_b0(phi):
    with torch.device("meta"):
        model = compound_scale(phi, num_classes=1000)
        b0 = create_model("efficientnet_b0", num_classes=1000)
    assert model.img_size == round(224 * 1.15 ** phi)
    assert [len(s) for s in model.stages] == [math.ceil(n * 1.2 ** phi) for *_, n in EFFICIENTNET_B0]
    assert [f["num_chs"] for f in model.feature_info] == [make_divisible(c * 1.1 ** phi)
                                                           for _, _, _, _, c, _ in EFFICIENTNET_B0]
    if phi == 0:
        assert _count(model) == _count(b0)
    else:
        assert _count(model) > _count(b0)


def test_table_shows_the_released_models_below_the_rule():
    rows = compound_scaling_table()
    assert [r["model"] for r in rows] == [f"efficientnet_b{i}" for i in range(8)]
    for r in rows:
        assert r["flops_phi"] == pytest.approx((1.2 * 1.1 ** 2 * 1.15 ** 2) ** r["phi"])
        assert r["flops"] == pytest.approx(r["depth"] * r["width"] ** 2 * (r["resolution"] / 224) ** 2)
    b7 = rows[-1]
    assert b7["width"] == pytest.approx(b7["width_phi"], rel=0.03)        # 2.0 vs 1.95
    assert b7["resolution"] == pytest.approx(b7["resolution_phi"], rel=0.01)   # 600 vs 596
    assert b7["depth"] < 0.9 * b7["depth_phi"]                            # 3.1 vs 3.58
    assert all(r["phi_flops"] < r["phi"] for r in rows[1:])               # cheaper than the rule
    assert [r["phi_flops"] for r in rows] == sorted(r["phi_flops"] for r in rows)


def test_released_dropout_matches_torchvision():
    for i in (2, 6):                                          # dropout 0.3 and 0.5
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            tv = torchvision.models.get_model(f"efficientnet_b{i}", weights=None)
            ours = create_model(f"efficientnet_b{i}", num_classes=1000)
        assert ours.head_drop == tv.classifier[0].p
