"""The per-pixel baseline of the notes ("slow R-CNN for segmentation"): classify each pixel from
the square patch around it, then compute the same thing densely, in one pass.

The patch classifier is :class:`~vislab.models.window_cnn.WindowCNN` (unpadded 3x3 convs, two
2x2 max-pools, fully connected head).  Run on every pixel's patch it is "extremely slow"
(:func:`slow_forward`): neighbouring patches overlap, and their convolutions are computed over
and over.  Convolutionalising it (:func:`vislab.analysis.convolutionalise`) shares that work but
scores only every 4th pixel, the network's total stride.  The notes' fix, the *à trous* trick,
gives every pixel: run each pooling with stride 1 and make every later layer read its input
``stride`` pixels apart (dilate it by the stride accumulated so far); the fully connected layers
become a dilated convolution (the first) and 1x1 convolutions (the rest).  The result equals the
patch classifier at every pixel, and shares its parameters, so training either form trains both.

Centre convention: the patch of pixel ``(y, x)`` is rows ``y - P//2 .. y - P//2 + P - 1`` and the
same columns (for ``P = 32``: ``y-16 .. y+15``; for ``P = 29``: ``y-14 .. y+14``); beyond the
image border it is filled with ``fill`` (0 by default: the mean of a normalised image).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from vislab.models.registry import register_model
from vislab.models.window_cnn import WindowCNN


def _border(patch: int) -> tuple[int, int, int, int]:
    """``F.pad`` widths (left, right, top, bottom) that give every pixel a full patch, with the
    patch of pixel ``(y, x)`` starting at ``(y, x)`` of the padded image."""
    before = patch // 2
    after = patch - 1 - before
    return before, after, before, after


class PixelClassifier(nn.Module):
    """Classifies every pixel from the ``patch x patch`` square around it (see the module
    docstring for which square), densely in one pass.

    * ``classify_patches(p)``: ``(B, C, P, P)`` patches -> ``(B, K)`` logits, the per-pixel
      classifier (a :class:`WindowCNN`).
    * ``forward(x)``: ``(B, C, H, W)`` -> ``(B, K, H, W)``; at every pixel exactly the logits
      ``classify_patches`` gives for that pixel's patch (the à trous form, same parameters).
    * Patch-wise training: with ``patch_mode = True`` *and* the model in training mode,
      ``forward`` takes a batch of patches and returns ``classify_patches(x)``, so a generic
      training loop can feed patches labelled with their centre pixel's class.  In eval mode
      ``forward`` is always dense.  (Trained densely, batch norm normalises over every pixel of
      the batch rather than over a batch of patches; in eval mode the two forms agree exactly.)

    Args:
        num_classes / in_chans: classes (background included) and input channels.
        patch: patch side ``P`` (at least 24); odd or even.
        widths: channels of the three conv stages.
        hidden: width of the hidden fully connected layer.
        drop: dropout before the classifier.
        fill: value of the pixels beyond the image border (dense form and :func:`slow_forward`).
    """

    def __init__(self, num_classes: int = 21, in_chans: int = 3, patch: int = 32,
                 widths: Sequence[int] = (16, 32, 64), hidden: int = 128, drop: float = 0.2,
                 fill: float = 0.0) -> None:
        super().__init__()
        if patch < 24:
            raise ValueError(f"patch must be at least 24 pixels (the convs and pools need it), got {patch}")
        if len(widths) != 3:
            raise ValueError(f"widths gives the channels of 3 stages, e.g. [16, 32, 64]; got {list(widths)}")
        self.classifier = WindowCNN(num_classes, in_chans, patch, tuple(widths), hidden, drop)
        self.num_classes = num_classes
        self.patch = patch
        self.fill = fill
        self.patch_mode = False

    def classify_patches(self, p: Tensor) -> Tensor:   # (B, C, P, P) -> (B, K)
        if tuple(p.shape[-2:]) != (self.patch, self.patch):
            raise ValueError(f"patches must be {self.patch}x{self.patch}, got {tuple(p.shape)}; "
                             "cut them with extract_patches")
        return self.classifier(p)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.patch_mode:
            return self.classify_patches(x)                # (B, C, P, P) -> (B, K)
        return self.dense(x)                               # (B, C, H, W) -> (B, K, H, W)

    def dense(self, x: Tensor) -> Tensor:                  # (B, C, H, W) -> (B, K, H, W)
        """The patch classifier at every pixel, in one pass (à trous)."""
        h, w = x.shape[-2:]
        x = F.pad(x, _border(self.patch), value=self.fill)  # patch of (y, x) starts at (y, x)
        dil = (1, 1)                          # stride accumulated so far: later layers skip it
        size = (self.patch, self.patch)       # the map one patch leaves, for the first Linear
        first_linear = True
        for m in _leaves(self.classifier.as_sequential()):
            if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):   # unpadded, as in the patch classifier
                k, s, d = _pair(m.kernel_size), _pair(m.stride), _pair(m.dilation)
                size = tuple((n - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i, n in enumerate(size))
                d = (dil[0] * d[0], dil[1] * d[1])
                if isinstance(m, nn.Conv2d):
                    x = F.conv2d(x, m.weight, m.bias, 1, 0, d, m.groups)
                else:
                    x = F.max_pool2d(x, k, 1, 0, d)
                dil = (dil[0] * s[0], dil[1] * s[1])
            elif isinstance(m, nn.Linear):    # a (dilated) conv over the map, then 1x1 convs
                kernel = size if first_linear else (1, 1)
                x = F.conv2d(x, m.weight.view(m.out_features, -1, *kernel), m.bias, dilation=dil)
                first_linear = False
            elif not isinstance(m, nn.Flatten):
                x = m(x)                      # batch norm, ReLU, dropout: the same at each pixel
        return x[..., :h, :w]                 # an odd patch leaves rows/columns the pools drop


def _leaves(seq: nn.Sequential) -> list[nn.Module]:
    """The layers of nested ``Sequential`` s (``ConvNormAct``), in order."""
    return [leaf for m in seq for leaf in (_leaves(m) if isinstance(m, nn.Sequential) else [m])]


def pad_for_patches(images: Tensor, patch: int, fill: float = 0.0) -> Tensor:
    """``images`` padded so that every pixel has a full patch, the patch of ``(y, x)`` starting
    at ``(y, x)``: what :func:`extract_patches` cuts from (pad a training set once, not per batch)."""
    return F.pad(images, _border(patch), value=fill)


def extract_patches(images: Tensor, centres: Tensor, patch: int, fill: float = 0.0,
                    padded: bool = False) -> Tensor:
    """The ``patch x patch`` squares around pixels, ``fill`` beyond the border.

    Args:
        images: ``Tensor[N, C, H, W]``; with ``padded``, already :func:`pad_for_patches` (a
            training set is padded once, not once per batch).
        centres: ``LongTensor[M, 3]`` of ``(n, y, x)``: image index, row, column.
        patch: the side ``P``; the patch of ``(y, x)`` is rows ``y - P//2 .. y - P//2 + P - 1``.

    Returns ``Tensor[M, C, P, P]`` (gathered with advanced indexing).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if centres.ndim != 2 or centres.shape[1] != 3:
        raise ValueError(f"centres must be (M, 3) rows of (n, y, x), got shape {tuple(centres.shape)}")
    if patch < 1:
        raise ValueError(f"patch must be a positive side, got {patch}")
    n_img, _, h, w = images.shape
    if padded:
        h, w = h - patch + 1, w - patch + 1
    centres = centres.long()
    limits = torch.tensor((n_img, h, w), device=centres.device)
    if len(centres) and ((centres < 0) | (centres >= limits)).any():
        raise ValueError(f"centres must lie inside the images (n < {n_img}, y < {h}, x < {w})")
    n, y, x = centres.to(images.device).unbind(1)
    source = images if padded else pad_for_patches(images, patch, fill)
    source = source.permute(0, 2, 3, 1)                                         # (N, H+P-1, W+P-1, C)
    offsets = torch.arange(patch, device=images.device)
    rows = (y[:, None] + offsets)[:, :, None]                                   # (M, P, 1)
    cols = (x[:, None] + offsets)[:, None, :]                                   # (M, 1, P)
    return source[n[:, None, None], rows, cols].permute(0, 3, 1, 2)            # (M, C, P, P)


