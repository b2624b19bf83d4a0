"""ResNet family against the papers: He et al. 2016 (CIFAR ResNets, shortcut options), Xie et al.
2017 (ResNeXt), Hu et al. 2018 (SE-ResNet)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vislab.models import create_model
from vislab.models.resnet import BasicBlock, Bottleneck, ZeroPadShortcut, make_shortcut


def _count(name: str, **kwargs) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in create_model(name, **kwargs).parameters())


# He et al. 2016, Table 6 (CIFAR-10): parameters of the 6n+2 networks
@pytest.mark.parametrize("depth,paper", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_cifar_resnets_match_table_6(depth, paper):
    n = _count(f"resnet{depth}", num_classes=10)
    assert round(n / 1e6, 2 if depth < 110 else 1) == paper
    with torch.device("meta"):
        model = create_model(f"resnet{depth}", num_classes=10)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == depth                 # option A adds no layers: 6n + 2 weighted layers


def test_option_a_subsamples_and_pads_with_zeros():
    shortcut = make_shortcut(16, 32, 2, "A", nn.BatchNorm2d)
    assert isinstance(shortcut, ZeroPadShortcut) and not list(shortcut.parameters())
    x = torch.randn(2, 16, 9, 9)
    expected = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 16, 5, 5)], 1)
    torch.testing.assert_close(shortcut(x), expected)
    assert shortcut(x).shape == nn.Conv2d(16, 32, 3, 2, 1)(x).shape     # matches the residual branch


def test_option_c_projects_every_shortcut():
    """C adds a 1x1 conv + BN (c^2 + 2c parameters) to each identity shortcut of ResNet-18."""
    identity_shortcut_chs = [64, 64, 128, 256, 512]
    extra = sum(c * c + 2 * c for c in identity_shortcut_chs)
    assert _count("resnet18", shortcut="C") - _count("resnet18", shortcut="B") == extra
    with pytest.raises(ValueError, match="shortcut"):
        create_model("resnet18", shortcut="D")


def test_se_resnet50_adds_the_papers_2_5_million_parameters():
    """Hu et al. 2018, Sec. 4: SE-ResNet-50 needs ~2.5 M parameters more than ResNet-50's ~25 M."""
    se, plain = _count("se_resnet50", num_classes=1000), _count("resnet50", num_classes=1000)
    assert round(se / 1e6, 1) == 28.1 and round((se - plain) / 1e6, 1) == 2.5


def test_resnext50_matches_table_1():
    """Xie et al. 2017, Table 1: conv2 is [1x1, 128; 3x3, 128, C=32; 1x1, 256]; 25.0 M parameters."""
    with torch.device("meta"):
        model = create_model("resnext50_32x4d", num_classes=1000)
    block = model.stages[0][0]
    assert block.conv1[0].out_channels == 128 and block.conv2[0].groups == 32
    assert block.conv3[0].out_channels == 256
    assert [s[-1].conv2[0].out_channels for s in model.stages] == [128, 256, 512, 1024]
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 25.0


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_zero_init_last_starts_each_block_as_the_identity(block):
    chs = 64 if block is BasicBlock else 256
    b = block(chs, chs // block.expansion)
    b.zero_init_last()
    b.eval()
    x = torch.randn(2, chs, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(b(x), F.relu(x))
