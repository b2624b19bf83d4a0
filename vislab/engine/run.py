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
from vislab.data.datasets import ArrayDataset, load_split
from vislab.data.formats import load_image
from vislab.data.loader import TensorLoader, channel_stats, to_tensor, train_val_split
from vislab.engine.checkpoint import atomic_write_text, export_safetensors, load_checkpoint
from vislab.engine.hooks import (CheckpointHook, EarlyStopHook, EMAHook, EvalHook, LoggerHook,
                                 PlotHook, SchedulerHook)
from vislab.engine.losses import build_loss
from vislab.engine.optim import build_optimizer, build_scheduler
from vislab.engine.trainer import Trainer, predict_logits, resolve_device, set_determinism
from vislab.errors import UserError
from vislab.models import create_model
from vislab.models.registry import model_accepts


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


# ---------------------------------------------------------------------------- data and model

@dataclass
class Prepared:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    stats: dict          # mean, std, classes, in_chans, image_size, dataset


def prepare_data(cfg: Config, device: torch.device, val_indices: np.ndarray | None = None) -> Prepared:
    """Training set -> (train, validation) tensors on ``device``, normalised with statistics of
    the training part only.  The test set is not read here."""
    full = load_split(cfg.data.name, "train", cfg.data.root, cfg.data.download)
    x, y = full.images, full.labels
    if cfg.data.limit_train is not None:
        x, y = x[:cfg.data.limit_train], y[:cfg.data.limit_train]
    if val_indices is None:
        val_size = cfg.data.val_size
        if val_size >= 1 and val_size > len(y) // 2:
            val_size = 0.1                   # small trials: keep most images for training
        tr, va = train_val_split(len(y), val_size, cfg.seed)
    else:
        va = np.sort(val_indices)
        tr = np.setdiff1d(np.arange(len(y)), va)
    mean, std = channel_stats(x[tr])
    std = [max(s, 1e-6) for s in std]
    cl = cfg.train.channels_last
    stats = {"mean": mean, "std": std, "classes": list(full.classes), "in_chans": int(x.shape[1]),
             "image_size": [int(x.shape[2]), int(x.shape[3])], "dataset": cfg.data.name}
    return Prepared(to_tensor(x[tr], mean, std, device, cl), torch.from_numpy(y[tr]).to(device),
                    to_tensor(x[va], mean, std, device, cl), torch.from_numpy(y[va]).to(device), stats)


def build_model(cfg: Config, stats: dict) -> torch.nn.Module:
    """The configured model, sized for the data (classes, channels; ``img_size`` and the
    small-input stem when the model takes them)."""
    kwargs = dict(cfg.model.kwargs)
    name = cfg.model.name
    if "img_size" not in kwargs and model_accepts(name, "img_size"):
        kwargs["img_size"] = stats["image_size"][0]
    if "small_input" not in kwargs and model_accepts(name, "small_input") and max(stats["image_size"]) <= 64:
        kwargs["small_input"] = True
    try:
        return create_model(name, num_classes=len(stats["classes"]), in_chans=stats["in_chans"], **kwargs)
    except TypeError as e:
        raise UserError(f"model {name!r} does not take these arguments ({e}); check model.kwargs") from None


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
    set_determinism(cfg.seed, cfg.deterministic)
    device = resolve_device(cfg.device)
    data = prepare_data(cfg, device, val_indices)
    model = build_model(cfg, data.stats).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    save_config(cfg, os.path.join(run_dir, "config.yaml"))

    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    fill = [(0.0 - m) / s for m, s in zip(data.stats["mean"], data.stats["std"])][0]
    loader = TensorLoader(data.train_x, data.train_y, cfg.train.batch_size, shuffle=True,
                          drop_last=len(data.train_y) > cfg.train.batch_size,
                          augment=cfg.data.augment, gen=gen,
                          num_classes=len(data.stats["classes"]), fill=fill)
    val_loader = TensorLoader(data.val_x, data.val_y, cfg.train.eval_batch_size)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.sched, len(loader), cfg.train.epochs)

    ema = EMAHook(model, cfg.train.ema_decay) if cfg.train.ema_decay else None
    hooks = [SchedulerHook(scheduler)] if scheduler is not None else []
    hooks += [ema] if ema else []
    hooks += [EvalHook(val_loader, ema), EarlyStopHook(cfg.train.monitor, cfg.train.early_stop_patience),
              CheckpointHook(run_dir, {"data": data.stats, "model_name": cfg.model.name,
                                       "model_kwargs": dict(cfg.model.kwargs)}),
              LoggerHook(run_dir, progress=progress), PlotHook(run_dir)]
    amp = (torch.bfloat16 if device.type in ("cuda", "cpu") else torch.float16) if cfg.train.amp else None
    trainer = Trainer(model, optimizer, build_loss(cfg.train.loss, cfg.train.label_smoothing), loader,
                      cfg.train.epochs, hooks, device, amp, cfg.train.grad_clip, cfg.train.aux_weight, log)
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
    model = build_model(cfg, stats).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval(), stats, cfg


def _test_tensors(cfg: Config, stats: dict, device) -> tuple[torch.Tensor, torch.Tensor, ArrayDataset]:
    test = load_split(cfg.data.name, "test", cfg.data.root, cfg.data.download)
    return to_tensor(test.images, stats["mean"], stats["std"], device), torch.from_numpy(test.labels).to(device), test


def evaluate(run_dir: str, tta: bool = False, device: str = "auto") -> dict:
    """Evaluate a run on the test set (the only place the test set is read): writes
    ``eval.json``, ``plots/confusion.png`` and ``plots/roc.png``; returns the report."""
    from vislab.metrics.classification import classification_report, one_vs_rest_roc
    from vislab.report.plots import plot_confusion, plot_roc
    dev = resolve_device(device)
    model, stats, cfg = load_run_model(run_dir, dev)
    x, y, _ = _test_tensors(cfg, stats, dev)
    loader = TensorLoader(x, y, cfg.train.eval_batch_size)
    logits, labels = predict_logits(model, loader)
    if tta:   # average with the left-right mirror image
        flipped, _ = predict_logits(model, TensorLoader(x.flip(3), y, cfg.train.eval_batch_size))
        logits = (logits + flipped) / 2
    classes = stats["classes"]
    report = classification_report(logits, labels, classes)
    report.update(run_dir=run_dir, tta=tta, dataset=cfg.data.name, model=cfg.model.name)
    atomic_write_text(os.path.join(run_dir, "eval.json"), json.dumps(report, indent=1))
    cm = np.asarray(report["confusion"])
    plot_confusion(cm, classes, os.path.join(run_dir, "plots", "confusion.png"))
    plot_roc(one_vs_rest_roc(labels.numpy(), torch.softmax(logits, 1).numpy()), classes,
             os.path.join(run_dir, "plots", "roc.png"))
    return report


def predict(run_dir: str, paths: list[str], device: str = "auto", topk: int = 1) -> list[dict]:
    """Class and probability for image files, converted like the training data (channels,
    size, normalisation)."""
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


__all__ = ["train", "evaluate", "predict", "cross_validate", "load_run_model", "prepare_data",
           "build_model"]