def slow_forward(model: PixelClassifier, x: Tensor, batch_size: int = 4096) -> Tensor:
    """The slow way to ``model(x)``: cut every pixel's patch and classify the patches,
    ``batch_size`` at a time.  ``(B, C, H, W)`` -> ``(B, K, H, W)``."""
    b, _, h, w = x.shape
    grid = torch.meshgrid(*(torch.arange(n, device=x.device) for n in (b, h, w)), indexing="ij")
    centres = torch.stack(grid, -1).view(-1, 3)                                 # (B*H*W, 3)
    logits = torch.cat([model.classify_patches(extract_patches(x, c, model.patch, model.fill))
                        for c in centres.split(batch_size)])                    # (B*H*W, K)
    return logits.view(b, h, w, -1).permute(0, 3, 1, 2)


@register_model(kind="segmentation")
def seg_pixel(num_classes: int = 21, in_chans: int = 3, patch: int = 32, widths: list[int] | None = None,
              hidden: int = 128, drop: float = 0.2) -> PixelClassifier:
    """Per-pixel baseline: a patch classifier around each pixel, computed densely (à trous)."""
    return PixelClassifier(num_classes, in_chans, patch, widths or [16, 32, 64], hidden, drop)


__all__ = ["PixelClassifier", "extract_patches", "pad_for_patches", "seg_pixel", "slow_forward"]
