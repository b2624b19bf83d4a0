"""What the commands run, for any task: train a recipe into a run directory, evaluate a run,
predict with it, cross-validate a recipe, and write a run's report.

Each function takes the config or a run directory and returns plain results; the CLI only
parses and prints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vislab.config import Config, save_config
from vislab.data.datasets import load_split
from vislab.data.info import DataInfo
from vislab.data.loader import TensorLoader
from vislab.engine import distributed
from vislab.engine.checkpoint import export_safetensors, load_checkpoint
from vislab.engine.hooks import (
    CheckpointHook,
    EarlyStopHook,
    EMAHook,
    EvalHook,
    Hook,
    LoggerHook,
    SchedulerHook,
)
from vislab.engine.optim import build_optimizer, build_scheduler
from vislab.engine.trainer import Trainer, set_determinism
from vislab.errors import UserError
from vislab.io import atomic_write_text, resolve_device
from vislab.report import html as H
from vislab.report.plots import plot_curves, save_image_grid
from vislab.tasks.base import Section, get_task
from vislab.tasks.export import predict_onnx
from vislab.tasks.rundir import CONFIG, LAST, default_run_dir, open_run_dir
from vislab.tasks.trained import TrainedRun, load_run
from vislab.tasks.transfer import apply_transfer

MIN_STEPS_PER_EPOCH = 10


@dataclass
class TrainResult:
    run_dir: str
    metrics: dict        # last epoch's metrics
    best: dict           # best monitored value and its epoch
    train_time_s: float


def train(cfg: Config, run_dir: str | None = None, resume: bool = False, fresh: bool = False,
          progress: bool = True, log: Callable[[str], None] = print,
          val_indices: np.ndarray | None = None,
          extra_hooks: Callable[[DataInfo, torch.device], list[Hook]] | None = None) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (default ``runs/MODEL-DATA-TIME``).  With ``resume`` the
    run continues from ``checkpoints/last.pt``; with ``cfg.deterministic`` the result is
    bit-identical to a run that was never interrupted.  ``extra_hooks(info, device)`` adds
    hooks after the run's own (benchmarks use it to probe the test set while the clock runs)."""
    ctx = distributed.setup(resolve_device(cfg.device))
    run_dir = distributed.broadcast(run_dir or default_run_dir(cfg))
    if ctx is not None and not ctx.is_main:          # process 0 holds the lock and writes; the others train
        try:
            distributed.share_failure(None)
            return _train_locked(cfg, run_dir, resume, False, lambda _: None, val_indices, None, ctx)
        finally:
            distributed.teardown()
    new = not os.path.exists(run_dir)
    try:
        try:
            lock = open_run_dir(run_dir, resume, fresh)
        except UserError as e:
            distributed.share_failure(e)
        distributed.share_failure(None)
        with lock:
            return _train_locked(cfg, run_dir, resume, progress, log, val_indices, extra_hooks, ctx)
    except UserError:
        if new and os.path.isdir(run_dir) and set(os.listdir(run_dir)) <= {".lock"}:
            shutil.rmtree(run_dir)       # a mistake found before anything was written leaves no folder
        raise
    finally:
        distributed.teardown()


