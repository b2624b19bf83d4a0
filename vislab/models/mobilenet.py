"""MobileNet v1 (Howard et al. 2017) and v2 (Sandler et al. 2018): CNNs for phones.

v1 replaces each standard conv by a depthwise separable one: a 3x3 depthwise conv (one filter
per channel, no channel mixing) and a 1x1 pointwise conv (channel mixing, no spatial extent),
about 8-9x fewer mult-adds for a 3x3 layer.  Two knobs trade accuracy for cost: the width
multiplier alpha thins every layer (cost ~ alpha^2) and the resolution multiplier rho shrinks
the input (cost ~ rho^2).  rho is not part of the network: feed 224*rho pixels (the paper's
192, 160, 128); global average pooling makes any size work.

v2 builds on inverted residual blocks with linear bottlenecks: a 1x1 conv *expands* the thin
input t = 6 times, a 3x3 depthwise conv filters in that wide space, and a 1x1 conv *projects*
back with no activation (a ReLU in the thin space would destroy information); the residual
connects the thin bottlenecks.  ReLU6 everywhere else.  The same block, with a squeeze-and-
excitation gate and SiLU, is EfficientNet's MBConv (:mod:`vislab.models.efficientnet`).
"""

from __future__ import annotations

from torch import Tensor, nn

from vislab.errors import UserError
from vislab.models.base import Classifier
from vislab.models.layers import (
    ConvNormAct,
    DropPath,
    SqueezeExcite,
    init_weights,
    make_divisible,
)
from vislab.models.registry import register_model

# MobileNet v1 (paper Table 1) after the stem: (pointwise output channels, depthwise stride).
MOBILENET_V1: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)

# MobileNet v2 (paper Table 2): (expansion t, channels c, repeats n, stride s) per stage.
MOBILENET_V2: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv-BN-ReLU, then 1x1 pointwise conv-BN-ReLU (MobileNet v1's layer)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1,
                 norm_layer: type[nn.Module] = nn.BatchNorm2d, act_layer: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.conv_dw = ConvNormAct(in_chs, in_chs, 3, stride, groups=in_chs, norm_layer=norm_layer,
                                   act_layer=act_layer)
        self.conv_pw = ConvNormAct(in_chs, out_chs, 1, norm_layer=norm_layer, act_layer=act_layer)


class InvertedResidual(nn.Module):
    """1x1 expand (if t > 1) - kxk depthwise - [SE] - 1x1 linear projection, plus the identity
    when the shape allows (MobileNet v2's block; EfficientNet's MBConv with ``se_ratio``).

    Args:
        in_chs / out_chs / stride: channels and the depthwise conv's stride.
        expand_ratio: t; kernel_size: of the depthwise conv.
        se_ratio: SE gate width as a fraction of ``in_chs`` (0: no gate; EfficientNet: 0.25).
        drop_path: stochastic depth of the residual branch.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, expand_ratio: float = 6,
                 kernel_size: int = 3, se_ratio: float = 0.0, drop_path: float = 0.0,
                 norm_layer: type[nn.Module] = nn.BatchNorm2d,
                 act_layer: type[nn.Module] = nn.ReLU6) -> None:
        super().__init__()
        mid = round(in_chs * expand_ratio)
        layers: list[nn.Module] = []
        if mid != in_chs:
            layers.append(ConvNormAct(in_chs, mid, 1, norm_layer=norm_layer, act_layer=act_layer))
        layers.append(ConvNormAct(mid, mid, kernel_size, stride, groups=mid, norm_layer=norm_layer,
                                  act_layer=act_layer))
        if se_ratio:
            layers.append(SqueezeExcite(mid, max(1, int(in_chs * se_ratio)), act_layer=act_layer))
        layers.append(ConvNormAct(mid, out_chs, 1, norm_layer=norm_layer, act_layer=None))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_chs == out_chs
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, out, H/s, W/s)
        if self.use_residual:
            return x + self.drop_path(self.block(x))
        return self.block(x)


class MobileNetV1(Classifier):
    """3x3/2 stem conv and 13 depthwise separable layers, GAP, linear head.

    Args:
        num_classes / in_chans: classes and input channels.
        width_mult: alpha, the width multiplier (1, 0.75, 0.5, 0.25 in the paper).
        small_input: stride-1 stem and stride-1 first downsampling layer (reduction 8, not 32).
        drop: dropout before the head.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 small_input: bool = False, drop: float = 0.0) -> None:
        super().__init__()
        if width_mult <= 0:
            raise UserError(f"width_mult must be positive (1, 0.75, 0.5, 0.25...), got {width_mult}")
        chs = int(32 * width_mult)
        self.stem = ConvNormAct(in_chans, chs, 3, 1 if small_input else 2)
        reduction = 1 if small_input else 2
        blocks, info = [], []
        for i, (out, stride) in enumerate(MOBILENET_V1):
            stride = 1 if small_input and i == 1 else stride
            out = int(out * width_mult)
            blocks.append(DepthwiseSeparable(chs, out, stride))
            chs, reduction = out, reduction * stride
            info.append(dict(module=f"blocks.{i}", num_chs=chs, reduction=reduction))
        # a stage ends where the next layer downsamples
        self.feature_info = [f for f, nxt in zip(info, info[1:] + [None])
                             if nxt is None or nxt["reduction"] > f["reduction"]]
        self.blocks = nn.Sequential(*blocks)
        self.num_classes = num_classes
        self.num_features = chs
        self.head_drop = drop
        self.head = nn.Linear(chs, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self, "he")

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, 224, 224) -> (B, 1024 alpha, 7, 7)
        return self.blocks(self.stem(x))


