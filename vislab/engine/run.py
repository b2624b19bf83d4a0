"""Recipes over the engine: train a classifier into a run directory, evaluate it, predict with it,
cross-validate it.  The CLI calls exactly these functions.

A run directory holds ``config.yaml`` (resolved), ``metrics.jsonl``, ``tb/`` (TensorBoard),
``checkpoints/{last,best}.pt``, ``plots/*.png``, ``eval.json`` and ``model.safetensors``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np
import torch

from vislab.config import Config, config_from_run, save_config
from vislab.data.datasets import load_split
from vislab.data.formats import load_image
from vislab.data.loader import TensorLoader, to_tensor
from vislab.engine.checkpoint import atomic_write_text, export_safetensors, load_checkpoint
from vislab.engine.hooks import (CheckpointHook, EarlyStopHook, EMAHook, EvalHook, LoggerHook,
                                 PlotHook, SchedulerHook)
from vislab.engine.optim import build_optimizer, build_scheduler
from vislab.engine.tasks import get_task
from vislab.engine.trainer import Trainer, resolve_device, set_determinism
from vislab.errors import UserError


# ---------------------------------------------------------------------------- run directory

class RunLock:
    """An exclusive lock on a run directory (released by the OS even if the process is killed)."""

    def __init__(self, run_dir: str) -> None:
        os.makedirs(run_dir, exist_ok=True)
        self.f = open(os.path.join(run_dir, ".lock"), "w")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.f.close()
            raise UserError(f"run directory {run_dir} is in use by another `vislab train`; wait for "
                            "it to finish or choose another --run-dir") from None
        self.f.write(str(os.getpid()))
        self.f.flush()

    def release(self) -> None:
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def default_run_dir(cfg: Config) -> str:
    return os.path.join("runs", f"{cfg.model.name}-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}")


def _prepare_run_dir(run_dir: str, resume: bool, fresh: bool) -> None:
    last = os.path.join(run_dir, "checkpoints", "last.pt")
    if resume:
        if not os.path.exists(last):
            raise UserError(f"nothing to resume in {run_dir} (no checkpoints/last.pt); drop --resume "
                            "to start a new run there")
        return
    if os.path.exists(os.path.join(run_dir, "config.yaml")):
        if not fresh:
            raise UserError(f"{run_dir} already holds a run; use --resume to continue it, --fresh to "
                            "start over (the old run is kept beside it), or another --run-dir")
        backup = f"{run_dir.rstrip('/')}.prev-{time.strftime('%Y%m%d-%H%M%S')}"
        shutil.move(run_dir, backup)
        print(f"previous run moved to {backup}")


# ---------------------------------------------------------------------------- train

@dataclass
class TrainResult:
    run_dir: str
    metrics: dict        # last epoch's metrics
    best: dict           # best monitored value and its epoch
    train_time_s: float


def train(cfg: Config, run_dir: str | None = None, resume: bool = False, fresh: bool = False,
          progress: bool = True, log=print, val_indices: np.ndarray | None = None) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (default ``runs/MODEL-DATA-TIME``).  With ``resume`` the
    run continues from ``checkpoints/last.pt``; with ``cfg.deterministic`` the result is
    bit-identical to a run that was never interrupted."""
    run_dir = run_dir or default_run_dir(cfg)
    _prepare_run_dir(run_dir, resume, fresh)
    lock = RunLock(run_dir)
    try:
        return _train_locked(cfg, run_dir, resume, progress, log, val_indices)
    finally:
        lock.release()


