"""The perceptron against scikit-learn's, against a hand-computed update and against Novikoff's
mistake bound on separable data."""

import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import Perceptron as SkPerceptron

from vislab.classic.perceptron import Perceptron
from vislab.errors import UserError


def _digits(classes=None):
    X, y = load_digits(return_X_y=True)
    keep = np.isin(y, classes) if classes else np.ones(len(y), bool)
    return X[keep] / 16, y[keep]          # multiples of 1/16: every update is exact in float64


@pytest.mark.parametrize("data, eta, epochs", [
    (_digits([3, 8]), 0.5, 5),            # binary: one perceptron, classes_[1] positive
    (_digits(), 1.0, 3),                  # ten classes one-vs-rest
    (load_iris(return_X_y=True), 1.0, 10),
], ids=["digits-3-vs-8", "digits-10", "iris"])
def test_same_weights_as_sklearn(data, eta, epochs):
    X, y = data
    ours = Perceptron(eta=eta, max_epochs=epochs, shuffle=False).fit(X, y)
    ref = SkPerceptron(eta0=eta, max_iter=epochs, shuffle=False, tol=None, penalty=None).fit(X, y)
    np.testing.assert_array_equal(ours.classes_, ref.classes_)
    np.testing.assert_array_equal(ours.coef_, ref.coef_)
    np.testing.assert_array_equal(ours.intercept_, ref.intercept_)
    np.testing.assert_allclose(ours.decision_function(X), ref.decision_function(X), rtol=1e-12)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    assert ours.score(X, y) == ref.score(X, y)


def test_two_steps_by_hand():
    # eta 0.5, w = 0, w0 = 0.  x1 = (1, 2), t = +1: w.x1 + w0 = 0, a tie, so a mistake:
    # w = (0.5, 1), w0 = 0.5.  x2 = (-1, 1), t = -1: -0.5 + 1 + 0.5 = 1 > 0, a mistake:
    # w = (0.5, 1) - 0.5 * (-1, 1) = (1, 0.5), w0 = 0.
    X, y = np.array([[1.0, 2.0], [-1.0, 1.0]]), np.array(["b", "a"])
    p = Perceptron(eta=0.5, max_epochs=1, shuffle=False).fit(X, y)
    np.testing.assert_array_equal(p.coef_, [[1.0, 0.5]])
    np.testing.assert_array_equal(p.intercept_, [0.0])
    assert p.mistakes_ == [2]
    # Epoch two: x1 scores 1 + 1 = 2 (t = +1), x2 scores -1 + 0.5 = -0.5 (t = -1): no mistake, stop.
    p = Perceptron(eta=0.5, max_epochs=10, shuffle=False).fit(X, y)
    assert p.mistakes_ == [2, 0] and p.n_epochs_ == 2
    np.testing.assert_array_equal(p.predict(X), y)


def test_separable_data_converges_within_novikoff_bound():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 5))
    w, w0 = rng.normal(size=5), 0.3
    margin = X @ w + w0
    X, t = X[np.abs(margin) > 0.5], np.sign(margin[np.abs(margin) > 0.5])
    p = Perceptron(eta=1.0, max_epochs=1000, shuffle=True, seed=1).fit(X, t)
    assert p.score(X, t) == 1.0
    assert p.mistakes_[-1] == 0 and p.n_epochs_ < 1000
    # At most (R / gamma)^2 mistakes, for the inputs (x, 1) and the unit separator (w, w0).
    z = np.c_[X, np.ones(len(X))]
    gamma = np.min(t * (z @ np.r_[w, w0])) / np.linalg.norm(np.r_[w, w0])
    assert sum(p.mistakes_) <= (np.linalg.norm(z, axis=1).max() / gamma) ** 2


def test_shuffling_is_seeded():
    X, y = _digits([1, 7])
    a, b, c = (Perceptron(max_epochs=2, seed=s).fit(X, y) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert not np.array_equal(a.coef_, c.coef_)


@pytest.mark.parametrize("call", [
    lambda: Perceptron(eta=0),
    lambda: Perceptron(max_epochs=0),
    lambda: Perceptron().fit(np.zeros(4), np.arange(4)),
    lambda: Perceptron().fit(np.zeros((4, 2)), np.arange(3)),
    lambda: Perceptron().fit(np.zeros((4, 2)), np.zeros(4)),
    lambda: Perceptron().fit(np.full((2, 2), np.nan), np.arange(2)),
    lambda: Perceptron().predict(np.zeros((2, 2))),
    lambda: Perceptron().fit(np.eye(2), np.arange(2)).predict(np.zeros((2, 3))),
], ids=["eta", "epochs", "1-d X", "y length", "one class", "nan", "unfitted", "feature count"])
def test_bad_input_raises_user_error(call):
    with pytest.raises(UserError):
        call()
