"""PNG plots of a run: training curves, confusion matrix, ROC curves, class templates."""

from __future__ import annotations

import json
import os

import numpy as np


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str) -> str:
    """Write a figure as PNG atomically and close it."""
    from vislab.engine.checkpoint import atomic_write_bytes
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_curves(metrics_path: str, out_dir: str) -> list[str]:
    """``loss.png`` and ``accuracy.png``: train and val per epoch from ``metrics.jsonl``."""
    if not os.path.exists(metrics_path):
        return []
    with open(metrics_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    epochs = [r for r in rows if r.get("epoch_end")]
    if not epochs:
        return []
    plt = pyplot()
    paths = []
    x = [r["epoch"] + 1 for r in epochs]
    for name, keys in (("loss", ("train_loss", "val_loss")), ("accuracy", ("train_top1", "val_top1"))):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for k in keys:
            ys = [r.get(k) for r in epochs]
            if any(v is not None for v in ys):
                ax.plot(x, ys, marker="o", label=k.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
        paths.append(save_figure(fig, os.path.join(out_dir, f"{name}.png")))
    return paths


def plot_confusion(cm: np.ndarray, classes: list[str], path: str) -> str:
    plt = pyplot()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1 + 0.55 * k, 0.8 + 0.5 * k))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(k), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return save_figure(fig, path)


def plot_roc(roc: dict[int, dict], classes: list[str], path: str) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for c, r in roc.items():
        ax.plot(r["fpr"], r["tpr"], lw=1, label=f"{classes[c]} (AUC {r['auc']:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.5)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    if len(classes) <= 12:
        ax.legend(fontsize=6)
    return save_figure(fig, path)


def plot_image_grid(images: np.ndarray, titles: list[str], path: str, cols: int = 10) -> str:
    """``images (N, C, H, W)`` as a grid, each image scaled to its own min..max."""
    plt = pyplot()
    n = len(images)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        img = img.astype(np.float64)
        img = (img - img.min()) / max(img.max() - img.min(), 1e-12)
        ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray" if img.shape[0] == 1 else None)
        ax.set_title(title, fontsize=7)
    return save_figure(fig, path)
