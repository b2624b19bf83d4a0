"""Wide Residual Networks for CIFAR (Zagoruyko & Komodakis 2016), WRN-d-k.

Rather than ever deeper and thinner nets, widen the residual blocks: ``k`` times more channels per
layer (16k, 32k, 64k) and fewer layers, ``n = (d - 4) / 6`` blocks per stage.  Widening is more
efficient than deepening on GPUs (bigger, parallel convolutions), and WRN-28-10 beats the
1001-layer pre-activation ResNet.  The blocks are pre-activation (BN-ReLU-conv, He et al. 2016b)
with dropout between the two 3x3 convs; a 1x1 conv projects the shortcut when the shape changes.
torchvision's ``wide_resnet50_2`` (an ImageNet bottleneck ResNet) lives in :mod:`vislab.models.resnet`.
"""

from __future__ import annotations

from torch import Tensor, nn

from vislab.errors import UserError
from vislab.models.base import Classifier
from vislab.models.layers import init_weights
from vislab.models.registry import register_model


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3, plus the shortcut (a 1x1 conv of the
    pre-activated input when the shape changes, as the authors' code).

    Args:
        in_chs / out_chs / stride: channels and stride of the first conv.
        drop: dropout between the convs (the paper uses 0.3 on CIFAR).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, drop: float = 0.0,
                 norm_layer: type[nn.Module] = nn.BatchNorm2d,
                 act_layer: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.norm1 = norm_layer(in_chs)
        self.act1 = act_layer(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.norm2 = norm_layer(out_chs)
        self.act2 = act_layer(inplace=True)
        self.drop = nn.Dropout(drop)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(in_chs, out_chs, 1, stride, bias=False)
                         if in_chs != out_chs or stride != 1 else None)

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, out, H/s, W/s)
        o = self.act1(self.norm1(x))
        shortcut = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = self.conv2(self.drop(self.act2(self.norm2(o))))
        return o + shortcut


class WideResNet(Classifier):
    """WRN-d-k: a 3x3 stem conv (16 channels), three stages of pre-activation blocks with
    16k / 32k / 64k channels, a final BN-ReLU, global average pooling, linear head.

    Args:
        depth: d, with (d - 4) divisible by 6; widen_factor: k.
        num_classes / in_chans: classes and input channels.
        drop: dropout inside the blocks.
        small_input: the CIFAR stem (default); False puts a 7x7/2 conv and a 3x3/2 max-pool in
            front for large images.
    """

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10,
                 in_chans: int = 3, drop: float = 0.0, small_input: bool = True,
                 norm_layer: type[nn.Module] = nn.BatchNorm2d,
                 act_layer: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise UserError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40...), got {depth}")
        n = (depth - 4) // 6
        if small_input:
            self.stem: nn.Module = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
            reduction = 1
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_chans, 16, 7, 2, 3, bias=False), nn.MaxPool2d(3, 2, 1))
            reduction = 4
        in_chs, stages, self.feature_info = 16, [], []
        for i, width in enumerate((16 * widen_factor, 32 * widen_factor, 64 * widen_factor)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            blocks = [PreActBlock(in_chs if j == 0 else width, width, stride if j == 0 else 1, drop,
                                  norm_layer, act_layer) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            in_chs = width
            self.feature_info.append(dict(module=f"stages.{i}", num_chs=width, reduction=reduction))
        self.stages = nn.Sequential(*stages)
        self.norm = norm_layer(in_chs)
        self.act = act_layer(inplace=True)
        self.num_classes = num_classes
        self.num_features = in_chs
        self.head = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self, "he")

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, 64k, H/4, W/4)
        return self.act(self.norm(self.stages(self.stem(x))))


def wide_resnet_cifar(depth: int, widen_factor: int, num_classes: int = 10, in_chans: int = 3,
                      small_input: bool = True, **kwargs) -> WideResNet:
    """Any WRN-d-k (the registered ``wrn_D_K`` models call this)."""
    return WideResNet(depth, widen_factor, num_classes, in_chans, small_input=small_input, **kwargs)


@register_model
def wrn_16_2(num_classes: int = 10, in_chans: int = 3, small_input: bool = True,
             **kwargs) -> WideResNet:
    """WRN-16-2: 0.69 M parameters, the narrowest WRN-16 (CPU budgets)."""
    return wide_resnet_cifar(16, 2, num_classes, in_chans, small_input, **kwargs)


@register_model
def wrn_16_4(num_classes: int = 10, in_chans: int = 3, small_input: bool = True,
             **kwargs) -> WideResNet:
    """WRN-16-4: 2.7 M parameters."""
    return wide_resnet_cifar(16, 4, num_classes, in_chans, small_input, **kwargs)


@register_model
def wrn_16_8(num_classes: int = 10, in_chans: int = 3, small_input: bool = True,
             **kwargs) -> WideResNet:
    """WRN-16-8: 11.0 M parameters."""
    return wide_resnet_cifar(16, 8, num_classes, in_chans, small_input, **kwargs)


@register_model
def wrn_28_10(num_classes: int = 10, in_chans: int = 3, small_input: bool = True,
              **kwargs) -> WideResNet:
    """WRN-28-10: 36.5 M parameters, the paper's best CIFAR model."""
    return wide_resnet_cifar(28, 10, num_classes, in_chans, small_input, **kwargs)


@register_model
def wrn_40_4(num_classes: int = 10, in_chans: int = 3, small_input: bool = True,
             **kwargs) -> WideResNet:
    """WRN-40-4: 8.9 M parameters."""
    return wide_resnet_cifar(40, 4, num_classes, in_chans, small_input, **kwargs)


__all__ = ["PreActBlock", "WideResNet", "wide_resnet_cifar"]
