"""ResNet family: residual learning and what grew out of it.

* ResNet-18/34/50/101/152 (He et al. 2016, "Deep Residual Learning"): a stem (7x7/2 conv and a
  3x3/2 max-pool, as GoogLeNet), four VGG-like stages that halve the resolution and double the
  width, global average pooling and one linear layer.  Each block learns a residual ``F(x)`` that
  is added to ``x``: the deep layers only have to stay close to the identity, and the gradient
  flows along the shortcuts.  18/34 use the basic block (two 3x3 convs); 50/101/152 the
  bottleneck (1x1 reduce, 3x3, 1x1 expand x4), which is deeper but cheaper.  As in torchvision
  (ResNet "v1.5"), the bottleneck's stride sits on the 3x3 conv, not on the first 1x1.
* Shortcuts when the shape changes (paper, Sec. 3.3 and Table 3): option ``'A'`` subsamples and
  pads the new channels with zeros (no parameters), option ``'B'`` projects with a 1x1 conv + BN
  (torchvision's choice), option ``'C'`` projects on every block.
* CIFAR ResNets 20/32/44/56/110 (paper, Sec. 4.2): 6n+2 layers, a 3x3 stem, three stages of n
  basic blocks with 16/32/64 channels and option-A shortcuts.
* ResNeXt (Xie et al. 2017): the bottleneck's 3x3 conv is split into ``groups`` (cardinality)
  parallel paths of ``base_width`` channels each, i.e. a grouped convolution.
* Wide ResNet-50-2/101-2 (torchvision): bottlenecks with twice as many inner channels.
* SE-ResNet (Hu et al. 2018): a Squeeze-and-Excitation gate (reduction 16) on each residual
  branch, before the addition.
* Dilated ResNet (``output_stride`` 16 or 8; DeepLab, Chen et al. 2017, and torchvision's
  ``replace_stride_with_dilation``): a stage that would take the total stride beyond
  ``output_stride`` keeps stride 1 and dilates its 3x3 convs instead, the dilation doubling at
  each such stage.  The conv that would have carried the stride still sees the old lattice and
  keeps the previous dilation; every conv after it sees the finer lattice and takes the new one.
  Each unit then computes what the strided network computes (same receptive field, same
  parameters), only at every position instead of every 2nd/4th: ``dilated[..., ::4, ::4]`` of
  an output-stride-8 ResNet equals the plain ResNet's last map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from vislab.errors import UserError
from vislab.models.base import Classifier
from vislab.models.layers import ConvNormAct, DropPath, SqueezeExcite, init_weights
from vislab.models.registry import register_model

SHORTCUTS = ("A", "B", "C")


class ZeroPadShortcut(nn.Module):
    """Shortcut option A: identity subsampled by ``stride``, extra channels filled with zeros."""

    def __init__(self, extra_chs: int, stride: int) -> None:
        super().__init__()
        self.extra_chs, self.stride = extra_chs, stride

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, C + extra, H/s, W/s)
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_chs))


def make_shortcut(in_chs: int, out_chs: int, stride: int, kind: str,
                  norm_layer: type[nn.Module]) -> nn.Module:
    """The shortcut of a residual block for option ``kind`` ('A', 'B' or 'C')."""
    if kind not in SHORTCUTS:
        raise UserError(f"unknown shortcut option {kind!r}: use 'A' (zero-padding), "
                         "'B' (projection when the shape changes) or 'C' (always projection)")
    if kind == "C" or in_chs != out_chs or stride != 1:
        if kind == "A":
            return ZeroPadShortcut(out_chs - in_chs, stride)
        return ConvNormAct(in_chs, out_chs, 1, stride, norm_layer=norm_layer, act_layer=None)
    return nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus the shortcut, then ReLU (ResNet-18/34, CIFAR ResNets).

    Args:
        in_chs / planes: input and output channels; stride: of the first conv.
        shortcut: option 'A', 'B' or 'C'; se_reduction: SE gate reduction (0: none).
        groups / base_width: must stay 1 / 64 (grouped basic blocks are not a published design).
        drop_path: stochastic-depth probability of the residual branch.
        dilation: of the convs after the stride site (here ``conv2``); first_dilation: of the
            conv at the stride site (``conv1``), default ``dilation``.  The first block of a
            dilated stage takes the previous stage's dilation there (see the module docstring).
    """

    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int = 1, shortcut: str = "B",
                 groups: int = 1, base_width: int = 64, se_reduction: int = 0,
                 drop_path: float = 0.0, norm_layer: type[nn.Module] = nn.BatchNorm2d,
                 act_layer: type[nn.Module] = nn.ReLU, dilation: int = 1,
                 first_dilation: int | None = None) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise UserError("BasicBlock takes groups=1 and base_width=64; use Bottleneck for ResNeXt")
        self.conv1 = ConvNormAct(in_chs, planes, 3, stride, dilation=first_dilation or dilation,
                                 norm_layer=norm_layer, act_layer=act_layer)
        self.conv2 = ConvNormAct(planes, planes, 3, dilation=dilation, norm_layer=norm_layer,
                                 act_layer=None)
        self.se = SqueezeExcite(planes, planes // se_reduction) if se_reduction else nn.Identity()
        self.shortcut = make_shortcut(in_chs, planes, stride, shortcut, norm_layer)
        self.drop_path = DropPath(drop_path)
        self.act = act_layer(inplace=True)

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, planes, H/s, W/s)
        shortcut = self.shortcut(x)
        x = self.se(self.conv2(self.conv1(x)))
        return self.act(self.drop_path(x) + shortcut)

    def zero_init_last(self) -> None:
        """Start as the identity: the last BN scales the residual branch by zero (Goyal et al. 2017)."""
        nn.init.zeros_(self.conv2[1].weight)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt, stride here), 1x1 expand x4, plus the shortcut.

    Args: as :class:`BasicBlock`; the inner width is ``planes * base_width / 64 * groups``.  The
    3x3 conv is the stride site, so it takes ``first_dilation`` (default ``dilation``), as
    torchvision's first block of a dilated stage takes the previous dilation.
    """

    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1, shortcut: str = "B",
                 groups: int = 1, base_width: int = 64, se_reduction: int = 0,
                 drop_path: float = 0.0, norm_layer: type[nn.Module] = nn.BatchNorm2d,
                 act_layer: type[nn.Module] = nn.ReLU, dilation: int = 1,
                 first_dilation: int | None = None) -> None:
        super().__init__()
        width = int(planes * base_width / 64) * groups
        out_chs = planes * self.expansion
        self.conv1 = ConvNormAct(in_chs, width, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.conv2 = ConvNormAct(width, width, 3, stride, groups=groups,
                                 dilation=first_dilation or dilation, norm_layer=norm_layer,
                                 act_layer=act_layer)
        self.conv3 = ConvNormAct(width, out_chs, 1, norm_layer=norm_layer, act_layer=None)
        self.se = SqueezeExcite(out_chs, out_chs // se_reduction) if se_reduction else nn.Identity()
        self.shortcut = make_shortcut(in_chs, out_chs, stride, shortcut, norm_layer)
        self.drop_path = DropPath(drop_path)
        self.act = act_layer(inplace=True)

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, 4 planes, H/s, W/s)
        shortcut = self.shortcut(x)
        x = self.se(self.conv3(self.conv2(self.conv1(x))))
        return self.act(self.drop_path(x) + shortcut)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3[1].weight)


class ResNet(Classifier):
    """Stem, stages of residual blocks, global average pooling, linear head.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`; layers: blocks per stage.
        num_classes / in_chans: classes and input channels.
        widths: ``planes`` of each stage (outputs are ``planes * block.expansion``).
        stem_width: channels of the stem conv.
        small_input: 3x3/1 stem conv and no max-pool (for 28x28 / 32x32 inputs: the 7x7/2 conv
            and the pool would leave a 1x1 map after stage 4).
        shortcut: 'A', 'B' or 'C' (see :func:`make_shortcut`).
        groups / base_width: ResNeXt cardinality and width of each group.
        se_reduction: Squeeze-and-Excitation reduction ratio (0: plain ResNet; 16: SE-ResNet).
        drop_path_rate: stochastic depth, growing linearly to this value over the blocks.
        zero_init_last: zero the last BN of every block, so each starts as the identity.
        output_stride: the largest total stride (8, 16 or 32); stages beyond it are dilated
            instead of strided (see the module docstring).  32 leaves the usual network as
            built, also a ``small_input`` one (total stride 8); 8 or 16 must be reachable: the
            network must reduce at least that much without dilation.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: Sequence[int],
                 num_classes: int = 1000, in_chans: int = 3,
                 widths: Sequence[int] = (64, 128, 256, 512), stem_width: int = 64,
                 small_input: bool = False, shortcut: str = "B", groups: int = 1,
                 base_width: int = 64, se_reduction: int = 0, drop_path_rate: float = 0.0,
                 zero_init_last: bool = True, norm_layer: type[nn.Module] = nn.BatchNorm2d,
                 act_layer: type[nn.Module] = nn.ReLU, output_stride: int = 32) -> None:
        super().__init__()
        if len(layers) != len(widths):
            raise UserError(f"layers {tuple(layers)} and widths {tuple(widths)} differ in length: "
                            "give one width per stage")
        if output_stride not in (8, 16, 32):
            raise UserError(f"output_stride must be 8, 16 or 32 (the total stride of the last "
                            f"stage), got {output_stride!r}")
        if small_input:
            self.stem = ConvNormAct(in_chans, stem_width, 3, 1, norm_layer=norm_layer, act_layer=act_layer)
            self.stem_pool: nn.Module = nn.Identity()
            reduction = 1
        else:
            self.stem = ConvNormAct(in_chans, stem_width, 7, 2, norm_layer=norm_layer, act_layer=act_layer)
            self.stem_pool = nn.MaxPool2d(3, 2, 1)
            reduction = 4

        total, done = sum(layers), 0
        in_chs, stages, self.feature_info = stem_width, [], []
        undilated = reduction * 2 ** (len(layers) - 1)    # stage 0 keeps stride 1, the rest halve
        if output_stride != 32 and undilated < output_stride:
            raise UserError(f"output_stride {output_stride} is not reachable: this ResNet only "
                            f"reduces by {undilated}{' (small_input stem)' if small_input else ''}; "
                            f"use output_stride <= {undilated}, or 32 to leave it as built")
        dilation = 1
        for i, (n, planes) in enumerate(zip(layers, widths)):
            stride, first_dilation = 1 if i == 0 else 2, dilation
            if reduction * stride > output_stride:        # dilate instead of striding
                dilation, stride = dilation * stride, 1
            reduction *= stride
            blocks = []
            for j in range(n):
                blocks.append(block(in_chs, planes, stride if j == 0 else 1, shortcut, groups, base_width,
                                    se_reduction, drop_path_rate * done / max(total - 1, 1),
                                    norm_layer, act_layer, dilation=dilation,
                                    first_dilation=first_dilation if j == 0 else dilation))
                in_chs, done = planes * block.expansion, done + 1
            stages.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(module=f"stages.{i}", num_chs=in_chs, reduction=reduction))
        self.stages = nn.Sequential(*stages)

        self.num_classes = num_classes
        self.num_features = in_chs
        self.head = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights(zero_init_last)

    def init_weights(self, zero_init_last: bool = True) -> None:
        """He (fan-out) initialisation; optionally zero the last BN of each residual branch."""
        init_weights(self, "he")
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    m.zero_init_last()

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, F, H/os, W/os)
        return self.stages(self.stem_pool(self.stem(x)))


def _cifar_resnet(depth: int, num_classes: int, in_chans: int, small_input: bool, **kwargs) -> ResNet:
    """The 6n+2-layer CIFAR ResNet of He et al. (Sec. 4.2): 16/32/64 channels, option A."""
    if (depth - 2) % 6:
        raise UserError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110...), got {depth}")
    n = (depth - 2) // 6
    kwargs.setdefault("shortcut", "A")
    return ResNet(BasicBlock, (n, n, n), num_classes, in_chans, widths=(16, 32, 64), stem_width=16,
                  small_input=small_input, **kwargs)


@register_model
def resnet18(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs) -> ResNet:
    """ResNet-18: basic blocks (2, 2, 2, 2); 11.7 M parameters."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans, small_input=small_input, **kwargs)


@register_model
def resnet34(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs) -> ResNet:
    """ResNet-34: basic blocks (3, 4, 6, 3); 21.8 M parameters."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_chans, small_input=small_input, **kwargs)


@register_model
def resnet50(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs) -> ResNet:
    """ResNet-50: bottlenecks (3, 4, 6, 3); 25.6 M parameters."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans, small_input=small_input, **kwargs)


@register_model
def resnet101(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs) -> ResNet:
    """ResNet-101: bottlenecks (3, 4, 23, 3); 44.5 M parameters."""
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes, in_chans, small_input=small_input, **kwargs)


@register_model
def resnet152(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs) -> ResNet:
    """ResNet-152: bottlenecks (3, 8, 36, 3); 60.2 M parameters."""
    return ResNet(Bottleneck, (3, 8, 36, 3), num_classes, in_chans, small_input=small_input, **kwargs)


@register_model
def resnet20(num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs) -> ResNet:
    """CIFAR ResNet-20 (n=3): 0.27 M parameters."""
    return _cifar_resnet(20, num_classes, in_chans, small_input, **kwargs)


@register_model
def resnet32(num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs) -> ResNet:
    """CIFAR ResNet-32 (n=5): 0.46 M parameters."""
    return _cifar_resnet(32, num_classes, in_chans, small_input, **kwargs)


@register_model
def resnet44(num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs) -> ResNet:
    """CIFAR ResNet-44 (n=7): 0.66 M parameters."""
    return _cifar_resnet(44, num_classes, in_chans, small_input, **kwargs)


@register_model
def resnet56(num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs) -> ResNet:
    """CIFAR ResNet-56 (n=9): 0.85 M parameters."""
    return _cifar_resnet(56, num_classes, in_chans, small_input, **kwargs)


@register_model
def resnet110(num_classes: int = 10, in_chans: int = 3, small_input: bool = True, **kwargs) -> ResNet:
    """CIFAR ResNet-110 (n=18): 1.7 M parameters."""
    return _cifar_resnet(110, num_classes, in_chans, small_input, **kwargs)


@register_model
def resnext50_32x4d(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                    **kwargs) -> ResNet:
    """ResNeXt-50 (32x4d): cardinality 32, 4 channels per group; 25.0 M parameters."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans, small_input=small_input,
                  **{"groups": 32, "base_width": 4} | kwargs)


@register_model
def resnext101_32x8d(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                     **kwargs) -> ResNet:
    """ResNeXt-101 (32x8d); 88.8 M parameters."""
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes, in_chans, small_input=small_input,
                  **{"groups": 32, "base_width": 8} | kwargs)


@register_model
def resnext101_64x4d(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                     **kwargs) -> ResNet:
    """ResNeXt-101 (64x4d); 83.5 M parameters."""
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes, in_chans, small_input=small_input,
                  **{"groups": 64, "base_width": 4} | kwargs)


@register_model
def wide_resnet50_2(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                    **kwargs) -> ResNet:
    """Wide ResNet-50-2 (torchvision): ResNet-50 with 2x wider bottlenecks; 68.9 M parameters."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans, small_input=small_input,
                  base_width=128, **kwargs)


@register_model
def wide_resnet101_2(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                     **kwargs) -> ResNet:
    """Wide ResNet-101-2 (torchvision); 126.9 M parameters."""
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes, in_chans, small_input=small_input,
                  base_width=128, **kwargs)


@register_model
def se_resnet18(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                **kwargs) -> ResNet:
    """SE-ResNet-18: ResNet-18 with SE gates (reduction 16); 11.8 M parameters."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans, small_input=small_input,
                  se_reduction=16, **kwargs)


@register_model
def se_resnet50(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                **kwargs) -> ResNet:
    """SE-ResNet-50 (Hu et al. 2018): 28.1 M parameters, 2.5 M more than ResNet-50."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans, small_input=small_input,
                  se_reduction=16, **kwargs)


@register_model
def se_resnet101(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 **kwargs) -> ResNet:
    """SE-ResNet-101: 49.3 M parameters."""
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes, in_chans, small_input=small_input,
                  se_reduction=16, **kwargs)


__all__ = ["BasicBlock", "Bottleneck", "ResNet", "ZeroPadShortcut", "make_shortcut"]
