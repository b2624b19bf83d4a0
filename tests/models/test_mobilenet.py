"""MobileNet v1 (Howard et al. 2017) and v2 (Sandler et al. 2018) against their papers."""

import pytest
import torch
from torch import nn

from vislab.models import create_model
from vislab.models.mobilenet import DepthwiseSeparable, InvertedResidual


@pytest.mark.parametrize("alpha,paper", [(1.0, 4.2), (0.75, 2.6), (0.5, 1.3), (0.25, 0.5)])
def test_v1_width_multiplier_matches_table_6(alpha, paper):
    with torch.device("meta"):
        model = create_model("mobilenet_v1", num_classes=1000, width_mult=alpha)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == paper


def test_v1_has_28_layers_and_runs_at_every_resolution_multiplier():
    with torch.device("meta"):
        model = create_model("mobilenet_v1", num_classes=1000).eval()
    assert len([m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]) == 28
    for side in (224, 192, 160, 128):                              # rho = 1, 6/7, 5/7, 4/7
        assert model(torch.randn(1, 3, side, side, device="meta")).shape == (1, 1000)


def test_depthwise_separable_weights_shrink_by_1_over_n_plus_1_over_9():
    """Howard et al. eq. 5: separable / standard cost = 1/N + 1/D_K^2 (here for the weights)."""
    m, n = 64, 128
    layer = DepthwiseSeparable(m, n)
    weights = layer.conv_dw[0].weight.numel() + layer.conv_pw[0].weight.numel()
    assert weights / (9 * m * n) == pytest.approx(1 / n + 1 / 9)


def test_v2_linear_bottlenecks_and_residuals():
    model = create_model("mobilenet_v2", num_classes=1000)
    blocks = [b for b in model.modules() if isinstance(b, InvertedResidual)]
    assert len(blocks) == 17 and sum(b.use_residual for b in blocks) == 10
    assert all(len(b.block[-1]) == 2 for b in blocks)             # projection: conv + BN, no ReLU6
    assert blocks[1].block[0][0].out_channels == 6 * 16           # expansion t = 6
