"""Haar-like features: the five Viola-Jones shapes, and their values on stacks of windows.

A feature is up to three weighted rectangles, as OpenCV stores them, so that features read
from OpenCV's XML files and the ones vislab generates run through the same code.  The
generated shapes put weight -1 on the whole feature and a positive weight on its "white"
part, which makes every feature sum to zero over a flat patch:

===========  ======================  =========================================
shape        rectangles              value
===========  ======================  =========================================
``edge_x``   2w x h, right half x2   right half - left half
``edge_y``   w x 2h, lower half x2   lower half - upper half
``line_x``   3w x h, middle x3       2 * middle - (left + right)
``line_y``   w x 3h, middle x3       2 * middle - (top + bottom)
``four``     2w x 2h, diagonal x2    (top-left + bottom-right) - (the other two)
===========  ======================  =========================================

Values are normalised as OpenCV normalises them at detection time (``feature * vnf`` with
``vnf = 1 / sqrt(area * sum(x^2) - sum(x)^2)`` over the window shrunk by one pixel on each
side), in float32, so a stump learnt on these values fires on exactly the same windows
inside the detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vislab.classic.viola_jones.integral import integral_image, tilted_integral_image

SHAPES = ("edge_x", "edge_y", "line_x", "line_y", "four")

# (base width, base height, [(x, y, w, h, weight) in base units]); the first rectangle is the whole feature
_SHAPE_RECTS = {
    "edge_x": (2, 1, [(0, 0, 2, 1, -1.0), (1, 0, 1, 1, 2.0)]),
    "edge_y": (1, 2, [(0, 0, 1, 2, -1.0), (0, 1, 1, 1, 2.0)]),
    "line_x": (3, 1, [(0, 0, 3, 1, -1.0), (1, 0, 1, 1, 3.0)]),
    "line_y": (1, 3, [(0, 0, 1, 3, -1.0), (0, 1, 1, 1, 3.0)]),
    "four": (2, 2, [(0, 0, 2, 2, -1.0), (0, 0, 1, 1, 2.0), (1, 1, 1, 1, 2.0)]),
}

# OpenCV rejects windows whose normalisation factor says "flat": area * vnf >= 0.1, i.e. std <= 10 grey levels
_FLAT_LIMIT = 0.1


@dataclass(frozen=True)
class HaarFeatures:
    """F features of a detection window; unused rectangle slots have weight 0.

    Attributes:
        rects: (F, 3, 4) int32 rectangles ``x, y, w, h`` in window pixels.
        weights: (F, 3) float32 rectangle weights.
        tilted: (F,) bool, True for OpenCV's 45-degree rectangles (read from XML only).
    """

    rects: np.ndarray
    weights: np.ndarray
    tilted: np.ndarray

    def __post_init__(self) -> None:
        f = len(self.rects)
        if self.rects.shape != (f, 3, 4) or self.weights.shape != (f, 3) or self.tilted.shape != (f,):
            raise ValueError(f"HaarFeatures needs rects (F, 3, 4), weights (F, 3), tilted (F,); got "
                             f"{self.rects.shape}, {self.weights.shape}, {self.tilted.shape}")

    def __len__(self) -> int:
        return len(self.rects)

    def subset(self, index: np.ndarray) -> "HaarFeatures":
        return HaarFeatures(self.rects[index], self.weights[index], self.tilted[index])

    def fits(self, window: tuple[int, int]) -> np.ndarray:
        """(F,) bool: the feature's rectangles lie inside a (width, height) window."""
        w, h = window
        x, y, rw, rh = np.moveaxis(self.rects, -1, 0)
        used = self.weights != 0
        upright = (x >= 0) & (y >= 0) & (x + rw <= w) & (y + rh <= h)
        tilted = (x - rh >= 0) & (y >= 0) & (x + rw <= w) & (y + rw + rh <= h)
        ok = np.where(self.tilted[:, None], tilted, upright) | ~used
        return ok.all(axis=1)


def _unit_sizes(window: tuple[int, int], shapes: tuple[str, ...]):
    """(unit width, unit height, [shapes that fit]) in the order features are numbered."""
    unknown = set(shapes) - set(_SHAPE_RECTS)
    if unknown:
        raise ValueError(f"unknown Haar shapes {sorted(unknown)}; choose from {SHAPES}")
    win_w, win_h = window
    for uw in range(1, win_w + 1):
        for uh in range(1, win_h + 1):
            fit = [n for n in shapes if _SHAPE_RECTS[n][0] * uw <= win_w and _SHAPE_RECTS[n][1] * uh <= win_h]
            if fit:
                yield uw, uh, fit


