"""Discrete AdaBoost with decision stumps, the learner inside every Viola-Jones stage.

Each round picks, over all features at once, the stump with the lowest weighted error.  The
samples are sorted once per feature (:class:`SortedFeatures`); a round then needs one pass:
gather the signed weights in each feature's order, take cumulative sums, and every split of
every feature has its error (no threshold is tried one by one).  The weights are renormalised
every round and the misclassified samples gain ``exp(alpha)``, ``alpha = log((1 - e) / e)``:
Viola and Jones' ``beta = e / (1 - e)`` update, which is also scikit-learn's SAMME for two
classes.

``criterion="gini"`` ranks splits by weighted Gini impurity instead of error, as scikit-learn's
decision trees do; it exists so that the whole procedure can be checked against
``AdaBoostClassifier(DecisionTreeClassifier(max_depth=1))`` stump by stump.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

# sklearn and Viola-Jones both stop when a stump is perfect; alpha is then capped through this error
_MIN_ERROR = 1e-10


@contextmanager
def _single_torch_thread():
    """Run torch on one thread: its spinning worker threads slow a round down several times
    on a loaded machine, and a round's blocks are too small to gain from them."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_workers() -> int:
    """Threads that sort the feature blocks (numpy releases the GIL while sorting)."""
    return max(1, min(os.cpu_count() or 1, 8))


@dataclass(frozen=True)
class Stump:
    """A decision stump ``value < threshold -> left leaf, else right leaf``.

    Attributes:
        feature: feature (row) index.
        threshold: float32 threshold, strictly above every training value sent left.
        left_positive / right_positive: the class each leaf predicts.
        error: weighted training error when it was chosen.
        alpha: its vote, ``log((1 - error) / error)``.
    """

    feature: int
    threshold: float
    left_positive: bool
    right_positive: bool
    error: float
    alpha: float

    def predict(self, values: np.ndarray) -> np.ndarray:
        """Predicted class (bool) of the samples whose feature values are given."""
        return np.where(np.asarray(values) < np.float32(self.threshold), self.left_positive, self.right_positive)