def _train_locked(cfg: Config, run_dir: str, resume: bool, progress: bool, log, val_indices,
                  extra_hooks, ctx: distributed.Context | None = None) -> TrainResult:
    task = get_task(cfg.task)
    main = ctx is None or ctx.is_main
    set_determinism(cfg.seed, cfg.deterministic)
    device = distributed.device_for(resolve_device(cfg.device), ctx)
    amp = _amp_dtype(cfg, device, log)
    data = _build_data(task, cfg, device, val_indices, ctx)
    for note in data.notes:
        log(note)
    model = task.build_model(cfg, data.info).to(device)
    apply_transfer(model, cfg, log)
    if not resume and hasattr(task, "init_model"):
        task.init_model(cfg, model, data, log)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if main:
        save_config(cfg, os.path.join(run_dir, CONFIG))

    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    loader = task.train_loader(cfg, data, gen)
    if ctx is not None:
        per = distributed.check_batch(loader.batch_size)
        loader = distributed.ShardedLoader(loader, ctx.rank, ctx.world_size)
        log(f"{ctx.world_size} processes ({'NCCL' if device.type == 'cuda' else 'gloo'}): global batch "
            f"{per * ctx.world_size}, {per} per process")
    _check_steps(len(loader), len(data.train_y), loader.batch_size * (ctx.world_size if ctx else 1), log, task.name)
    val_loader = TensorLoader(data.val_x, data.val_y, cfg.train.eval_batch_size)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.sched, len(loader), cfg.train.epochs)

    ema = EMAHook(model, cfg.train.ema_decay) if cfg.train.ema_decay else None
    stop = EarlyStopHook(cfg.train.monitor or task.monitor, cfg.train.early_stop_patience)
    hooks = [SchedulerHook(scheduler)] if scheduler is not None else []
    hooks += [ema] if ema else []
    hooks += [EvalHook(val_loader, task.validate, ema), stop]
    if main:                                      # only process 0 writes
        hooks += [CheckpointHook(run_dir, {"data": data.info.to_dict(), "model_name": cfg.model.name,
                                           "model_kwargs": dict(cfg.model.kwargs), "task": cfg.task}),
                  LoggerHook(run_dir, progress=progress)]
        hooks += task.training_hooks(cfg, run_dir, data.info, device) if hasattr(task, "training_hooks") else []
        hooks += extra_hooks(data.info, device) if extra_hooks else []
    step_fn = task.train_step(cfg, model) if hasattr(task, "train_step") else None
    forward_model = model
    if ctx is not None and step_fn is None:
        forward_model = distributed.wrap(model, device, cfg.train.sync_bn)
    elif ctx is not None:
        if cfg.train.sync_bn:
            raise UserError(f"train.sync_bn is for one-loss tasks; the {task.name} task trains in several moves per batch")
        distributed.broadcast_parameters(model)   # the step-function path averages gradients itself
    trainer = Trainer(model, optimizer, task.loss(cfg, model), loader, cfg.train.epochs, hooks, device, amp,
                      cfg.train.grad_clip, task.correct, log, step_fn, forward_model)
    if resume:
        trainer.load_state_dict(load_checkpoint(os.path.join(run_dir, LAST), device))
        log(f"resuming {run_dir} at epoch {trainer.epoch + 1}, step {trainer.step}")
    t0 = time.perf_counter()
    try:
        trainer.train()
    finally:
        if main:
            plot_curves(os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "plots"))
    elapsed = time.perf_counter() - t0
    if main:
        export_safetensors(trainer.eval_model().state_dict(), os.path.join(run_dir, "model.safetensors"),
                           {"model": cfg.model.name})
    distributed.barrier()                         # the others wait for process 0's last writes
    return TrainResult(run_dir, dict(trainer.epoch_metrics),
                       {"monitor": stop.monitor, "value": stop.best, "epoch": stop.best_epoch + 1}, elapsed)


def _build_data(task, cfg: Config, device: torch.device, val_indices, ctx: distributed.Context | None):
    """The task's data; with several processes, process 0 first (it fills the caches of
    generated data sets, which the others then read), its failure shared with the others."""
    if ctx is None:
        return task.build_data(cfg, device, val_indices)
    data = error = None
    if ctx.is_main:
        try:
            data = task.build_data(cfg, device, val_indices)
        except UserError as e:
            error = e
    distributed.share_failure(error)
    return data if ctx.is_main else task.build_data(cfg, device, val_indices)


