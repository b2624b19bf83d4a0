"""The model registry: one name -> one factory, shared by every task package."""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable

from torch import nn

from vislab.errors import UserError

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_FAMILY: dict[str, str] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; a duplicate name is a bug and raises."""
    name = fn.__name__
    if name in _MODELS:
        raise RuntimeError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    _FAMILY[name] = fn.__module__.rsplit(".", 1)[-1]
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


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
