"""Layers by name, and the temporary state every explanation method runs under.

The methods read a layer's output (and its gradient) through forward hooks.  :func:`capture`
registers them and removes them in ``finally``, so no hook outlives a call, even one that
raises; :func:`inspecting` puts the model in eval mode and restores each module's mode after,
so BN statistics and dropout are left as they were.  Gradients are taken with
``torch.autograd.grad``, which never touches the parameters' ``.grad``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from vislab.errors import UserError
from vislab.models.base import Classifier

MAX_PREFIX_TOKENS = 8      # class/distillation/register tokens ahead of a ViT's patch tokens

Target = int | Sequence[int] | Tensor | None   # one class for all images, one per image, or predicted


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (as in ``model.named_modules()``)."""
    modules = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see `vislab summary MODEL` for the layer names"
        raise UserError(f"the model has no layer {name!r}: {hint}")
    return modules[name]


def default_layer(model: nn.Module, x: Tensor) -> str:
    """The layer whose maps CAM-type methods read by default, found by one probe on ``x[:1]``:
    for a vislab classifier the last stage in ``feature_info``, or for a token model the one
    before it (the class token that the head reads sees the last block's patch tokens only
    through that block's attention, so their gradient is zero); for any other module the last
    direct child whose output is a spatial map."""
    info = getattr(model, "feature_info", None)
    if isinstance(model, Classifier) and info:
        shape = output_shapes(model, x, [info[-1]["module"]])[info[-1]["module"]]
        return info[-2 if len(shape) == 3 and len(info) > 1 else -1]["module"]
    shapes = output_shapes(model, x, [n for n, _ in model.named_children()])
    spatial = [n for n, s in shapes.items() if len(s) == 4 and s[2] * s[3] > 1]
    if not spatial:
        raise UserError(f"cannot tell which layer of {type(model).__name__} holds the feature maps; "
                        "name one with --layer (see `vislab summary` for the names)")
    return spatial[-1]


def output_shapes(model: nn.Module, x: Tensor, layers: list[str]) -> dict[str, tuple[int, ...]]:
    """Output shapes of ``layers`` on the first image of ``x`` (layers not run are left out)."""
    with torch.no_grad(), inspecting(model), capture(model, layers, keep_graph=False) as acts:
        model(x[:1])
        return {n: tuple(a.shape) for n, a in acts.items()}


@contextmanager
def inspecting(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration; every module's train/eval flag is restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def capture(model: nn.Module, layers: Sequence[str], keep_graph: bool = True) -> Iterator[dict[str, Tensor]]:
    """Record the output of each named layer during the forward passes run inside the block.

    Yields a dict ``name -> output`` (the first tensor of a tuple output; the last call wins).
    With ``keep_graph`` the recorded tensor stays in the autograd graph, so
    ``torch.autograd.grad(score, acts[name])`` gives the layer's gradient; the layer then hands a
    copy on to the rest of the network, so that a later in-place op (``ReLU(inplace=True)``)
    cannot change the recorded tensor.  The hooks are removed on exit, error or not.
    """
    acts: dict[str, Tensor] = {}
    handles = []

    def hook(name: str, module: nn.Module, args: tuple, out):
        t = out[0] if isinstance(out, (tuple, list)) else out
        if not keep_graph:
            acts[name] = t.detach()
            return None
        acts[name] = t
        if isinstance(out, tuple):
            return (t.clone(), *out[1:])
        return t.clone() if isinstance(out, Tensor) else None

    try:
        for name in layers:
            handles.append(get_layer(model, name).register_forward_hook(
                lambda m, a, o, name=name: hook(name, m, a, o)))
        yield acts
    finally:
        for h in handles:
            h.remove()
        acts.clear()


def as_spatial(act: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """A layer output as maps ``(B, C, h, w)``: convolutional maps pass through; ViT tokens
    ``(B, N, D)`` drop the class (and other prefix) tokens and are reshaped to the patch grid,
    whose shape follows the image's aspect ratio."""
    if act.ndim == 4:
        return act
    if act.ndim != 3:
        raise UserError(f"a layer output of shape {tuple(act.shape)} has no spatial layout; choose "
                        "a convolutional layer (B, C, H, W) or a transformer block (B, N, D) with --layer")
    B, N, D = act.shape
    H, W = image_hw
    for prefix in range(MAX_PREFIX_TOKENS + 1):
        n = N - prefix
        gh = max(round((n * H / W) ** 0.5), 1)
        if n > 0 and n % gh == 0 and abs(gh / (n // gh) - H / W) < 1e-6 * H / W + 0.01:
            return act[:, prefix:].transpose(1, 2).reshape(B, D, gh, n // gh)
    raise UserError(f"{N} tokens do not form a patch grid for a {H}x{W} image (plus up to "
                    f"{MAX_PREFIX_TOKENS} class tokens); choose another --layer")


def class_targets(logits: Tensor, target: Target) -> Tensor:
    """Per-image class indices ``(B,)``: the predicted class where ``target`` is None, else the
    given class (one int for all, or one per image), checked against the number of classes."""
    B, K = logits.shape
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target, device=logits.device, dtype=torch.long).reshape(-1)
    if t.numel() == 1:
        t = t.expand(B)
    if t.numel() != B:
        raise UserError(f"{t.numel()} target classes for {B} images: give one class, or one per image")
    bad = t[(t < 0) | (t >= K)]
    if len(bad):
        raise UserError(f"class index {int(bad[0])} is out of range: the model has {K} classes "
                        f"(0..{K - 1})")
    return t


def layer_gradient(model: nn.Module, x: Tensor, layer: str, target: Target = None
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """One forward and backward pass: the layer's output ``A``, ``dS_c/dA`` (both as recorded,
    i.e. maps or tokens) and the target classes, where ``S_c`` is the class score (logit)."""
    x = x.detach().requires_grad_(True)     # the graph reaches A even when no parameter is trainable
    with inspecting(model), capture(model, [layer]) as acts:
        logits = model(x)
        if layer not in acts:
            raise UserError(f"layer {layer!r} is not run by the model's forward pass; choose another --layer")
        act = acts[layer]
        targets = class_targets(logits, target)
        score = logits.gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(score, act)
    return act.detach(), grad.detach(), targets


__all__ = ["Target", "as_spatial", "capture", "class_targets", "default_layer", "get_layer",
           "inspecting", "layer_gradient", "output_shapes"]
