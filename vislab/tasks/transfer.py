"""Transfer learning: start a run from another run's weights, its head excepted, and optionally
train the new head alone.

The recipe of the notes (003, "Transfer Learning"): take a trained network, remove its head, put
a new one sized for the new classes, then freeze the convolutional base (a linear probe) or
fine-tune it, usually with a lower rate than from scratch (``optim.backbone_lr_scale``).

- ``model.init_from=RUN``: every tensor of the new model outside ``model.head`` (parameters and
  BatchNorm statistics) is copied from RUN's ``best.pt`` (else ``last.pt``); the head keeps its
  fresh initialisation.  RUN may be a classification run or a metric-learning run (its embedding
  network's backbone), or an autoencoder run (``conv_ae`` or ``dense_ae``: its encoder starts
  the classifier ``conv_ae_encoder`` or ``dense_ae_encoder``, the notes' "AE for classifier
  initialization"; the decoder is dropped).  RUN must have trained the same ``model.name`` with a backbone of the
  same shapes (same ``model.kwargs``, input channels and image size); the data set and the
  classes may differ.  The run also keeps RUN's input normalisation (see
  :func:`source_normalization`): the backbone's filters and BatchNorm statistics were fitted to it.
- ``train.freeze=backbone``: only the head's parameters train (the optimizer never sees the
  others), and the backbone stays in eval mode, so that its BatchNorm layers normalise with, and
  never update, their running statistics, and its dropout is off: a fixed feature extractor.

Which tensors are the head is the engine's contract (:func:`vislab.engine.optim.is_head`): the
names under the attribute ``head`` of a :class:`vislab.models.base.Classifier`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from vislab.config import Config, config_from_run
from vislab.data.info import DataInfo, Normalization
from vislab.engine.checkpoint import load_checkpoint
from vislab.engine.optim import HEAD, is_head
from vislab.errors import UserError
from vislab.models.generative import ENCODER_CLASSIFIERS
from vislab.tasks.rundir import BEST, LAST

EMBEDDING_BACKBONE = "backbone."     # where vislab.models.embedding.EmbeddingNet keeps its backbone


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters of ``model.head`` as ``model.named_parameters()`` spells them."""
    _check_has_head(model)
    return [n for n, _ in model.named_parameters() if is_head(n)]


def _check_has_head(model: nn.Module) -> None:
    if not isinstance(getattr(model, HEAD, None), nn.Module):
        raise UserError(f"transfer learning needs a classifier with its head in the attribute `{HEAD}`; "
                        f"{type(model).__name__} has none: unset model.init_from and train.freeze")


def source_checkpoint(run_dir: str, model_name: str) -> dict:
    """The checkpoint that ``model.init_from=run_dir`` starts from (``best.pt``, else
    ``last.pt``), refused when the folder is not a run or trained another model."""
    if not os.path.isdir(run_dir):
        raise UserError(f"model.init_from: run directory {run_dir} does not exist; give the folder a "
                        "`vislab train` wrote, or unset model.init_from")
    trained = config_from_run(run_dir).model.name
    if ENCODER_CLASSIFIERS.get(trained) not in (None, model_name):
        raise UserError(f"model.init_from: {run_dir} trained the autoencoder {trained!r}; the classifier made "
                        f"of its encoder is {ENCODER_CLASSIFIERS[trained]!r}: set model.name={ENCODER_CLASSIFIERS[trained]}")
    if trained != model_name and ENCODER_CLASSIFIERS.get(trained) != model_name:
        raise UserError(f"model.init_from: {run_dir} trained {trained!r}, this run builds {model_name!r}; "
                        f"set model.name={trained}, or start from a {model_name} run")
    path = os.path.join(run_dir, BEST)
    if not os.path.exists(path):
        path = os.path.join(run_dir, LAST)
    if not os.path.exists(path):
        raise UserError(f"model.init_from: {run_dir} has no checkpoint (checkpoints/best.pt or last.pt); "
                        "train it first")
    return load_checkpoint(path, "cpu")


