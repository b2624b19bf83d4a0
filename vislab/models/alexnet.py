"""AlexNet (Krizhevsky et al. 2012) and ZFNet (Zeiler & Fergus 2014).

AlexNet: five conv layers (an 11x11/4 stem, then 5x5 and three 3x3), three max-pools and a
three-layer MLP that holds ~94% of the 61 M parameters; ReLU, dropout 0.5, heavy augmentation.
Two details of the 2012 network are options:

* ``groups=2``: the net was split over two GPUs, so conv2, conv4 and conv5 only see the maps on
  their own GPU: grouped convolutions (conv3 and the MLP are connected across).  ResNeXt later
  reused grouped convolutions on purpose.
* ``lrn=True``: local response normalisation after conv1 and conv2 (ReLU -> LRN -> pool), with
  the paper's k=2, n=5, alpha=1e-4, beta=0.75.  The paper divides by ``k + alpha * sum``;
  ``nn.LocalResponseNorm`` divides by ``k + alpha/n * sum``, hence ``alpha = 5e-4`` here.

The registered ``alexnet`` is torchvision's (the single-GPU variant of "One weird trick",
Krizhevsky 2014: 64-192-384-256-256 channels, no LRN); ``widths=PAPER_WIDTHS, groups=2,
lrn=True`` gives the 2012 network (60,965,224 parameters).

ZFNet keeps AlexNet's plan but, having seen dead and aliased filters in the visualised first
layer, uses a gentler stem: a 7x7/2 conv1 (instead of 11x11/4) and a stride-2 conv2, reaching
the same 13x13 resolution with two layers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from vislab.models.base import Classifier
from vislab.models.layers import init_weights
from vislab.models.registry import register_model

PAPER_WIDTHS = (96, 256, 384, 384, 256)     # AlexNet 2012 (both GPUs together) and ZFNet


class AlexNet(Classifier):
    """Five convs with ReLU (optional LRN) and three max-pools, a 6x6 average pool, a two-layer
    MLP (``pre_logits``) and the linear ``head``.

    Args:
        num_classes / in_chans: classes and input channels.
        widths: channels of conv1..conv5.
        conv1: (kernel, stride, padding) of the stem conv.
        conv2: (stride, padding) of the 5x5 conv2.
        groups: groups of conv2, conv4 and conv5 (2: the two-GPU split).
        lrn: local response normalisation after conv1 and conv2.
        ceil_mode: of the 3x3/2 max-pools (ZFNet's 110 -> 55 -> 26 -> 13 -> 6 sizes need it).
        small_input: conv1 becomes 3x3/1, conv2 stride 1 and the first pool goes, so a 28x28
            input reaches the MLP at 6x6 like a 224x224 one.
        hidden / drop: MLP width and dropout.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3,
                 widths: Sequence[int] = (64, 192, 384, 256, 256),
                 conv1: tuple[int, int, int] = (11, 4, 2), conv2: tuple[int, int] = (1, 2),
                 groups: int = 1, lrn: bool = False, ceil_mode: bool = False,
                 small_input: bool = False, hidden: int = 4096, drop: float = 0.5) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = widths
        k1, s1, p1 = (3, 1, 1) if small_input else conv1
        s2, p2 = (1, 2) if small_input else conv2

        def pool() -> nn.Module:
            return nn.MaxPool2d(3, 2, ceil_mode=ceil_mode)

        def norm() -> nn.Module:
            return nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0) if lrn else nn.Identity()

        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_chans, c1, k1, s1, p1)), ("act1", nn.ReLU(inplace=True)),
            ("norm1", norm()), ("pool1", nn.Identity() if small_input else pool()),
            ("conv2", nn.Conv2d(c1, c2, 5, s2, p2, groups=groups)), ("act2", nn.ReLU(inplace=True)),
            ("norm2", norm()), ("pool2", pool()),
            ("conv3", nn.Conv2d(c2, c3, 3, padding=1)), ("act3", nn.ReLU(inplace=True)),
            ("conv4", nn.Conv2d(c3, c4, 3, padding=1, groups=groups)), ("act4", nn.ReLU(inplace=True)),
            ("conv5", nn.Conv2d(c4, c5, 3, padding=1, groups=groups)), ("act5", nn.ReLU(inplace=True)),
            ("pool5", pool()),
        ]))
        r1 = 1 if small_input else s1 * 2
        r2 = r1 * s2 * 2
        self.feature_info = [dict(module="features.pool1", num_chs=c1, reduction=r1),
                             dict(module="features.pool2", num_chs=c2, reduction=r2),
                             dict(module="features.pool5", num_chs=c5, reduction=r2 * 2)]
        self.pool = nn.AdaptiveAvgPool2d(6)
        self.pre_logits = nn.Sequential(OrderedDict([
            ("drop1", nn.Dropout(drop)), ("fc1", nn.Linear(c5 * 36, hidden)), ("act1", nn.ReLU(inplace=True)),
            ("drop2", nn.Dropout(drop)), ("fc2", nn.Linear(hidden, hidden)), ("act2", nn.ReLU(inplace=True)),
        ]))
        self.num_classes = num_classes
        self.num_features = hidden
        self.head = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self, "he")

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, 224, 224) -> (B, c5, 6, 6)
        return self.features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pre_logits(self.pool(x).flatten(1))      # (B, c5 * 36) -> (B, hidden)
        return x if pre_logits else self.head(x)


@register_model
def alexnet(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs) -> AlexNet:
    """AlexNet as torchvision has it (61.1 M parameters); see the module docstring for the 2012 net."""
    return AlexNet(num_classes, in_chans, small_input=small_input, **kwargs)


@register_model
def zfnet(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs) -> AlexNet:
    """ZFNet: 7x7/2 conv1, 5x5/2 conv2, 96-256-384-384-256 channels, LRN; 62.4 M parameters."""
    kwargs = dict(widths=PAPER_WIDTHS, conv1=(7, 2, 1), conv2=(2, 0), lrn=True, ceil_mode=True) | kwargs
    return AlexNet(num_classes, in_chans, small_input=small_input, **kwargs)


__all__ = ["AlexNet", "PAPER_WIDTHS"]
