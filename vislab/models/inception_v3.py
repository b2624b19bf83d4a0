"""Inception v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture").

Inception v1 made cheaper by factorising convolutions:

* a 5x5 conv becomes two stacked 3x3 convs (as VGG argued: same receptive field, 28% fewer
  weights, one more non-linearity) - module A, 35x35 grid;
* an nxn conv becomes a 1xn followed by an nx1 (asymmetric factorisation, n=7 on the 17x17
  grid) - module C; on the 8x8 grid the 1x3 and 3x1 run in parallel and are concatenated to
  widen the output - module E;
* grid reduction without a representational bottleneck: stride-2 conv branches run in parallel
  with a stride-2 pool and are concatenated (modules B and D), instead of pooling first;
* one auxiliary classifier (with BN) on the 17x17 grid, a regulariser rather than a gradient
  helper; label smoothing and RMSProp are the paper's training recipe.

Same training contract as :mod:`vislab.models.googlenet`: in train mode with ``aux_logits=True``
``forward`` returns ``{"logits": ..., "aux_logits": (aux,)}``; ``aux_logits_weight`` is 0.4, the
value of the TF-slim and torchvision recipes (the paper gives none).  The layout follows
torchvision's (ported from TF-slim), so its weights load with :func:`vislab.models.from_torchvision`;
those weights expect inputs normalised to [-1, 1] (mean = std = 0.5), which is what
torchvision's ``transform_input=True`` converts ImageNet-normalised inputs to.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from vislab.errors import UserError
from vislab.models.base import Classifier, aux_output
from vislab.models.layers import ConvNormAct, init_weights, make_divisible
from vislab.models.registry import register_model

conv = partial(ConvNormAct, norm_layer=partial(nn.BatchNorm2d, eps=1e-3))


def _scaler(width_mult: float) -> Callable[[int], int]:
    """Channel count -> that count times ``width_mult``, rounded to a multiple of 8 (1: as is)."""
    return lambda c: make_divisible(c * width_mult)


class InceptionA(nn.Module):
    """35x35 module: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 (a factorised 5x5) | avg-pool -> 1x1."""

    def __init__(self, in_chs: int, pool_features: int, width_mult: float = 1.0) -> None:
        super().__init__()
        w = _scaler(width_mult)
        self.branch1x1 = conv(in_chs, w(64), 1)
        self.branch5x5_1 = conv(in_chs, w(48), 1)
        self.branch5x5_2 = conv(w(48), w(64), 5)
        self.branch3x3dbl_1 = conv(in_chs, w(64), 1)
        self.branch3x3dbl_2 = conv(w(64), w(96), 3)
        self.branch3x3dbl_3 = conv(w(96), w(96), 3)
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.branch_pool = conv(in_chs, w(pool_features), 1)
        self.out_chs = 2 * w(64) + w(96) + w(pool_features)

    def forward(self, x: Tensor) -> Tensor:   # (B, C, 35, 35) -> (B, 224 + pool_features, 35, 35)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(self.pool(x))], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: stride-2 3x3 | 1x1 -> 3x3 -> stride-2 3x3 | stride-2 max-pool."""

    def __init__(self, in_chs: int, width_mult: float = 1.0) -> None:
        super().__init__()
        w = _scaler(width_mult)
        self.branch3x3 = conv(in_chs, w(384), 3, 2, padding=0)
        self.branch3x3dbl_1 = conv(in_chs, w(64), 1)
        self.branch3x3dbl_2 = conv(w(64), w(96), 3)
        self.branch3x3dbl_3 = conv(w(96), w(96), 3, 2, padding=0)
        self.pool = nn.MaxPool2d(3, 2)
        self.out_chs = w(384) + w(96) + in_chs

    def forward(self, x: Tensor) -> Tensor:   # (B, C, 35, 35) -> (B, 480 + C, 17, 17)
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, self.pool(x)], 1)


