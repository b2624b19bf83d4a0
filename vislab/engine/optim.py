"""Optimizers and learning-rate schedules from torch, built from a config."""

from __future__ import annotations

import math

import torch
from torch import nn

from vislab.errors import UserError

HEAD = "head"


def is_head(name: str) -> bool:
    """Whether the parameter, buffer or submodule ``name`` (as ``named_parameters``,
    ``state_dict`` and ``named_modules`` spell it) belongs to the classifier head.  The engine does
    not import the models, so this is a contract on names: a classifier keeps its head in the
    attribute ``head`` (as ``vislab.models.base.Classifier`` does); everything else is its backbone."""
    return name == HEAD or name.startswith(HEAD + ".")


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool,
                 backbone_lr: float | None = None) -> list[dict]:
    """The trainable parameters (frozen ones, ``requires_grad=False``, are left out) in groups:
    weights that get decay, and (unless ``decay_norm_and_bias``) biases and normalisation
    parameters (any parameter with fewer than 2 dims) that do not.

    With ``backbone_lr`` each of those is split again: the backbone's parameters get
    ``lr=backbone_lr``, the head's (:func:`is_head`) keep the optimizer's rate; up to four
    groups, backbone first, empty ones left out (a frozen backbone leaves only the head's)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    split = not decay_norm_and_bias and weight_decay != 0

    def by_decay(params: list[nn.Parameter], **extra) -> list[dict]:
        if not split:
            return [{"params": params, "weight_decay": weight_decay, **extra}]
        return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay, **extra},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, **extra}]

    if backbone_lr is None:
        return by_decay([p for _, p in named])
    if not any(is_head(n) for n, _ in model.named_parameters()):
        raise UserError(f"optim.backbone_lr_scale needs a classifier whose head is its attribute `{HEAD}`; "
                        f"{type(model).__name__} has none: set optim.backbone_lr_scale=1")
    groups = (by_decay([p for n, p in named if not is_head(n)], lr=backbone_lr)
              + by_decay([p for n, p in named if is_head(n)]))
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """``cfg``: an :class:`vislab.config.OptimConfig`.  ``backbone_lr_scale`` != 1 gives the
    backbone (all but ``model.head``) the rate ``lr * backbone_lr_scale`` in groups of its own."""
    backbone_lr = cfg.lr * cfg.backbone_lr_scale if cfg.backbone_lr_scale != 1 else None
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias, backbone_lr)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    raise UserError(f"unknown optimizer {cfg.name!r}: use sgd, rmsprop, adam or adamw")


def build_scheduler(opt: torch.optim.Optimizer, cfg, steps_per_epoch: int, epochs: int):
    """A scheduler stepped once per optimisation step (``None`` for a constant rate)."""
    total = steps_per_epoch * epochs
    if cfg.name == "none":
        return None
    if cfg.name == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_epochs * steps_per_epoch,
                                               gamma=cfg.gamma)
    if cfg.name == "onecycle":
        if total < 3:      # too few steps for a warm-up and an annealing phase: the peak rate
            return None
        # Each phase needs at least one step of its own (OneCycleLR divides by its length).
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total,
            pct_start=min(max(cfg.pct_start, 2.0 / total), 1 - 1.0 / total), anneal_strategy="linear",
            cycle_momentum="momentum" in opt.defaults and opt.defaults.get("momentum", 0) > 0,
            base_momentum=0.85, max_momentum=opt.defaults.get("momentum", 0.9) or 0.9)
    if cfg.name == "cosine":
        warm = int(round(cfg.warmup_epochs * steps_per_epoch))
        steps, ratio = max(1, total - warm), cfg.min_lr_ratio
        if ratio == 0 or len({g["lr"] for g in opt.param_groups}) == 1:
            cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps,
                                                                eta_min=opt.param_groups[0]["lr"] * ratio)
        else:   # CosineAnnealingLR has one eta_min for all groups; each group ends at its own lr * ratio
            cosine = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda t: ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
        if warm == 0:
            return cosine
        ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / warm, total_iters=warm)
        return torch.optim.lr_scheduler.SequentialLR(opt, [ramp, cosine], milestones=[warm])
    raise UserError(f"unknown schedule {cfg.name!r}: use none, step, cosine or onecycle")
