"""EfficientNet (Tan & Le 2019) and compound scaling.

EfficientNet-B0 is a MobileNet-v2-like net found by architecture search: MBConv blocks
(inverted residuals with a squeeze-and-excitation gate and SiLU; 3x3 or 5x5 depthwise convs),
a 1x1 conv to 1280 channels, GAP, dropout, linear.  The paper's point is how to make it bigger.
Scaling only depth, only width or only resolution saturates (about 80% top-1); scale all three
together with one coefficient phi:

    depth d = alpha^phi,  width w = beta^phi,  resolution r = gamma^phi,
    alpha * beta^2 * gamma^2 ~ 2,  alpha, beta, gamma >= 1,

so FLOPs (proportional to d * w^2 * r^2) grow by about 2^phi.  A small grid search at phi = 1
gave alpha = 1.2, beta = 1.1, gamma = 1.15.  :func:`compound_scale` builds a member from B0
with these rules; :func:`compound_scaling_table` compares them with the released B1-B7, whose
coefficients (here as torchvision has them) were rounded and tuned by hand.
"""

from __future__ import annotations

import math
from functools import partial

from torch import Tensor, nn

from vislab.models.base import Classifier
from vislab.models.layers import ConvNormAct, init_weights, make_divisible
from vislab.models.mobilenet import InvertedResidual
from vislab.models.registry import register_model

# EfficientNet-B0 (paper Table 1) after the stem: (expand t, kernel, stride, in, out, repeats).
EFFICIENTNET_B0: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1),
)

# Released models: (width, depth, resolution, dropout).  Width, depth and dropout as in
# torchvision; resolutions as released by the authors (torchvision evaluates B2 at 288).
EFFICIENTNET_PARAMS: dict[str, tuple[float, float, int, float]] = {
    "b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5),
}

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15     # the paper's grid-searched depth, width, resolution bases


class EfficientNet(Classifier):
    """3x3/2 stem conv, seven stages of MBConv blocks scaled by ``width_mult`` (channels, rounded
    to multiples of 8) and ``depth_mult`` (repeats, rounded up), 1x1 conv to 4x the last width,
    GAP, dropout, linear head.

    Args:
        width_mult / depth_mult: the scaling coefficients (B0: 1, 1).
        num_classes / in_chans: classes and input channels.
        img_size: the resolution the member is meant for (metadata: any size works).
        small_input: stride-1 stem and stride-1 second stage (reduction 8, not 32).
        drop: dropout before the head; drop_path_rate: stochastic depth of the last block
            (linearly less for earlier ones).
        norm_layer: B5-B7's torchvision weights use BN with eps 1e-3, momentum 0.01.
    """

    def __init__(self, width_mult: float = 1.0, depth_mult: float = 1.0, num_classes: int = 1000,
                 in_chans: int = 3, img_size: int = 224, small_input: bool = False, drop: float = 0.2,
                 drop_path_rate: float = 0.2, norm_layer: type[nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        self.width_mult, self.depth_mult, self.img_size = width_mult, depth_mult, img_size
        chs = make_divisible(32 * width_mult)
        self.stem = ConvNormAct(in_chans, chs, 3, 1 if small_input else 2, norm_layer=norm_layer,
                                act_layer=nn.SiLU)
        reduction = 1 if small_input else 2
        repeats = [math.ceil(n * depth_mult) for *_, n in EFFICIENTNET_B0]
        total, done = sum(repeats), 0
        stages, self.feature_info = [], []
        for i, ((t, k, s, _, c, _), n) in enumerate(zip(EFFICIENTNET_B0, repeats)):
            s = 1 if small_input and i == 1 else s
            out = make_divisible(c * width_mult)
            blocks = []
            for j in range(n):
                blocks.append(InvertedResidual(chs, out, s if j == 0 else 1, t, k, se_ratio=0.25,
                                               drop_path=drop_path_rate * done / total,
                                               norm_layer=norm_layer, act_layer=nn.SiLU))
                chs, done = out, done + 1
            stages.append(nn.Sequential(*blocks))
            reduction *= s
            self.feature_info.append(dict(module=f"stages.{i}", num_chs=out, reduction=reduction))
        self.stages = nn.Sequential(*stages)
        self.num_features = 4 * chs
        self.conv_head = ConvNormAct(chs, self.num_features, 1, norm_layer=norm_layer, act_layer=nn.SiLU)
        self.num_classes = num_classes
        self.head_drop = drop
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self, "he")

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, 4 c_last, H/32, W/32)
        return self.conv_head(self.stages(self.stem(x)))


