"""The model registry: one name -> one factory, shared by every task package.

Each model has a *kind*: ``"classifier"`` (logits ``(B, K)``; every family of the classification
notes) or ``"segmentation"`` (logits ``(B, K, H, W)`` at the input's resolution: FCN, U-Net,
DeepLab, the per-pixel baseline) or ``"generative"`` (autoencoders, the VAE, GANs: what
their ``kind`` attribute says they return) or ``"captioning"`` (image -> caption: logits
``(B, T, V)`` from images and teacher-forced tokens, and ``start``/``step`` for decoding) or
``"seq2seq"`` (text -> text encoder-decoders with the same decoding face) or ``"detection"`` (a
dict of losses in training, ``[dict(boxes, scores, labels)]`` in eval: RetinaNet).  The two
sequence kinds are registered by :mod:`vislab.sequence.models` when it is imported, the detectors
by :mod:`vislab.detection.retinanet`.  :func:`list_models` lists
classifiers unless asked for another kind, so code that walks "every model" as a classifier (the
zoo table, the torchvision comparisons) keeps working when a new kind is registered.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable

from torch import nn

from vislab.errors import UserError

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_FAMILY: dict[str, str] = {}
_KIND: dict[str, str] = {}
KINDS = ("classifier", "segmentation", "generative", "captioning", "seq2seq", "detection")


def register_model(fn: Callable[..., nn.Module] | None = None, *, kind: str = "classifier"):
    """Register ``fn`` under its own name (``@register_model`` or
    ``@register_model(kind="segmentation")``); a duplicate name is a bug and raises."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; use one of {KINDS}")

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _MODELS:
            raise RuntimeError(f"model {name!r} is registered twice")
        _MODELS[name] = fn
        _FAMILY[name] = fn.__module__.rsplit(".", 1)[-1]
        _KIND[name] = kind
        return fn

    return add if fn is None else add(fn)


def list_models(pattern: str = "*", kind: str | None = "classifier") -> list[str]:
    """Registered names of ``kind`` (``None``: every kind) matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern) and kind in (None, _KIND[n]))


def model_kind(name: str) -> str:
    """The kind of a registered model (one of ``KINDS``); unknown names raise :class:`UserError`."""
    _factory(name)
    return _KIND[name]


def model_family(name: str) -> str:
    """The module (family) a registered model comes from, e.g. ``'resnet'``."""
    return _FAMILY[name]


def create_model(name: str, num_classes: int = 10, in_chans: int = 3, **kwargs) -> nn.Module:
    """Build the registered model ``name``; unknown names raise :class:`UserError`."""
    return _factory(name)(num_classes=num_classes, in_chans=in_chans, **kwargs)


def _factory(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        close = fnmatch.filter(_MODELS, f"*{name}*")[:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"unknown model {name!r}{hint}: run `vislab models` to list them")
    return _MODELS[name]


create = create_model


def model_accepts(name: str, arg: str) -> bool:
    """Whether the factory of ``name`` takes the keyword ``arg`` (e.g. ``img_size``)."""
    return arg in inspect.signature(_factory(name)).parameters


def default_kwargs(name: str) -> dict:
    """The factory's keyword defaults (besides ``num_classes`` and ``in_chans``), tuples as
    lists: what a run records so that it still loads after a default changes."""
    out = {}
    for p in inspect.signature(_factory(name)).parameters.values():
        if p.name not in ("num_classes", "in_chans") and p.default is not inspect.Parameter.empty:
            out[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return out