class MobileNetV2(Classifier):
    """3x3/2 stem conv, seven stages of inverted residuals, 1x1 conv to 1280, GAP, linear head.

    Args:
        num_classes / in_chans: classes and input channels.
        width_mult: width multiplier; channels are rounded to multiples of 8.
        small_input: stride-1 stem and stride-1 second stage (reduction 8, not 32).
        drop: dropout before the head (0.2 as torchvision).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 small_input: bool = False, drop: float = 0.2) -> None:
        super().__init__()
        chs = make_divisible(32 * width_mult)
        self.stem = ConvNormAct(in_chans, chs, 3, 1 if small_input else 2, act_layer=nn.ReLU6)
        reduction = 1 if small_input else 2
        stages, self.feature_info = [], []
        for i, (t, c, n, s) in enumerate(MOBILENET_V2):
            if small_input and i == 1:
                s = 1
            out = make_divisible(c * width_mult)
            stages.append(nn.Sequential(*[InvertedResidual(chs if j == 0 else out, out, s if j == 0 else 1, t)
                                          for j in range(n)]))
            chs, reduction = out, reduction * s
            self.feature_info.append(dict(module=f"stages.{i}", num_chs=out, reduction=reduction))
        self.stages = nn.Sequential(*stages)
        self.num_features = make_divisible(1280 * max(1.0, width_mult))
        self.conv_head = ConvNormAct(chs, self.num_features, 1, act_layer=nn.ReLU6)
        self.num_classes = num_classes
        self.head_drop = drop
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self, "he")

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, 224, 224) -> (B, 1280, 7, 7)
        return self.conv_head(self.stages(self.stem(x)))


@register_model
def mobilenet_v1(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 width_mult: float = 1.0, **kwargs) -> MobileNetV1:
    """MobileNet v1 (1.0, 224): 4.2 M parameters; ``width_mult`` is alpha."""
    return MobileNetV1(num_classes, in_chans, width_mult, small_input, **kwargs)


@register_model
def mobilenet_v2(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 width_mult: float = 1.0, **kwargs) -> MobileNetV2:
    """MobileNet v2 (1.0): 3.5 M parameters."""
    return MobileNetV2(num_classes, in_chans, width_mult, small_input, **kwargs)


__all__ = ["DepthwiseSeparable", "InvertedResidual", "MOBILENET_V1", "MOBILENET_V2", "MobileNetV1",
           "MobileNetV2"]
