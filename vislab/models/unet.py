"""U-Net (Ronneberger, Fischer, Brox 2015): an encoder-decoder of equal depth, with skips.

The contracting path repeats two 3x3 convs (+ ReLU) and a 2x2 max-pool, doubling the channels
at every down-step; the expanding path upsamples x2 while halving the channels (a 2x2 stride-2
transposed conv, the paper's "up-convolution"), *concatenates* the encoder map of the same
level and applies two 3x3 convs; a 1x1 conv scores the classes.  Batch norm after each conv is a
modern addition (``norm``).  ``up="bilinear"`` replaces the transposed conv by a bilinear resize
and a 3x3 conv, which cannot paint checkerboards (see :func:`~vislab.models.upsample.checkerboard_maps`).

Padding (``padding=``):

* ``"same"``: padded convs keep the size, so an input that is a multiple of ``2 ** depth`` comes
  out at its own size and the skips match exactly.  Other inputs are mirror-padded (reflection,
  not zeros: a zero border would be a dark frame the network must learn to ignore) up to the
  next multiple, split evenly between the two sides, and the output is cropped back.
* ``"valid"``: the paper's unpadded convs; each conv loses a pixel on every side, so the encoder
  map is larger than the decoder's and is centre-cropped to it before the concatenation (the
  notes: a 5x5 encoder map gives its central 3x3).  The output is smaller than the input
  (572 -> 388 in the paper); to cover exactly ``H x W`` the image is mirror-padded into the
  smallest valid tile whose output covers it (the paper's overlap-tile strategy) and the output
  is cropped to ``H x W``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.errors import UserError
from vislab.models.layers import ConvNormAct, init_weights
from vislab.models.registry import register_model

UPSAMPLINGS = ("transpose", "bilinear")
PADDINGS = ("same", "valid")


class DoubleConv(nn.Sequential):
    """Two 3x3 conv (-BN)-ReLU layers: one level of either path.  Padding 1 or 0 (valid)."""

    def __init__(self, in_chs: int, out_chs: int, padding: int = 1,
                 norm_layer: type[nn.Module] | None = nn.BatchNorm2d,
                 act_layer: type[nn.Module] = nn.ReLU) -> None:
        layer = {"padding": padding, "norm_layer": norm_layer, "act_layer": act_layer}
        super().__init__(ConvNormAct(in_chs, out_chs, 3, **layer), ConvNormAct(out_chs, out_chs, 3, **layer))
        self.out_channels = out_chs


class Up(nn.Module):
    """x2 upsampling that maps ``in_chs`` to ``out_chs`` channels, linear (no norm, no ReLU):
    a 2x2 stride-2 transposed conv (``"transpose"``), or a bilinear resize and a 3x3 conv with
    padding ``padding`` (``"bilinear"``; unpadded it loses a pixel on each side)."""

    def __init__(self, in_chs: int, out_chs: int, mode: str = "transpose", padding: int = 1) -> None:
        super().__init__()
        self.mode = mode
        if mode == "transpose":
            self.conv: nn.Module = nn.ConvTranspose2d(in_chs, out_chs, 2, stride=2)
        else:
            self.conv = nn.Conv2d(in_chs, out_chs, 3, padding=padding)

    def forward(self, x: Tensor) -> Tensor:   # (B, in, h, w) -> (B, out, 2h, 2w) (- 2 if valid bilinear)
        if self.mode == "bilinear":
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv(x)


def center_crop(x: Tensor, size: Sequence[int]) -> Tensor:
    """The central ``size`` (``(h, w)``) window of ``x`` (``(..., H, W)``); an odd surplus leaves
    the extra row/column at the bottom/right.  Raises ``ValueError`` if ``x`` is smaller."""
    h, w = int(size[0]), int(size[1])
    dh, dw = x.shape[-2] - h, x.shape[-1] - w
    if dh < 0 or dw < 0:
        raise ValueError(f"cannot crop {tuple(x.shape[-2:])} to a larger {(h, w)}")
    return x[..., dh // 2:dh // 2 + h, dw // 2:dw // 2 + w]


def mirror_pad(x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
    """Reflect ``x`` (``(..., H, W)``) across its borders, without repeating the edge pixel, by
    any width (``F.pad``'s ``"reflect"`` needs pads smaller than the map; the overlap-tile pads
    of a deep valid U-Net exceed it on small images: the reflection then folds back again)."""
    def index(n: int, before: int, after: int) -> Tensor:
        i = torch.arange(-before, n + after, device=x.device)
        period = max(2 * (n - 1), 1)
        i = i.remainder(period)
        return torch.where(i >= n, period - i, i)

    if top or bottom:
        x = x.index_select(-2, index(x.shape[-2], top, bottom))
    if left or right:
        x = x.index_select(-1, index(x.shape[-1], left, right))
    return x


class UNet(nn.Module):
    """U-Net with ``depth`` down-steps; level ``l`` has ``width * 2 ** l`` channels.

    Args:
        num_classes / in_chans: classes (background included) and input channels.
        depth: number of down-steps (the paper: 4, 64 -> 1024 channels).
        width: channels of the first level.
        up: ``"transpose"`` (2x2 stride-2 transposed conv, the paper) or ``"bilinear"``
            (bilinear x2 then a 3x3 conv: no checkerboard).
        padding: ``"same"`` or ``"valid"`` (see the module docstring for how either covers
            any ``H x W``).
        norm: batch norm after every 3x3 conv (not in the paper).

    ``forward(x)``: ``(B, in_chans, H, W)`` -> logits ``(B, num_classes, H, W)``.
    """

    def __init__(self, num_classes: int = 21, in_chans: int = 3, depth: int = 4, width: int = 64,
                 up: str = "transpose", padding: str = "same", norm: bool = True,
                 act_layer: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        if up not in UPSAMPLINGS:
            raise UserError(f"unknown U-Net upsampling {up!r}: use one of {UPSAMPLINGS}")
        if padding not in PADDINGS:
            raise UserError(f"unknown U-Net padding {padding!r}: use one of {PADDINGS}")
        if depth < 1 or width < 1:
            raise UserError(f"U-Net needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        pad = 1 if padding == "same" else 0
        norm_layer = nn.BatchNorm2d if norm else None
        chs = [width * 2 ** level for level in range(depth + 1)]      # 64, 128, ..., 1024
        self.encoder = nn.ModuleList(
            DoubleConv(in_chans if level == 0 else chs[level - 1], chs[level], pad, norm_layer, act_layer)
            for level in range(depth + 1))
        # decoder[l] / ups[l] take level l + 1 back to level l
        self.ups = nn.ModuleList(Up(chs[level + 1], chs[level], up, pad) for level in range(depth))
        self.decoder = nn.ModuleList(DoubleConv(2 * chs[level], chs[level], pad, norm_layer, act_layer)
                                     for level in range(depth))
        self.head = nn.Conv2d(chs[0], num_classes, 1)
        self.num_classes = num_classes
        self.depth, self.width, self.up, self.padding = depth, width, up, padding
        self.init_weights()

    def init_weights(self) -> None:
        """He initialisation (the paper: Gaussian, std sqrt(2 / N), N the inputs of a unit); BN
        to (1, 0).  A 2x2 stride-2 transposed conv gives each output one tap per input channel,
        so there N is ``in_channels``."""
        init_weights(self, "he")
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=math.sqrt(2 / m.in_channels))
                nn.init.zeros_(m.bias)

    def tile(self, n: int) -> tuple[int, int, int]:
        """For an image side ``n``: the input side the network runs on, the output side it gives,
        and the margin (input pixel ``o + margin`` lies under output pixel ``o``).

        Same: the next multiple of ``2 ** depth``; margin 0.  Valid: with the bottom map ``b``
        pixels wide, each encoder level is ``2 * (next level) + 4`` (two convs lose 4, the pool
        halves), so the input is ``2**d * (b + 4) + 4 * (2**d - 1)``; each decoder level loses
        ``c = 4`` (``6`` with the bilinear path's unpadded 3x3 conv) after doubling, so the output
        is ``2**d * b - c * (2**d - 1)``.  ``b`` is the smallest that covers ``n`` (and at least
        ``c``, so that no level shrinks to nothing).  Paper: ``b = 28``: 572 -> 388.
        """
        scale = 2 ** self.depth
        if self.padding == "same":
            size = math.ceil(n / scale) * scale
            return size, size, 0
        shrink = 4 + (2 if self.up == "bilinear" else 0)
        bottom = max(math.ceil((n + shrink * (scale - 1)) / scale), shrink)
        size_in = scale * (bottom + 4) + 4 * (scale - 1)
        size_out = scale * bottom - shrink * (scale - 1)
        return size_in, size_out, (size_in - size_out) // 2

    def forward(self, x: Tensor) -> Tensor:   # (B, C, H, W) -> (B, K, H, W)
        (h, w), pads, crops = x.shape[-2:], [], []
        for n in (h, w):
            size_in, size_out, margin = self.tile(n)
            crop = (size_out - n) // 2                  # output pixel crop + i covers image pixel i
            before = margin + crop
            pads += [before, size_in - n - before]
            crops.append(crop)
        x = mirror_pad(x, *pads)                        # (B, C, S_h, S_w)
        skips = []
        for level, block in enumerate(self.encoder):
            if level:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = skips.pop()                                 # bottom: (B, width * 2**depth, b, b)
        for level in reversed(range(self.depth)):
            x = self.ups[level](x)                      # (B, chs[level], ~2h, ~2w)
            skip = center_crop(skips[level], x.shape[-2:])
            x = self.decoder[level](torch.cat([skip, x], dim=1))
        x = self.head(x)                                # (B, K, O_h, O_w)
        return x[..., crops[0]:crops[0] + h, crops[1]:crops[1] + w]


@register_model(kind="segmentation")
def unet(num_classes: int = 21, in_chans: int = 3, depth: int = 4, width: int = 64,
         up: str = "transpose", padding: str = "same", norm: bool = True) -> UNet:
    """U-Net: ``depth`` down-steps from ``width`` channels (the paper: 4 and 64, 31 M parameters)."""
    return UNet(num_classes, in_chans, depth, width, up, padding, norm)


__all__ = ["DoubleConv", "UNet", "Up", "center_crop", "mirror_pad", "unet"]