class SortedFeatures:
    """Per-feature sort orders of a fixed (F, N) feature matrix, computed once, reused every round.

    Attributes:
        order: (F, N) sample indices in increasing feature value (ties keep sample order).
        valid: (F, N - 1) bool, ``valid[f, j]``: sorted samples j and j + 1 differ, so a
            threshold can go between them.
    """

    def __init__(self, order: np.ndarray, valid: np.ndarray, column: Callable[[int], np.ndarray]) -> None:
        self.order, self.valid = order, valid
        self._column, self._last_column = column, (-1, np.zeros(0, np.float32))
        self._gather_index = None   # int32 copy of order for torch, made on the first round

    def column(self, f: int) -> np.ndarray:
        """The float32 values of feature f on every sample (the last feature asked is kept: a
        round asks for the one it picked several times)."""
        if self._last_column[0] != f:
            self._last_column = (f, np.asarray(self._column(f), np.float32))
        return self._last_column[1]

    def gather_index(self):
        """``order`` as an int32 torch tensor (torch gathers with int32 or int64 indices), made
        once for every round: converting it every round cost as much as the gather itself."""
        if self._gather_index is None:
            import torch
            self._gather_index = torch.from_numpy(self.order).to(torch.int32)
        return self._gather_index

    @property
    def n_features(self) -> int:
        return self.order.shape[0]

    @property
    def n_samples(self) -> int:
        return self.order.shape[1]

    @classmethod
    def from_blocks(cls, blocks: Iterable[np.ndarray], n_features: int, n_samples: int,
                    column: Callable[[int], np.ndarray], workers: int | None = None) -> "SortedFeatures":
        """Sort row blocks of the feature matrix as they come, never holding the whole matrix.

        ``blocks`` yields consecutive (rows, N) float32 blocks; ``column(f)`` recomputes one
        feature's values when a threshold is needed.  Blocks are sorted on ``workers`` threads
        while the next ones are computed.
        """
        index_dtype = np.int16 if n_samples <= 2 ** 15 else np.int32
        order = np.empty((n_features, n_samples), index_dtype)
        valid = np.empty((n_features, max(n_samples - 1, 0)), bool)
        workers = workers or default_workers()

        def sort_into(rows: slice, block: np.ndarray) -> None:
            order[rows], valid[rows] = _sort_rows(block)

        start = 0
        with ThreadPoolExecutor(workers) as pool:
            running: deque = deque()
            for block in blocks:
                rows = slice(start, start + len(block))
                running.append(pool.submit(sort_into, rows, np.asarray(block, np.float32)))
                start = rows.stop
                while len(running) > workers:   # bound the blocks held in memory
                    running.popleft().result()
            for job in running:
                job.result()
        if start != n_features:
            raise ValueError(f"blocks gave {start} features, expected {n_features}")
        return cls(order, valid, column)

    @classmethod
    def from_matrix(cls, X: np.ndarray, block: int = 4096) -> "SortedFeatures":
        """Sort a feature matrix X (F, N) held in memory."""
        X = np.asarray(X, np.float32)
        return cls.from_blocks((X[i:i + block] for i in range(0, len(X), block)), X.shape[0], X.shape[1],
                               lambda f: X[f])

    def best_stump(self, weights: np.ndarray, labels: np.ndarray, criterion: str = "error",
                   block: int = 1024) -> Stump:
        """The stump (alpha still 0) that is best over all features and all splits.

        Ties go to the lowest feature index and, within a feature, to the lowest split.
        """
        if criterion not in ("error", "gini"):
            raise ValueError(f"criterion must be 'error' or 'gini', got {criterion!r}")
        labels = np.asarray(labels, bool)
        dtype = np.float32 if criterion == "error" and weights.dtype == np.float32 else np.float64
        w = np.asarray(weights, dtype)
        if criterion == "error":
            f = self._best_error_feature(w, labels, block)
        else:
            score = np.concatenate([_gini_scores(self.order[i:i + block], self.valid[i:i + block], w, labels)
                                    for i in range(0, self.n_features, block)])
            f = int(np.argmax(score)) if np.isfinite(score).any() else -1
        if f < 0:
            raise ValueError("no feature can split the samples (all feature values are equal)")
        return self._stump(f, w, labels, criterion)

    def _best_error_feature(self, w: np.ndarray, labels: np.ndarray, block: int) -> int:
        """The feature whose best valid split has the lowest weighted error (-1: none can split).

        With signed weights s (+w positives, -w negatives) and D the cumulative sum of s in
        sorted order, the two polarities err ``T+ - D`` and ``T- + D``, so the best error of a
        feature is ``(T+ + T-) / 2 - max |D - (T+ - T-) / 2|`` over its valid splits.  One pass
        over all features takes that maximum over every split, valid or not, from the row's
        largest and smallest D (one gather, one cumulative sum, one max and one min per row, in
        torch, whose row-wise cumulative sum is several times faster than numpy's): an upper
        bound, exact unless the best split falls between equal values.  The features are then
        checked exactly in decreasing bound until no bound left can beat the best.
        """
        import torch

        tp, tn = float(w[labels].sum(dtype=np.float64)), float(w[~labels].sum(dtype=np.float64))
        centre = (tp - tn) / 2
        s = torch.from_numpy(np.where(labels, w, -w).astype(np.float32))
        index = self.gather_index()
        n = self.n_samples
        bound = np.full(self.n_features, -np.inf)
        if n < 2:
            return -1
        with _single_torch_thread():
            for start in range(0, self.n_features, block):
                d = torch.cumsum(s.index_select(0, index[start:start + block].reshape(-1)).view(-1, n), 1)[:, :-1]
                bound[start:start + len(d)] = torch.maximum(d.amax(1) - centre, centre - d.amin(1)).numpy()
            best, best_f = -np.inf, -1
            for f in np.argsort(-bound, kind="stable"):
                if bound[f] < best:
                    break
                valid = torch.from_numpy(self.valid[f])
                if not bool(valid.any()):
                    continue
                d = torch.cumsum(s.index_select(0, index[f]).view(1, n), 1)[0, :-1]
                score = float(torch.where(valid, (d - centre).abs(), 0).max())
                if score > best or (score == best and f < best_f):
                    best, best_f = score, int(f)
        return best_f

    def _stump(self, f: int, w: np.ndarray, labels: np.ndarray, criterion: str) -> Stump:
        """Stump of feature f at its best split, with threshold and leaf classes."""
        idx = self.order[f].astype(np.intp)
        wp, wn = np.where(labels, w, 0)[idx].astype(np.float64), np.where(labels, 0, w)[idx].astype(np.float64)
        lp, ln = np.cumsum(wp)[:-1], np.cumsum(wn)[:-1]
        tp, tn = wp.sum(), wn.sum()
        if criterion == "error":
            # positive-left errs on left negatives + right positives; positive-right the other way
            err_left_pos, err_right_pos = ln + (tp - lp), lp + (tn - ln)
            err = np.where(self.valid[f], np.minimum(err_left_pos, err_right_pos), np.inf)
            j = int(np.argmin(err))
            left_positive = bool(err_left_pos[j] <= err_right_pos[j])
            right_positive = not left_positive
        else:
            j = int(np.argmax(np.where(self.valid[f], _gini_proxy(lp, ln, tp, tn), -np.inf)))
            left_positive, right_positive = bool(lp[j] > ln[j]), bool(tp - lp[j] > tn - ln[j])
        values = self.column(f)[idx]
        threshold = _threshold(values[j], values[j + 1])
        left = np.arange(len(idx)) <= j
        pred = np.where(left, left_positive, right_positive)
        error = float(np.sum(np.where(pred != labels[idx], w[idx], 0), dtype=np.float64))
        return Stump(f, threshold, left_positive, right_positive, error, 0.0)


