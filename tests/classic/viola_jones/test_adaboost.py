"""Discrete AdaBoost with stumps against scikit-learn and against brute force."""

import numpy as np
import pytest
from skimage import data
from sklearn.ensemble import AdaBoostClassifier
from sklearn.tree import DecisionTreeClassifier

from vislab.classic.viola_jones.adaboost import (
    AdaBoost,
    SortedFeatures,
    _sort_rows,
    fit_adaboost,
    predict,
)
from vislab.classic.viola_jones.haar import feature_values, haar_features


@pytest.fixture(scope="module")
def lfw_features():
    """Haar features of the 100 LFW faces and 100 non-faces (400 random features)."""
    x = np.rint(data.lfw_subset() * 255).astype(np.uint8)[:, :24, :24]
    y = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    pool = haar_features((24, 24))
    idx = np.sort(np.random.default_rng(0).choice(len(pool), 400, replace=False))
    return feature_values(pool.subset(idx), x), y


def test_same_stumps_and_training_error_as_sklearn(lfw_features):
    X, y = lfw_features
    rounds = 8
    stumps = fit_adaboost(X, y, rounds, criterion="gini")
    w0 = np.full(len(y), 1 / len(y))
    clf = AdaBoostClassifier(DecisionTreeClassifier(max_depth=1), n_estimators=rounds, random_state=0)
    clf.fit(X.T, y, sample_weight=w0)
    assert len(stumps) == len(clf.estimators_) == rounds
    for s, est, err, alpha in zip(stumps, clf.estimators_, clf.estimator_errors_, clf.estimator_weights_):
        assert s.feature == est.tree_.feature[0]
        assert s.threshold == pytest.approx(est.tree_.threshold[0], rel=1e-6, abs=1e-7)
        assert s.error == pytest.approx(err, rel=1e-9)
        assert s.alpha == pytest.approx(alpha, rel=1e-9)
        np.testing.assert_array_equal(s.predict(X[s.feature]), est.predict(X.T))
    for k, staged in enumerate(clf.staged_predict(X.T), start=1):
        assert np.mean(predict(stumps[:k], X) != y) == pytest.approx(np.mean(staged != y))


def _brute_force_error(X, y, w):
    """Lowest weighted error over every feature, every midpoint threshold and both polarities."""
    best = np.inf
    for row in X.astype(np.float64):
        v = np.unique(row)
        below = row[None, :] < ((v[1:] + v[:-1]) / 2)[:, None]          # (thresholds, samples)
        err_pos_below = (below & ~y) @ w + (~below & y) @ w
        best = min(best, err_pos_below.min(initial=np.inf), (1 - err_pos_below).min(initial=np.inf))
    return best


def test_one_pass_search_finds_the_brute_force_optimum(lfw_features):
    X, y = lfw_features
    X = X[:60]
    rng = np.random.default_rng(1)
    booster = AdaBoost(SortedFeatures.from_matrix(X), y)
    for _ in range(4):
        w = booster.weights / booster.weights.sum()
        stump = booster.step()
        assert stump.error == pytest.approx(_brute_force_error(X, y, w), abs=1e-12)
        wrong = stump.predict(X[stump.feature]) != y
        assert stump.error == pytest.approx(w[wrong].sum(), abs=1e-12)
    # float32 weights (the fast path used in training) find a split as good, up to rounding
    w = rng.random(len(y))
    w /= w.sum()
    fast = SortedFeatures.from_matrix(X).best_stump(w.astype(np.float32), y)
    assert fast.error == pytest.approx(_brute_force_error(X, y, w), abs=1e-6)


def test_no_threshold_between_equal_values():
    # feature 0 separates perfectly only by splitting a tie; feature 1 is the best real split
    X = np.array([[0, 1, 1, 1, 1, 2],
                  [0, 1, 2, 3, 4, 5]], np.float32)
    y = np.array([0, 0, 0, 1, 1, 1], bool)
    X[1] = [0, 1, 4, 2, 3, 5]
    stump = SortedFeatures.from_matrix(X).best_stump(np.full(6, 1 / 6), y)
    values = X[stump.feature]
    assert not np.any(values == np.float32(stump.threshold))
    assert stump.error == pytest.approx(_brute_force_error(X, y, np.full(6, 1 / 6)))


def test_bounded_search_equals_brute_force_with_many_ties():
    """Features of few distinct values, so the best split of many is between equal values: the
    search by upper bounds, checked exactly, still finds the brute-force optimum."""
    rng = np.random.default_rng(4)
    for trial in range(20):
        X = rng.integers(0, 4, (300, 40)).astype(np.float32)
        y = rng.random(40) < 0.5
        w = rng.random(40)
        w /= w.sum()
        stump = SortedFeatures.from_matrix(X).best_stump(w.astype(np.float32), y)
        assert stump.error == pytest.approx(_brute_force_error(X, y, w), abs=1e-6), trial
        assert not np.any(X[stump.feature] == np.float32(stump.threshold))


def test_weights_renormalised_and_reweighted_like_viola_jones(lfw_features):
    X, y = lfw_features
    booster = AdaBoost(SortedFeatures.from_matrix(X), y)
    w = booster.weights / booster.weights.sum()
    stump = booster.step()
    beta = stump.error / (1 - stump.error)
    correct = stump.predict(X[stump.feature]) == y
    vj = w * np.where(correct, beta, 1.0)               # the paper: w <- w * beta^(1 - e)
    np.testing.assert_allclose(booster.weights / booster.weights.sum(), vj / vj.sum(), rtol=1e-9)
    assert np.exp(stump.alpha) == pytest.approx(1 / beta)


def test_sort_rows_is_a_stable_argsort():
    rng = np.random.default_rng(3)
    block = rng.integers(-5, 5, (20, 300)).astype(np.float32) * np.float32(0.37)
    block[0, 0] = -0.0
    order, valid = _sort_rows(block)
    want = np.argsort(block, axis=1, kind="stable")
    np.testing.assert_array_equal(order, want)
    s = np.take_along_axis(block, want, 1)
    np.testing.assert_array_equal(valid, s[:, 1:] != s[:, :-1])
