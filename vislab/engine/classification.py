"""The classification task: data sets of the registry, models of the registry, cross-entropy
(with label smoothing, mixup targets and auxiliary heads), top-1 validation, and the test-set
evaluation that writes ``eval.json`` and its plots."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from vislab.config import Config
from vislab.data.datasets import load_split
from vislab.data.loader import TensorLoader, channel_stats, to_tensor, train_val_split
from vislab.engine.checkpoint import atomic_write_text
from vislab.engine.losses import build_loss
from vislab.engine.tasks import Task, register_task
from vislab.engine.trainer import predict_logits, resolve_device, split_outputs
from vislab.errors import UserError
from vislab.models import create_model
from vislab.models.registry import default_kwargs, model_accepts


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
    tr, va = split_train_val(len(y), cfg, val_indices)
    mean, std = channel_stats(x[tr])
    std = [max(s, 1e-6) for s in std]
    cl = cfg.train.channels_last
    stats = {"mean": mean, "std": std, "classes": list(full.classes), "in_chans": int(x.shape[1]),
             "image_size": [int(x.shape[2]), int(x.shape[3])], "dataset": cfg.data.name}
    return Prepared(to_tensor(x[tr], mean, std, device, cl), torch.from_numpy(y[tr]).to(device),
                    to_tensor(x[va], mean, std, device, cl), torch.from_numpy(y[va]).to(device), stats)


def build_model(cfg: Config, stats: dict) -> torch.nn.Module:
    """The configured model, sized for the data (classes, channels; ``img_size`` and the
    small-input stem when the model takes them).  ``cfg.model.kwargs`` is completed with every
    constructor default, so the saved ``config.yaml`` rebuilds this exact model even after a
    default changes."""
    name = cfg.model.name
    kwargs = dict(cfg.model.kwargs)
    if "img_size" not in kwargs and model_accepts(name, "img_size"):
        kwargs["img_size"] = stats["image_size"][0]
    if "small_input" not in kwargs and model_accepts(name, "small_input") and max(stats["image_size"]) <= 64:
        kwargs["small_input"] = True
    cfg.model.kwargs = kwargs = {**default_kwargs(name), **kwargs}
    try:
        return create_model(name, num_classes=len(stats["classes"]), in_chans=stats["in_chans"], **kwargs)
    except TypeError as e:
        raise UserError(f"model {name!r} does not take these arguments ({e}); check model.kwargs") from None


def split_train_val(n: int, cfg: Config, val_indices: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation indices within the (possibly limited) training set."""
    if val_indices is not None:
        va = np.sort(val_indices)
        return np.setdiff1d(np.arange(n), va), va
    val_size = cfg.data.val_size
    if val_size >= 1 and val_size > n // 2:
        val_size = 0.1                   # small trials: keep most images for training
    return train_val_split(n, val_size, cfg.seed)


def loss_fn(cfg: Config, model: torch.nn.Module | None = None):
    """Cross-entropy (or BCE / MSE) of the main logits plus a weight times that of each
    auxiliary head: ``train.aux_weight`` when set, else the model's own ``aux_logits_weight``
    (GoogLeNet 0.3, Inception v3 0.4), else 0.3."""
    base = build_loss(cfg.train.loss, cfg.train.label_smoothing)
    aux_weight = cfg.train.aux_weight
    if aux_weight is None:
        aux_weight = getattr(model, "aux_logits_weight", 0.3)

    def loss(out, y):
        logits, aux = split_outputs(out)
        total = base(logits, y)
        for a in aux:
            total = total + aux_weight * base(a, y)
        return total
    return loss


def correct(out, y) -> torch.Tensor:
    logits = split_outputs(out)[0]
    hard = y if y.ndim == 1 else y.argmax(1)
    return (logits.argmax(1) == hard).sum()


def validate(model, loader, amp_dtype=None) -> dict:
    logits, labels = predict_logits(model, loader, amp_dtype)
    return {"val_loss": float(torch.nn.functional.cross_entropy(logits, labels)),
            "val_top1": float((logits.argmax(1) == labels).float().mean())}


def _test_tensors(cfg: Config, stats: dict, device) -> tuple[torch.Tensor, torch.Tensor]:
    test = load_split(cfg.data.name, "test", cfg.data.root, cfg.data.download)
    return to_tensor(test.images, stats["mean"], stats["std"], device), torch.from_numpy(test.labels).to(device)


def evaluate(run_dir: str, tta: bool = False, device: str = "auto") -> dict:
    """Evaluate a run on the test set (the only place the test set is read): writes
    ``eval.json``, ``plots/confusion.png`` and ``plots/roc.png``; returns the report."""
    from vislab.metrics.classification import classification_report, one_vs_rest_roc
    from vislab.report.plots import plot_confusion, plot_roc
    from vislab.engine.run import load_run_model
    dev = resolve_device(device)
    model, stats, cfg = load_run_model(run_dir, dev)
    x, y = _test_tensors(cfg, stats, dev)
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


register_task(Task("classification", prepare_data, build_model, loss_fn, validate, evaluate, correct))
