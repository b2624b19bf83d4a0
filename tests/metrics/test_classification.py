import json
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from vislab.metrics.classification import (
    auc,
    classification_report,
    confusion_matrix,
    per_class_prf,
    roc_curve,
    topk_accuracy,
)


@pytest.fixture
def preds():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 6, generator=g)
    labels = torch.randint(0, 6, (500,), generator=g)
    logits[torch.arange(500), labels] += 1.0        # better than chance
    return logits, labels


def test_topk_matches_sklearn(preds):
    logits, labels = preds
    acc = topk_accuracy(logits, labels, (1, 3, 5))
    for k in (1, 3, 5):
        assert acc[k] == pytest.approx(skm.top_k_accuracy_score(labels.numpy(), logits.numpy(), k=k))


def test_confusion_and_prf_match_sklearn(preds):
    logits, labels = preds
    y, p = labels.numpy(), logits.argmax(1).numpy()
    cm = confusion_matrix(y, p, 6)
    assert np.array_equal(cm, skm.confusion_matrix(y, p, labels=range(6)))
    prf = per_class_prf(cm)
    P, R, F, S = skm.precision_recall_fscore_support(y, p, labels=range(6), zero_division=0)
    assert np.allclose(prf["precision"], P) and np.allclose(prf["recall"], R)
    assert np.allclose(prf["f1"], F) and np.array_equal(prf["support"], S)


def test_roc_and_auc_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(y * 0.8, 1.0), 1)       # rounded: many tied scores
    fpr, tpr, thr = roc_curve(y, s)
    f2, t2, _ = skm.roc_curve(y, s, drop_intermediate=False)
    assert np.allclose(fpr, f2) and np.allclose(tpr, t2)
    assert auc(fpr, tpr) == pytest.approx(skm.roc_auc_score(y, s))


def test_report(preds):
    logits, labels = preds
    rep = classification_report(logits, labels, list("abcdef"))
    probs = torch.softmax(logits, 1).numpy()
    assert rep["macro_auc"] == pytest.approx(skm.roc_auc_score(labels.numpy(), probs, multi_class="ovr", average="macro"))
    assert rep["macro_f1"] == pytest.approx(skm.f1_score(labels.numpy(), logits.argmax(1).numpy(), average="macro"))
    assert sum(map(sum, rep["confusion"])) == 500
    assert rep["most_confused"][0]["count"] >= rep["most_confused"][-1]["count"]


def sk_auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """scikit-learn's binary AUC, None where it calls it undefined (a single class in ``y_true``:
    older versions raise, newer ones warn and return nan)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        try:
            v = skm.roc_auc_score(y_true, scores)
        except ValueError:
            return None
    return None if np.isnan(v) else float(v)


@pytest.fixture
def gappy():
    """Six classes 'a'..'f': 'd' (3) never occurs in the labels, 'f' (5) is never predicted."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(400, 6, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 4, 5])[torch.randint(0, 5, (400,), generator=g)]
    logits[torch.arange(400), labels] += 1.0
    logits[:, 5] -= 10.0
    return logits, labels


def test_loss_matches_sklearn(gappy):
    logits, labels = gappy
    rep = classification_report(logits, labels, list("abcdef"))
    probs = torch.softmax(logits, 1).numpy()
    assert rep["loss"] == pytest.approx(skm.log_loss(labels.numpy(), probs, labels=range(6)), rel=1e-5)


def test_auc_undefined_for_absent_class_as_in_sklearn(gappy):
    logits, labels = gappy
    rep = classification_report(logits, labels, list("abcdef"))
    y, probs = labels.numpy(), torch.softmax(logits, 1).numpy()
    want = {c: sk_auc(y == i, probs[:, i]) for i, c in enumerate("abcdef")}
    assert want["d"] is None
    for c, v in rep["per_class"].items():
        assert v["auc"] == (None if want[c] is None else pytest.approx(want[c]))
    assert rep["macro_auc"] == pytest.approx(np.mean([a for a in want.values() if a is not None]))
    assert rep["auc_undefined"] == ["d"]
    json.dumps(rep, allow_nan=False)                            # eval.json stays valid JSON


def test_auc_undefined_without_negatives():
    """One class only in the labels: it has no negative sample and the others no positive."""
    logits = torch.randn(20, 3, generator=torch.Generator().manual_seed(2))
    rep = classification_report(logits, torch.zeros(20, dtype=torch.long), ["x", "y", "z"])
    assert all(sk_auc(np.full(20, c == 0), logits[:, c].numpy()) is None for c in range(3))
    assert rep["macro_auc"] is None and rep["auc_undefined"] == ["x", "y", "z"]


def test_prf_zero_division_matches_sklearn(gappy):
    logits, labels = gappy
    rep = classification_report(logits, labels, list("abcdef"))
    y, p = labels.numpy(), logits.argmax(1).numpy()
    assert (y == 3).sum() == 0 and (p == 3).sum() > 0          # 'd' predicted, never present
    assert (p == 5).sum() == 0 and (y == 5).sum() > 0          # 'f' present, never predicted
    P, R, F, S = skm.precision_recall_fscore_support(y, p, labels=range(6), zero_division=0)
    for i, c in enumerate("abcdef"):
        v = rep["per_class"][c]
        assert (v["precision"], v["recall"], v["f1"], v["support"]) == pytest.approx((P[i], R[i], F[i], S[i]))
    want = skm.f1_score(y, p, labels=range(6), average="macro", zero_division=0)
    assert rep["macro_f1"] == pytest.approx(want)
