import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from vislab.metrics.classification import (auc, classification_report, confusion_matrix, per_class_prf,
                                           roc_curve, topk_accuracy)


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