def compound_scale(phi: float, num_classes: int = 1000, in_chans: int = 3, alpha: float = ALPHA,
                   beta: float = BETA, gamma: float = GAMMA, **kwargs) -> EfficientNet:
    """The EfficientNet that compound scaling derives from B0: depth ``alpha^phi``, width
    ``beta^phi``, resolution ``224 gamma^phi`` (in ``model.img_size``); FLOPs ~ 2^phi."""
    return EfficientNet(beta ** phi, alpha ** phi, num_classes, in_chans,
                        img_size=round(224 * gamma ** phi), **kwargs)


def compound_scaling_table(alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA) -> list[dict]:
    """For each released B0-B7: its (width, depth, resolution), compound scaling's at phi = i, and
    the FLOPs of both relative to B0 under the paper's ``FLOPs ~ d w^2 r^2`` approximation.

    ``phi_flops`` is the phi at which compound scaling would match the released model's FLOPs.
    """
    base = alpha * beta ** 2 * gamma ** 2
    rows = []
    for phi, (name, (w, d, r, _)) in enumerate(EFFICIENTNET_PARAMS.items()):
        flops = d * w ** 2 * (r / 224) ** 2
        rows.append(dict(
            model=f"efficientnet_{name}", phi=phi,
            width=w, depth=d, resolution=r, flops=flops,
            width_phi=beta ** phi, depth_phi=alpha ** phi, resolution_phi=round(224 * gamma ** phi),
            flops_phi=base ** phi, phi_flops=math.log(flops) / math.log(base),
        ))
    return rows


def _efficientnet(name: str, num_classes: int, in_chans: int, small_input: bool, **kwargs) -> EfficientNet:
    """A released member; ``width_mult`` / ``depth_mult`` in ``kwargs`` rescale it (e.g. a
    narrower B0 for a CPU budget, as MobileNet's width multiplier does)."""
    w, d, r, drop = EFFICIENTNET_PARAMS[name]
    w, d = kwargs.pop("width_mult", w), kwargs.pop("depth_mult", d)
    if name in ("b5", "b6", "b7"):
        kwargs.setdefault("norm_layer", partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01))
    kwargs.setdefault("drop", drop)
    return EfficientNet(w, d, num_classes, in_chans, img_size=r, small_input=small_input, **kwargs)


@register_model
def efficientnet_b0(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                    **kwargs) -> EfficientNet:
    """EfficientNet-B0 (224x224): 5.3 M parameters."""
    return _efficientnet("b0", num_classes, in_chans, small_input, **kwargs)


@register_model
def efficientnet_b1(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                    **kwargs) -> EfficientNet:
    """EfficientNet-B1 (w 1.0, d 1.1, 240x240): 7.8 M parameters."""
    return _efficientnet("b1", num_classes, in_chans, small_input, **kwargs)


@register_model
def efficientnet_b2(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                    **kwargs) -> EfficientNet:
    """EfficientNet-B2 (w 1.1, d 1.2, 260x260): 9.1 M parameters."""
    return _efficientnet("b2", num_classes, in_chans, small_input, **kwargs)


@register_model
def efficientnet_b3(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                    **kwargs) -> EfficientNet:
    """EfficientNet-B3 (w 1.2, d 1.4, 300x300): 12.2 M parameters."""
    return _efficientnet("b3", num_classes, in_chans, small_input, **kwargs)


@register_model
def efficientnet_b4(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                    **kwargs) -> EfficientNet:
    """EfficientNet-B4 (w 1.4, d 1.8, 380x380): 19.3 M parameters."""
    return _efficientnet("b4", num_classes, in_chans, small_input, **kwargs)


@register_model
def efficientnet_b5(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                    **kwargs) -> EfficientNet:
    """EfficientNet-B5 (w 1.6, d 2.2, 456x456): 30.4 M parameters."""
    return _efficientnet("b5", num_classes, in_chans, small_input, **kwargs)


@register_model
def efficientnet_b6(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                    **kwargs) -> EfficientNet:
    """EfficientNet-B6 (w 1.8, d 2.6, 528x528): 43.0 M parameters."""
    return _efficientnet("b6", num_classes, in_chans, small_input, **kwargs)


@register_model
def efficientnet_b7(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                    **kwargs) -> EfficientNet:
    """EfficientNet-B7 (w 2.0, d 3.1, 600x600): 66.3 M parameters."""
    return _efficientnet("b7", num_classes, in_chans, small_input, **kwargs)


__all__ = ["ALPHA", "BETA", "EFFICIENTNET_B0", "EFFICIENTNET_PARAMS", "EfficientNet", "GAMMA",
           "compound_scale", "compound_scaling_table"]