def _check_steps(steps: int, n: int, batch_size: int, log, task: str = "") -> None:
    """One line when an epoch is only a handful of optimizer steps (BatchNorm's running
    statistics and the schedule then barely move), with the batch size that fixes it."""
    if steps < MIN_STEPS_PER_EPOCH:
        better = max(8, 2 ** int(np.log2(max(1, n // MIN_STEPS_PER_EPOCH))))
        fix = ("a smaller metric.images_per_class or metric.classes_per_batch (P x K batches)" if task == "metric"
               else f"--set train.batch_size={better}")
        log(f"warning: {n} training images in batches of {batch_size} make only {steps} optimizer step(s) per "
            f"epoch; use {fix} and more epochs for a model that learns")


def _amp_dtype(cfg: Config, device: torch.device, log) -> torch.dtype | None:
    """The autocast dtype of ``train.amp``: bf16 on CUDA and CPU, fp16 elsewhere.  On a CPU
    without fast bf16 matrix units autocast is many times slower: measured here, said in one line."""
    if not cfg.train.amp:
        return None
    dtype = torch.bfloat16 if device.type in ("cuda", "cpu") else torch.float16
    if device.type == "cpu":
        ratio = bf16_slowdown()
        if ratio > 1.5:
            log(f"warning: train.amp=true on this CPU: bf16 matrix products measured {ratio:.0f}x slower than "
                "fp32 here; drop --set train.amp=true (it pays on GPUs and CPUs with AMX)")
    return dtype


def bf16_slowdown(n: int = 256, reps: int = 3) -> float:
    """Time of an ``n x n`` bf16 matrix product over the fp32 one, best of ``reps`` each."""
    a = torch.randn(n, n)
    def best(x: torch.Tensor) -> float:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            x @ x
            times.append(time.perf_counter() - t0)
        return min(times)
    best(a)
    best(a.bfloat16())
    return best(a.bfloat16()) / max(best(a), 1e-9)


def evaluate(run_dir: str, tta: bool = False, device: str = "auto") -> dict:
    """Evaluate a run on its test set, the only place the test set is read (the task writes
    ``eval.json`` and its plots); returns the report."""
    run = load_run(run_dir, device)
    return run.task.evaluate(run, tta)


def predict(run_dir: str, paths: list[str], device: str = "auto", topk: int = 1, runtime: str = "torch",
            log: Callable[[str], None] = print, beam: int = 1) -> list[dict]:
    """The task's predictions for image files (each converted like the training data), by
    PyTorch or (``runtime='onnx'``, classification runs) by onnxruntime from ``RUN/model.onnx``;
    ``beam``: the beam width of a captioning run's decoding."""
    if topk < 1:
        raise UserError(f"--topk must be at least 1, got {topk}")
    if beam < 1:
        raise UserError(f"--beam must be at least 1, got {beam}")
    if runtime not in ("torch", "onnx"):
        raise UserError(f"unknown runtime {runtime!r}: use torch or onnx")
    for p in paths:
        if not os.path.isfile(p):
            raise UserError(f"image {p} does not exist; check the path")
    if runtime == "onnx":
        return predict_onnx(run_dir, paths, topk, log)
    run = load_run(run_dir, device)
    if beam != 1:
        if run.task.name != "captioning":
            raise UserError(f"--beam is the beam width of a captioning run's decoding; {run_dir} is a "
                            f"{run.task.name} run: drop --beam")
        return run.task.predict(run, paths, topk, beam=beam)
    return run.task.predict(run, paths, topk)


def sample(run_dir: str, n: int = 64, out: str | None = None, seed: int = 0, nrow: int = 8,
           device: str = "auto") -> str:
    """``n`` images drawn from a generative run, saved as one PNG grid (default
    ``RUN_DIR/samples.png``); returns its path."""
    if n < 1 or nrow < 1:
        raise UserError(f"--n and --nrow must be at least 1, got {n} and {nrow}")
    run = load_run(run_dir, device)
    if not hasattr(run.task, "sample"):
        raise UserError(f"{run_dir} is a {run.task.name} run; `vislab sample` draws from generative runs "
                        "(vislab train ae | vae | dcgan | bigan)")
    out = out or run.path("samples.png")
    if not out.lower().endswith(".png"):
        raise UserError(f"--out {out}: give a .png file")
    return save_image_grid(run.task.sample(run, n, seed), out, nrow)


def cross_validate(cfg: Config, folds: int, run_dir: str | None = None, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict:
    """k-fold cross-validation of a recipe on the training set: fold ``k`` is the validation set
    of run ``run_dir/fold-k``; reports the best validation accuracy of each fold, mean and std."""
    if folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}")
    if cfg.task != "classification":
        raise UserError(f"--folds cross-validates classification recipes; this config's task is {cfg.task!r}")
    if cfg.train.monitor is None:         # the folds are compared by their best validation accuracy
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, monitor="val_top1"))
    run_dir = run_dir or default_run_dir(cfg) + f"-cv{folds}"
    n = len(load_split(cfg.data.name, "train", cfg.data.root, cfg.data.download).labels)
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


def report(run_dir: str, device: str = "auto", out: str | None = None, log: Callable[[str], None] = print) -> str:
    """Write the report of a trained run (default ``RUN_DIR/report.html``) and return its path:
    headline figures, training curves, the task's own sections and the resolved config.  A run
    not yet evaluated is evaluated first."""
    t0 = time.perf_counter()
    run = load_run(run_dir, device)
    ev = _evaluation(run, log)
    plots = run.path("plots")
    curves = [os.path.join(plots, f"{n}.png") for n in ("loss", "accuracy")]
    if not all(os.path.exists(p) for p in curves):
        curves = plot_curves(run.path("metrics.jsonl"), plots)
    if not curves:
        raise UserError(f"{run_dir} has no training history (metrics.jsonl); train it with `vislab train`")
    with open(run.path(CONFIG)) as f:
        config_text = f.read()
    sections = [Section("curves", "Training curves", H.row(H.img(p, os.path.basename(p)) for p in curves)),
                *run.task.report_sections(run, ev),
                Section("config", "Configuration (resolved)", H.pre(config_text))]
    page = H.render(f"{run.config.model.name} on {run.config.data.name}", os.path.abspath(run_dir),
                    run.task.headline(ev), [(s.id, s.title, s.html) for s in sections])
    out = out or run.path("report.html")
    atomic_write_text(out, page)
    log(f"report written in {time.perf_counter() - t0:.1f}s: {out}")
    return out


def _evaluation(run: TrainedRun, log) -> dict:
    """``eval.json`` of the run, evaluating first when it (or a plot it lists under ``plots``)
    is missing or it was written by an older vislab (no ``summary``)."""
    path = run.path("eval.json")
    if os.path.exists(path):
        with open(path) as f:
            ev = json.load(f)
        plots_ok = all(os.path.exists(run.path("plots", n)) for n in ev.get("plots", []))
        if ev.get("task") == run.task.name and "summary" in ev and plots_ok:
            return ev
    log(f"{run.run_dir} is not evaluated yet: evaluating on the test set first")
    return run.task.evaluate(run)


__all__ = ["TrainResult", "cross_validate", "evaluate", "predict", "report", "sample", "train"]
