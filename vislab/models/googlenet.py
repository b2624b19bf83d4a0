"""GoogLeNet / Inception v1 (Szegedy et al. 2015, "Going deeper with convolutions").

An efficient deep net (22 layers with parameters, ~7 M parameters, beating VGG-16's 138 M):

* a stem (7x7/2 conv, max-pool, 1x1 and 3x3 convs, max-pool) brings 224x224 down to 28x28
  with 192 channels before any expensive layer;
* nine Inception modules: 1x1, 3x3 and 5x5 convs and a 3x3 max-pool run in parallel on the same
  input and are concatenated on channels, so the net can pick the scale that fits.  1x1
  "bottleneck" convs before the 3x3 / 5x5 convs and after the pool keep the channels and the
  FLOPs in check (the naive module's channels could only grow);
* global average pooling and one linear layer instead of VGG's FC layers;
* two auxiliary classifiers on inception4a and inception4d (avg-pool to 4x4, 1x1 conv to 128,
  FC 1024, dropout 0.7, linear) that inject gradient into the middle of the net during
  training; the paper weights their losses by 0.3 and drops them at inference.

Training contract (the same for :class:`vislab.models.inception_v3.InceptionV3`): in train mode,
with ``aux_logits=True``, ``forward`` returns ``{"logits": Tensor, "aux_logits": (Tensor, ...)}``
and the loss is ``CE(logits, y) + model.aux_logits_weight * sum(CE(a, y) for a in aux_logits)``;
in eval mode (or with ``aux_logits=False``) it returns the logits tensor.

Like torchvision, the convs are conv-BN-ReLU (BN, eps 1e-3, came a year later;
``batch_norm=False`` gives the paper's plain convs).  torchvision's third branch uses a 3x3 conv
where the paper has a 5x5 (a known bug kept for its weights): ``branch3_kernel`` chooses, and
:func:`vislab.models.from_torchvision` sets it from the weights.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from torch import Tensor, nn

from vislab.errors import UserError
from vislab.models.base import Classifier, aux_output
from vislab.models.layers import ConvNormAct, init_weights, make_divisible
from vislab.models.registry import register_model

# (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj): the paper's Table 1.
INCEPTION_V1: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


class Inception(nn.Module):
    """1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max-pool -> 1x1, concatenated (paper Fig. 2b)."""

    def __init__(self, in_chs: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int,
                 conv: partial[ConvNormAct], branch3_kernel: int = 5) -> None:
        super().__init__()
        self.out_chs = c1 + c3 + c5 + pool_proj
        self.branch1 = conv(in_chs, c1, 1)
        self.branch2 = nn.Sequential(conv(in_chs, c3r, 1), conv(c3r, c3, 3))
        self.branch3 = nn.Sequential(conv(in_chs, c5r, 1), conv(c5r, c5, branch3_kernel))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), conv(in_chs, pool_proj, 1))

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, c1 + c3 + c5 + pool_proj, H, W)
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool, 1x1 conv to 128, FC 1024, dropout, linear."""

    def __init__(self, in_chs: int, num_classes: int, conv: partial[ConvNormAct],
                 drop: float = 0.7, chs: int = 128, hidden: int = 1024) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)   # the paper's 5x5/3 pool on 14x14 maps
        self.conv = conv(in_chs, chs, 1)
        self.fc1 = nn.Linear(chs * 16, hidden)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, num_classes)
        x = self.conv(self.pool(x)).flatten(1)
        return self.fc2(self.drop(self.act(self.fc1(x))))


