"""Fold BatchNorm into the convolution before it, for inference.

In eval, BN is ``y = gamma * (x - mean) / sqrt(var + eps) + beta``: an affine map per channel.
After a convolution ``x = W * u + b`` it folds into one convolution with
``W' = W * gamma / sqrt(var + eps)`` (per output channel) and
``b' = (b - mean) * gamma / sqrt(var + eps) + beta``; the arithmetic is torch's
``torch.nn.utils.fusion.fuse_conv_bn_eval``.  What vislab adds is finding the pairs in any model:
the model runs once on ``meta`` tensors and a pair is a convolution whose output goes to a
BatchNorm and nowhere else — whatever the module tree looks like (``Sequential``, attributes
called from a custom ``forward``, torchvision's or vislab's blocks).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vislab.analysis.summary import meta_twins

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _Uses(TorchDispatchMode):
    """Counts the aten ops that read each watched tensor (``watched`` holds them, so ids stay
    unique)."""

    def __init__(self, watched: dict[int, tuple[nn.Module, Tensor]]) -> None:
        super().__init__()
        self.watched = watched
        self.uses: Counter[int] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for t in tree_leaves((args, kwargs or {})):
            if isinstance(t, Tensor) and id(t) in self.watched:
                self.uses[id(t)] += 1
        return func(*args, **(kwargs or {}))


def find_conv_bn(model: nn.Module,
                 input_size: Sequence[int] = (3, 224, 224)) -> list[tuple[str, str]]:
    """Names ``(conv, bn)`` of the convolution -> BatchNorm pairs that can be folded: the BN reads
    the convolution's output, nothing else does, and each module runs once per forward."""
    names = Counter(m for _, m in model.named_modules(remove_duplicate=False))
    once = [(n, m) for n, m in model.named_modules() if names[m] == 1]   # one path to replace
    convs = {m: n for n, m in once if isinstance(m, _CONVS)}
    bns = {m: n for n, m in once if isinstance(m, _BatchNorm) and m.track_running_stats}
    calls: Counter[nn.Module] = Counter()
    produced: dict[int, tuple[nn.Module, Tensor]] = {}   # id(conv output) -> (conv, output)
    fed: list[tuple[nn.Module, nn.Module, Tensor]] = []

    def after_conv(m: nn.Module, args: tuple, out: Tensor) -> None:
        calls[m] += 1
        produced[id(out)] = (m, out)

    def before_bn(m: nn.Module, args: tuple) -> None:
        calls[m] += 1
        if id(args[0]) in produced:
            conv, out = produced[id(args[0])]
            fed.append((conv, m, out))

    handles = [m.register_forward_hook(after_conv) for m in convs]
    handles += [m.register_forward_pre_hook(before_bn) for m in bns]
    training = {m: m.training for m in model.modules()}
    model.eval()
    uses = _Uses(produced)
    try:
        dtype = next(model.parameters(), torch.empty(0)).dtype
        x = torch.empty(1, *input_size, device="meta", dtype=dtype)
        with torch.no_grad(), uses:
            out = torch.func.functional_call(model, meta_twins(model), (x,))
    finally:
        for h in handles:
            h.remove()
        for m, t in training.items():
            m.training = t
    returned = {id(t) for t in tree_leaves(out) if isinstance(t, Tensor)}
    return [(convs[c], bns[b]) for c, b, t in fed
            if calls[c] == 1 and calls[b] == 1 and uses.uses[id(t)] == 1 and id(t) not in returned
            and c.out_channels == b.num_features]


def fuse_bn(model: nn.Module, input_size: Sequence[int] = (3, 224, 224)) -> nn.Module:
    """A copy of ``model`` in eval mode with every foldable BatchNorm folded into its convolution
    (the BN becomes ``nn.Identity``); ``model`` is not changed.  Outputs equal the original's in
    eval up to float rounding.  ``input_size`` is any size the model accepts (only shapes run).

    Example::

        fast = fuse_bn(torchvision.models.resnet50().eval())   # 53 BNs gone
    """
    pairs = find_conv_bn(model, input_size)
    fused = copy.deepcopy(model).eval()
    for conv_name, bn_name in pairs:
        conv, bn = fused.get_submodule(conv_name), fused.get_submodule(bn_name)
        _replace(fused, conv_name, fuse_conv_bn_eval(conv, bn))
        _replace(fused, bn_name, nn.Identity())
    return fused


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


__all__ = ["find_conv_bn", "fuse_bn"]
