"""The classification task: data sets of the registry, models of the registry, cross-entropy
(label smoothing, mixup targets, auxiliary heads), top-1 validation, and the test-set evaluation
that writes ``eval.json`` with its confusion and ROC plots."""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.analysis import summarize
from vislab.config import Config
from vislab.data.datasets import ArrayDataset, checksum_warning, load_split
from vislab.data.formats import load_image
from vislab.data.info import DataInfo, Normalization
from vislab.data.loader import TensorLoader, channel_stats, train_val_split
from vislab.data.subsets import class_indices, first_per_class, keep_classes
from vislab.engine.losses import build_loss
from vislab.errors import UserError
from vislab.explain.run import Options, explain
from vislab.io import atomic_write_text
from vislab.metrics.classification import classification_report, one_vs_rest_roc
from vislab.models import create_model
from vislab.models.base import split_logits
from vislab.models.registry import default_kwargs, model_accepts
from vislab.report import html as H
from vislab.report.plots import plot_confusion, plot_roc
from vislab.tasks.base import DataBundle, Section, inference, register_task, shuffled_batches
from vislab.tasks.trained import TrainedRun
from vislab.tasks.transfer import source_normalization


def predict_logits(model: nn.Module, loader, amp_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """All logits (float32, CPU) and labels of a loader, in eval mode; train mode is restored."""
    outs, labels = [], []
    with inference(model, amp_dtype):
        for x, y in loader:
            outs.append(split_logits(model(x))[0].float().cpu())
            labels.append(y.cpu())
    return torch.cat(outs), torch.cat(labels)


def image_logits(model: nn.Module, x: Tensor, y: Tensor, batch_size: int,
                    tta: bool = False) -> tuple[Tensor, Tensor]:
    """:func:`predict_logits` of the images ``x``; with ``tta``, averaged with those of the
    left-right mirror images (flip test-time augmentation, ``vislab evaluate --tta``)."""
    logits, labels = predict_logits(model, TensorLoader(x, y, batch_size))
    if tta:
        mirrored, _ = predict_logits(model, TensorLoader(x.flip(3), y, batch_size))
        logits = (logits + mirrored) / 2
    return logits, labels


def split_train_val(n: int, cfg: Config, val_indices: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation indices within the (possibly limited) training set."""
    if val_indices is not None:
        va = np.sort(val_indices)
        return np.setdiff1d(np.arange(n), va), va
    val_size = cfg.data.val_size
    if val_size >= 1 and val_size > n // 2:
        val_size = 0.1                   # small trials: keep most images for training
    return train_val_split(n, val_size, cfg.seed)


def build_classifier(cfg: Config, info: DataInfo) -> nn.Module:
    """The configured model, sized for the data (classes, channels; ``img_size`` and the
    small-input stem when the model takes them).  ``cfg.model.kwargs`` is completed with every
    constructor default, so the saved ``config.yaml`` rebuilds this exact model even after a
    default changes.  A model that cannot see the images at all (a patch as large as the image)
    is refused before any training time is spent."""
    name = cfg.model.name
    kwargs = dict(cfg.model.kwargs)
    if "img_size" not in kwargs and model_accepts(name, "img_size"):
        kwargs["img_size"] = info.image_size[0]
    if "small_input" not in kwargs and model_accepts(name, "small_input") and max(info.image_size) <= 64:
        kwargs["small_input"] = True
    cfg.model.kwargs = kwargs = {**default_kwargs(name), **kwargs}
    try:
        model = create_model(name, num_classes=info.num_classes, in_chans=info.in_chans, **kwargs)
    except TypeError as e:
        raise UserError(f"model {name!r} does not take these arguments ({e}); check model.kwargs") from None
    _check_sees_image(name, model, info)
    return model


def _check_sees_image(name: str, model: nn.Module, info: DataInfo) -> None:
    """A patch-embedding model needs a few patches per side to learn anything spatial."""
    patch = getattr(model, "patch_size", None)
    if patch is None:
        return
    p = patch if isinstance(patch, int) else max(patch)
    side = min(info.image_size)
    if side // p < 4:
        smaller = max(1, side // 7)
        raise UserError(f"{name} cuts {info.image_size[0]}x{info.image_size[1]} images into {p}-pixel patches: "
                        f"{(side // p) ** 2} token(s), too few to learn from; use a smaller patch, e.g. "
                        f"--set model.kwargs.patch_size={smaller}")


def images_to_input(info: DataInfo, paths: list[str], device: torch.device | str = "cpu") -> Tensor:
    """Image files -> the model's input ``(N, C, H, W)``, converted like the training data
    (channels, size, normalisation).  Every runtime that predicts starts from this."""
    imgs = np.stack([load_image(p, info.in_chans, info.image_size) for p in paths])
    return info.norm.from_uint8(imgs, device)


def top_predictions(logits: Tensor, paths: list[str], classes: tuple[str, ...], topk: int = 1) -> list[dict]:
    """The ``topk`` classes and softmax probabilities of each row of ``logits`` ``(N, K)``, one
    dict per path with a printable ``line``: what ``predict`` returns, whatever computed the logits."""
    probs = torch.softmax(logits.float(), 1).cpu()
    top = probs.topk(min(topk, probs.shape[1]), 1)
    out = []
    for n, p in enumerate(paths):
        preds = [{"class": classes[int(i)], "index": int(i), "prob": float(v)}
                 for v, i in zip(top.values[n], top.indices[n])]
        out.append({"path": p, "predictions": preds,
                    "line": "  ".join(f"{q['class']} {q['prob']:.3f}" for q in preds)})
    return out


class ClassificationTask:
    name = "classification"
    augment = True
    monitor = "val_loss"     # smoother than the accuracy of a small validation set: best.pt of the default
                             # recipe was otherwise its 5th epoch by one image in 1,000 (1.3 points worse on test)

    def build_data(self, cfg: Config, device: torch.device, val_indices: np.ndarray | None = None) -> DataBundle:
        """Training set -> (train, validation) tensors on ``device``.  The test set is not read here.

        In this order: the first ``data.limit_train`` images of the file; the images of
        ``data.classes``, relabelled ``0..k-1``; the train/validation split (``val_indices`` are
        positions in the file, as :func:`vislab.tasks.runner.cross_validate` draws them); then
        the first ``data.per_class`` images of each class of the training part, the labelled few.
        The validation images are carved before that cut, from the other images of the same
        classes, so they are never among the labelled ones (and the validation set is not small:
        lower ``data.val_size`` for a stricter few-labels protocol).  Inputs are normalised with
        statistics of the training part, or as the run ``model.init_from`` names was (its
        backbone's input)."""
        warning = checksum_warning(cfg.data.name, cfg.data.root)
        data = load_split(cfg.data.name, "train", cfg.data.root, cfg.data.download)
        notes = [f"warning: {warning}"] if warning else []
        if cfg.data.limit_train is not None:
            n = cfg.data.limit_train
            data = ArrayDataset(data.images[:n], data.labels[:n], data.classes, data.source)
        if cfg.data.classes is not None:
            try:
                kept = class_indices(data.labels, cfg.data.classes, len(data.classes))
            except UserError as e:
                raise UserError(f"data.{e}") from None
            data = keep_classes(data, cfg.data.classes)
            if val_indices is not None:          # positions in the file -> among the kept images
                val_indices = np.flatnonzero(np.isin(kept, val_indices))
        x, y = data.images, data.labels
        tr, va = split_train_val(len(y), cfg, val_indices)
        if cfg.data.per_class is not None:
            try:
                tr = tr[first_per_class(y[tr], cfg.data.per_class, len(data.classes))]
            except UserError as e:
                raise UserError(f"data.per_class: {e} (in the training part, after the validation split)") from None
        if cfg.data.classes is not None or cfg.data.per_class is not None:
            notes.append(f"classes {', '.join(data.classes)}: {len(tr)} training images"
                         + (f" ({cfg.data.per_class} per class)" if cfg.data.per_class else "")
                         + f", {len(va)} validation images")
        norm = source_normalization(cfg, int(x.shape[1]))
        if norm is None:
            mean, std = channel_stats(x[tr])
            norm = Normalization(tuple(mean), tuple(max(s, 1e-6) for s in std))
        else:
            notes.append(f"inputs normalised as in {cfg.model.init_from}, the input its backbone learnt on")
        info = DataInfo(cfg.data.name, tuple(data.classes), int(x.shape[1]), (int(x.shape[2]), int(x.shape[3])), norm)
        cl = cfg.train.channels_last
        return DataBundle(norm.from_uint8(x[tr], device, cl), torch.from_numpy(y[tr]).to(device),
                          norm.from_uint8(x[va], device, cl), torch.from_numpy(y[va]).to(device), info, notes)

    def train_loader(self, cfg: Config, data: DataBundle, gen: torch.Generator) -> TensorLoader:
        return shuffled_batches(cfg, data, gen, self.augment)

    def build_model(self, cfg: Config, info: DataInfo) -> nn.Module:
        return build_classifier(cfg, info)

    def loss(self, cfg: Config, model: nn.Module):
        """Cross-entropy (or BCE / MSE) of the main logits plus a weight times that of each
        auxiliary head: ``train.aux_weight`` when set, else the model's own
        ``aux_logits_weight`` (GoogLeNet 0.3, Inception v3 0.4)."""
        base = build_loss(cfg.train.loss, cfg.train.label_smoothing)
        aux_weight = cfg.train.aux_weight if cfg.train.aux_weight is not None else model.aux_logits_weight

        def loss(out, y):
            logits, aux = split_logits(out)
            total = base(logits, y)
            for a in aux:
                total = total + aux_weight * base(a, y)
            return total
        return loss

    def correct(self, out, y: Tensor) -> Tensor:
        hard = y if y.ndim == 1 else y.argmax(1)
        return (split_logits(out)[0].argmax(1) == hard).sum()

    def validate(self, model: nn.Module, loader, amp_dtype=None) -> dict[str, float]:
        logits, labels = predict_logits(model, loader, amp_dtype)
        return {"val_loss": float(F.cross_entropy(logits, labels)),
                "val_top1": float((logits.argmax(1) == labels).float().mean())}

    def evaluate(self, run: TrainedRun, tta: bool = False) -> dict:
        """The test set (read here and nowhere else): ``eval.json``, ``plots/confusion.png``
        and ``plots/roc.png``."""
        cfg = run.config
        test = load_split(cfg.data.name, "test", cfg.data.root, cfg.data.download)
        if cfg.data.classes is not None:     # the classes the run was trained on, labelled as in training
            test = keep_classes(test, cfg.data.classes)
        x, y = run.norm.from_uint8(test.images, run.device), torch.from_numpy(test.labels).to(run.device)
        logits, labels = image_logits(run.model, x, y, cfg.train.eval_batch_size, tta)
        classes = list(run.classes)
        report = classification_report(logits, labels, classes)
        report.update(task=self.name, run_dir=run.run_dir, tta=tta, dataset=cfg.data.name, model=cfg.model.name,
                      plots=["confusion.png", "roc.png"])
        report["summary"] = _summary(report)
        atomic_write_text(run.path("eval.json"), json.dumps(report, indent=1))
        plot_confusion(np.asarray(report["confusion"]), classes, run.path("plots", "confusion.png"))
        plot_roc(one_vs_rest_roc(labels.numpy(), torch.softmax(logits, 1).numpy()), classes,
                 run.path("plots", "roc.png"))
        return report

    def predict(self, run: TrainedRun, paths: list[str], topk: int = 1) -> list[dict]:
        """Class and probability for image files, converted like the training data (channels,
        size, normalisation)."""
        with torch.no_grad():
            logits = run.model(images_to_input(run.info, paths, run.device))
        return top_predictions(logits, paths, run.classes, topk)

    def headline(self, ev: dict) -> list[tuple[str, str]]:
        return [("test accuracy (top-1)", f"{ev['top1'] * 100:.2f}%"), ("top-5", f"{ev['top5'] * 100:.2f}%"),
                ("macro F1", f"{ev['macro_f1']:.3f}"), ("macro AUC", _fmt(ev.get("macro_auc"))),
                ("test loss", f"{ev['loss']:.3f}"), ("test images", f"{ev['num_samples']}")]

    def report_sections(self, run: TrainedRun, ev: dict) -> list[Section]:
        """Per-class metrics, confusion, ROC, the most confident mistakes with Grad-CAM,
        filters, retrieval, t-SNE and the model summary."""
        return [
            Section("metrics", "Final metrics", _per_class(ev)),
            Section("confusion", "Confusion matrix",
                    H.img(run.path("plots", "confusion.png"), "confusion matrix")
                    + H.lines(["most confused: " + ", ".join(f"{m['true']} as {m['predicted']} ({m['count']})"
                                                             for m in ev.get("most_confused", [])[:5])])),
            Section("roc", "ROC curves (one class against the rest)", H.img(run.path("plots", "roc.png"), "ROC curves")),
            Section("mistakes", "Most confident mistakes, with Grad-CAM",
                    _explained(run, "mistakes", Options(k=6),
                               lambda r: H.lines(r.lines[:1]) + "".join(H.img(p, "mistakes") for p in r.files))),
            Section("filters", "First-layer filters and dead filters", _explained(run, "filters", Options(), _filters)),
            Section("retrieval", "Image retrieval in the latent space",
                    _explained(run, "retrieval", Options(images=["test:0-1"], k=8),
                               lambda r: H.lines(r.lines) + H.img(r.files[0], "retrieval"))),
            Section("tsne", "t-SNE map of the test embeddings",
                    _explained(run, "tsne", Options(limit=1000), lambda r: H.img(r.files[0], "t-SNE map"))),
            Section("summary", "Model summary", H.pre(_model_summary(run))),
        ]


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _summary(rep: dict) -> str:
    worst = sorted(rep["per_class"].items(), key=lambda kv: kv[1]["f1"])[:3]
    return "\n".join([
        f"{rep['model']} on {rep['dataset']} test set ({rep['num_samples']} images{', flip TTA' if rep['tta'] else ''}):",
        f"  top-1 {rep['top1']:.4f}   top-5 {rep['top5']:.4f}   loss {rep['loss']:.4f}   "
        f"macro F1 {rep['macro_f1']:.4f}   macro AUC {_fmt(rep.get('macro_auc'))}"
        + (f" (undefined for {', '.join(rep['auc_undefined'])}: absent from the test set)"
           if rep.get("auc_undefined") else ""),
        "  weakest classes (F1): " + ", ".join(f"{c} {v['f1']:.3f}" for c, v in worst),
        "  most confused: " + ", ".join(f"{p['true']}->{p['predicted']} ({p['count']})" for p in rep["most_confused"][:3]),
        f"test accuracy: {rep['top1'] * 100:.2f}%"])


def _per_class(ev: dict) -> str:
    rows = [[c, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", _fmt(v.get("auc")), v["support"]]
            for c, v in ev["per_class"].items()]
    return H.table(["class", "precision", "recall", "F1", "AUC", "test images"], rows)


def _explained(run: TrainedRun, method: str, options: Options, render) -> str:
    """A section made by ``render(result)`` from an explanation method, or a note saying why
    this model has none (e.g. no convolution for a linear classifier)."""
    try:
        result = explain(run, method, options)
    except UserError as e:
        return H.note(f"not available for this model: {e}")
    return render(result)


def _filters(res) -> str:
    table = H.table(["layer", "type", "channels", "dead (output always 0)", "dead (constant)"],
                    [[r["layer"], r["kind"], r["channels"], len(r["zero"]), len(r["constant"])]
                     for r in res.data["layers"]])
    return H.img(res.files[0], "first-layer filters") + H.lines(res.lines[:2]) + table


def _model_summary(run: TrainedRun) -> str:
    """The per-layer table of :func:`vislab.analysis.summarize` on one input of the run's size;
    parameters per top-level module where the model cannot be traced."""
    size = (run.info.in_chans, *run.info.image_size)
    try:
        return summarize(run.model, size, name=run.config.model.name).table()
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as e:
        rows = [f"{name or '(model)':30s} {sum(p.numel() for p in m.parameters()):>12,}"
                for name, m in [("", run.model), *run.model.named_children()]]
        return f"parameters per module (no per-layer trace: {e})\n" + "\n".join(rows)


TASK = register_task(ClassificationTask())

__all__ = ["ClassificationTask", "TASK", "build_classifier", "image_logits", "images_to_input", "predict_logits",
           "split_train_val", "top_predictions"]
