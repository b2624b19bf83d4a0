"""Hooks: everything around the loop (schedule, EMA, validation, early stopping, checkpoints,
logging, plots) is one of these.  Each may keep state, saved in checkpoints for ``--resume``.

Order matters and is the order of the list given to the trainer: validation before early
stopping before checkpointing before logging.  Plots of the curves are the report's business
(``vislab.report.plots.plot_curves`` reads ``metrics.jsonl``), not the loop's.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import TYPE_CHECKING

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from vislab.engine import distributed
from vislab.errors import UserError
from vislab.io import atomic_torch_save, atomic_write_text

if TYPE_CHECKING:
    from vislab.engine.trainer import Trainer


class Hook:
    def before_train(self, t: Trainer) -> None: ...
    def before_epoch(self, t: Trainer) -> None: ...
    def after_step(self, t: Trainer) -> None: ...
    def after_epoch(self, t: Trainer) -> None: ...
    def after_train(self, t: Trainer) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class SchedulerHook(Hook):
    """Steps a torch LR scheduler after every optimisation step."""

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler

    def after_step(self, t: Trainer) -> None:
        self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


class EMAHook(Hook):
    """Exponential moving average of the weights (and BN buffers), used for evaluation:
    ``theta_ema <- d * theta_ema + (1 - d) * theta``."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    def after_step(self, t: Trainer) -> None:
        self.ema.update_parameters(t.model)

    def state_dict(self) -> dict:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state)


class EvalHook(Hook):
    """Validation metrics after every epoch, by the task's ``validate(model, loader)`` (on the
    EMA weights when there are some).  With several processes, process 0 validates on the whole
    set and sends the metrics to the others."""

    def __init__(self, loader, validate, ema: EMAHook | None = None) -> None:
        self.loader, self.validate, self.ema = loader, validate, ema

    def after_epoch(self, t: Trainer) -> None:
        model = self.ema.ema.module if self.ema else t.model
        metrics = self.validate(model, self.loader, t.amp_dtype) if distributed.rank() == 0 else None
        t.epoch_metrics.update(distributed.broadcast(metrics))


LOWER_IS_BETTER = ("loss", "error", "fd")
"""Suffixes of the metrics that improve downwards; every other improves upwards."""
LAST = "last"
"""The monitor that keeps the last epoch as the best (GANs: no validation number measures their samples)."""


class EarlyStopHook(Hook):
    """Tracks the best value of ``monitor``; stops after ``patience`` epochs without improvement
    (``patience=None``: never stops, still tracks the best for ``best.pt``).  ``monitor="last"``
    makes every epoch the best, so ``best.pt`` holds the last weights."""

    def __init__(self, monitor: str = "val_top1", patience: int | None = None) -> None:
        self.monitor, self.patience = monitor, patience
        self.mode = "min" if monitor.endswith(LOWER_IS_BETTER) else "max"
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = -1

    def after_epoch(self, t: Trainer) -> None:
        if self.monitor == LAST:            # every epoch is the best so far: best.pt = the last weights
            t.improved, self.best, self.best_epoch = True, float(t.epoch), t.epoch
            return
        value = t.epoch_metrics.get(self.monitor)
        if value is None:
            known = ", ".join(k for k in t.epoch_metrics if k.startswith("val_")) or "none"
            raise UserError(f"train.monitor is {self.monitor!r}, which this task does not measure; "
                            f"set --set train.monitor= one of its validation metrics: {known}")
        better = value < self.best if self.mode == "min" else value > self.best
        t.improved = better
        if better:
            self.best, self.best_epoch = value, t.epoch
        elif self.patience is not None and t.epoch - self.best_epoch >= self.patience:
            t.stop = True
            t.log(f"early stop: {self.monitor} has not improved for {self.patience} epochs "
                  f"(best {self.best:.4f} at epoch {self.best_epoch + 1})")

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]


