"""fuse_bn against the unfused model and torch.fx's own conv-BN fusion."""

import pytest
import torch
import torchvision
from torch import nn
from torch.fx.experimental.optimization import fuse as fx_fuse

from vislab.analysis import find_conv_bn, fuse_bn
from vislab.models import create_model, list_models


def _random_bn_stats(model: nn.Module) -> nn.Module:
    """BN layers with the statistics of a trained network, not the identity of a fresh one."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def _n_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_torchvision_resnet18_equals_unfused_and_fx_fusion():
    model = _random_bn_stats(torchvision.models.resnet18(num_classes=10))
    fused = fuse_bn(model, (3, 64, 64))
    assert _n_bn(fused) == 0 and _n_bn(model) == 20          # the original is untouched
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out, fx_out = model(x), fused(x), fx_fuse(model)(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, fx_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in ("resnet20", "mobilenet_v2") if n in list_models()])
def test_vislab_models(name):
    model = _random_bn_stats(create_model(name, num_classes=10, in_chans=3))
    fused = fuse_bn(model, (3, 32, 32))
    assert _n_bn(fused) == 0 and type(fused) is type(model)   # the classifier face is kept
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)


class TwoUses(nn.Module):
    """The conv output also feeds the add: folding the BN into the conv would change the add."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_only_safe_pairs_are_folded():
    pre_activation = nn.Sequential(nn.BatchNorm2d(2), nn.Conv2d(2, 2, 3))  # BN before the conv
    for model in (TwoUses(), pre_activation):
        model = _random_bn_stats(model)
        assert find_conv_bn(model, (2, 8, 8)) == []
        x = torch.randn(1, 2, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(fuse_bn(model, (2, 8, 8))(x), model(x))
