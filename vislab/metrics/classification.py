"""Classification metrics written from their definitions (tests check them against scikit-learn)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def topk_accuracy(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Fraction of samples whose label is among the ``k`` highest scores (ties broken by index)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices                     # (N, kmax)
    hit = top == labels[:, None]
    return {k: float(hit[:, :min(k, kmax)].any(1).float().mean()) for k in ks}


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of samples of true class ``i`` predicted as ``j``."""
    return np.bincount(labels * num_classes + preds, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_prf(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    pred = cm.sum(0).astype(np.float64)
    true = cm.sum(1).astype(np.float64)
    precision = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    recall = np.divide(tp, true, out=np.zeros_like(tp), where=true > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": true.astype(np.int64)}


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary ROC: false-positive rates, true-positive rates and thresholds at every distinct
    score (descending), starting from (0, 0) at threshold +inf."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], y_true[order].astype(np.float64)
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]    # last index of each score value
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(tps[-1], 1)]
    fpr = np.r_[0.0, fps / max(fps[-1], 1)]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Area under a curve by the trapezoidal rule."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def one_vs_rest_roc(labels: np.ndarray, probs: np.ndarray) -> dict[int, dict]:
    """ROC and AUC of each class against the rest.  The AUC is ``None`` (undefined, as in
    scikit-learn) for a class with no positive or no negative sample."""
    out = {}
    for c in range(probs.shape[1]):
        positive = labels == c
        fpr, tpr, _ = roc_curve(positive, probs[:, c])
        defined = 0 < positive.sum() < len(positive)
        out[c] = {"fpr": fpr, "tpr": tpr, "auc": auc(fpr, tpr) if defined else None}
    return out


def most_confused(cm: np.ndarray, classes: list[str], n: int = 5) -> list[dict]:
    """The ``n`` off-diagonal (true, predicted) pairs with the most samples."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:n]
    pairs = []
    for f in flat:
        i, j = divmod(int(f), cm.shape[0])
        if off[i, j] > 0:
            pairs.append({"true": classes[i], "predicted": classes[j], "count": int(off[i, j])})
    return pairs


def classification_report(logits: Tensor, labels: Tensor, classes: list[str]) -> dict:
    """Every number ``vislab evaluate`` writes to ``eval.json``."""
    k = len(classes)
    probs = torch.softmax(logits.float(), 1).numpy()
    y = labels.numpy()
    pred = probs.argmax(1)
    acc = topk_accuracy(logits, labels, (1, 5))
    cm = confusion_matrix(y, pred, k)
    prf = per_class_prf(cm)
    roc = one_vs_rest_roc(y, probs)
    nll = float(torch.nn.functional.cross_entropy(logits.float(), labels))
    aucs = [roc[i]["auc"] for i in range(k)]
    defined = [a for a in aucs if a is not None]
    return {
        "num_samples": int(len(y)),
        "top1": acc[1], "top5": acc[5], "loss": nll,
        "per_class": {c: {"precision": float(prf["precision"][i]), "recall": float(prf["recall"][i]),
                          "f1": float(prf["f1"][i]), "support": int(prf["support"][i]),
                          "auc": aucs[i]} for i, c in enumerate(classes)},
        "macro_f1": float(prf["f1"].mean()),
        "macro_auc": float(np.mean(defined)) if defined else None,   # over the classes with an AUC
        "auc_undefined": [c for c, a in zip(classes, aucs) if a is None],
        "confusion": cm.tolist(),
        "classes": list(classes),
        "most_confused": most_confused(cm, classes),
    }
