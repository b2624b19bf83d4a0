"""Upsampling operators of the segmentation notes: bilinear, transposed convolution, max unpooling.

* :func:`bilinear_kernel` / :class:`BilinearUpsample`: bilinear interpolation written as a
  transposed convolution (FCN's "upsample" filler), fixed or learned from that initialisation.
* :func:`conv_transpose2d_scatter`: the notes' algorithm for the transposed convolution, spelled
  out: every input pixel scales the kernel, and the scaled kernel is *added* into the output at
  ``stride``-spaced positions, overlaps summing.
* :func:`max_unpool2d`: each value goes back to where the max-pool took it from, zeros elsewhere.
* :func:`checkerboard_maps`: why a transposed convolution whose kernel is not a multiple of its
  stride paints a checkerboard (some output pixels collect more products than their neighbours),
  and why resizing then convolving does not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair


def bilinear_kernel(factor: int, align_corners: bool = False) -> Tensor:
    """The 2D bilinear interpolation filter for upsampling by ``factor``: ``Tensor[k, k]``.

    ``align_corners=False``: ``k = 2 * factor - factor % 2`` (FCN's filler; for an even factor
    the peak lies between the two middle taps, the half-pixel grid of
    ``F.interpolate(align_corners=False)``).  ``align_corners=True``: ``k = 2 * factor - 1``, the
    peak on the middle tap (input pixel ``i`` lands on output pixel ``factor * i``).  Each tap is
    ``(1 - |t - c| / factor)`` per axis, ``c`` the kernel's centre.
    """
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    size = 2 * factor - 1 if align_corners else 2 * factor - factor % 2
    t = torch.arange(size, dtype=torch.float64)
    tent = 1 - (t - (size - 1) / 2).abs() / factor         # (k,)
    return torch.outer(tent, tent).float()                 # (k, k)


class BilinearUpsample(nn.ConvTranspose2d):
    """Upsampling by ``factor``, channel by channel, as a transposed conv set to bilinear weights.

    Output is exactly ``factor`` times the input.  ``align_corners=False`` (stride ``factor``,
    kernel ``2 * factor - factor % 2``, padding ``factor // 2``) equals
    ``F.interpolate(mode="bilinear", align_corners=False)`` except on a ``factor // 2`` pixel
    border, where the transposed conv sees zeros beyond the input and interpolate repeats the
    edge.  ``align_corners=True`` (kernel ``2 * factor - 1``, padding ``factor - 1``,
    output padding ``factor - 1``) puts input pixel ``i`` on output pixel ``factor * i``: the
    grid of maps made by "same"-padded strided convs; its first ``(n - 1) * factor + 1`` outputs
    equal ``F.interpolate(align_corners=True)``, the last ``factor - 1`` fade towards zero.

    Channel-wise as ``groups=channels`` (weight ``(C, 1, k, k)``) rather than a dense
    ``(C, C, k, k)`` weight with the kernel on its diagonal: the two are equal at initialisation,
    but only the grouped form stays channel-wise when learned (FCN's learned upsampling would
    otherwise also learn to mix classes) and it has ``C`` times fewer weights and FLOPs.

    Args:
        channels: input (= output) channels.
        factor: integer upsampling factor.
        learnable: ``False``: fixed interpolation (``requires_grad=False``); ``True``: initialised
            to bilinear and learned (FCN's x2 upsampling layers).
        align_corners: the pixel grid (see above).
    """

    def __init__(self, channels: int, factor: int, learnable: bool = False,
                 align_corners: bool = False) -> None:
        if factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor}")
        size = 2 * factor - 1 if align_corners else 2 * factor - factor % 2
        padding = factor - 1 if align_corners else factor // 2
        super().__init__(channels, channels, size, stride=factor, padding=padding,
                         output_padding=factor - 1 if align_corners else 0, groups=channels,
                         bias=False)
        self.factor, self.align_corners = factor, align_corners
        self.reset_parameters()
        self.weight.requires_grad_(learnable)

    def reset_parameters(self) -> None:
        """Every channel's kernel to :func:`bilinear_kernel` (called by ``nn.ConvTranspose2d``
        before ``factor`` is set, hence the guard)."""
        if not hasattr(self, "factor"):
            return
        kernel = bilinear_kernel(self.factor, self.align_corners)
        with torch.no_grad():
            self.weight.copy_(kernel.expand_as(self.weight))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, factor={self.factor}, learnable={self.weight.requires_grad}, "
                f"align_corners={self.align_corners}")


def conv_transpose2d_scatter(x: Tensor, weight: Tensor, stride: int | Sequence[int] = 1,
                             padding: int | Sequence[int] = 0) -> Tensor:
    """The transposed convolution as the notes describe it (same result as
    ``F.conv_transpose2d(x, weight, stride=stride, padding=padding)``).

    Each input pixel ``x[i, j]`` multiplies the kernel, and the product is added into the output
    window whose top-left corner is ``(stride * i, stride * j)``; windows overlap when the kernel
    is larger than the stride, and the overlaps sum.  Then ``padding`` rows/columns are cropped
    from every border.  The loop runs over the ``kh * kw`` kernel taps: tap ``(u, v)`` sends every
    input pixel to output ``(stride * i + u, stride * j + v)`` at once.

    Args:
        x: ``Tensor[B, C_in, H, W]``.
        weight: ``Tensor[C_in, C_out, kh, kw]`` (``nn.ConvTranspose2d``'s layout).
    Returns:
        ``Tensor[B, C_out, (H - 1) * sh + kh - 2 * ph, (W - 1) * sw + kw - 2 * pw]``.
    """
    if x.ndim != 4 or weight.ndim != 4 or x.shape[1] != weight.shape[0]:
        raise ValueError(f"x must be (B, C_in, H, W) and weight (C_in, C_out, kh, kw) with the same "
                         f"C_in; got {tuple(x.shape)} and {tuple(weight.shape)}")
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    b, _, h, w = x.shape
    _, c_out, kh, kw = weight.shape
    out_h, out_w = (h - 1) * sh + kh, (w - 1) * sw + kw
    if out_h - 2 * ph < 1 or out_w - 2 * pw < 1:
        raise ValueError(f"padding {(ph, pw)} crops away the whole {out_h}x{out_w} output")
    out = x.new_zeros(b, c_out, out_h, out_w)
    for u in range(kh):
        for v in range(kw):
            tap = torch.einsum("bihw,io->bohw", x, weight[:, :, u, v])     # (B, C_out, H, W)
            out[:, :, u:u + sh * (h - 1) + 1:sh, v:v + sw * (w - 1) + 1:sw] += tap
    return out[:, :, ph:out_h - ph, pw:out_w - pw]


def max_unpool2d(x: Tensor, indices: Tensor, output_size: Sequence[int]) -> Tensor:
    """Max unpooling: ``x[b, c, i, j]`` written back at the flat position ``indices[b, c, i, j]``
    of an ``output_size`` plane (what ``F.max_pool2d(..., return_indices=True)`` recorded),
    zeros elsewhere.

    Args:
        x / indices: ``Tensor[B, C, h, w]`` (pooled values and their ``LongTensor`` positions).
        output_size: ``(H, W)`` of the map before pooling (a longer size: its last two).
    Returns:
        ``Tensor[B, C, H, W]``.
    """
    if x.shape != indices.shape or x.ndim != 4:
        raise ValueError(f"x and indices must both be (B, C, h, w); got {tuple(x.shape)} and "
                         f"{tuple(indices.shape)}")
    height, width = (int(s) for s in tuple(output_size)[-2:])
    b, c = x.shape[:2]
    out = x.new_zeros(b, c, height * width)
    out.scatter_(2, indices.flatten(2), x.flatten(2))
    return out.view(b, c, height, width)


def checkerboard_maps(size: int = 8) -> dict[str, Tensor]:
    """How many products each output pixel sums, for three ways to double a ``size x size`` map.

    A ones kernel on a ones input: every output pixel holds the number of (input pixel, kernel
    tap) products added into it.

    * ``"transpose_k3_s2"``: 3x3 transposed conv, stride 2, no padding (the notes' example):
      ``(2 * size + 1)`` square; the interior alternates 1, 2 and 4 (a checkerboard).
    * ``"transpose_k4_s2"``: 4x4, stride 2, padding 1: ``2 * size`` square; the kernel is a
      multiple of the stride, so the interior is an even 4 (only the outermost ring differs).
    * ``"resize_conv3"``: nearest x2 then a 3x3 conv (padding 1): ``2 * size`` square, 9
      everywhere but the zero-padded border.
    """
    if size < 2:
        raise ValueError(f"size must be at least 2, got {size}")
    ones = torch.ones(1, 1, size, size)
    k3, k4 = torch.ones(1, 1, 3, 3), torch.ones(1, 1, 4, 4)
    resized = F.interpolate(ones, scale_factor=2, mode="nearest")
    return {
        "transpose_k3_s2": conv_transpose2d_scatter(ones, k3, stride=2)[0, 0],
        "transpose_k4_s2": conv_transpose2d_scatter(ones, k4, stride=2, padding=1)[0, 0],
        "resize_conv3": F.conv2d(resized, k3, padding=1)[0, 0],
    }


__all__ = ["BilinearUpsample", "bilinear_kernel", "checkerboard_maps", "conv_transpose2d_scatter",
           "max_unpool2d"]
