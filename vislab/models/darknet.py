"""Darknet (Redmon & Farhadi 2018, "YOLOv3: An Incremental Improvement"): the backbone of YOLOv3.

Every layer is a conv + BN + LeakyReLU(0.1); no pooling: each stage starts with a 3x3 stride-2
conv that halves the map and doubles the channels, then stacks residual blocks of a 1x1 conv to
half the channels and a 3x3 conv back, added to the input (ResNet's shortcut, Darknet's layout).
Darknet-53 is a 3x3 stem of 32 channels and five stages of 1, 2, 8, 8, 4 blocks with 64 ... 1,024
channels (52 convs + the classifier); ``darknet_tiny`` is a narrow, shallow member for the CPU
and the 64 px generated scenes.  ``small_input`` (28-64 px images) makes the first stage's conv
stride 1, so the total stride is half the usual (16 for Darknet-53).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import Tensor, nn

from vislab.errors import UserError
from vislab.models.base import Classifier
from vislab.models.layers import ConvNormAct, init_weights
from vislab.models.registry import register_model

LeakyReLU01 = partial(nn.LeakyReLU, 0.1)


class DarknetBlock(nn.Module):
    """``x + conv3x3(conv1x1(x))``: 1x1 to ``chs // 2`` channels, 3x3 back to ``chs``.

    Args:
        chs: input and output channels.
        norm_layer / act_layer: the layer classes of every conv.
    """

    def __init__(self, chs: int, norm_layer: type[nn.Module] = nn.BatchNorm2d,
                 act_layer: type[nn.Module] = LeakyReLU01) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(chs, chs // 2, 1, norm_layer=norm_layer, act_layer=act_layer)
        self.conv2 = ConvNormAct(chs // 2, chs, 3, norm_layer=norm_layer, act_layer=act_layer)

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W)
        return x + self.conv2(self.conv1(x))


def make_stage(in_chs: int, out_chs: int, depth: int, stride: int, norm_layer: type[nn.Module],
               act_layer: type[nn.Module]) -> nn.Sequential:
    """A 3x3 conv of stride ``stride`` to ``out_chs``, then ``depth`` :class:`DarknetBlock`."""
    return nn.Sequential(ConvNormAct(in_chs, out_chs, 3, stride, norm_layer=norm_layer, act_layer=act_layer),
                         *[DarknetBlock(out_chs, norm_layer, act_layer) for _ in range(depth)])


class Darknet(Classifier):
    """Stem, stages (stride-2 conv + residual blocks), global average pooling, linear head.

    Args:
        depths / widths: residual blocks and channels of each stage.
        num_classes / in_chans: classes and input channels.
        stem_width: channels of the 3x3 stride-1 stem conv.
        small_input: the first stage keeps stride 1 (28-64 px inputs).
        norm_layer / act_layer: the layer classes (BN, LeakyReLU(0.1)).
    """

    def __init__(self, depths: Sequence[int] = (1, 2, 8, 8, 4), widths: Sequence[int] = (64, 128, 256, 512, 1024),
                 num_classes: int = 1000, in_chans: int = 3, stem_width: int = 32, small_input: bool = False,
                 norm_layer: type[nn.Module] = nn.BatchNorm2d, act_layer: type[nn.Module] = LeakyReLU01) -> None:
        super().__init__()
        if len(depths) != len(widths) or not depths:
            raise UserError(f"depths {tuple(depths)} and widths {tuple(widths)} must have one entry per stage")
        self.stem = ConvNormAct(in_chans, stem_width, 3, norm_layer=norm_layer, act_layer=act_layer)
        stages, self.feature_info, in_chs, reduction = [], [], stem_width, 1
        for i, (d, w) in enumerate(zip(depths, widths)):
            stride = 1 if small_input and i == 0 else 2
            reduction *= stride
            stages.append(make_stage(in_chs, w, d, stride, norm_layer, act_layer))
            self.feature_info.append({"module": f"stages.{i}", "num_chs": w, "reduction": reduction})
            in_chs = w
        self.stages = nn.Sequential(*stages)
        self.num_classes = num_classes
        self.num_features = in_chs
        self.head = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self, "he")

    def forward_features(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, F, H/32, W/32)
        return self.stages(self.stem(x))


@register_model
def darknet53(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False, **kwargs) -> Darknet:
    """Darknet-53 (YOLOv3's backbone): 40.6 M parameters, 41.6 M with its 1,000-class head."""
    return Darknet((1, 2, 8, 8, 4), (64, 128, 256, 512, 1024), num_classes, in_chans,
                   small_input=small_input, **kwargs)


@register_model
def darknet_tiny(num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 depths: Sequence[int] = (1, 2, 2, 1), widths: Sequence[int] = (32, 64, 128, 256),
                 stem_width: int = 16, **kwargs) -> Darknet:
    """A narrow Darknet of four stages (strides 2-16): 0.93 M parameters without its head; the
    YOLOv3 recipe's backbone on 64 px scenes (``depths`` / ``widths`` rescale it)."""
    return Darknet(tuple(depths), tuple(widths), num_classes, in_chans, stem_width, small_input, **kwargs)


__all__ = ["Darknet", "DarknetBlock", "darknet53", "darknet_tiny", "make_stage"]
