"""Class activation maps: where in the image the evidence for a class lies.

* **CAM** (Zhou et al. 2016) for a network that ends in global average pooling and one linear
  layer: ``M_c(x, y) = sum_k w_k^c f_k(x, y)``, so that ``S_c = mean(M_c) + b_c`` (checked).
* **Grad-CAM** (Selvaraju et al. 2017) for any layer: channel weights ``a_k = mean_xy dS_c/dA_k``,
  map ``ReLU(sum_k a_k A_k)``.  For GAP + FC, ``dS_c/dA_k(x, y) = w_k^c / (hw)``, so Grad-CAM is
  ``ReLU(CAM) / (hw)``: the same map up to scale.
* **Grad-CAM++** (Chattopadhay et al. 2018): per-position weights ``alpha = g^2 / (2 g^2 +
  sum_xy(A) g^3)`` (``g = dS_c/dA``, from the exponential of the score) and
  ``a_k = sum_xy alpha ReLU(g)``, which credits several instances of a class, not only the largest.
* **Augmented Grad-CAM** (Morbidelli et al. 2020): Grad-CAMs of several known warps ``A_l`` of
  the same image are low-resolution views ``g_l = D A_l h`` of one high-resolution map ``h``;
  solving ``min_h sum_l ||D A_l h - g_l||^2 + lambda TV(h)`` recovers detail finer than the
  layer's stride.

Maps come at the layer's resolution ``(B, h, w)``; :func:`upsample` and :func:`normalize` make
them images.  Vision-transformer tokens are reshaped to the patch grid (:func:`as_spatial`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.errors import UserError
from vislab.explain.hooks import (
    Target,
    as_spatial,
    capture,
    class_targets,
    default_layer,
    get_layer,
    inspecting,
    layer_gradient,
)
from vislab.models.base import Classifier


def _final_linear(model: nn.Module, fc: str | None) -> nn.Linear:
    """The classifier layer of CAM: ``fc`` by name, else a vislab model's head, else the last
    ``nn.Linear`` of the module."""
    if fc is not None:
        layer = get_layer(model, fc)
    elif isinstance(model, Classifier):
        layer = model.head
    else:
        layer = next((m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)), None)
    if not isinstance(layer, nn.Linear):
        raise UserError(f"CAM needs a final linear layer after global average pooling; "
                        f"{type(model).__name__} has none: use Grad-CAM (--method gradcam)")
    return layer


@torch.no_grad()
def class_activation_map(model: nn.Module, x: Tensor, target: Target = None,
                         layer: str | None = None, fc: str | None = None) -> Tensor:
    """CAM ``M_c = sum_k w_k^c f_k`` of class ``target`` (default: the predicted class).

    Args:
        model: a network whose ``layer`` output is pooled by global averaging and fed to the
            linear layer ``fc`` (default: the model's head or last ``nn.Linear``).
        x: images ``(B, C, H, W)``; target: one class, one per image, or None.
    Returns:
        ``(B, h, w)`` at the layer's resolution, unnormalised.  Raises :class:`UserError` when
        the network is not GAP + one linear layer there (the identity ``S_c = mean(M_c) + b_c``
        does not hold).
    """
    layer = layer or default_layer(model, x)
    linear = _final_linear(model, fc)
    with inspecting(model), capture(model, [layer], keep_graph=False) as acts:
        logits = model(x)
        f = as_spatial(acts[layer], x.shape[-2:])                   # (B, K, h, w)
    if f.shape[1] != linear.in_features:
        raise UserError(f"layer {layer!r} has {f.shape[1]} channels but the linear layer takes "
                        f"{linear.in_features} features: CAM needs the map that is pooled into it")
    targets = class_targets(logits, target)
    maps = torch.einsum("bkhw,bk->bhw", f.float(), linear.weight[targets].float())
    bias = linear.bias[targets] if linear.bias is not None else 0.0
    scores = logits.gather(1, targets[:, None])[:, 0]
    if not torch.allclose(maps.mean((1, 2)) + bias, scores.float(), rtol=1e-3,
                          atol=1e-3 * (1 + scores.abs().max().item())):
        raise UserError(f"CAM needs global average pooling of {layer!r} followed by one linear "
                        f"layer, and {type(model).__name__} computes its scores otherwise: use "
                        "Grad-CAM (--method gradcam), which works on any layer")
    return maps


def grad_cam(model: nn.Module, x: Tensor, target: Target = None, layer: str | None = None,
             plus_plus: bool = False) -> Tensor:
    """Grad-CAM (or Grad-CAM++ with ``plus_plus``) of class ``target`` at ``layer`` (default: the
    last stage; tokens of a vision transformer are reshaped to the patch grid).

    Returns ``(B, h, w)`` at the layer's resolution, non-negative, unnormalised.
    """
    layer = layer or default_layer(model, x)
    act, grad, _ = layer_gradient(model, x, layer, target)
    A, G = as_spatial(act, x.shape[-2:]).float(), as_spatial(grad, x.shape[-2:]).float()
    if plus_plus:
        g2, g3 = G.pow(2), G.pow(3)
        denom = 2 * g2 + A.sum((2, 3), keepdim=True) * g3
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        weights = (alpha * G.clamp(min=0)).sum((2, 3))
    else:
        weights = G.mean((2, 3))
    return torch.einsum("bkhw,bk->bhw", A, weights).clamp(min=0)


def affine_warps(n: int, max_angle: float = 15.0, max_shift: float = 0.1, seed: int = 0) -> Tensor:
    """``n`` affine matrices ``(n, 2, 3)`` for ``F.affine_grid``: the identity first, then random
    rotations within ``±max_angle`` degrees and shifts within ``±max_shift`` of the image size."""
    g = torch.Generator().manual_seed(seed)
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(max_angle)
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * 2 * max_shift      # [-1, 1] spans the image
    angle[0], shift[0] = 0.0, 0.0
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                        torch.stack([sin, cos, shift[:, 1]], 1)], 1)


def warp(images: Tensor, theta: Tensor) -> Tensor:
    """Resample ``(B, C, H, W)`` with one affine matrix ``(2, 3)`` (bilinear, border padding)."""
    grid = F.affine_grid(theta.to(images)[None].expand(len(images), 2, 3), list(images.shape),
                         align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _total_variation(h: Tensor) -> Tensor:
    dy, dx = h[..., 1:, :-1] - h[..., :-1, :-1], h[..., :-1, 1:] - h[..., :-1, :-1]
    return (dx.pow(2) + dy.pow(2) + 1e-8).sqrt().mean()


def augmented_grad_cam(model: nn.Module, x: Tensor, target: Target = None, layer: str | None = None,
                       n_aug: int = 16, max_angle: float = 15.0, max_shift: float = 0.1,
                       tv_weight: float = 0.02, steps: int = 200, lr: float = 0.05,
                       plus_plus: bool = False, seed: int = 0) -> Tensor:
    """Augmented Grad-CAM: one ``(B, H, W)`` map at the image's resolution from the Grad-CAMs
    of ``n_aug`` warps (:func:`affine_warps`) of each image, by super-resolution.

    The observation model is ``g_l = D(A_l h)``: ``A_l`` the warp, ``D`` area down-sampling to
    the layer's grid.  ``h`` starts from the bilinear up-sampling of the unwarped Grad-CAM and
    follows Adam on the squared error plus ``tv_weight`` x total variation, kept non-negative.
    The target class (default: predicted on the unwarped image) is the same for every warp.
    """
    if n_aug < 1:
        raise UserError(f"n_aug must be at least 1, got {n_aug}")
    layer = layer or default_layer(model, x)
    with torch.no_grad(), inspecting(model):
        targets = class_targets(model(x), target)
    thetas = affine_warps(n_aug, max_angle, max_shift, seed)
    lows = torch.stack([grad_cam(model, warp(x, th), targets, layer, plus_plus) for th in thetas])
    L, B, h, w = lows.shape
    H, W = x.shape[-2:]
    scale = lows[0].flatten(1).amax(1).clamp(min=1e-12)[None, :, None, None]
    lows = lows / scale                                               # each image's peak at 1
    # The images of a batch share each warp: they ride as channels of one grid_sample call.
    grids = F.affine_grid(thetas.to(lows), [L, 1, H, W], align_corners=False)   # (L, H, W, 2)
    est = upsample(lows[0], (H, W)).requires_grad_(True)            # (B, H, W)
    opt = torch.optim.Adam([est], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            warped = F.grid_sample(est[None].expand(L, B, H, W), grids, mode="bilinear",
                                   padding_mode="border", align_corners=False)
            loss = (F.adaptive_avg_pool2d(warped, (h, w)) - lows).pow(2).mean()
            loss = loss + tv_weight * _total_variation(est)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                est.clamp_(min=0)
    return (est.detach() * scale[0]).to(x.dtype)


def class_maps(model: nn.Module, x: Tensor, target: Target = None, method: str = "cam",
               layer: str | None = None) -> Tensor:
    """The maps ``(B, H, W)`` of ``method`` ('cam', 'gradcam', 'gradcam++', 'augmented-gradcam')
    at the images' resolution."""
    if method == "cam":
        maps = class_activation_map(model, x, target, layer)
    elif method in ("gradcam", "gradcam++"):
        maps = grad_cam(model, x, target, layer, plus_plus=method == "gradcam++")
    elif method == "augmented-gradcam":
        return augmented_grad_cam(model, x, target, layer)
    else:
        raise UserError(f"unknown map method {method!r}: use cam, gradcam, gradcam++ or augmented-gradcam")
    return upsample(maps, x.shape[-2:])


def upsample(maps: Tensor, size: Sequence[int]) -> Tensor:
    """``(B, h, w)`` maps to ``size`` ``(H, W)``, bilinear (pixel centres aligned as in
    ``F.interpolate(align_corners=False)``)."""
    return F.interpolate(maps[:, None].float(), tuple(size), mode="bilinear", align_corners=False)[:, 0]


def normalize(maps: Tensor) -> Tensor:
    """Each map scaled to ``[0, 1]`` by its own min and max (a constant map becomes 0)."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return (maps - lo[:, None, None]) / span[:, None, None]


__all__ = ["affine_warps", "augmented_grad_cam", "class_activation_map", "class_maps", "grad_cam",
           "normalize", "upsample", "warp"]
