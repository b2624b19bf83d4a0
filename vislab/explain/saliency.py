"""Gradient saliency: which pixels, changed a little, change the class score most.

* **Vanilla gradient** (Simonyan et al. 2014): ``dS_c/dx``; the saliency map is its largest
  absolute value over the colour channels.
* **SmoothGrad** (Smilkov et al. 2017): the average gradient over ``n`` copies of the image with
  Gaussian noise of standard deviation ``noise`` x (max - min of the image), which removes the
  speckle of the raw gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vislab.errors import UserError
from vislab.explain.hooks import Target, class_targets, inspecting


def input_gradient(model: nn.Module, x: Tensor, target: Target = None) -> Tensor:
    """``dS_c/dx`` ``(B, C, H, W)`` of class ``target`` (default: predicted), in eval mode; the
    parameters' ``.grad`` are not touched."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad(), inspecting(model):
        logits = model(x)
        targets = class_targets(logits, target)
        (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), x)
    return grad


def smooth_grad(model: nn.Module, x: Tensor, target: Target = None, n: int = 25,
                noise: float = 0.15, seed: int = 0) -> Tensor:
    """SmoothGrad ``(B, C, H, W)``: the mean input gradient over ``n`` noisy copies; the class
    (default: predicted on the clean image) is the same for every copy."""
    if n < 1 or noise < 0:
        raise UserError(f"SmoothGrad needs n >= 1 samples and noise >= 0, got n={n}, noise={noise}")
    with torch.no_grad(), inspecting(model):
        targets = class_targets(model(x), target)
    sigma = noise * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, *[1] * (x.ndim - 1))
    g = torch.Generator(device=x.device).manual_seed(seed)
    total = torch.zeros_like(x)
    for _ in range(n):
        eps = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
        total += input_gradient(model, x + sigma * eps, targets)
    return total / n


def saliency_map(grad: Tensor) -> Tensor:
    """``(B, C, H, W)`` gradient -> ``(B, H, W)`` map: the largest absolute value over channels."""
    return grad.abs().amax(1)


__all__ = ["input_gradient", "saliency_map", "smooth_grad"]
