"""DeepLab v3 and v3+: dilated backbones and atrous spatial pyramid pooling.

* Dilated (atrous) convolution: a 3x3 kernel with ``rate - 1`` zeros between its taps sees a
  ``(2 rate + 1)``-pixel window at the cost of nine weights.  DeepLab replaces the strides of a
  ResNet's last stages by dilation (``output_stride`` 16 or 8, see :mod:`vislab.models.resnet`),
  so the last map keeps 4x / 16x more positions while each unit sees what it saw before.
* ASPP (DeepLab v3, Chen et al. 2017, "Rethinking Atrous Convolution"): parallel branches on the
  last map -- a 1x1 conv, one 3x3 conv per rate, and image-level features (global average pool,
  1x1 conv, copied to every position) -- concatenated and projected by a 1x1 conv.  v2 used rates
  up to 24; v3 went to (6, 12, 18) because a rate close to the map size degenerates: most taps
  then fall on the zero padding and the 3x3 kernel acts as a 1x1 one (v3, Sec. 3.3 and Fig. 4).
  The image-pooling branch brings back the global context those taps no longer reach.
* DeepLab v3+ (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution"): a light
  decoder upsamples the ASPP output to the stride-4 stage, concatenates that stage's features
  reduced to 48 channels (fewer than the 256 of ASPP so the low-level maps do not dominate), and
  refines with two 3x3 convs before a final x4 upsampling; the object boundaries are sharper.

The heads (:class:`ASPP`, :class:`DeepLabHead`, :class:`FCNHead`) have torchvision's structure
and parameter names, up to the renaming in ``tests/models/test_deeplab.py``, and compute what
torchvision's compute.

Batch size 1 in training: the image-pooling branch normalises a ``(B, C, 1, 1)`` map, and
BatchNorm cannot estimate a variance from one value per channel (torchvision's ASPP fails the
same way).  Train with batches of 2 or more (better 8+, the BN statistics of this branch come from
B values only), or freeze the BN layers (``model.eval()`` on them) when fine-tuning on one image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.errors import UserError
from vislab.models.layers import ConvNormAct, init_weights
from vislab.models.registry import register_model
from vislab.models.segmentation import BackboneFeatures, resize_to

PAPER_RATES = (6, 12, 18)      # DeepLab v3 at output stride 16 (doubled at 8)
OUTPUT_STRIDES = (8, 16, 32)


def default_rates(output_stride: int) -> tuple[int, ...]:
    """The paper's ASPP rates for ``output_stride``: (6, 12, 18) at 16, (12, 24, 36) at 8, (3,
    6, 9) at 32, i.e. the same span in input pixels.  They suit maps of ~33 px at output stride
    16 (513 px crops, the paper's setting); see :func:`deeplabv3` for small images."""
    return tuple(r * 16 // output_stride for r in PAPER_RATES)


class ASPPPooling(ConvNormAct):
    """Image-level features: global average pool, 1x1 conv-BN-ReLU, bilinear upsampling back to
    the map size (from 1x1: the same vector at every position)."""

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, out, H, W)
        norm = self[1] if len(self) > 1 else None
        if self.training and x.shape[0] == 1 and isinstance(norm, nn.modules.batchnorm._BatchNorm):
            raise UserError("DeepLab's image-pooling branch cannot train BatchNorm on a batch of 1 "
                            "(one value per channel): use a batch size of 2 or more, or put the "
                            "BatchNorm layers in eval mode")
        return resize_to(super().forward(F.adaptive_avg_pool2d(x, 1)), x.shape[-2:])


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling (DeepLab v3): 1x1, one dilated 3x3 per rate and image
    pooling, concatenated, projected by a 1x1 conv, then dropout.

    Args:
        in_chs: channels of the backbone's last map; rates: dilations of the 3x3 branches.
        out_chs: channels of every branch and of the output; drop: dropout after the projection.
    """

    def __init__(self, in_chs: int, rates: Sequence[int] = (12, 24, 36), out_chs: int = 256,
                 drop: float = 0.5, norm_layer: type[nn.Module] = nn.BatchNorm2d,
                 act_layer: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        if not rates or any(int(r) != r or r < 1 for r in rates):
            raise UserError(f"ASPP rates must be positive integers, got {rates!r}")
        layers = dict(norm_layer=norm_layer, act_layer=act_layer)
        self.convs = nn.ModuleList([
            ConvNormAct(in_chs, out_chs, 1, **layers),
            *(ConvNormAct(in_chs, out_chs, 3, dilation=int(r), **layers) for r in rates),
            ASPPPooling(in_chs, out_chs, 1, **layers),
        ])
        self.project = ConvNormAct(len(self.convs) * out_chs, out_chs, 1, **layers)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, out, H, W)
        x = torch.cat([conv(x) for conv in self.convs], dim=1)   # (B, (rates + 2) out, H, W)
        return self.drop(self.project(x))


class DeepLabHead(nn.Module):
    """DeepLab v3's head (torchvision's ``DeepLabHead``): ASPP, a 3x3 conv-BN-ReLU, a 1x1 conv
    to class scores at the map's resolution.

    Args: in_chs, rates, drop as :class:`ASPP`; aspp_chs: its width (and that of the 3x3 conv).
    """

    def __init__(self, in_chs: int, num_classes: int, rates: Sequence[int] = (12, 24, 36),
                 aspp_chs: int = 256, drop: float = 0.5, norm_layer: type[nn.Module] = nn.BatchNorm2d,
                 act_layer: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.aspp = ASPP(in_chs, rates, aspp_chs, drop, norm_layer, act_layer)
        self.conv = ConvNormAct(aspp_chs, aspp_chs, 3, norm_layer=norm_layer, act_layer=act_layer)
        self.classifier = nn.Conv2d(aspp_chs, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:   # (B, C, h, w) -> (B, K, h, w)
        return self.classifier(self.conv(self.aspp(x)))


class DeepLabV3PlusHead(nn.Module):
    """DeepLab v3+'s ASPP and decoder: ASPP on the last map, upsampled to the stride-4 map,
    concatenated with that map reduced to ``low_level_chs``, two 3x3 conv-BN-ReLU, 1x1 to classes.

    Args:
        in_chs / low_chs: channels of the last and of the stride-4 map.
        rates, aspp_chs, drop: as :class:`DeepLabHead`; decoder_chs: width of the two 3x3 convs.
        low_level_chs: the stride-4 features are reduced to this many channels (paper: 48).
    """

    def __init__(self, in_chs: int, low_chs: int, num_classes: int,
                 rates: Sequence[int] = (6, 12, 18), aspp_chs: int = 256, decoder_chs: int = 256,
                 low_level_chs: int = 48, drop: float = 0.5,
                 norm_layer: type[nn.Module] = nn.BatchNorm2d, act_layer: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        layers = dict(norm_layer=norm_layer, act_layer=act_layer)
        self.aspp = ASPP(in_chs, rates, aspp_chs, drop, norm_layer, act_layer)
        self.low_level = ConvNormAct(low_chs, low_level_chs, 1, **layers)
        self.fuse = nn.Sequential(ConvNormAct(aspp_chs + low_level_chs, decoder_chs, 3, **layers),
                                  ConvNormAct(decoder_chs, decoder_chs, 3, **layers))
        self.classifier = nn.Conv2d(decoder_chs, num_classes, 1)

    def forward(self, low: Tensor, x: Tensor) -> Tensor:   # (B, Cl, H/4, W/4), (B, C, h, w)
        x = resize_to(self.aspp(x), low.shape[-2:])          # (B, aspp, H/4, W/4)
        x = torch.cat([x, self.low_level(low)], dim=1)      # (B, aspp + 48, H/4, W/4)
        return self.classifier(self.fuse(x))                # (B, K, H/4, W/4)


class FCNHead(nn.Sequential):
    """torchvision's FCN head (also its auxiliary head for DeepLab): 3x3 conv to ``in_chs // 4``,
    BN, ReLU, dropout, 1x1 conv to class scores."""

    def __init__(self, in_chs: int, num_classes: int, drop: float = 0.1,
                 norm_layer: type[nn.Module] = nn.BatchNorm2d, act_layer: type[nn.Module] = nn.ReLU) -> None:
        super().__init__(ConvNormAct(in_chs, in_chs // 4, 3, norm_layer=norm_layer, act_layer=act_layer),
                         nn.Dropout(drop),
                         nn.Conv2d(in_chs // 4, num_classes, 1))


class DeepLabV3(nn.Module):
    """DeepLab v3 (``decoder=False``) or v3+ (``decoder=True``) on a registry backbone.

    Args:
        num_classes / in_chans: classes and input channels.
        backbone: a registered classifier; ``output_stride`` 8 or 16 needs one that takes that
            option (the ResNets); 32 takes any CNN with ``feature_info``.
        backbone_kwargs: passed to the backbone's factory (e.g. ``widths``).
        output_stride: total stride of the last map (8, 16 or 32).
        rates: ASPP dilations (``None``: :func:`default_rates`); aspp_chs: ASPP width.
        decoder: add v3+'s decoder on the stride-4 stage; decoder_chs / low_level_chs: its widths.
        drop: dropout after the ASPP projection.

    ``forward(x)`` returns logits ``(B, num_classes, H, W)`` for any ``H, W >= 32``.
    """

    def __init__(self, num_classes: int = 21, in_chans: int = 3, backbone: str = "resnet18",
                 backbone_kwargs: dict | None = None, output_stride: int = 16,
                 rates: Sequence[int] | None = None, aspp_chs: int = 256, decoder: bool = False,
                 decoder_chs: int = 256, low_level_chs: int = 48, drop: float = 0.5,
                 norm_layer: type[nn.Module] = nn.BatchNorm2d, act_layer: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise UserError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
        kwargs = dict(backbone_kwargs or {})
        if "output_stride" in kwargs:
            raise UserError("give output_stride to DeepLab itself, not in backbone_kwargs: it "
                            "also sets the ASPP rates")
        if output_stride != 32:
            kwargs["output_stride"] = output_stride
        try:
            self.backbone = BackboneFeatures(backbone, in_chans, **kwargs)
        except TypeError as e:
            if "output_stride" not in str(e):
                raise
            raise UserError(f"backbone {backbone!r} cannot dilate (no output_stride option): use a "
                            "ResNet such as resnet18 or resnet50, or output_stride=32") from None
        reductions = self.backbone.reductions
        if reductions[-1] != output_stride:
            raise UserError(f"backbone {backbone!r} ends at stride {reductions[-1]}, not the "
                            f"requested output_stride {output_stride}: set output_stride="
                            f"{reductions[-1]}")
        rates = default_rates(output_stride) if rates is None else tuple(rates)
        chs = self.backbone.channels
        if decoder:
            if 4 not in reductions:
                raise UserError(f"DeepLab v3+ decodes from a stride-4 stage; backbone {backbone!r} "
                                f"has strides {reductions}")
            low = reductions.index(4)
            self.stage_ids = [low, len(chs) - 1]
            self.head: nn.Module = DeepLabV3PlusHead(chs[-1], chs[low], num_classes, rates, aspp_chs,
                                                     decoder_chs, low_level_chs, drop, norm_layer,
                                                     act_layer)
        else:
            self.stage_ids = [len(chs) - 1]
            self.head = DeepLabHead(chs[-1], num_classes, rates, aspp_chs, drop, norm_layer, act_layer)
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.init_weights()

    def init_weights(self) -> None:
        """He initialisation of the head's convolutions (each followed by BN); the backbone
        keeps its own (zero-init residual BNs).  The last 1x1 classifier keeps PyTorch's default
        (uniform within ``1 / sqrt(fan_in)``, as torchvision's heads): He's fan-out rule on a
        1x1 layer to 11 classes draws weights of std 0.43 and starts from logits of std ~5 (a
        loss near 3 where ln 11 = 2.4), which cost 4 points of mIoU against torchvision's
        DeepLab in ``bench_segmentation``.  (A std-0.01 classifier, mmsegmentation's, left the
        tiny test models on "all background" for ~100 steps.)"""
        init_weights(self.head, "he")
        self.head.classifier.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, K, H, W)
        feats = self.backbone(x)                             # stage maps, the last at H/os
        logits = self.head(*(feats[i] for i in self.stage_ids))
        return resize_to(logits, x.shape[-2:])              # bilinear, align_corners=False


@register_model(kind="segmentation")
def deeplabv3(num_classes: int = 21, in_chans: int = 3, backbone: str = "resnet18",
              backbone_kwargs: dict | None = None, output_stride: int = 16,
              rates: list[int] | None = None, aspp_chs: int = 256, **kwargs) -> DeepLabV3:
    """DeepLab v3: dilated backbone (output stride 16 or 8), ASPP head, bilinear upsampling.

    ``rates=None`` takes the paper's (6, 12, 18) at output stride 16, (12, 24, 36) at 8.  They
    suit last maps of ~33 px (513 px inputs at stride 16).  On small images most taps of a large
    rate fall on the zero padding (a 64 px input gives a 4x4 map at stride 16: every tap of a
    rate-6 kernel but the centre is outside), so each 3x3 branch acts as a 1x1 conv -- why
    DeepLab v3 lowered v2's rate 24 to 18.  Scale the rates with the map for small inputs.
    """
    return DeepLabV3(num_classes, in_chans, backbone, backbone_kwargs, output_stride, rates,
                     aspp_chs, **kwargs)


@register_model(kind="segmentation")
def deeplabv3plus(num_classes: int = 21, in_chans: int = 3, backbone: str = "resnet18",
                  backbone_kwargs: dict | None = None, output_stride: int = 16,
                  rates: list[int] | None = None, aspp_chs: int = 256, decoder_chs: int = 256,
                  **kwargs) -> DeepLabV3:
    """DeepLab v3+: :func:`deeplabv3` (same rates and caveat) plus the decoder on the stride-4
    stage (48 low-level channels, two 3x3 convs of ``decoder_chs``), then x4 upsampling."""
    return DeepLabV3(num_classes, in_chans, backbone, backbone_kwargs, output_stride, rates,
                     aspp_chs, decoder=True, decoder_chs=decoder_chs, **kwargs)


__all__ = ["ASPP", "ASPPPooling", "DeepLabHead", "DeepLabV3", "DeepLabV3PlusHead", "FCNHead",
           "deeplabv3", "deeplabv3plus", "default_rates"]
