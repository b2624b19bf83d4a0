"""Augmentation of whole batches with tensor ops (no per-image Python).

Every function takes a batch ``(B, C, H, W)`` on any device and a ``torch.Generator`` so that a
run is repeatable and resumable bit for bit: the generator's state is saved in checkpoints.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vislab.config import AugmentConfig


def _rand(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(shape, generator=gen, device=gen.device).to(device)


def batch_flip(x: Tensor, gen: torch.Generator, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = _rand((x.shape[0], 1, 1, 1), gen, x.device) < p
    return torch.where(flip, x.flip(3), x)


def batch_crop(x: Tensor, gen: torch.Generator, pad: int, fill: float = 0.0) -> Tensor:
    """Random crop with padding: pad by ``pad`` (constant ``fill``), then cut an ``H x W`` window
    at an independent random offset per image."""
    if pad <= 0:
        return x
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=fill)
    off = (_rand((2, x.shape[0]), gen, x.device) * (2 * pad + 1)).long().clamp_(max=2 * pad)
    return crop_at(xp, off[0], off[1], x.shape[2], x.shape[3]).contiguous(memory_format=_memory_format(x))


def crop_at(x: Tensor, top: Tensor, left: Tensor, h: int, w: int) -> Tensor:
    """Window ``[top_i : top_i + h, left_i : left_i + w]`` of each image ``i``, by one gather."""
    rows = top[:, None] + torch.arange(h, device=x.device)            # (B, h)
    cols = left[:, None] + torch.arange(w, device=x.device)           # (B, w)
    bi = torch.arange(x.shape[0], device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _memory_format(x: Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and \
        not x.is_contiguous() else torch.contiguous_format


def batch_erase(x: Tensor, gen: torch.Generator, p: float = 0.5, scale: tuple[float, float] = (0.02, 0.2),
                fill: float = 0.0) -> Tensor:
    """Random erasing (Zhong et al. 2017): with probability ``p`` blank one rectangle whose area is a
    ``scale`` fraction of the image and whose aspect ratio lies in [1/3, 3]."""
    b, _, h, w = x.shape
    r = _rand((5, b), gen, x.device)
    area = (scale[0] + (scale[1] - scale[0]) * r[0]) * h * w
    ratio = torch.exp((r[1] * 2 - 1) * torch.log(torch.tensor(3.0, device=x.device)))
    eh = (area * ratio).sqrt().round().clamp(1, h)
    ew = (area / ratio).sqrt().round().clamp(1, w)
    y0 = (r[2] * (h - eh + 1)).floor()
    x0 = (r[3] * (w - ew + 1)).floor()
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])            # (B, H)
    in_x = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])            # (B, W)
    mask = in_y[:, :, None] & in_x[:, None, :] & (r[4] < p)[:, None, None]
    return x.masked_fill(mask[:, None], fill)


def batch_color(x: Tensor, gen: torch.Generator, brightness: float = 0.0, contrast: float = 0.0) -> Tensor:
    """Per-image brightness shift and contrast scale about the image mean (in the normalised space)."""
    b = x.shape[0]
    r = _rand((2, b), gen, x.device) * 2 - 1
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    c = (1 + contrast * r[0]).view(b, 1, 1, 1)
    return (x - mean) * c + mean + (brightness * r[1]).view(b, 1, 1, 1)


def mixup(x: Tensor, y: Tensor, num_classes: int, gen: torch.Generator, alpha: float) -> tuple[Tensor, Tensor]:
    """mixup (Zhang et al. 2018): convex combination of the batch with a permutation of itself;
    returns the mixed images and soft targets ``(B, num_classes)``."""
    lam = _beta(alpha, gen)
    perm = torch.randperm(x.shape[0], generator=gen, device=gen.device).to(x.device)
    t = torch.nn.functional.one_hot(y, num_classes).to(x.dtype)
    return lam * x + (1 - lam) * x[perm], lam * t + (1 - lam) * t[perm]


def _beta(alpha: float, gen: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw from ``gen`` via two Gamma draws (torch's sampler has no generator)."""
    g = torch._standard_gamma(torch.full((2,), float(alpha), device=gen.device), generator=gen)
    return float(g[0] / g.sum())


def augment_batch(x: Tensor, cfg: AugmentConfig, gen: torch.Generator, fill: float = 0.0) -> Tensor:
    """Apply the image-only augmentations of ``cfg`` (mixup, which touches labels, is separate)."""
    if cfg.crop_pad:
        x = batch_crop(x, gen, cfg.crop_pad, fill)
    if cfg.flip:
        x = batch_flip(x, gen)
    if cfg.brightness or cfg.contrast:
        x = batch_color(x, gen, cfg.brightness, cfg.contrast)
    if cfg.erase:
        x = batch_erase(x, gen, cfg.erase, fill=fill)
    return x