def _train_locked(cfg, run_dir, resume, progress, log, val_indices) -> TrainResult:
    task = get_task(cfg.task)
    set_determinism(cfg.seed, cfg.deterministic)
    device = resolve_device(cfg.device)
    data = task.prepare(cfg, device, val_indices)
    model = task.build_model(cfg, data.stats).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    save_config(cfg, os.path.join(run_dir, "config.yaml"))

    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    fill = -data.stats["mean"][0] / data.stats["std"][0]      # black, once normalised
    loader = TensorLoader(data.train_x, data.train_y, cfg.train.batch_size, shuffle=True,
                          drop_last=len(data.train_y) > cfg.train.batch_size,
                          augment=cfg.data.augment if task.augment else None, gen=gen,
                          num_classes=len(data.stats["classes"]), fill=fill)
    val_loader = TensorLoader(data.val_x, data.val_y, cfg.train.eval_batch_size)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.sched, len(loader), cfg.train.epochs)

    ema = EMAHook(model, cfg.train.ema_decay) if cfg.train.ema_decay else None
    hooks = [SchedulerHook(scheduler)] if scheduler is not None else []
    hooks += [ema] if ema else []
    hooks += [EvalHook(val_loader, task.validate, ema), EarlyStopHook(cfg.train.monitor, cfg.train.early_stop_patience),
              CheckpointHook(run_dir, {"data": data.stats, "model_name": cfg.model.name,
                                       "model_kwargs": dict(cfg.model.kwargs), "task": cfg.task}),
              LoggerHook(run_dir, progress=progress), PlotHook(run_dir)]
    amp = (torch.bfloat16 if device.type in ("cuda", "cpu") else torch.float16) if cfg.train.amp else None
    trainer = Trainer(model, optimizer, task.loss(cfg, model), loader, cfg.train.epochs, hooks, device, amp,
                      cfg.train.grad_clip, task.correct, log)
    if resume:
        trainer.load_state_dict(load_checkpoint(os.path.join(run_dir, "checkpoints", "last.pt"), device))
        log(f"resuming {run_dir} at epoch {trainer.epoch + 1}")
    t0 = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - t0
    export_safetensors(trainer.eval_model().state_dict(), os.path.join(run_dir, "model.safetensors"),
                       {"model": cfg.model.name})
    stop = next(h for h in hooks if isinstance(h, EarlyStopHook))
    return TrainResult(run_dir, dict(trainer.epoch_metrics),
                       {"monitor": stop.monitor, "value": stop.best, "epoch": stop.best_epoch + 1},
                       elapsed)


# ---------------------------------------------------------------------------- load a trained run

def load_run_model(run_dir: str, device: torch.device | str = "cpu", which: str = "best"):
    """The trained model of a run (``best.pt``, else ``last.pt``) in eval mode, with the data
    statistics it was trained with."""
    cfg = config_from_run(run_dir)
    path = os.path.join(run_dir, "checkpoints", f"{which}.pt")
    if which == "best" and not os.path.exists(path):
        path = os.path.join(run_dir, "checkpoints", "last.pt")
    ckpt = load_checkpoint(path, device)
    stats = ckpt["data"]
    model = get_task(cfg.task).build_model(cfg, stats).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval(), stats, cfg


def evaluate(run_dir: str, tta: bool = False, device: str = "auto") -> dict:
    """Evaluate a run on its test set, the only place the test set is read (the task writes
    ``eval.json`` and its plots); returns the report."""
    return get_task(config_from_run(run_dir).task).evaluate(run_dir, tta, device)


def predict(run_dir: str, paths: list[str], device: str = "auto", topk: int = 1) -> list[dict]:
    """Class and probability for image files, converted like the training data (channels,
    size, normalisation)."""
    if (task := config_from_run(run_dir).task) != "classification":
        raise UserError(f"{run_dir} is a {task} run: use `vislab detect {run_dir} IMAGE` to see its boxes")
    dev = resolve_device(device)
    model, stats, _ = load_run_model(run_dir, dev)
    size = tuple(stats["image_size"])
    imgs = np.stack([load_image(p, stats["in_chans"], size) for p in paths])
    x = to_tensor(imgs, stats["mean"], stats["std"], dev)
    with torch.no_grad():
        probs = torch.softmax(model(x).float(), 1).cpu()
    top = probs.topk(min(topk, probs.shape[1]), 1)
    return [{"path": p, "predictions": [{"class": stats["classes"][int(i)], "index": int(i), "prob": float(v)}
                                        for v, i in zip(top.values[n], top.indices[n])]}
            for n, p in enumerate(paths)]


def cross_validate(cfg: Config, folds: int, run_dir: str | None = None, progress: bool = True,
                   log=print) -> dict:
    """k-fold cross-validation of a recipe on the training set: fold ``k`` is the validation set
    of run ``run_dir/fold-k``; reports the best validation accuracy of each fold, mean and std."""
    if folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}")
    if cfg.task != "classification":
        raise UserError(f"--folds cross-validates classification recipes; this config's task is {cfg.task!r}")
    run_dir = run_dir or default_run_dir(cfg) + f"-cv{folds}"
    n = load_split(cfg.data.name, "train", cfg.data.root, cfg.data.download).labels.shape[0]
    n = min(n, cfg.data.limit_train or n)
    parts = np.array_split(np.random.default_rng(cfg.seed).permutation(n), folds)
    scores = []
    for k, va in enumerate(parts):
        log(f"fold {k + 1}/{folds}")
        res = train(cfg, os.path.join(run_dir, f"fold-{k}"), progress=progress, log=log, val_indices=va)
        scores.append(res.best["value"])
    out = {"folds": folds, "monitor": cfg.train.monitor, "scores": scores,
           "mean": float(np.mean(scores)), "std": float(np.std(scores, ddof=1))}
    atomic_write_text(os.path.join(run_dir, "cv.json"), json.dumps(out, indent=1))
    return out


__all__ = ["train", "evaluate", "predict", "cross_validate", "load_run_model"]