def haar_features(window: tuple[int, int] = (24, 24), shapes: tuple[str, ...] = SHAPES) -> HaarFeatures:
    """Every feature of the given shapes at every position and size in a (width, height) window.

    Numbered by unit size (the size of one rectangle), then shape, then position (row-major);
    a 24x24 window holds 162,336 features of the five shapes.
    """
    win_w, win_h = window
    rects, weights = [], []
    for uw, uh, fit in _unit_sizes(window, shapes):
        for name in fit:
            bw, bh, parts = _SHAPE_RECTS[name]
            ys, xs = np.mgrid[0:win_h - bh * uh + 1, 0:win_w - bw * uw + 1]
            x, y = xs.ravel(), ys.ravel()
            r = np.zeros((len(x), 3, 4), np.int32)
            wt = np.zeros((len(x), 3), np.float32)
            for k, (px, py, pw, ph, weight) in enumerate(parts):
                r[:, k] = np.stack([x + px * uw, y + py * uh, np.full_like(x, pw * uw), np.full_like(x, ph * uh)], 1)
                wt[:, k] = weight
            rects.append(r), weights.append(wt)
    rects, weights = np.concatenate(rects), np.concatenate(weights)
    return HaarFeatures(rects, weights, np.zeros(len(rects), bool))


def pool_value_blocks(windows: np.ndarray, shapes: tuple[str, ...] = SHAPES, vnf: np.ndarray | None = None,
                      min_rows: int = 4096):
    """Normalised values of all :func:`haar_features` of (N, H, W) uint8 windows, in row blocks.

    Yields consecutive (rows, N) float32 blocks in feature order, never the whole (F, N) matrix.
    For each unit size, the sums of one unit box at every position are computed once from the
    integral images; each shape is then two to four shifted slices of them (``edge_x`` = right
    box - left box, ...), exactly the integers OpenCV's weighted rectangles give.
    """
    windows = np.asarray(windows)
    if windows.ndim != 3 or windows.dtype != np.uint8:
        raise ValueError(f"pool_value_blocks needs (N, H, W) uint8 windows, got {windows.dtype} {windows.shape}")
    n, win_h, win_w = windows.shape
    if vnf is None:
        vnf, _ = window_normalisation(windows)
    ii = np.ascontiguousarray(np.moveaxis(integral_image(windows), 0, -1)).astype(np.int32)   # (H+1, W+1, N)
    pending, rows = [], 0
    for uw, uh, fit in _unit_sizes((win_w, win_h), shapes):
        box = ii[uh:, uw:] - ii[:-uh, uw:] - ii[uh:, :-uw] + ii[:-uh, :-uw]     # unit box at (y, x): (.., .., N)
        for name in fit:
            bw, bh, _ = _SHAPE_RECTS[name]
            ny, nx = win_h - bh * uh + 1, win_w - bw * uw + 1
            b = box[:ny + (bh - 1) * uh, :nx + (bw - 1) * uw]

            def at(i: int, j: int) -> np.ndarray:   # unit box i units down, j units right
                return b[i * uh:i * uh + ny, j * uw:j * uw + nx]

            if name == "edge_x":
                v = at(0, 1) - at(0, 0)
            elif name == "edge_y":
                v = at(1, 0) - at(0, 0)
            elif name == "line_x":
                v = 2 * at(0, 1) - at(0, 0) - at(0, 2)
            elif name == "line_y":
                v = 2 * at(1, 0) - at(0, 0) - at(2, 0)
            else:
                v = at(0, 0) + at(1, 1) - at(0, 1) - at(1, 0)
            block = v.reshape(ny * nx, n).astype(np.float32)
            block *= vnf
            pending.append(block)
            rows += len(block)
            if rows >= min_rows:
                yield np.concatenate(pending) if len(pending) > 1 else pending[0]
                pending, rows = [], 0
    if pending:
        yield np.concatenate(pending)