def source_normalization(cfg: Config, in_chans: int) -> Normalization | None:
    """The input normalisation of the run named by ``model.init_from``, when it saw ``in_chans``
    channels (other channels cannot transfer: :func:`apply_transfer` refuses them); ``None``
    without ``init_from``."""
    if cfg.model.init_from is None:
        return None
    info = DataInfo.from_dict(source_checkpoint(cfg.model.init_from, cfg.model.name)["data"])
    return info.norm if info.in_chans == in_chans else None


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], source: str = "the source run") -> int:
    """Copy every tensor of ``state`` into ``model`` except the head's; returns how many.  Every
    backbone tensor of ``model`` must be in ``state`` with the same shape (tensors only ``state``
    has, e.g. auxiliary classifiers the new model drops, are ignored).  ``state`` may be a
    metric-learning run's embedding network, whose backbone is taken (its projection is not)."""
    _check_has_head(model)
    own = {k: v for k, v in model.state_dict().items() if not is_head(k)}
    if not any(k in state for k in own) and any(k.startswith(EMBEDDING_BACKBONE) for k in state):
        # a metric-learning run: its embedding network holds the classifier's backbone under `backbone.`
        state = {k[len(EMBEDDING_BACKBONE):]: v for k, v in state.items() if k.startswith(EMBEDDING_BACKBONE)}
    missing = [k for k in own if k not in state]
    shapes = [f"{k} is {tuple(state[k].shape)} there, {tuple(v.shape)} here"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or shapes:
        first = shapes[0] if shapes else f"{missing[0]} is missing there"
        more = len(missing) + len(shapes) - 1
        raise UserError(f"model.init_from: the backbone of {source} does not fit this model ({first}"
                        f"{f', and {more} more' if more else ''}); use that run's model.kwargs, input "
                        "channels and image size")
    model.load_state_dict({k: state[k] for k in own}, strict=False)
    return len(own)


def _stay_in_eval(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook of a frozen module: whatever ``model.train()`` set, it runs in eval mode."""
    module.training = False


def freeze_backbone(model: nn.Module) -> None:
    """Train the head alone: ``requires_grad=False`` on every other parameter, and every backbone
    module in eval mode at each forward.

    The trainer calls ``model.train()`` each epoch, which would put the backbone's BatchNorm back
    into training mode (batch statistics, running averages drifting).  A forward pre-hook on each
    backbone module sets it back to eval just before it runs: it survives ``model.train()``, is
    copied with the module (the EMA's ``deepcopy``), and, holding no state, needs nothing in a
    checkpoint; a resumed run freezes its rebuilt model the same way.  The model itself (the
    parent of the head, whose ``forward_head`` applies ``head_drop``) keeps its training mode."""
    _check_has_head(model)
    for name, p in model.named_parameters():
        p.requires_grad_(is_head(name))
    for name, m in model.named_modules():
        if name and not is_head(name):
            m.register_forward_pre_hook(_stay_in_eval)


def apply_transfer(model: nn.Module, cfg: Config, log: Callable[[str], None] = print) -> None:
    """``model.init_from`` and ``train.freeze`` of ``cfg`` applied to a freshly built model.
    ``model.init_from`` becomes an absolute path, so that the saved config resumes from anywhere."""
    run = cfg.model.init_from
    if run is not None:
        run = cfg.model.init_from = os.path.abspath(run)
        n = load_backbone(model, source_checkpoint(run, cfg.model.name)["model"], run)
        log(f"init from {run}: {n} tensors loaded, head new ({getattr(model, 'num_classes', '?')} classes)")
    if cfg.train.freeze == "backbone":
        freeze_backbone(model)
        head = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        log(f"backbone frozen (eval mode): {head:,} of {total:,} parameters train (the head)"
            + ("" if run else "; warning: without model.init_from the head learns on random features"))


__all__ = ["apply_transfer", "freeze_backbone", "head_parameter_names", "load_backbone",
           "source_checkpoint", "source_normalization"]
