"""PNG plots of a run: training curves, confusion matrix, ROC and precision-recall curves, class templates."""

from __future__ import annotations

import io
import json
import os

import numpy as np

from vislab.io import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str) -> str:
    """Write a figure as PNG atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_curves(metrics_path: str, out_dir: str) -> list[str]:
    """``loss.png`` (train and val loss) and ``accuracy.png`` (training accuracy and every other
    validation score the task measured) per epoch, from ``metrics.jsonl``."""
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
    scores = ("train_top1", *sorted({k for r in epochs for k in r if k.startswith("val_") and k != "val_loss"}))
    for name, keys in (("loss", ("train_loss", "val_loss")), ("accuracy", scores)):
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
        auc = "undefined" if r["auc"] is None else f"{r['auc']:.3f}"
        ax.plot(r["fpr"], r["tpr"], lw=1, label=f"{classes[c]} (AUC {auc})")
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


def _display(img: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] -> what ``imshow`` takes: ``(H, W)`` grey or ``(H, W, 3)``."""
    img = np.clip(img.astype(np.float64), 0, 1)
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """An image ``(C, H, W)`` and a map ``(H, W)``, both in [0, 1], blended into ``(H, W, 3)``
    with the map in the 'jet' colour map."""
    from matplotlib import colormaps
    base = _display(image)
    base = np.repeat(base[..., None], 3, 2) if base.ndim == 2 else base
    colour = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    return (1 - alpha) * base + alpha * colour


def plot_heatmaps(images: np.ndarray, maps: list[np.ndarray], titles: list[str], map_titles: list[str],
                  path: str, boxes: list[list[tuple[np.ndarray, str]]] | None = None) -> str:
    """One row per image: the image ``(C, H, W)`` in [0, 1], then each map ``maps[j][n]``
    ``(H, W)`` in [0, 1] laid over it; ``boxes[n]``: ``(x1, y1, x2, y2)`` and colour pairs drawn
    on every panel of row ``n``."""
    plt = pyplot()
    from matplotlib.patches import Rectangle
    n, cols = len(images), 1 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 2.3 * n), squeeze=False)
    for r in range(n):
        panels = [_display(images[r])] + [heatmap_overlay(images[r], m[r]) for m in maps]
        for c, (ax, panel) in enumerate(zip(axes[r], panels)):
            ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_title(titles[r] if c == 0 else map_titles[c - 1], fontsize=7)
            ax.axis("off")
            for (x1, y1, x2, y2), colour in (boxes[r] if boxes else []):
                ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                       edgecolor=colour, lw=1.2))
    return save_figure(fig, path)


def plot_scatter(points: np.ndarray, labels: np.ndarray, classes: list[str], path: str, title: str = "") -> str:
    """A 2-D map ``points (N, 2)`` coloured by class."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for c, name in enumerate(classes):
        sel = labels == c
        if sel.any():
            ax.scatter(points[sel, 0], points[sel, 1], s=4, color=cmap(c % cmap.N), label=name)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(classes) <= 20:
        ax.legend(fontsize=6, markerscale=3, loc="best")
    return save_figure(fig, path)


def plot_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str, title: str = "") -> str:
    """One PNG with a precision-recall curve ``(recall, precision)`` per category, and their mean
    when all curves share their recall points (as COCO's 101 do)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, (rec, prec) in curves.items():
        ax.plot(rec, prec, lw=1, alpha=0.7, label=name)
    recalls = [r for r, _ in curves.values()]
    if len(curves) > 1 and all(np.array_equal(r, recalls[0]) for r in recalls):
        ax.plot(recalls[0], np.mean([p for _, p in curves.values()], axis=0), "k", lw=2.5, label="mean")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    if len(curves) <= 20:
        ax.legend(fontsize=7, loc="lower left")
    return save_figure(fig, path)


def plot_bars(values: dict[str, float], path: str, title: str = "", xlabel: str = "") -> str:
    """One horizontal bar per name (NaN drawn as an empty bar marked "n/a"), e.g. per-class IoU."""
    plt = pyplot()
    names = list(values)
    v = np.asarray([values[n] for n in names], np.float64)
    fig, ax = plt.subplots(figsize=(5.5, 0.6 + 0.28 * len(names)))
    ax.barh(range(len(names)), np.nan_to_num(v), color="tab:blue")
    for i, x in enumerate(v):
        ax.text(0.01 if np.isnan(x) else x + 0.01, i, "n/a" if np.isnan(x) else f"{x:.3f}", va="center", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def plot_image_rows(rows: list[list[np.ndarray]], titles: list[list[str]], path: str, col_titles: list[str] = ()) -> str:
    """Rows of RGB uint8 images ``(H, W, 3)`` shown as they are (no rescaling), e.g. image,
    ground truth and prediction side by side."""
    plt = pyplot()
    n, m = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n, m, figsize=(2.1 * m, 2.2 * n), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (row, names) in enumerate(zip(rows, titles)):
        for j, (img, name) in enumerate(zip(row, names)):
            axes[i, j].imshow(img, interpolation="nearest")
            axes[i, j].set_title(name, fontsize=7)
    for j, t in enumerate(col_titles):
        axes[0, j].set_title(f"{t}\n{axes[0, j].get_title()}", fontsize=8)
    return save_figure(fig, path)


def save_image_grid(images, path: str, nrow: int = 8) -> str:
    """Images ``(N, C, H, W)`` (a tensor on ``[0, 1]``) as one PNG grid, ``nrow`` per row with
    2-pixel white borders (torchvision's ``make_grid``), written atomically."""
    from PIL import Image
    from torchvision.utils import make_grid
    grid = make_grid(images.clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr[..., 0] if images.shape[1] == 1 else arr).save(buf, format="PNG")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path