def normalisation(window_sum: np.ndarray, window_sqsum: np.ndarray, area: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's variance normalisation of windows from their pixel sum and sum of squares.

    Returns ``(vnf, ok)``: the float32 factor ``1 / sqrt(area * sqsum - sum^2)`` (= 1 / (area *
    std)) and whether the window is textured enough to be classified at all (std > 10).
    """
    nf = area * window_sqsum.astype(np.float64) - window_sum.astype(np.float64) ** 2
    positive = nf > 0
    vnf = np.where(positive, 1.0 / np.sqrt(np.where(positive, nf, 1.0)), 1.0).astype(np.float32)
    ok = positive & (area * vnf.astype(np.float64) < _FLAT_LIMIT)
    return vnf, ok


def inner_rect(window: tuple[int, int]) -> tuple[int, int, int, int]:
    """The rectangle that normalises a (width, height) window: the window less a 1-pixel border."""
    return 1, 1, window[0] - 2, window[1] - 2


def window_normalisation(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(vnf, ok)`` of a stack of (N, H, W) windows, see :func:`normalisation`."""
    n, h, w = windows.shape
    x, y, rw, rh = inner_rect((w, h))
    inner = windows[:, y:y + rh, x:x + rw].reshape(n, -1).astype(np.int64)
    return normalisation(inner.sum(1), (inner ** 2).sum(1), rw * rh)


def _corner_matrix(features: HaarFeatures, window: tuple[int, int], tilted: bool) -> np.ndarray:
    """Dense (P, F) matrix: raw feature values = flattened integral images @ this matrix.

    Each rectangle sum is four signed look-ups in the (H + 1) x (W + 1) table, so a feature is a
    sparse linear map of it; stacking those maps turns all features of all windows into one
    matrix product.
    """
    w, h = window
    cols = w + 1
    f = len(features)
    mat = np.zeros(((h + 1) * cols, f), np.float64)
    sel = features.tilted if tilted else ~features.tilted
    fi = np.nonzero(sel)[0]
    for k in range(3):
        wt = features.weights[fi, k].astype(np.float64)
        x, y, rw, rh = (features.rects[fi, k, j].astype(np.int64) for j in range(4))
        if tilted:
            corners = [(y, x, 1), (y + rh, x - rh, -1), (y + rw, x + rw, -1), (y + rw + rh, x + rw - rh, 1)]
        else:
            corners = [(y, x, 1), (y, x + rw, -1), (y + rh, x, -1), (y + rh, x + rw, 1)]
        for r, c, sign in corners:
            live = wt != 0
            np.add.at(mat, (r[live] * cols + c[live], fi[live]), sign * wt[live])
    return mat


def _integral_tables(windows: np.ndarray, tilted: bool) -> list[tuple[np.ndarray, bool, int]]:
    """Flattened integral tables (N, (H + 1) * (W + 1)) of a window stack, upright and, if asked,
    tilted, each with its largest absolute entry."""
    n = len(windows)
    tables = [integral_image(windows).reshape(n, -1)]
    if tilted:
        tables.append(np.stack([tilted_integral_image(x) for x in windows]).reshape(n, -1))
    return [(t, k == 1, int(np.abs(t).max(initial=0))) for k, t in enumerate(tables)]


def _raw_values(features: HaarFeatures, tables: list[tuple[np.ndarray, bool, int]], window: tuple[int, int],
                chunk: int) -> np.ndarray:
    n = len(tables[0][0])
    out = np.empty((len(features), n), np.float32)
    for start in range(0, len(features), chunk):
        part = features.subset(slice(start, start + chunk))
        acc = np.zeros((n, len(part)), np.float64)
        for table, tilted, table_max in tables:
            mat = _corner_matrix(part, window, tilted)
            rows = np.flatnonzero(mat.any(1))
            # float32 products are exact while every partial sum stays below 2**24
            bound = np.abs(mat).sum(0).max() * max(table_max, 1)
            if len(rows) <= 32 and np.array_equal(mat[rows], np.round(mat[rows])):
                # a few features (a boosting round asks for one): their corners only, in exact
                # integers, without BLAS (whose threads would spin for every small product)
                acc += table[:, rows].astype(np.int64) @ mat[rows].astype(np.int64)
            elif bound < 2 ** 24:
                acc += table.astype(np.float32) @ mat.astype(np.float32)
            else:
                acc += table.astype(np.float64) @ mat
        out[start:start + len(part)] = acc.T
    return out


def _check_windows(features: HaarFeatures, windows: np.ndarray) -> np.ndarray:
    windows = np.asarray(windows)
    if windows.ndim != 3:
        raise ValueError(f"windows must be (N, H, W), got shape {windows.shape}")
    _, h, w = windows.shape
    if not features.fits((w, h)).all():
        raise ValueError(f"some features do not fit in the {w}x{h} windows")
    return windows


def raw_feature_values(features: HaarFeatures, windows: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Unnormalised feature values (F, N) of a stack of (N, H, W) integer windows, float32.

    For uint8 windows the values are exact integers, as OpenCV's float32 sums are.
    """
    windows = _check_windows(features, windows)
    tables = _integral_tables(windows, bool(features.tilted.any()))
    return _raw_values(features, tables, windows.shape[:0:-1], chunk)


def feature_values(features: HaarFeatures, windows: np.ndarray, vnf: np.ndarray | None = None,
                   chunk: int = 8192) -> np.ndarray:
    """Normalised feature values (F, N) float32 of (N, H, W) uint8 windows, as the detector sees them."""
    if vnf is None:
        vnf, _ = window_normalisation(np.asarray(windows))
    out = raw_feature_values(features, windows, chunk)
    out *= vnf[None, :]
    return out


class WindowStack:
    """A fixed stack of (N, H, W) uint8 windows asked for feature values again and again (a
    boosting stage asks for one feature per round): its integral tables and normalisation are
    computed once.  ``values(features)`` equals ``feature_values(features, windows)``.
    """

    def __init__(self, windows: np.ndarray, vnf: np.ndarray | None = None) -> None:
        self.windows = np.asarray(windows)
        self.vnf = window_normalisation(self.windows)[0] if vnf is None else vnf
        self._tables: dict[bool, list[tuple[np.ndarray, bool, int]]] = {}

    def __len__(self) -> int:
        return len(self.windows)

    def values(self, features: HaarFeatures, chunk: int = 8192) -> np.ndarray:
        windows = _check_windows(features, self.windows)
        tilted = bool(features.tilted.any())
        if tilted not in self._tables:
            self._tables[tilted] = _integral_tables(windows, tilted)
        out = _raw_values(features, self._tables[tilted], windows.shape[:0:-1], chunk)
        out *= self.vnf[None, :]
        return out
