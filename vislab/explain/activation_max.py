"""Activation maximisation: the input that a unit or a class likes best, by gradient ascent.

Start from faint noise and repeat: shift the image by a random jitter, take the gradient of the
target activation with respect to the input, step along it (normalised by its mean absolute
value, so the step size does not depend on the layer's scale), then regularise: decay toward
zero (an L2 prior; zero is the data mean after normalisation), blur every few steps (high
frequencies are what the raw ascent amplifies first) and clip to the valid pixel range.  Without
the priors the result is adversarial noise; with them it is readable (Yosinski et al. 2015).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.transforms.functional import gaussian_blur

from vislab.errors import UserError
from vislab.explain.hooks import as_spatial, capture, inspecting


def unit_value(out: Tensor, unit: int, image_hw: tuple[int, int], spatial: str = "center") -> Tensor:
    """Per-image value ``(B,)`` of channel ``unit`` in a layer output: at the centre of the map
    (``spatial='center'``, one neuron as in the notes) or averaged over it (``'mean'``); a
    vector output ``(B, F)`` gives feature ``unit``."""
    if out.ndim == 2:
        maps = out[:, :, None, None]
    else:
        maps = as_spatial(out, image_hw)
    if not 0 <= unit < maps.shape[1]:
        raise UserError(f"unit {unit} does not exist: the layer has {maps.shape[1]} channels "
                        f"(0..{maps.shape[1] - 1})")
    if spatial == "center":
        return maps[:, unit, maps.shape[2] // 2, maps.shape[3] // 2]
    if spatial == "mean":
        return maps[:, unit].mean((1, 2))
    raise UserError(f"spatial must be 'center' or 'mean', not {spatial!r}")


def _bounds(bounds, channels: int, device) -> tuple[Tensor, Tensor]:
    lo, hi = (torch.as_tensor(b, dtype=torch.float32, device=device).reshape(-1) for b in bounds)
    return lo.expand(channels).view(1, -1, 1, 1), hi.expand(channels).view(1, -1, 1, 1)


def maximize_activation(model: nn.Module, input_shape: Sequence[int], unit: int,
                        layer: str | None = None, spatial: str = "center", steps: int = 200,
                        lr: float = 0.05, l2: float = 1e-3, blur_every: int = 4,
                        blur_sigma: float = 0.5, jitter: int = 1,
                        bounds: tuple[float | Sequence[float], float | Sequence[float]] | None = None,
                        seed: int = 0, device: torch.device | str | None = None
                        ) -> tuple[Tensor, list[float]]:
    """Gradient ascent on one input ``(1, C, H, W)`` for class ``unit``'s score (``layer=None``)
    or for channel ``unit`` of ``layer`` (see :func:`unit_value`).

    Args:
        input_shape: ``(C, H, W)``; bounds: per-channel (or scalar) lowest and highest input
            value, e.g. the normalised values of pixels 0 and 255.
        lr: step in input units per step; l2: fraction of the image removed per step;
        blur_every / blur_sigma: Gaussian blur period (0 = never) and width in pixels;
        jitter: largest random shift in pixels before each step.
    Returns:
        the image and the target activation before each step and after the last.
    """
    if steps < 1 or lr <= 0:
        raise UserError(f"activation maximisation needs steps >= 1 and lr > 0, got {steps}, {lr}")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    C, H, W = input_shape
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = (0.1 * torch.randn(1, C, H, W, generator=g)).to(device)
    lo, hi = _bounds(bounds, C, device) if bounds is not None else (None, None)
    k = 2 * math.ceil(2 * blur_sigma) + 1
    layers = [layer] if layer else []

    def objective(inp: Tensor, acts: dict[str, Tensor]) -> Tensor:
        out = model(inp)
        if layer is None:
            if not 0 <= unit < out.shape[1]:
                raise UserError(f"class {unit} does not exist: the model has {out.shape[1]} classes")
            return out[:, unit]
        return unit_value(acts[layer], unit, (H, W), spatial)

    history = []
    with torch.enable_grad(), inspecting(model), capture(model, layers) as acts:
        for step in range(steps + 1):
            x.requires_grad_(True)
            shift = torch.randint(-jitter, jitter + 1, (2,), generator=g).tolist()
            if step == steps:
                shift = [0, 0]                      # the last value is that of the image returned
            value = objective(torch.roll(x, shift, (2, 3)), acts)[0]
            history.append(float(value.detach()))
            if step == steps:
                break
            (grad,) = torch.autograd.grad(value, x)
            with torch.no_grad():
                x = x + lr * grad / grad.abs().mean().clamp(min=1e-12)
                x = x * (1 - l2)
                if blur_every and (step + 1) % blur_every == 0:
                    x = gaussian_blur(x, [k, k], [blur_sigma, blur_sigma])
                if lo is not None:
                    x = torch.maximum(torch.minimum(x, hi), lo)
    return x.detach(), history


__all__ = ["maximize_activation", "unit_value"]