def _sort_rows(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort order and valid-split mask of each row of a float32 block.

    Rows are sorted as int64 keys (order-preserving bits of the value, then the sample index):
    numpy's vectorised integer sort beats ``argsort`` by about three times and keeps ties in
    sample order.  Indices are int16 up to 32768 samples (torch gathers with signed indices).
    """
    n = block.shape[1]
    block = block + np.float32(0)   # -0.0 becomes 0.0: equal values must get equal keys
    if n > 2 ** 16:
        order = np.argsort(block, axis=1, kind="stable")
        values = np.take_along_axis(block, order, axis=1)
        return order.astype(np.int32), values[:, 1:] != values[:, :-1]
    bits = np.ascontiguousarray(block).view(np.int32)
    keys = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).astype(np.int64)   # float order as signed ints
    keys <<= 16
    keys |= np.arange(n, dtype=np.int64)
    keys.sort(axis=1)
    order = (keys & 0xFFFF).astype(np.int16 if n <= 2 ** 15 else np.int32)
    keys >>= 16
    return order, keys[:, 1:] != keys[:, :-1]


def _gini_proxy(lp: np.ndarray, ln: np.ndarray, tp: float, tn: float) -> np.ndarray:
    """scikit-learn's proxy for the weighted Gini impurity decrease of a split (larger is better)."""
    rp, rn = tp - lp, tn - ln
    with np.errstate(divide="ignore", invalid="ignore"):
        return (lp ** 2 + ln ** 2) / (lp + ln) + (rp ** 2 + rn ** 2) / (rp + rn)


def _gini_scores(order: np.ndarray, valid: np.ndarray, w: np.ndarray, labels: np.ndarray) -> np.ndarray:
    idx = order.astype(np.intp)
    wp, wn = np.where(labels, w, 0.0), np.where(labels, 0.0, w)
    lp = np.cumsum(np.take(wp, idx), axis=1)[:, :-1]
    ln = np.cumsum(np.take(wn, idx), axis=1)[:, :-1]
    proxy = _gini_proxy(lp, ln, wp.sum(), wn.sum())
    return np.max(proxy, axis=1, where=valid, initial=-np.inf)


def _threshold(below: np.float32, above: np.float32) -> float:
    """float32 threshold between two sorted values, as close to their midpoint as float32 allows.

    ``value < threshold`` must send ``below`` left and ``above`` right after rounding to float32.
    """
    t = np.float32(np.float64(below) / 2 + np.float64(above) / 2)
    if not below < t:
        t = np.float32(above)
    return float(t)


class AdaBoost:
    """Discrete AdaBoost over sorted features, one stump per :meth:`step`.

    Args:
        features: the sorted training features.
        labels: (N,) bool, True for positives.
        sample_weight: initial weights; default: Viola-Jones' ``1 / (2 m)`` for each of the m
            negatives and ``1 / (2 l)`` for each of the l positives.
        criterion: ``"error"`` (Viola-Jones) or ``"gini"`` (scikit-learn's trees).
        dtype: float dtype of the weights; float32 halves the memory traffic of a round.
    """

    def __init__(self, features: SortedFeatures, labels: np.ndarray, sample_weight: np.ndarray | None = None,
                 criterion: str = "error", dtype: type[np.floating] = np.float64) -> None:
        self.features, self.criterion, self.dtype = features, criterion, dtype
        self.labels = np.asarray(labels, bool)
        if sample_weight is None:
            n_pos, n_neg = self.labels.sum(), (~self.labels).sum()
            if n_pos == 0 or n_neg == 0:
                raise ValueError("AdaBoost needs positive and negative samples")
            sample_weight = np.where(self.labels, 0.5 / n_pos, 0.5 / n_neg)
        self.weights = np.asarray(sample_weight, np.float64)
        self.stumps: list[Stump] = []
        self.done = False

    def step(self) -> Stump | None:
        """Add the best stump for the current weights and reweight; None once boosting must stop.

        Boosting stops after a perfect stump (error 0) and when no stump beats chance.
        """
        if self.done:
            return None
        self.weights /= self.weights.sum()
        stump = self.features.best_stump(self.weights.astype(self.dtype), self.labels, self.criterion)
        if stump.error >= 0.5:
            self.done = True
            return None
        error = max(stump.error, _MIN_ERROR)
        alpha = float(np.log((1 - error) / error))
        stump = Stump(stump.feature, stump.threshold, stump.left_positive, stump.right_positive, stump.error, alpha)
        self.stumps.append(stump)
        if stump.error <= 0:
            self.done = True
            return stump
        wrong = stump.predict(self.features.column(stump.feature)) != self.labels
        self.weights = np.exp(np.log(self.weights) + alpha * wrong)
        return stump


def decision_function(stumps: list[Stump], X: np.ndarray) -> np.ndarray:
    """Strong-classifier score ``sum(alpha * h(x))`` with h in {0, 1}, for X (F, N)."""
    score = np.zeros(np.asarray(X).shape[1])
    for s in stumps:
        score += s.alpha * s.predict(X[s.feature])
    return score


def predict(stumps: list[Stump], X: np.ndarray) -> np.ndarray:
    """Viola-Jones' strong classifier: positive when the votes reach half the total vote."""
    return decision_function(stumps, X) >= 0.5 * sum(s.alpha for s in stumps)


def fit_adaboost(X: np.ndarray, labels: np.ndarray, n_rounds: int, sample_weight: np.ndarray | None = None,
                 criterion: str = "error") -> list[Stump]:
    """Boost ``n_rounds`` stumps on a feature matrix X (F, N) held in memory."""
    booster = AdaBoost(SortedFeatures.from_matrix(X), labels, sample_weight, criterion)
    for _ in range(n_rounds):
        if booster.step() is None:
            break
    return booster.stumps