class InceptionC(nn.Module):
    """17x17 module with 7x7 convs factorised into 1x7 and 7x1."""

    def __init__(self, in_chs: int, c7: int, width_mult: float = 1.0) -> None:
        super().__init__()
        w = _scaler(width_mult)
        self.branch1x1 = conv(in_chs, w(192), 1)
        self.branch7x7_1 = conv(in_chs, w(c7), 1)
        self.branch7x7_2 = conv(w(c7), w(c7), (1, 7), padding=(0, 3))
        self.branch7x7_3 = conv(w(c7), w(192), (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = conv(in_chs, w(c7), 1)
        self.branch7x7dbl_2 = conv(w(c7), w(c7), (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = conv(w(c7), w(c7), (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = conv(w(c7), w(c7), (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = conv(w(c7), w(192), (1, 7), padding=(0, 3))
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.branch_pool = conv(in_chs, w(192), 1)
        self.out_chs = 4 * w(192)

    def forward(self, x: Tensor) -> Tensor:   # (B, 768, 17, 17) -> (B, 768, 17, 17)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7d = layer(b7d)
        return torch.cat([self.branch1x1(x), b7, b7d, self.branch_pool(self.pool(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1 -> stride-2 3x3 | 1x1 -> 1x7 -> 7x1 -> stride-2 3x3 | max-pool."""

    def __init__(self, in_chs: int, width_mult: float = 1.0) -> None:
        super().__init__()
        w = _scaler(width_mult)
        self.branch3x3_1 = conv(in_chs, w(192), 1)
        self.branch3x3_2 = conv(w(192), w(320), 3, 2, padding=0)
        self.branch7x7x3_1 = conv(in_chs, w(192), 1)
        self.branch7x7x3_2 = conv(w(192), w(192), (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = conv(w(192), w(192), (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = conv(w(192), w(192), 3, 2, padding=0)
        self.pool = nn.MaxPool2d(3, 2)
        self.out_chs = w(320) + w(192) + in_chs

    def forward(self, x: Tensor) -> Tensor:   # (B, 768, 17, 17) -> (B, 1280, 8, 8)
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, self.pool(x)], 1)


class InceptionE(nn.Module):
    """8x8 module: the 3x3s end in parallel 1x3 and 3x1 convs, concatenated (wider output)."""

    def __init__(self, in_chs: int, width_mult: float = 1.0) -> None:
        super().__init__()
        w = _scaler(width_mult)
        self.branch1x1 = conv(in_chs, w(320), 1)
        self.branch3x3_1 = conv(in_chs, w(384), 1)
        self.branch3x3_2a = conv(w(384), w(384), (1, 3), padding=(0, 1))
        self.branch3x3_2b = conv(w(384), w(384), (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = conv(in_chs, w(448), 1)
        self.branch3x3dbl_2 = conv(w(448), w(384), 3)
        self.branch3x3dbl_3a = conv(w(384), w(384), (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = conv(w(384), w(384), (3, 1), padding=(1, 0))
        self.pool = nn.AvgPool2d(3, 1, 1)
        self.branch_pool = conv(in_chs, w(192), 1)
        self.out_chs = w(320) + 4 * w(384) + w(192)

    def forward(self, x: Tensor) -> Tensor:   # (B, C, 8, 8) -> (B, 2048, 8, 8)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3d = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], 1)
        return torch.cat([self.branch1x1(x), b3, b3d, self.branch_pool(self.pool(x))], 1)


class InceptionAuxV3(nn.Module):
    """Auxiliary classifier on the 17x17 grid: 5x5/3 avg-pool, 1x1 conv 128, 5x5 conv 768, linear."""

    def __init__(self, in_chs: int, num_classes: int, small_input: bool = False,
                 width_mult: float = 1.0) -> None:
        super().__init__()
        w = _scaler(width_mult)
        # Small inputs leave the grid below 17x17: pool to the 5x5 that the 5x5 conv needs.
        self.pool = nn.AdaptiveAvgPool2d(5) if small_input else nn.AvgPool2d(5, 3)
        self.conv0 = conv(in_chs, w(128), 1)
        self.conv1 = conv(w(128), w(768), 5, padding=0)
        self.fc = nn.Linear(w(768), num_classes)

    def forward(self, x: Tensor) -> Tensor:   # (B, 768, 17, 17) -> (B, num_classes)
        x = self.conv1(self.conv0(self.pool(x)))
        return self.fc(x.mean(dim=(2, 3)))


class InceptionV3(Classifier):
    """Stem, 3 x A, B, 4 x C, (aux), D, 2 x E, GAP, dropout 0.5, linear head.

    Args:
        num_classes / in_chans: classes and input channels.
        aux_logits: build the auxiliary classifier (used in train mode only).
        small_input: stride-1, padded stem convs and no stem pools (28x28 inputs reach the
            17x17-grid modules at 13x13); the auxiliary head pools adaptively.
        drop: dropout before the head.
        width_mult: scales every channel count, aux head included (rounded to multiples of 8);
            1 is the paper's network.
    """

    aux_logits_weight = 0.4

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True,
                 small_input: bool = False, drop: float = 0.5, width_mult: float = 1.0) -> None:
        super().__init__()
        if width_mult <= 0:
            raise UserError(f"width_mult must be positive (1 is the paper's Inception v3), got {width_mult}")
        w = _scaler(width_mult)
        valid = 1 if small_input else 0        # the stem's unpadded convs get padding 1 when small
        self.stem = nn.Sequential(OrderedDict([
            ("Conv2d_1a_3x3", conv(in_chans, w(32), 3, 1 if small_input else 2, padding=valid)),
            ("Conv2d_2a_3x3", conv(w(32), w(32), 3, padding=valid)),
            ("Conv2d_2b_3x3", conv(w(32), w(64), 3)),
            ("maxpool1", nn.Identity() if small_input else nn.MaxPool2d(3, 2)),
            ("Conv2d_3b_1x1", conv(w(64), w(80), 1)),
            ("Conv2d_4a_3x3", conv(w(80), w(192), 3, padding=valid)),
            ("maxpool2", nn.Identity() if small_input else nn.MaxPool2d(3, 2)),
        ]))
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        chs, out_chs = w(192), {}
        for name, block, args in (("Mixed_5b", InceptionA, (32,)), ("Mixed_5c", InceptionA, (64,)),
                                  ("Mixed_5d", InceptionA, (64,)), ("Mixed_6a", InceptionB, ()),
                                  ("Mixed_6b", InceptionC, (128,)), ("Mixed_6c", InceptionC, (160,)),
                                  ("Mixed_6d", InceptionC, (160,)), ("Mixed_6e", InceptionC, (192,)),
                                  ("Mixed_7a", InceptionD, ()),
                                  ("Mixed_7b", InceptionE, ()), ("Mixed_7c", InceptionE, ())):
            blocks[name] = block(chs, *args, width_mult=width_mult)
            chs = out_chs[name] = blocks[name].out_chs     # 256, 288, 288, 768 x 5, 1280, 2048 x 2 at width 1
        self.blocks = nn.Sequential(blocks)
        r = 1 if small_input else 8
        self.feature_info = [dict(module="stem", num_chs=w(192), reduction=r),
                             dict(module="blocks.Mixed_5d", num_chs=out_chs["Mixed_5d"], reduction=r),
                             dict(module="blocks.Mixed_6e", num_chs=out_chs["Mixed_6e"], reduction=2 * r),
                             dict(module="blocks.Mixed_7c", num_chs=chs, reduction=4 * r)]
        self.aux_logits = aux_logits
        if aux_logits:
            self.aux = InceptionAuxV3(out_chs["Mixed_6e"], num_classes, small_input, width_mult)
        self.num_classes = num_classes
        self.num_features = chs
        self.head_drop = drop
        self.head = nn.Linear(chs, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self, "he")

    def reset_classifier(self, num_classes: int) -> None:
        """New head and, if present, a new last layer of the auxiliary classifier."""
        super().reset_classifier(num_classes)
        if self.aux_logits:
            self.aux.fc = nn.Linear(self.aux.fc.in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, 299, 299) -> (B, 2048, 8, 8)
        return self.blocks(self.stem(x))

    def forward(self, x: Tensor) -> Tensor | dict:
        if not (self.training and self.aux_logits):
            return self.forward_head(self.forward_features(x))
        x = self.stem(x)
        for name, block in self.blocks.named_children():
            x = block(x)
            if name == "Mixed_6e":
                aux = self.aux(x)
        return aux_output(self.forward_head(x), [aux])


@register_model
def inception_v3(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 aux_logits: bool = True, **kwargs) -> InceptionV3:
    """Inception v3 for 299x299 inputs (at least 75x75); 27.2 M parameters with the aux head."""
    return InceptionV3(num_classes, in_chans, aux_logits, small_input, **kwargs)


__all__ = ["InceptionA", "InceptionAuxV3", "InceptionB", "InceptionC", "InceptionD", "InceptionE",
           "InceptionV3"]
