"""VGG (Simonyan & Zisserman 2015): depth from a regular design.

Only 3x3 convs (stride 1, padding 1: the resolution is kept) and 2x2/2 max-pools, and the
channels double after every pool (64-128-256-512-512), so every stage costs about the same.
Stages stack 3x3 convs: two have the receptive field of one 5x5, three of one 7x7, with fewer
parameters and FLOPs and more non-linearities.  VGG-11/13/16/19 are configurations A, B, D, E
of the paper (counting conv + FC layers); the deeper ones were first initialised from the
trained shallower ones, a trick that good initialisation (and later BatchNorm, the ``_bn``
variants) made unnecessary.  Most parameters sit in the first FC layer (25088 x 4096), most
FLOPs and activation memory in the first, full-resolution stages: there is no stem.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from vislab.errors import UserError
from vislab.models.base import Classifier
from vislab.models.layers import init_weights
from vislab.models.registry import register_model

# Convs per stage of each depth (the paper's configurations A, B, D, E).
VGG_LAYERS: dict[int, tuple[int, ...]] = {
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}


def _conv(in_chs: int, out_chs: int, batch_norm: bool) -> nn.Sequential:
    """3x3 conv (with bias, even before BN: torchvision's layout) -> [BN] -> ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(in_chs, out_chs, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_chs))
    return nn.Sequential(*layers, nn.ReLU(inplace=True))


class VGG(Classifier):
    """Stages of 3x3 convs each ending in a 2x2 max-pool, a 7x7 average pool, a two-layer MLP
    (``pre_logits``) and the linear ``head``.

    Args:
        depth: 11, 13, 16 or 19.
        num_classes / in_chans: classes and input channels.
        batch_norm: BN after every conv.
        small_input: no pool after the last stage and a 1x1 average pool before the MLP, so
            28x28 inputs work (five pools would need at least 32x32) and the MLP is 512-wide.
        hidden / drop: MLP width and dropout.
    """

    def __init__(self, depth: int = 16, num_classes: int = 1000, in_chans: int = 3,
                 batch_norm: bool = False, small_input: bool = False,
                 widths: Sequence[int] = (64, 128, 256, 512, 512), hidden: int = 4096,
                 drop: float = 0.5) -> None:
        super().__init__()
        if depth not in VGG_LAYERS:
            raise UserError(f"VGG depth must be one of {sorted(VGG_LAYERS)}, got {depth}")
        in_chs, stages, self.feature_info = in_chans, [], []
        for i, (n, width) in enumerate(zip(VGG_LAYERS[depth], widths)):
            layers: list[nn.Module] = []
            for _ in range(n):
                layers.append(_conv(in_chs, width, batch_norm))
                in_chs = width
            last = i == len(widths) - 1
            if not (small_input and last):
                layers.append(nn.MaxPool2d(2, 2))
            stages.append(nn.Sequential(*layers))
            reduction = 2 ** (i if small_input and last else i + 1)
            self.feature_info.append(dict(module=f"stages.{i}", num_chs=width, reduction=reduction))
        self.stages = nn.Sequential(*stages)
        pool = 1 if small_input else 7
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.pre_logits = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(in_chs * pool * pool, hidden)), ("act1", nn.ReLU(inplace=True)),
            ("drop1", nn.Dropout(drop)),
            ("fc2", nn.Linear(hidden, hidden)), ("act2", nn.ReLU(inplace=True)), ("drop2", nn.Dropout(drop)),
        ]))
        self.num_classes = num_classes
        self.num_features = hidden
        self.head = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()
        self.min_input_size = 2 ** sum(isinstance(m, nn.MaxPool2d) for m in self.stages.modules())
        init_weights(self, "he")

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, 512, H/32, W/32)
        if min(x.shape[-2:]) < self.min_input_size:
            pools = self.min_input_size.bit_length() - 1
            raise UserError(f"VGG needs inputs of at least {self.min_input_size}x{self.min_input_size} "
                            f"({pools} 2x2 max-pools), got {x.shape[-2]}x{x.shape[-1]}; for smaller "
                            "images (8x8 digits) use resnet20 or small_cnn")
        return self.stages(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pre_logits(self.pool(x).flatten(1))      # (B, 512 * 7 * 7) -> (B, hidden)
        return x if pre_logits else self.head(x)


def _vgg(depth: int, batch_norm: bool, num_classes: int, in_chans: int, small_input: bool,
         **kwargs) -> VGG:
    return VGG(depth, num_classes, in_chans, batch_norm, small_input, **kwargs)


@register_model
def vgg11(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs) -> VGG:
    """VGG-11 (configuration A): 132.9 M parameters."""
    return _vgg(11, False, num_classes, in_chans, small_input, **kwargs)


@register_model
def vgg11_bn(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs) -> VGG:
    """VGG-11 with BatchNorm."""
    return _vgg(11, True, num_classes, in_chans, small_input, **kwargs)


@register_model
def vgg13(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs) -> VGG:
    """VGG-13 (configuration B): 133.0 M parameters."""
    return _vgg(13, False, num_classes, in_chans, small_input, **kwargs)


@register_model
def vgg13_bn(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs) -> VGG:
    """VGG-13 with BatchNorm."""
    return _vgg(13, True, num_classes, in_chans, small_input, **kwargs)


@register_model
def vgg16(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs) -> VGG:
    """VGG-16 (configuration D): 138.4 M parameters."""
    return _vgg(16, False, num_classes, in_chans, small_input, **kwargs)


@register_model
def vgg16_bn(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs) -> VGG:
    """VGG-16 with BatchNorm."""
    return _vgg(16, True, num_classes, in_chans, small_input, **kwargs)


@register_model
def vgg19(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs) -> VGG:
    """VGG-19 (configuration E): 143.7 M parameters."""
    return _vgg(19, False, num_classes, in_chans, small_input, **kwargs)


@register_model
def vgg19_bn(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs) -> VGG:
    """VGG-19 with BatchNorm."""
    return _vgg(19, True, num_classes, in_chans, small_input, **kwargs)


__all__ = ["VGG", "VGG_LAYERS"]