class CheckpointHook(Hook):
    """After every epoch: ``checkpoints/last.pt`` with everything needed to resume, and
    ``checkpoints/best.pt`` (weights to evaluate) when the monitored metric improved.
    Both are written atomically; a crash can never leave a half-written checkpoint."""

    def __init__(self, run_dir: str, extra: dict | None = None) -> None:
        self.dir = os.path.join(run_dir, "checkpoints")
        self.extra = extra or {}

    def after_epoch(self, t: Trainer) -> None:
        state = t.state_dict()
        state.update(self.extra)
        atomic_torch_save(state, os.path.join(self.dir, "last.pt"))
        if t.improved:
            best = {"model": t.eval_model().state_dict(), "epoch": t.epoch,
                    "metrics": dict(t.epoch_metrics), **self.extra}
            atomic_torch_save(best, os.path.join(self.dir, "best.pt"))


class LoggerHook(Hook):
    """``metrics.jsonl`` (one line per epoch, plus every ``every`` steps), TensorBoard events,
    a progress bar with loss, accuracy and images/s, and one line per epoch on stdout."""

    def __init__(self, run_dir: str, every: int = 50, tensorboard: bool = True, progress: bool = True) -> None:
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.run_dir, self.every = run_dir, every
        self.tensorboard, self.progress = tensorboard, progress
        self.writer = None
        self.bar = None

    def before_train(self, t: Trainer) -> None:
        _truncate_log(self.path, t.epoch)
        if self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(os.path.join(self.run_dir, "tb"), purge_step=t.step or None)

    def before_epoch(self, t: Trainer) -> None:
        self.t0, self.seen0 = time.perf_counter(), t.seen
        if self.progress:
            self.bar = tqdm(total=t.steps_per_epoch, desc=f"epoch {t.epoch + 1}/{t.max_epochs}",
                            leave=False, file=sys.stderr, disable=None, dynamic_ncols=True)

    def after_step(self, t: Trainer) -> None:
        if self.bar is not None:
            self.bar.update(1)
        if t.step % self.every == 0:
            loss, acc = t.running()
            rate = (t.seen - self.seen0) / max(time.perf_counter() - self.t0, 1e-9)
            if self.bar is not None:
                shown = {"loss": f"{loss:.3f}", "img_s": f"{rate:.0f}"}
                if acc is not None:
                    shown["acc"] = f"{acc:.3f}"
                self.bar.set_postfix(shown)
            self._write({"epoch": t.epoch, "step": t.step, "train_loss": loss,
                         **({"train_top1": acc} if acc is not None else {}),
                         "lr": t.optimizer.param_groups[0]["lr"], "images_per_s": rate})

    def after_epoch(self, t: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
        dt = time.perf_counter() - self.t0
        row = {"epoch": t.epoch, "step": t.step, "epoch_end": True, **t.epoch_metrics,
               "lr": t.optimizer.param_groups[0]["lr"], "epoch_time_s": dt,
               "images_per_s": (t.seen - self.seen0) / max(dt, 1e-9)}
        self._write(row)
        if self.writer is not None:
            for k, v in row.items():
                if isinstance(v, float):
                    self.writer.add_scalar(k, v, t.step)
            self.writer.flush()
        shown = "  ".join(f"{k} {v:.4f}" for k, v in row.items()
                          if k.startswith(("train_", "val_")) and isinstance(v, float))
        t.log(f"epoch {t.epoch + 1}/{t.max_epochs}  {shown}  {row['images_per_s']:.0f} img/s  {dt:.1f}s")

    def after_train(self, t: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def _write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def _truncate_log(path: str, epoch: int) -> None:
    """On resume from epoch ``epoch``, drop log lines of epochs that will be redone."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line)["epoch"] < epoch]
    atomic_write_text(path, "".join(rows))


__all__ = ["Hook", "SchedulerHook", "EMAHook", "EvalHook", "EarlyStopHook", "CheckpointHook",
           "LoggerHook"]
