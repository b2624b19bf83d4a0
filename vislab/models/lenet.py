"""LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document recognition").

The first CNN that the notes study: C1 (6 5x5 convs) - S2 (2x2 subsampling) - C3 (16 5x5 convs)
- S4 - C5 (120 5x5 convs, a 1x1 map on 32x32 inputs) - F6 (84 units) - output, with squashing
(tanh) non-linearities.  Two details of the original are options here:

* ``c3_table=True``: C3 uses the paper's sparse connection table (Table I): each of the 16 maps
  sees only 3, 4 or 6 of the 6 S2 maps, "to break the symmetry" and to keep the parameter count
  down (1,516 instead of 2,416 parameters).
* ``pool='subsample'``: S2/S4 sum each 2x2 window, multiply by a trainable coefficient and add a
  trainable bias per map (2 parameters per map); ``'avg'`` and ``'max'`` are the modern stand-ins.

With both options the trainable layers hold exactly the paper's 60,000 parameters (plus the
output layer: a linear layer here instead of the fixed Euclidean RBF units).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.errors import UserError
from vislab.models.base import Classifier
from vislab.models.layers import init_weights
from vislab.models.registry import register_model

# C3_TABLE[j]: the S2 maps that feed C3 map j (LeCun et al. 1998, Table I).
C3_TABLE: tuple[tuple[int, ...], ...] = (
    *(tuple(sorted((i + d) % 6 for d in range(3))) for i in range(6)),   # maps 0-5: 3 neighbours
    *(tuple(sorted((i + d) % 6 for d in range(4))) for i in range(6)),   # maps 6-11: 4 neighbours
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),                            # maps 12-14: 4, split
    (0, 1, 2, 3, 4, 5),                                                  # map 15: all
)


class TableConv2d(nn.Module):
    """A convolution whose output map ``j`` sees only the input maps ``table[j]``."""

    def __init__(self, table: tuple[tuple[int, ...], ...], kernel_size: int) -> None:
        super().__init__()
        self.table = [list(inputs) for inputs in table]
        self.convs = nn.ModuleList(nn.Conv2d(len(inputs), 1, kernel_size) for inputs in table)

    def forward(self, x: Tensor) -> Tensor:   # (B, C_in, H, W) -> (B, len(table), H-k+1, W-k+1)
        return torch.cat([conv(x[:, inputs]) for conv, inputs in zip(self.convs, self.table)], 1)


class Subsample(nn.Module):
    """LeNet's S layers: 2x2 sum times a trainable coefficient plus a trainable bias, per map."""

    def __init__(self, chs: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(chs))
        self.bias = nn.Parameter(torch.zeros(chs))

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, C, H/2, W/2)
        s = 4 * F.avg_pool2d(x, 2)
        return s * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _pool(kind: str, chs: int, act_layer: type[nn.Module]) -> nn.Module:
    if kind == "avg":
        return nn.AvgPool2d(2)
    if kind == "max":
        return nn.MaxPool2d(2)
    if kind == "subsample":                    # the paper squashes the subsampled maps again
        return nn.Sequential(Subsample(chs), act_layer())
    raise UserError(f"unknown LeNet pooling {kind!r}: use 'avg', 'max' or 'subsample'")


class LeNet5(Classifier):
    """C1-S2-C3-S4-C5 features, F6 and the output layer as the head.

    Args:
        num_classes / in_chans: classes and input channels.
        small_input: pad C1 by 2 so that 28x28 inputs (MNIST, Fashion-MNIST) behave as the
            paper's 32x32 ones (the paper itself padded the 28x28 digits to 32x32).
        c3_table: the paper's sparse C3 connections instead of full ones.
        pool: 'avg', 'max' or 'subsample' (the paper's trainable subsampling).
        act_layer: the squashing function (the paper: a scaled tanh).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, small_input: bool = False,
                 c3_table: bool = False, pool: str = "avg",
                 act_layer: type[nn.Module] = nn.Tanh) -> None:
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(in_chans, 6, 5, padding=2 if small_input else 0), act_layer())
        self.s2 = _pool(pool, 6, act_layer)
        c3 = TableConv2d(C3_TABLE, 5) if c3_table else nn.Conv2d(6, 16, 5)
        self.c3 = nn.Sequential(c3, act_layer())
        self.s4 = _pool(pool, 16, act_layer)
        self.c5 = nn.Sequential(nn.Conv2d(16, 120, 5), act_layer())
        self.f6 = nn.Sequential(nn.Linear(120, 84), act_layer())
        self.num_classes = num_classes
        self.num_features = 84
        self.feature_info = [dict(module="s2", num_chs=6, reduction=2),
                             dict(module="s4", num_chs=16, reduction=4),
                             dict(module="c5", num_chs=120, reduction=32)]
        self.head = nn.Linear(84, num_classes) if num_classes > 0 else nn.Identity()
        self.min_input_size = 28 if small_input else 32   # C5's 5x5 conv needs S4's 5x5 maps
        init_weights(self, "xavier")

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, 32, 32) -> (B, 120, 1, 1)
        if min(x.shape[-2:]) < self.min_input_size:
            raise UserError(f"LeNet-5 needs inputs of at least {self.min_input_size}x{self.min_input_size} "
                            f"(two 5x5 convs and two subsamplings before C5), got {x.shape[-2]}x{x.shape[-1]}; "
                            "for smaller images (8x8 digits) use small_cnn or resnet20")
        return self.c5(self.s4(self.c3(self.s2(self.c1(x)))))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.f6(x.mean(dim=(2, 3)))        # (B, 120) -> (B, 84)
        return x if pre_logits else self.head(x)


@register_model
def lenet5(num_classes: int = 10, in_chans: int = 1, small_input: bool = False, c3_table: bool = False,
           pool: str = "avg", **kwargs) -> LeNet5:
    """LeNet-5 for 32x32 inputs (``small_input=True``: 28x28); 61,706 parameters with full C3."""
    return LeNet5(num_classes, in_chans, small_input, c3_table, pool, **kwargs)


__all__ = ["C3_TABLE", "LeNet5", "Subsample", "TableConv2d"]
