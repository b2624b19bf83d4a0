"""DenseNet (Huang et al. 2017, "Densely Connected Convolutional Networks").

Inside a dense block every layer receives the concatenation of all the previous layers' outputs
and adds ``k`` (the growth rate) new channels: features are reused instead of re-learned, every
layer has a short path to the loss, and the layers can be very thin (k = 12...48).  Between
blocks, transition layers (BN-ReLU-1x1 conv-2x2 avg-pool) halve the resolution.

* B (bottleneck): each layer is BN-ReLU-1x1 conv (4k channels)-BN-ReLU-3x3 conv (k channels);
* C (compression): transitions keep a fraction theta = 0.5 of the channels.

DenseNet-121/161/169/201 (ImageNet, torchvision's layout) are DenseNet-BC with four blocks;
the CIFAR DenseNet-BC-L-k models have three blocks of (L - 4) / 6 layers and a 3x3 stem conv
of 2k channels.  (Here the concatenation is materialised per layer; torchvision's
``memory_efficient`` checkpointing trades that memory for recomputation.)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vislab.errors import UserError
from vislab.models.base import Classifier
from vislab.models.layers import init_weights
from vislab.models.registry import register_model


class DenseLayer(nn.Module):
    """[BN-ReLU-1x1 conv to ``bn_size * k``]-BN-ReLU-3x3 conv to ``k`` channels (pre-activation).

    Args:
        in_chs: channels of the concatenated input; growth_rate: k.
        bn_size: bottleneck width factor (0: no bottleneck, the plain DenseNet layer).
        drop: dropout on the new features.
    """

    def __init__(self, in_chs: int, growth_rate: int, bn_size: int = 4, drop: float = 0.0) -> None:
        super().__init__()
        if bn_size:
            mid = bn_size * growth_rate
            self.norm1 = nn.BatchNorm2d(in_chs)
            self.relu1 = nn.ReLU(inplace=True)
            self.conv1 = nn.Conv2d(in_chs, mid, 1, bias=False)
            in_chs = mid
        self.bottleneck = bool(bn_size)
        self.norm2 = nn.BatchNorm2d(in_chs)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(in_chs, growth_rate, 3, padding=1, bias=False)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, k, H, W)
        if self.bottleneck:
            x = self.conv1(self.relu1(self.norm1(x)))
        return self.drop(self.conv2(self.relu2(self.norm2(x))))


class DenseBlock(nn.Module):
    """``num_layers`` dense layers; each sees everything before it; the block outputs it all."""

    def __init__(self, num_layers: int, in_chs: int, growth_rate: int, bn_size: int = 4,
                 drop: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(in_chs + i * growth_rate, growth_rate, bn_size, drop)
                                    for i in range(num_layers))
        self.out_chs = in_chs + num_layers * growth_rate

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, C + L k, H, W)
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv (compression) - 2x2 average pool."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__(OrderedDict([
            ("norm", nn.BatchNorm2d(in_chs)), ("relu", nn.ReLU(inplace=True)),
            ("conv", nn.Conv2d(in_chs, out_chs, 1, bias=False)), ("pool", nn.AvgPool2d(2, 2)),
        ]))


class DenseNet(Classifier):
    """Stem, dense blocks (each stage after the first starts with a transition), BN-ReLU, GAP,
    linear head.

    Args:
        growth_rate: k; block_config: layers per dense block.
        num_classes / in_chans: classes and input channels.
        stem_width: channels of the stem conv (ImageNet: 2k, 64 for k=32).
        bn_size: bottleneck factor (4; 0 for the plain, non-B DenseNet).
        compression: theta, the fraction of channels a transition keeps.
        small_input: a 3x3/1 stem conv alone (the paper's CIFAR stem) instead of
            7x7/2 conv-BN-ReLU and a 3x3/2 max-pool.
        drop: dropout after each dense layer.
    """

    def __init__(self, growth_rate: int = 32, block_config: Sequence[int] = (6, 12, 24, 16),
                 num_classes: int = 1000, in_chans: int = 3, stem_width: int = 64, bn_size: int = 4,
                 compression: float = 0.5, small_input: bool = False, drop: float = 0.0) -> None:
        super().__init__()
        if not 0 < compression <= 1:
            raise UserError(f"compression must be in (0, 1], got {compression}: use 0.5 (DenseNet-C) "
                            "or 1 (none)")
        if small_input:
            self.stem: nn.Module = nn.Sequential(OrderedDict([
                ("conv0", nn.Conv2d(in_chans, stem_width, 3, padding=1, bias=False))]))
            reduction = 1
        else:
            self.stem = nn.Sequential(OrderedDict([
                ("conv0", nn.Conv2d(in_chans, stem_width, 7, 2, 3, bias=False)),
                ("norm0", nn.BatchNorm2d(stem_width)), ("relu0", nn.ReLU(inplace=True)),
                ("pool0", nn.MaxPool2d(3, 2, 1)),
            ]))
            reduction = 4
        chs, stages, self.feature_info = stem_width, [], []
        for i, num_layers in enumerate(block_config):
            stage: OrderedDict[str, nn.Module] = OrderedDict()
            if i > 0:
                stage["transition"] = Transition(chs, int(chs * compression))
                chs, reduction = int(chs * compression), reduction * 2
            stage["block"] = block = DenseBlock(num_layers, chs, growth_rate, bn_size, drop)
            chs = block.out_chs
            stages.append(nn.Sequential(stage))
            self.feature_info.append(dict(module=f"stages.{i}", num_chs=chs, reduction=reduction))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(chs)
        self.act = nn.ReLU(inplace=True)
        self.num_classes = num_classes
        self.num_features = chs
        self.head = nn.Linear(chs, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self, "he")

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, 224, 224) -> (B, F, 7, 7)
        return self.act(self.norm(self.stages(self.stem(x))))


def densenet_cifar(depth: int, growth_rate: int, bc: bool = True, num_classes: int = 10,
                   in_chans: int = 3, small_input: bool = True, **kwargs) -> DenseNet:
    """The paper's CIFAR DenseNet (``bc=False``, depth = 3n + 4) or DenseNet-BC (depth = 6n + 4)."""
    per_layer = 6 if bc else 3      # a BC layer holds two convs
    if (depth - 4) % per_layer:
        raise UserError(f"CIFAR DenseNet{'-BC' if bc else ''} depth must be {per_layer}n+4 "
                        f"(e.g. {per_layer * 16 + 4}), got {depth}")
    n = (depth - 4) // per_layer
    return DenseNet(growth_rate, (n, n, n), num_classes, in_chans,
                    stem_width=2 * growth_rate if bc else 16, bn_size=4 if bc else 0,
                    compression=0.5 if bc else 1.0, small_input=small_input, **kwargs)


@register_model
def densenet121(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                **kwargs) -> DenseNet:
    """DenseNet-121 (k=32, blocks 6-12-24-16): 8.0 M parameters."""
    return DenseNet(32, (6, 12, 24, 16), num_classes, in_chans, 64, small_input=small_input, **kwargs)


@register_model
def densenet161(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                **kwargs) -> DenseNet:
    """DenseNet-161 (k=48, blocks 6-12-36-24, 96-channel stem): 28.7 M parameters."""
    return DenseNet(48, (6, 12, 36, 24), num_classes, in_chans, 96, small_input=small_input, **kwargs)


@register_model
def densenet169(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                **kwargs) -> DenseNet:
    """DenseNet-169 (k=32, blocks 6-12-32-32): 14.1 M parameters."""
    return DenseNet(32, (6, 12, 32, 32), num_classes, in_chans, 64, small_input=small_input, **kwargs)


@register_model
def densenet201(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                **kwargs) -> DenseNet:
    """DenseNet-201 (k=32, blocks 6-12-48-32): 20.0 M parameters."""
    return DenseNet(32, (6, 12, 48, 32), num_classes, in_chans, 64, small_input=small_input, **kwargs)


@register_model
def densenet_40_12(num_classes: int = 10, in_chans: int = 3, small_input: bool = True,
                   **kwargs) -> DenseNet:
    """CIFAR DenseNet (L=40, k=12, no bottleneck or compression): 1.0 M parameters."""
    return densenet_cifar(40, 12, False, num_classes, in_chans, small_input, **kwargs)


@register_model
def densenet_bc_40_12(num_classes: int = 10, in_chans: int = 3, small_input: bool = True,
                      **kwargs) -> DenseNet:
    """CIFAR DenseNet-BC (L=40, k=12: six bottleneck layers per block): 0.18 M parameters,
    the smallest BC member (CPU budgets)."""
    return densenet_cifar(40, 12, True, num_classes, in_chans, small_input, **kwargs)


@register_model
def densenet_bc_100_12(num_classes: int = 10, in_chans: int = 3, small_input: bool = True,
                       **kwargs) -> DenseNet:
    """CIFAR DenseNet-BC (L=100, k=12): 0.8 M parameters."""
    return densenet_cifar(100, 12, True, num_classes, in_chans, small_input, **kwargs)


@register_model
def densenet_bc_250_24(num_classes: int = 10, in_chans: int = 3, small_input: bool = True,
                       **kwargs) -> DenseNet:
    """CIFAR DenseNet-BC (L=250, k=24): 15.3 M parameters."""
    return densenet_cifar(250, 24, True, num_classes, in_chans, small_input, **kwargs)


@register_model
def densenet_bc_190_40(num_classes: int = 10, in_chans: int = 3, small_input: bool = True,
                       **kwargs) -> DenseNet:
    """CIFAR DenseNet-BC (L=190, k=40): 25.6 M parameters."""
    return densenet_cifar(190, 40, True, num_classes, in_chans, small_input, **kwargs)


__all__ = ["DenseBlock", "DenseLayer", "DenseNet", "Transition", "densenet_cifar"]