class GoogLeNet(Classifier):
    """Stem, nine Inception modules with max-pools between groups, GAP, dropout, linear head;
    optional auxiliary classifiers.

    Args:
        num_classes / in_chans: classes and input channels.
        aux_logits: build the two auxiliary classifiers (used in train mode only).
        small_input: 3x3/1 stem conv and no stem pools, so 28x28 inputs reach inception3 at 28x28
            and inception5 at 7x7, as 224x224 ones do.
        batch_norm: conv-BN-ReLU (torchvision) or conv-ReLU (the paper).
        branch3_kernel: 5 (paper) or 3 (torchvision's weights).
        drop / aux_drop: dropout before the head (paper 0.4, torchvision 0.2) and in the
            auxiliary classifiers.
        width_mult: scales every channel count, aux heads included (rounded to multiples of 8);
            1 is the paper's network.
    """

    aux_logits_weight = 0.3    # the paper's discount weight of the auxiliary losses

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = True,
                 small_input: bool = False, batch_norm: bool = True, branch3_kernel: int = 5,
                 drop: float = 0.4, aux_drop: float = 0.7, width_mult: float = 1.0) -> None:
        super().__init__()
        if width_mult <= 0:
            raise UserError(f"width_mult must be positive (1 is the paper's GoogLeNet), got {width_mult}")
        norm = partial(nn.BatchNorm2d, eps=1e-3) if batch_norm else None
        conv = partial(ConvNormAct, norm_layer=norm)
        c64, c192 = make_divisible(64 * width_mult), make_divisible(192 * width_mult)
        self.stem = nn.Sequential(OrderedDict([
            ("conv1", conv(in_chans, c64, 3, 1) if small_input else conv(in_chans, c64, 7, 2)),
            ("pool1", nn.Identity() if small_input else nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("conv2", conv(c64, c64, 1)),
            ("conv3", conv(c64, c192, 3)),
            ("pool2", nn.Identity() if small_input else nn.MaxPool2d(3, 2, ceil_mode=True)),
        ]))
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        in_chs, out_chs = c192, {}
        for name, cfg in INCEPTION_V1.items():
            chs = [make_divisible(c * width_mult) for c in cfg[1:]]
            blocks[name] = Inception(in_chs, *chs, conv=conv, branch3_kernel=branch3_kernel)
            in_chs = out_chs[name] = blocks[name].out_chs
            if name == "inception3b":
                blocks["pool3"] = nn.MaxPool2d(3, 2, ceil_mode=True)
            elif name == "inception4e":
                blocks["pool4"] = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.blocks = nn.Sequential(blocks)
        r = 1 if small_input else 8
        self.feature_info = [dict(module="stem", num_chs=c192, reduction=r),
                             dict(module="blocks.inception3b", num_chs=out_chs["inception3b"], reduction=r),
                             dict(module="blocks.inception4e", num_chs=out_chs["inception4e"], reduction=2 * r),
                             dict(module="blocks.inception5b", num_chs=in_chs, reduction=4 * r)]
        self.aux_logits = aux_logits
        self._aux_taps = {"inception4a": "aux1", "inception4d": "aux2"} if aux_logits else {}
        if aux_logits:
            aux = partial(InceptionAux, num_classes=num_classes, conv=conv, drop=aux_drop,
                          chs=make_divisible(128 * width_mult), hidden=make_divisible(1024 * width_mult))
            self.aux1 = aux(out_chs["inception4a"])
            self.aux2 = aux(out_chs["inception4d"])
        self.num_classes = num_classes
        self.num_features = in_chs
        self.head_drop = drop
        self.head = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self, "he")

    def reset_classifier(self, num_classes: int) -> None:
        """New head and, if present, new last layers of the auxiliary classifiers."""
        super().reset_classifier(num_classes)
        for aux in self._aux_taps.values():
            fc1 = getattr(self, aux).fc1
            getattr(self, aux).fc2 = nn.Linear(fc1.out_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, 224, 224) -> (B, 1024, 7, 7)
        return self.blocks(self.stem(x))

    def forward(self, x: Tensor) -> Tensor | dict:
        if not (self.training and self._aux_taps):
            return self.forward_head(self.forward_features(x))
        x, aux = self.stem(x), []
        for name, block in self.blocks.named_children():
            x = block(x)
            if name in self._aux_taps:
                aux.append(getattr(self, self._aux_taps[name])(x))
        return aux_output(self.forward_head(x), aux)


@register_model
def googlenet(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
              aux_logits: bool = True, **kwargs) -> GoogLeNet:
    """GoogLeNet (Inception v1) with BN; 7.0 M parameters without, 13.4 M with the aux heads."""
    return GoogLeNet(num_classes, in_chans, aux_logits, small_input, **kwargs)


__all__ = ["GoogLeNet", "INCEPTION_V1", "Inception", "InceptionAux"]
