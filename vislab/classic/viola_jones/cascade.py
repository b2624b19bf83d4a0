"""The attentional cascade: stages of boosted weak trees, its file format, and its evaluation.

A cascade is stored as flat arrays in OpenCV's layout, so that cascades trained by vislab and
cascades read from OpenCV's XML run through the same code:

* every weak classifier is a small tree of at most ``M`` nodes (``M = 1``: a stump); node
  ``n`` sends a window left when ``feature value < threshold``, and a child ``<= 0`` names the
  leaf ``-child`` (OpenCV's convention);
* a stage sums the leaves its trees reach, in float64 and in order, and a window passes when
  the sum is not below ``stage threshold - 1e-5`` (OpenCV's ``THRESHOLD_EPS``).

Windows are evaluated by :class:`WindowEvaluator` on integral tables laid out with one common
row stride, so each rectangle corner is one fixed offset from a window's origin: one
``numpy.take`` evaluates a corner for all live windows and all trees of a stage.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vislab.classic.viola_jones.haar import HaarFeatures, window_normalisation
from vislab.classic.viola_jones.integral import integral_image, tilted_integral_image
from vislab.errors import UserError
from vislab.io import atomic_write_bytes

FORMAT = "vislab-vj-cascade"
VERSION = 1
THRESHOLD_EPS = np.float32(1e-5)


@dataclass(frozen=True)
class Cascade:
    """A cascade of boosted trees over Haar features.

    Attributes:
        window: (width, height) of the detection window.
        features: the features the nodes refer to.
        node_feature, node_threshold, node_left, node_right: (T, M) per node of each weak tree.
        leaves: (T, M + 1) float32 leaf values.
        stage_sizes: (S,) number of weak trees in each stage.
        stage_thresholds: (S,) float32 stage thresholds as stored (before ``- 1e-5``).
    """

    window: tuple[int, int]
    features: HaarFeatures
    node_feature: np.ndarray
    node_threshold: np.ndarray
    node_left: np.ndarray
    node_right: np.ndarray
    leaves: np.ndarray
    stage_sizes: np.ndarray
    stage_thresholds: np.ndarray

    def __post_init__(self) -> None:
        t, m = self.node_feature.shape
        shapes = [a.shape for a in (self.node_threshold, self.node_left, self.node_right)]
        if any(s != (t, m) for s in shapes) or self.leaves.shape != (t, m + 1):
            raise ValueError("cascade node arrays must all be (T, M) and leaves (T, M + 1)")
        if self.stage_sizes.sum() != t or len(self.stage_thresholds) != len(self.stage_sizes):
            raise ValueError("stage sizes must add up to the number of weak trees, one threshold per stage")
        if t and (self.node_feature.min() < 0 or self.node_feature.max() >= len(self.features)):
            raise ValueError("a node refers to a feature that does not exist")

    @property
    def n_stages(self) -> int:
        return len(self.stage_sizes)

    @property
    def max_nodes(self) -> int:
        return self.node_feature.shape[1]

    def stage_slice(self, stage: int) -> slice:
        start = int(self.stage_sizes[:stage].sum())
        return slice(start, start + int(self.stage_sizes[stage]))

    def effective_thresholds(self) -> np.ndarray:
        """(S,) float32 thresholds a stage sum is compared with: ``threshold - 1e-5`` in float32."""
        return (self.stage_thresholds.astype(np.float32) - THRESHOLD_EPS).astype(np.float32)

    def truncated(self, n_stages: int) -> "Cascade":
        """The first ``n_stages`` stages (features are kept as they are)."""
        t = int(self.stage_sizes[:n_stages].sum())
        return Cascade(self.window, self.features, self.node_feature[:t], self.node_threshold[:t],
                       self.node_left[:t], self.node_right[:t], self.leaves[:t],
                       self.stage_sizes[:n_stages], self.stage_thresholds[:n_stages])

    def with_stage_threshold(self, stage: int, threshold: float) -> "Cascade":
        """A copy with one stage threshold replaced (e.g. to trace a ROC curve)."""
        thresholds = self.stage_thresholds.copy()
        thresholds[stage] = threshold
        return Cascade(self.window, self.features, self.node_feature, self.node_threshold, self.node_left,
                       self.node_right, self.leaves, self.stage_sizes, thresholds)

    @classmethod
    def from_stumps(cls, window: tuple[int, int], features: HaarFeatures,
                    stages: list[tuple[list[tuple[int, float, float, float]], float]]) -> "Cascade":
        """Build a stump cascade from ``[(stumps, stage_threshold), ...]``.

        Each stump is ``(feature index, threshold, left leaf, right leaf)``; only the features
        used are kept.
        """
        stumps = [s for stage, _ in stages for s in stage]
        used, remap = np.unique(np.array([s[0] for s in stumps], np.int64), return_inverse=True)
        t = len(stumps)
        return cls(
            window=tuple(window),
            features=features.subset(used),
            node_feature=remap.astype(np.int32).reshape(t, 1),
            node_threshold=np.array([s[1] for s in stumps], np.float32).reshape(t, 1),
            node_left=np.zeros((t, 1), np.int32),
            node_right=np.full((t, 1), -1, np.int32),
            leaves=np.array([(s[2], s[3]) for s in stumps], np.float32).reshape(t, 2),
            stage_sizes=np.array([len(s) for s, _ in stages], np.int32),
            stage_thresholds=np.array([th for _, th in stages], np.float32),
        )

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write the cascade as a ``.npz`` of plain arrays (no pickle), atomically."""
        path = Path(path)
        meta = {"format": FORMAT, "version": VERSION, "window": list(self.window)}
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        arrays.update(rects=self.features.rects, weights=self.features.weights, tilted=self.features.tilted)
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
        atomic_write_bytes(str(path), buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Cascade":
        """Read a cascade written by :meth:`save`; a wrong or corrupt file raises UserError."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"cascade file {path} does not exist; train one with `vislab vj train` "
                            "or pass an OpenCV XML cascade")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                data = {k: z[k] for k in z.files if k != "meta"}
            if meta.get("format") != FORMAT or meta.get("version") != VERSION:
                raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}")
            features = HaarFeatures(data["rects"].astype(np.int32), data["weights"].astype(np.float32),
                                    data["tilted"].astype(bool))
            return cls(window=tuple(int(v) for v in meta["window"]), features=features,
                       **{k: data[k].astype(_ARRAYS[k]) for k in _ARRAYS})
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise UserError(f"{path} is not a vislab cascade ({e}); pass a file written by "
                            "`vislab vj train` (checkpoints/cascade.npz)") from e


_ARRAYS = {"node_feature": np.int32, "node_threshold": np.float32, "node_left": np.int32,
           "node_right": np.int32, "leaves": np.float32, "stage_sizes": np.int32, "stage_thresholds": np.float32}

# corner signs of a rectangle sum: p0 - p1 - p2 + p3
_SIGNS = (1, -1, -1, 1)
# gathered evaluation loops over features once a stage has this much work and this many windows
_LOOP_MIN_WORK = 1 << 16
_LOOP_MIN_WINDOWS = 1024
_LOOP_BLOCK = 8192        # windows per pass of the loop, to keep its arrays in cache
_GATHER_BLOCK = 1 << 21   # corner look-ups per vectorised block


def corner_offsets(features: HaarFeatures, tilted_rows: int) -> np.ndarray:
    """(F, 3, 4, 2) (row, column) offsets of every rectangle corner from a window's origin.

    Upright corners are (y, x), (y, x + w), (y + h, x), (y + h, x + w); tilted ones are
    OpenCV's (y, x), (y + h, x - h), (y + w, x + w), (y + w + h, x + w - h), shifted down by
    ``tilted_rows``: the tilted table sits that many rows below the upright one.
    """
    x, y, w, h = np.moveaxis(features.rects.astype(np.int64), -1, 0)
    upright = np.stack([np.stack(p, -1) for p in ((y, x), (y, x + w), (y + h, x), (y + h, x + w))], -2)
    tilted = np.stack([np.stack(p, -1) for p in ((y, x), (y + h, x - h), (y + w, x + w),
                                                 (y + w + h, x + w - h))], -2)
    tilted[..., 0] += tilted_rows
    return np.where(features.tilted[:, None, None, None], tilted, upright)


def tree_sums(cascade: Cascade, trees: slice, node_values: np.ndarray) -> np.ndarray:
    """Stage sums (K,) float64 of the given weak trees from their node feature values (T, M, K).

    The float32 leaves are added in float64 tree after tree, as OpenCV adds them.
    """
    thr = cascade.node_threshold[trees]
    leaves = cascade.leaves[trees]
    t, m, k = node_values.shape
    if m == 1:
        rows = np.arange(t)
        left = leaves[rows, -cascade.node_left[trees, 0]][:, None]
        right = leaves[rows, -cascade.node_right[trees, 0]][:, None]
        values = np.where(node_values[:, 0] < thr[:, :1], left, right)
    else:
        rows = np.arange(t)[:, None]
        cols = np.arange(k)[None, :]
        node = np.zeros((t, k), np.int64)
        leaf = np.zeros((t, k), np.int64)
        active = np.ones((t, k), bool)
        for _ in range(m):
            nxt = np.where(node_values[rows, node, cols] < thr[rows, node],
                           cascade.node_left[trees][rows, node], cascade.node_right[trees][rows, node])
            reached = active & (nxt <= 0)
            leaf[reached] = -nxt[reached]
            active &= nxt > 0
            node = np.where(active, nxt, node)
        values = np.take_along_axis(leaves, leaf, axis=1)
    return values.sum(axis=0, dtype=np.float64)   # a reduction over rows adds them in order


class WindowEvaluator:
    """Evaluates a cascade on windows whose integral tables share one flat buffer.

    Args:
        cascade: the cascade.
        row_stride: columns of the 2-D table buffer (the same for every window).
        tilted_rows: rows between the upright table and the tilted one in the buffer.
        corners, weights: features to use instead of the cascade's own (the paper's detector
            scales them): ``(n_sets, F, 3, 4, 2)`` corner offsets and ``(n_sets, F, 3)``
            weights, one set per scale, picked per window by ``sets``.
    """

    def __init__(self, cascade: Cascade, row_stride: int, tilted_rows: int = 0,
                 corners: np.ndarray | None = None, weights: np.ndarray | None = None) -> None:
        self.cascade = cascade
        if corners is None:
            corners = corner_offsets(cascade.features, tilted_rows)[None]
            weights = cascade.features.weights[None]
        self.corners = corners                                      # (n_sets, F, 3, 4, 2)
        self.row_stride = row_stride
        self.flat = corners[..., 0] * row_stride + corners[..., 1]  # (n_sets, F, 3, 4)
        self.weights = weights.astype(np.float32)                   # (n_sets, F, 3)
        self.thresholds = cascade.effective_thresholds()
        area = cascade.features.rects[..., 2].astype(np.int64) * cascade.features.rects[..., 3]
        area = np.where(cascade.features.tilted[:, None], 2 * area, area)
        # integer weights and |w * S| < 2**24 in every term: OpenCV's float32 sums are exact integers,
        # so summing the table corners with integer coefficients gives the same float32 value
        self._integer = (np.all(self.weights == np.round(self.weights), axis=(0, 2))
                         & ((np.abs(self.weights).max(0) * area).sum(1) * 255 < 2 ** 24))
        self._terms: dict[tuple[int, int], tuple[np.ndarray, np.ndarray] | None] = {}

    def terms(self, set_index: int, f: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Distinct corners ``(dy, dx)`` of a feature with their integer coefficients, or None
        when the feature must be computed rectangle by rectangle in float32."""
        key = (set_index, f)
        if key not in self._terms:
            coef: dict[tuple[int, int], int] = {}
            if self._integer[f]:
                for k in range(3):
                    wk = int(self.weights[set_index, f, k])
                    for (dy, dx), sign in zip(self.corners[set_index, f, k].tolist(), _SIGNS):
                        coef[(dy, dx)] = coef.get((dy, dx), 0) + sign * wk
                coef = {c: v for c, v in coef.items() if v}
            self._terms[key] = (np.array(list(coef), np.int64).reshape(-1, 2),
                                np.array(list(coef.values()), np.int64)) if self._integer[f] else None
        return self._terms[key]

    def gather_values(self, table: np.ndarray, base: np.ndarray, vnf: np.ndarray, features: np.ndarray,
                      sets: np.ndarray | None = None) -> np.ndarray:
        """Normalised float32 values (len(features), K) at windows with flat origins ``base``.

        OpenCV's arithmetic: ``ret = w0 * S0 + w1 * S1 (+ w2 * S2)`` and ``ret * vnf``, in float32.
        Many windows: a loop over features and corners on blocks of windows that stay in cache;
        few windows: all features at once, to spare the interpreter.
        """
        out = np.empty((len(features), len(base)), np.float32)
        if len(base) * len(features) >= _LOOP_MIN_WORK and len(base) >= _LOOP_MIN_WINDOWS:
            for start in range(0, len(base), _LOOP_BLOCK):
                part = slice(start, start + _LOOP_BLOCK)
                for n, f in enumerate(features):
                    if sets is None:
                        out[n, part] = self._value(lambda off: table[off:].take(base[part]), 0, f, vnf[part])
                    else:
                        out[n, part] = self._value(lambda off: table.take(base[part] + off), sets[part], f,
                                                   vnf[part])
            return out
        block = max(1, _GATHER_BLOCK // (12 * max(len(features), 1)))
        third = self.weights[0, features, 2] != 0
        for start in range(0, len(base), block):
            part = slice(start, start + block)
            if sets is None:
                flat = self.flat[0, features][:, :, :, None] + base[part]         # (F, 3, 4, K)
                weights = self.weights[0, features][:, :, None]                    # (F, 3, 1)
            else:
                flat = np.moveaxis(self.flat[:, features][sets[part]], 0, -1) + base[part]
                weights = np.moveaxis(self.weights[:, features][sets[part]], 0, -1)
            c = table.take(flat)
            sums = (c[:, :, 0] - c[:, :, 1] - c[:, :, 2] + c[:, :, 3]).astype(np.float32)   # (F, 3, K)
            res = weights[:, 0] * sums[:, 0] + weights[:, 1] * sums[:, 1]
            if third.any():
                res[third] += weights[third, 2] * sums[third, 2]
            np.multiply(res, vnf[part], out=out[:, part])
        return out

    def dense_values(self, table2d: np.ndarray, row0: int, col0: int, step: int, shape: tuple[int, int],
                     vnf: np.ndarray, features: np.ndarray, set_index: int = 0) -> np.ndarray:
        """Normalised values (len(features), ny, nx) on a grid of windows, by strided slicing.

        Grid window (i, j) has its origin at row ``row0 + i * step``, column ``col0 + j * step``.
        """
        ny, nx = shape

        def view(off: tuple[int, int]) -> np.ndarray:
            r, c = row0 + off[0], col0 + off[1]
            return table2d[r:r + (ny - 1) * step + 1:step, c:c + (nx - 1) * step + 1:step]

        out = np.empty((len(features), ny, nx), np.float32)
        for n, f in enumerate(features):
            out[n] = self._value(view, set_index, f, vnf, corner_of=lambda o: tuple(o))
        return out

    def _value(self, fetch, set_index, f: int, vnf: np.ndarray, corner_of=None) -> np.ndarray:
        """One feature's normalised values; ``fetch(corner)`` reads a corner for all windows.

        Corners are flat offsets (``corner_of`` None) or (dy, dx) pairs for 2-D views.
        ``set_index`` is an int, or per-window set indices (then rectangle by rectangle).
        """
        per_window = not np.isscalar(set_index)
        terms = None if per_window else self.terms(set_index, f)
        if terms is not None:
            acc = None
            for (dy, dx), coef in zip(terms[0].tolist(), terms[1].tolist()):
                v = fetch((dy, dx) if corner_of else dy * self.row_stride + dx)
                if coef != 1 and coef != -1:
                    v = v * coef
                if acc is None:
                    acc = v.copy() if coef == 1 else (-v if coef == -1 else v)
                elif coef == -1:
                    acc -= v
                else:
                    acc += v
            return np.multiply(acc, vnf, dtype=np.float32)
        acc = None
        for k in range(3):
            w = self.weights[set_index, f, k]
            if k == 2 and np.all(w == 0):
                break
            s = None
            for c, sign in enumerate(_SIGNS):
                corner = self.corners[set_index, f, k, c] if corner_of else self.flat[set_index, f, k, c]
                v = fetch(corner_of(corner) if corner_of else corner)
                s = v.copy() if s is None else (np.add(s, v, out=s) if sign > 0 else np.subtract(s, v, out=s))
            term = s.astype(np.float32)
            term *= w
            acc = term if acc is None else np.add(acc, term, out=acc)
        return np.multiply(acc, vnf, dtype=np.float32)

    def stage_sums(self, stage: int, values_of) -> np.ndarray:
        """Stage sums from a function ``values_of(features) -> (F, ...)`` of node features."""
        trees = self.cascade.stage_slice(stage)
        nodes = self.cascade.node_feature[trees]                      # (T, M)
        vals = values_of(nodes.ravel())
        vals = vals.reshape(nodes.shape + (-1,))
        return tree_sums(self.cascade, trees, vals)

    def passes(self, stage: int, sums: np.ndarray) -> np.ndarray:
        return sums >= self.thresholds[stage]


def evaluate_windows(cascade: Cascade, windows: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Run a cascade on a stack of (N, H, W) uint8 windows of the cascade's size.

    Returns ``(stages_passed, last_sum)``: how many stages each window passed (``n_stages``
    means detected; flat windows, which OpenCV never classifies, get -1) and the sum of the
    last stage it was evaluated on.  The windows' integral tables are laid end to end in one
    buffer, so each window is one flat origin for :class:`WindowEvaluator`.
    """
    windows = np.asarray(windows)
    n, h, w = windows.shape
    if (w, h) != tuple(cascade.window):
        raise ValueError(f"windows are {w}x{h}, the cascade needs {cascade.window[0]}x{cascade.window[1]}")
    tilted = bool(cascade.features.tilted.any())
    evaluator = WindowEvaluator(cascade, w + 1, h + 1 if tilted else 0)
    passed = np.zeros(n, np.int64)
    last = np.zeros(n)
    for start in range(0, n, chunk):
        part = windows[start:start + chunk]
        vnf, ok = window_normalisation(part)
        table = integral_image(part)                                     # (n, h + 1, w + 1)
        if tilted:
            table = np.concatenate([table, np.stack([tilted_integral_image(x) for x in part])], axis=1)
        flat_table = table.reshape(-1)
        live = np.flatnonzero(ok)
        res_passed = np.where(ok, 0, -1)
        res_last = np.zeros(len(part))
        for stage in range(cascade.n_stages):
            if not len(live):
                break
            base = live * table.shape[1] * table.shape[2]
            sums = evaluator.stage_sums(stage, lambda f: evaluator.gather_values(flat_table, base, vnf[live], f))
            res_last[live] = sums
            ok_stage = evaluator.passes(stage, sums)
            res_passed[live[ok_stage]] += 1
            live = live[ok_stage]
        passed[start:start + chunk] = res_passed
        last[start:start + chunk] = res_last
    return passed, last
