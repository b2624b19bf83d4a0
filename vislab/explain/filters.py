"""First-layer filters as images, and dead filters over a data set.

The first convolution works on pixels, so its kernels can be looked at directly (an RGB kernel
as a colour patch).  A *dead* filter is one that carries no information: its output is zero for
every image (a ReLU that never opens, as in AlexNet's first layer) or the same everywhere (a
kernel that decayed to zero).  :func:`dead_filters` runs a data set and reports, per layer, the
channels that are one or the other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from vislab.errors import UserError
from vislab.explain.hooks import inspecting

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first ``nn.Conv2d`` in module order (the one that sees the pixels) and its name."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise UserError(f"{type(model).__name__} has no convolution: there are no filters to show")


def filter_images(conv: nn.Conv2d) -> Tensor:
    """The kernels ``(out, C, kh, kw)`` of a convolution: as they are for 1 or 3 input
    channels (grey or RGB), else the mean over input channels ``(out, 1, kh, kw)``."""
    w = conv.weight.detach().float().cpu()
    return w if w.shape[1] in (1, 3) else w.mean(1, keepdim=True)


@dataclass
class LayerFilters:
    layer: str
    kind: str                    # module class
    channels: int
    zero: list[int]              # output exactly 0 on every image and position
    constant: list[int]          # otherwise (near) constant: std <= rel_tol x the layer's median
    std: list[float]             # per channel, over images and positions

    @property
    def dead(self) -> list[int]:
        return sorted(self.zero + self.constant)

    def to_dict(self) -> dict:
        return asdict(self) | {"dead": self.dead}


class _Moments:
    """Per-channel count, sum, sum of squares and max |a| of a layer's outputs, over calls."""

    def __init__(self) -> None:
        self.n, self.s, self.s2, self.amax = 0, 0.0, 0.0, 0.0

    def add(self, a: Tensor) -> None:
        a = a.detach().double().transpose(0, 1).reshape(a.shape[1], -1)   # (C, B*H*W)
        self.n += a.shape[1]
        self.s = self.s + a.sum(1)
        self.s2 = self.s2 + a.pow(2).sum(1)
        self.amax = torch.maximum(torch.as_tensor(self.amax, dtype=a.dtype), a.abs().amax(1))


def dead_filters(model: nn.Module, images: Tensor, layers: list[str] | None = None,
                 batch_size: int = 256, rel_tol: float = 1e-3) -> list[LayerFilters]:
    """Per layer, the channels that are dead over ``images`` ``(N, C, H, W)``.

    Args:
        layers: module names (default: every ``nn.Conv2d`` and every activation module, in
            module order); a module called several times per forward counts each call apart.
        rel_tol: a channel whose std is at most ``rel_tol`` x the median std of its layer is
            constant.
    """
    modules = dict(model.named_modules())
    if layers is None:
        layers = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, *ACTIVATIONS))]
    stats: dict[str, _Moments] = {}
    calls: dict[str, int] = {}
    kinds: dict[str, str] = {}

    def hook(name: str, module: nn.Module, args, out) -> None:
        if not isinstance(out, Tensor) or out.ndim < 2:
            return
        i = calls[name] = calls.get(name, -1) + 1
        key = name if i == 0 else f"{name}#{i}"
        kinds[key] = type(module).__name__
        stats.setdefault(key, _Moments()).add(out)

    handles = []
    try:
        for name in layers:
            if name not in modules:
                raise UserError(f"the model has no layer {name!r}; see `vislab summary` for the names")
            handles.append(modules[name].register_forward_hook(
                lambda m, a, o, name=name: hook(name, m, a, o)))
        with torch.no_grad(), inspecting(model):
            for i in range(0, len(images), batch_size):
                calls.clear()
                model(images[i:i + batch_size])
    finally:
        for h in handles:
            h.remove()
    report = []
    for key, m in stats.items():
        mean = m.s / m.n
        std = (m.s2 / m.n - mean.pow(2)).clamp(min=0).sqrt()
        zero = (m.amax == 0).nonzero()[:, 0].tolist()
        floor = rel_tol * float(std.median())
        constant = [c for c in (std <= floor).nonzero()[:, 0].tolist() if c not in zero]
        report.append(LayerFilters(key, kinds[key], len(std), zero, constant, std.tolist()))
    return report


__all__ = ["LayerFilters", "dead_filters", "filter_images", "first_conv"]
