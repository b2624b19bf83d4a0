"""Optimizers and learning-rate schedules from torch, built from a config."""

from __future__ import annotations

import torch
from torch import nn

from vislab.errors import UserError


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict]:
    """Two groups: weights that get decay, and (unless ``decay_norm_and_bias``) biases and
    normalisation parameters (any parameter with fewer than 2 dims) that do not."""
    if decay_norm_and_bias or weight_decay == 0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """``cfg``: an :class:`vislab.config.OptimConfig`."""
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias)
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
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total,
            pct_start=cfg.pct_start, anneal_strategy="linear",
            cycle_momentum="momentum" in opt.defaults and opt.defaults.get("momentum", 0) > 0,
            base_momentum=0.85, max_momentum=opt.defaults.get("momentum", 0.9) or 0.9)
    if cfg.name == "cosine":
        warm = int(round(cfg.warmup_epochs * steps_per_epoch))
        eta_min = opt.param_groups[0]["lr"] * cfg.min_lr_ratio
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total - warm), eta_min=eta_min)
        if warm == 0:
            return cosine
        ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / warm, total_iters=warm)
        return torch.optim.lr_scheduler.SequentialLR(opt, [ramp, cosine], milestones=[warm])
    raise UserError(f"unknown schedule {cfg.name!r}: use none, step, cosine or onecycle")
