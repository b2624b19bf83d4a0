"""Rosenblatt's perceptron, as the lecture notes derive it, with one-vs-rest for several classes.

Targets are coded ``t = +1/-1`` and the perceptron minimises the distance of the misclassified
points ``M`` from the decision boundary, ``D(w, w0) = -sum_{i in M} t_i (w^T x_i + w0)``, by
stochastic gradient descent: on a mistake, ``w += eta * t_i * x_i`` and ``w0 += eta * t_i`` (the
Hebbian update).  A point exactly on the boundary (``t_i (w^T x_i + w0) <= 0``) counts as a
mistake, otherwise the all-zero start would never move.  This is the update of scikit-learn's
``Perceptron`` (``SGDClassifier(loss="perceptron", learning_rate="constant")``) without penalty,
and with ``shuffle=False`` both give the same weights.  On linearly separable data the updates
stop after finitely many mistakes (Novikoff); training stops at the first epoch without one.
"""

from __future__ import annotations

import numpy as np

from vislab.errors import UserError


class Perceptron:
    """Perceptron classifier; several classes are learnt one-vs-rest, as scikit-learn does: one
    binary perceptron per class (that class +1, the rest -1), the prediction the class of the
    largest decision function.  Two classes use a single perceptron whose positive class is
    ``classes_[1]``.

    Args:
        eta: learning rate of the update ``w += eta * t_i * x_i``.
        max_epochs: passes over the data at most; training stops earlier at an epoch without
            mistakes, after which no weight would change again.
        shuffle: visit the samples in a new random order every epoch (one order shared by all
            one-vs-rest perceptrons); ``False`` visits them in the order given.
        seed: seed of the shuffling.
    """

    def __init__(self, eta: float = 1.0, max_epochs: int = 20, shuffle: bool = True, seed: int = 0) -> None:
        if not eta > 0:
            raise UserError(f"eta must be > 0, got {eta}")
        if int(max_epochs) != max_epochs or max_epochs < 1:
            raise UserError(f"max_epochs must be an integer >= 1, got {max_epochs}")
        self.eta = float(eta)
        self.max_epochs = int(max_epochs)
        self.shuffle = shuffle
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> Perceptron:
        """Learn from ``X: (N, D)`` features and ``y: (N,)`` labels (any sortable values).

        Sets ``classes_``, ``coef_: (K, D)`` and ``intercept_: (K,)`` with ``K = 1`` for two
        classes, ``n_epochs_`` (epochs run) and ``mistakes_`` (updates in each epoch, summed over
        the ``K`` perceptrons)."""
        X = _features(X)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(X):
            raise UserError(f"y must be 1-D with one label per row of X ({len(X)}), got shape {y.shape}")
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise UserError(f"the labels hold {len(self.classes_)} class(es); a classifier needs at least 2")
        positive = self.classes_[1:] if len(self.classes_) == 2 else self.classes_
        targets = np.where(y[:, None] == positive, 1.0, -1.0)            # (N, K): t_i per perceptron
        w = np.zeros((len(positive), X.shape[1]))
        w0 = np.zeros(len(positive))
        rng = np.random.default_rng(self.seed)
        self.mistakes_: list[int] = []
        for _ in range(self.max_epochs):
            order = rng.permutation(len(X)) if self.shuffle else range(len(X))
            mistakes = 0
            for i in order:
                x, t = X[i], targets[i]
                wrong = t * (w @ x + w0) <= 0                              # (K,) which perceptrons err
                if wrong.any():
                    step = self.eta * t[wrong]
                    w[wrong] += step[:, None] * x
                    w0[wrong] += step
                    mistakes += int(wrong.sum())
            self.mistakes_.append(mistakes)
            if mistakes == 0:
                break
        self.coef_, self.intercept_ = w, w0
        self.n_epochs_ = len(self.mistakes_)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """``w^T x + w0``: ``(N,)`` for two classes (positive means ``classes_[1]``), else ``(N, K)``."""
        if not hasattr(self, "coef_"):
            raise UserError("this Perceptron is not fitted yet; call fit(X, y) first")
        X = _features(X)
        if X.shape[1] != self.coef_.shape[1]:
            raise UserError(f"X has {X.shape[1]} features but the perceptron was fitted on {self.coef_.shape[1]}")
        scores = X @ self.coef_.T + self.intercept_
        return scores[:, 0] if len(self.classes_) == 2 else scores

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The class of each row: the sign of the decision function, or its argmax for several classes."""
        scores = self.decision_function(X)
        return self.classes_[(scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(1)]

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy of ``predict(X)`` against ``y``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))


def _features(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or not len(X) or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise UserError(f"X must be a non-empty 2-D numeric array (samples, features), got {X.dtype} "
                        f"of shape {X.shape}; flatten images with X.reshape(len(X), -1)")
    X = np.ascontiguousarray(X, dtype=np.float64)
    if not np.isfinite(X).all():
        raise UserError("X holds NaN or infinite values; clean or impute them first")
    return X
