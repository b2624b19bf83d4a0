"""Multi-scale detection with a cascade, two ways, and OpenCV's grouping of the hits.

``mode="opencv"`` does what ``cv2.CascadeClassifier.detectMultiScale`` (OpenCV 4) does, to the
bit: scales ``1, f, f^2, ...`` (as float32), the image resized to ``round(size / scale)`` with
OpenCV's fixed-point bilinear filter (``INTER_LINEAR_EXACT``), the fixed window scanned with
a stride of 2 pixels below scale 2 and 1 pixel above, a window skipped when its left
neighbour failed the first stage, windows with a grey-level std <= 10 rejected, float32
feature arithmetic, and ``groupRectangles(eps=0.2)``.

``mode="paper"`` is Viola and Jones' detector: the image is never resized; the features are
scaled instead (rectangle corners rounded, the first weight corrected so a feature still sums
to zero), and the window moves by ``round(step * scale)`` pixels.

OpenCV's detector runs by default on compiled kernels (:mod:`kernels`, numba, on every core),
window by window as OpenCV runs it.  Its numpy reference (``engine="numpy"``) and the paper's
detector evaluate a stage for all live windows at once: the first stages run densely on each
scale's grid with strided slices of the integral table; the survivors of every scale then go
on together, one ``numpy.take`` per rectangle corner and stage.  The tests hold the two engines
to the same windows, and both to OpenCV's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vislab.classic.viola_jones.cascade import (
    THRESHOLD_EPS,
    Cascade,
    WindowEvaluator,
    corner_offsets,
)
from vislab.classic.viola_jones.haar import HaarFeatures, inner_rect, normalisation
from vislab.classic.viola_jones.integral import (
    integral_image,
    squared_integral_image,
    tilted_integral_image,
)

GROUP_EPS = 0.2
_DENSE_MIN_WINDOWS = 2048      # smaller grids go straight to the gathered path
_DENSE_MIN_ALIVE = 0.25        # stay on the dense path while this fraction of a grid is alive
_DENSE_GROUPING = 400          # group_rectangles tests every pair of up to this many rects


# --------------------------------------------------------------------------- image helpers
def _linear_taps(src: int, dst: int | np.ndarray) -> np.ndarray:
    """(4, n) source taps and 8-bit fixed-point weights ``i0, i1, w0, w1`` of OpenCV's bit-exact
    bilinear filter from ``src`` pixels to ``dst`` pixels; for several sizes ``dst``, their taps
    end to end."""
    dst = np.atleast_1d(np.asarray(dst, np.int64))
    which = np.repeat(np.arange(len(dst)), dst)
    scale = 1.0 / (dst.astype(np.float64) / np.float64(src))
    x = np.arange(len(which)) - np.repeat(np.cumsum(dst) - dst, dst)
    pos = scale[which] * (x.astype(np.float64) + 0.5) - 0.5
    i0 = np.floor(pos).astype(np.int64)
    w1 = np.rint((pos - i0) * 256.0).astype(np.int64)
    border = (i0 < 0) | (i0 >= src - 1)
    i0 = np.clip(i0, 0, src - 1)
    i1 = np.where(border, i0, np.minimum(i0 + 1, src - 1))
    w1 = np.where(border, 0, w1)
    return np.stack([i0, i1, 256 - w1, w1])


def resize_linear_exact(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 image to (width, height), equal to OpenCV's ``INTER_LINEAR_EXACT``.

    Pixel centres are aligned (``src = (dst + 0.5) * scale - 0.5``), weights are rounded to
    1/256, rows are filtered first in 16-bit fixed point, then columns, rounding once at the end.
    """
    img = np.asarray(img)
    if img.ndim != 2 or img.dtype != np.uint8:
        raise ValueError(f"resize_linear_exact needs a 2-D uint8 image, got {img.dtype} {img.shape}")
    w, h = size
    if (h, w) == img.shape:
        return img.copy()
    x0, x1, a0, a1 = _linear_taps(img.shape[1], w)
    y0, y1, b0, b1 = _linear_taps(img.shape[0], h)
    used, where = np.unique(np.r_[y0, y1], return_inverse=True)       # filter only the rows needed
    src = img[used]
    # row pass in 16 bits (255 * 256 fits), column pass in 32 bits
    rows = np.take(src, x0, axis=1).astype(np.uint16) * a0.astype(np.uint16)
    rows += np.take(src, x1, axis=1).astype(np.uint16) * a1.astype(np.uint16)
    out = np.take(rows, where[:h], axis=0).astype(np.uint32) * b0[:, None].astype(np.uint32)
    out += np.take(rows, where[h:], axis=0).astype(np.uint32) * b1[:, None].astype(np.uint32)
    out += 1 << 15
    return (out >> 16).astype(np.uint8)


def rgb_to_gray(img: np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) to grey as OpenCV's ``cvtColor(RGB2GRAY)`` computes it (15-bit fixed point)."""
    img = np.asarray(img)
    if img.ndim == 2:
        return img.astype(np.uint8)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
        raise ValueError(f"rgb_to_gray needs a uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
    r, g, b = (img[..., k].astype(np.int32) for k in range(3))
    return ((r * 9798 + g * 19235 + b * 3735 + (1 << 14)) >> 15).astype(np.uint8)


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Candidates:
    """Raw windows from a scan, before grouping.

    Attributes:
        rects: (n, 4) int64 ``x, y, w, h`` in image pixels.
        scores: (n,) float64 sum of the last stage.
        passed: (n,) bool, the window passed every stage (False only for windows kept with
            ``last_stage=True`` that failed the last stage).
    """

    rects: np.ndarray
    scores: np.ndarray
    passed: np.ndarray

    def accepted(self, threshold: float | None = None) -> np.ndarray:
        """Rects that pass, or that pass with the last stage's threshold moved to ``threshold``."""
        keep = self.passed if threshold is None else self.scores >= np.float32(threshold) - THRESHOLD_EPS
        return self.rects[keep]


@dataclass(frozen=True)
class Detections:
    """Grouped detections: boxes (n, 4) int64 ``x1, y1, x2, y2`` and how many raw windows each merges."""

    boxes: np.ndarray
    neighbors: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


# --------------------------------------------------------------------------- scanning engine
@dataclass
class _Grid:
    """Windows of one scale: origins ``(row0 + i * step, col0 + j * step)`` in the table buffer."""

    row0: int
    col0: int
    step: int
    shape: tuple[int, int]
    vnf: np.ndarray          # (ny, nx) float32
    ok: np.ndarray           # (ny, nx) bool, textured enough to classify
    set_index: int           # which feature set (scale) of the evaluator
    origin_scale: float      # OpenCV mode: multiply window coordinates by it; paper mode: 1
    window: tuple[int, int]  # window size in image pixels
    float_coords: bool       # OpenCV rounds x * scale in float32


def _box_sums(table: np.ndarray, rect: tuple[int, int, int, int], step: int, shape: tuple[int, int]) -> np.ndarray:
    """Sums of ``rect`` (window coordinates) at every window of a grid, by four strided slices."""
    x, y, w, h = rect
    ny, nx = shape

    def view(r: int, c: int) -> np.ndarray:
        return table[r:r + (ny - 1) * step + 1:step, c:c + (nx - 1) * step + 1:step]

    return view(y + h, x + w) - view(y, x + w) - view(y + h, x) + view(y, x)


def _grid_normalisation(ii: np.ndarray, sq: np.ndarray, rect: tuple[int, int, int, int], step: int,
                        shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return normalisation(_box_sums(ii, rect, step, shape), _box_sums(sq, rect, step, shape), rect[2] * rect[3])


def _skip_mask(failed_first: np.ndarray) -> np.ndarray:
    """Windows OpenCV evaluates at all: after a window fails stage 0 its right neighbour is skipped.

    Along a row, window j is evaluated iff the run of first-stage failures just before it
    has even length (a failure skips the next window, which then cannot skip its own).
    """
    ny, nx = failed_first.shape
    idx = np.broadcast_to(np.arange(nx), (ny, nx))
    last_ok = np.maximum.accumulate(np.where(failed_first, -1, idx), axis=1)   # last non-failure <= j
    run = np.zeros((ny, nx), np.int64)
    run[:, 1:] = idx[:, 1:] - 1 - last_ok[:, :-1]
    return run % 2 == 0


def _run(evaluator: WindowEvaluator, table: np.ndarray, grids: list[_Grid], skip_rule: bool,
         last_stage: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate the cascade on every grid: the first stages grid by grid on the dense path, then
    the survivors of all grids together, stage by stage.

    Returns ``(grid, row, column, scores, passed)`` of the windows that pass (scores NaN) or,
    with ``last_stage``, of every window that reaches the last stage, with its sum.
    """
    n_stages = evaluator.cascade.n_stages
    flat_table = table.reshape(-1)
    shapes = np.array([g.shape for g in grids], np.int64).reshape(-1, 2)
    vnf_all = np.concatenate([g.vnf.ravel() for g in grids] or [np.zeros(0, np.float32)])
    vnf_start = np.concatenate([[0], np.cumsum(shapes.prod(1))[:-1]]).astype(np.int64)
    row0, col0, step, sets = (np.array([getattr(g, k) for g in grids], np.int64)
                              for k in ("row0", "col0", "step", "set_index"))
    empty = np.zeros(0, np.int64)
    single = evaluator.flat.shape[0] == 1

    def dense(g_idx: int):
        """First stages of one grid on the dense path: (next stage, rows, cols, last-stage record)."""
        g = grids[g_idx]
        alive, stage, last = g.ok.copy(), 0, None
        while stage < n_stages and alive.any() and (
                stage == 0 or (alive.size >= _DENSE_MIN_WINDOWS and alive.mean() >= _DENSE_MIN_ALIVE)):
            sums = evaluator.stage_sums(stage, lambda f: evaluator.dense_values(
                table, g.row0, g.col0, g.step, g.shape, g.vnf, f, g.set_index)).reshape(g.shape)
            ok = evaluator.passes(stage, sums)
            if stage == 0 and skip_rule:
                alive &= _skip_mask(alive & ~ok)
            if last_stage and stage == n_stages - 1:   # after the skip rule: a skipped window is never seen
                i, j = np.nonzero(alive)
                last = (np.full(len(i), g_idx), i, j, sums[i, j])
            alive &= ok
            stage += 1
        i, j = np.nonzero(alive)
        return stage, (np.full(len(i), g_idx), i, j), last

    def gathered(stage: int, live: tuple[np.ndarray, ...]) -> np.ndarray:
        gid, i, j = live
        base = (row0[gid] + i * step[gid]) * table.shape[1] + col0[gid] + j * step[gid]
        vnf = vnf_all[vnf_start[gid] + i * shapes[gid, 1] + j]
        return evaluator.stage_sums(stage, lambda f: evaluator.gather_values(
            flat_table, base, vnf, f, None if single else sets[gid]))

    def join(live: tuple[np.ndarray, ...], more: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
        return tuple(np.concatenate([live[k]] + [m[k] for m in more]).astype(np.int64) for k in range(3))

    # windows that leave the dense path, by the stage they need next: (grid, row, column)
    waiting: list[list[tuple[np.ndarray, ...]]] = [[] for _ in range(n_stages + 1)]
    reached_last: list[tuple[np.ndarray, ...]] = []
    for g_idx in range(len(grids)):
        stage, windows, last = dense(g_idx)
        waiting[stage].append(windows)
        if last is not None:
            reached_last.append(last)
    live = (empty, empty, empty)
    for stage in range(n_stages):
        live = join(live, waiting[stage])
        if not len(live[0]):
            continue
        sums = gathered(stage, live)
        ok = evaluator.passes(stage, sums)
        if last_stage and stage == n_stages - 1:
            reached_last.append((*live, sums))
        live = tuple(a[ok] for a in live)
    gid, i, j = join(live, waiting[n_stages])
    if last_stage:
        gid, i, j = (np.concatenate([r[k] for r in reached_last] or [empty]).astype(np.int64) for k in range(3))
        scores = np.concatenate([r[3] for r in reached_last] or [np.zeros(0)])
        passed = evaluator.passes(n_stages - 1, scores)
    else:
        scores, passed = np.full(len(gid), np.nan), np.ones(len(gid), bool)
    return gid, i, j, scores, passed


def _window_rects(steps: np.ndarray, scales: np.ndarray | None, windows: np.ndarray, gid: np.ndarray,
                  i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(n, 4) ``x, y, w, h`` in image pixels of windows (grid, row, column): grid g has its origins
    every ``steps[g]`` pixels and windows of ``windows[g]`` (w, h) pixels; with ``scales``
    (OpenCV's detector) the origins are mapped back to the image as OpenCV maps them,
    ``cvRound(x * scalingFactor)`` in float32."""
    x, y = j * steps[gid], i * steps[gid]
    if scales is not None:
        x = np.rint(x.astype(np.float32) * scales[gid]).astype(np.int64)
        y = np.rint(y.astype(np.float32) * scales[gid]).astype(np.int64)
    return np.stack([x, y, windows[gid, 0], windows[gid, 1]], 1).astype(np.int64)


def _grid_rects(grids: list[_Grid], gid: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    scales = np.array([g.origin_scale for g in grids], np.float32) if grids and grids[0].float_coords else None
    return _window_rects(np.array([g.step for g in grids], np.int64), scales,
                         np.array([g.window for g in grids], np.int64).reshape(-1, 2), gid, i, j)


# --------------------------------------------------------------------------- OpenCV's detector
def opencv_scales(image_size: tuple[int, int], window: tuple[int, int], scale_factor: float,
                  min_size: tuple[int, int] = (0, 0), max_size: tuple[int, int] = (0, 0)) -> list[np.float32]:
    """The scales ``detectMultiScale`` visits for a (width, height) image, as float32."""
    img_w, img_h = image_size
    win_w, win_h = window
    if img_w < win_w or img_h < win_h:
        return []
    if max_size[0] == 0 or max_size[1] == 0:
        max_size = (img_w, img_h)
    all_scales = []
    factor = 1.0
    while np.rint(win_w * factor) <= img_w and np.rint(win_h * factor) <= img_h:
        all_scales.append(np.float32(factor))
        factor *= scale_factor
    sizes = [(int(np.rint(np.float32(win_w) * s)), int(np.rint(np.float32(win_h) * s))) for s in all_scales]
    scales = []
    for s, (w, h) in zip(all_scales, sizes):
        if w > max_size[0] or h > max_size[1]:
            break
        if w < min_size[0] or h < min_size[1]:
            continue
        scales.append(s)
    if not scales and all_scales:   # OpenCV then takes the scale closest to min_size
        d = [(min_size[0] - w) ** 2 + (min_size[1] - h) ** 2 for w, h in sizes]
        scales.append(all_scales[int(np.argmin(d))])
    return scales


@dataclass(frozen=True)
class _Pyramid:
    """The geometry of OpenCV's pyramid: per scale the resized size, where its tables start in
    the common buffer, and its window grid."""

    scales: list[np.float32]
    sizes: list[tuple[int, int]]     # (width, height) of each resized image
    row0: list[int]                  # first row of each scale's table in the buffer
    rows: int                        # rows of the upright tables (the tilted ones follow)
    stride: int                      # columns of the buffer
    tilted: bool
    steps: list[int]
    shapes: list[tuple[int, int]]    # (rows, columns) of windows
    windows: list[tuple[int, int]]   # window size in image pixels


def _opencv_pyramid(cascade: Cascade, gray: np.ndarray, scale_factor: float, min_size: tuple[int, int],
                    max_size: tuple[int, int]) -> _Pyramid:
    """Where ``detectMultiScale`` looks: its scales, their image sizes, window grids and window sizes."""
    img_h, img_w = gray.shape
    win_w, win_h = cascade.window
    scales = opencv_scales((img_w, img_h), cascade.window, scale_factor, min_size, max_size)
    sizes = [(int(np.rint(np.float32(img_w) / s)), int(np.rint(np.float32(img_h) / s))) for s in scales]
    steps = [1 if s >= 2 else 2 for s in scales]
    shapes = []
    for (w, h), step in zip(sizes, steps):
        n = [-(-(w + 1 - win_w) // step), -(-(h + 1 - win_h) // step)]   # ceil over OpenCV's working size
        shapes.append((max(n[1], 0), max(n[0], 0)))
    row0 = np.concatenate([[0], np.cumsum([h + 1 for _, h in sizes])]).astype(int).tolist()
    return _Pyramid(scales, sizes, row0[:-1], row0[-1], max((w + 1 for w, _ in sizes), default=1),
                    bool(cascade.features.tilted.any()), steps, shapes,
                    [(int(np.rint(np.float32(win_w) * s)), int(np.rint(np.float32(win_h) * s))) for s in scales])


def _opencv_grids(cascade: Cascade, gray: np.ndarray, scale_factor: float, min_size: tuple[int, int],
                  max_size: tuple[int, int]) -> tuple[WindowEvaluator, np.ndarray, list[_Grid], list[np.ndarray]]:
    """OpenCV's pyramid in numpy: every scale's resized image, its tables in one buffer, its window grid."""
    p = _opencv_pyramid(cascade, _check_gray(gray), scale_factor, min_size, max_size)
    # int32 like OpenCV's own tables: a wrapped value cancels out in every window sum (mod 2**32)
    table = np.zeros((p.rows * (2 if p.tilted else 1), p.stride), np.int32)
    norm = inner_rect(cascade.window)
    grids, images = [], []
    for k, (w, h) in enumerate(p.sizes):
        img = resize_linear_exact(gray, (w, h))
        ii = integral_image(img)
        row0 = p.row0[k]
        table[row0:row0 + h + 1, :w + 1] = ii
        if p.tilted:
            table[p.rows + row0:p.rows + row0 + h + 1, :w + 1] = tilted_integral_image(img)
        vnf, ok = _grid_normalisation(ii, squared_integral_image(img), norm, p.steps[k], p.shapes[k])
        grids.append(_Grid(row0, 0, p.steps[k], p.shapes[k], vnf, ok, 0, float(p.scales[k]), p.windows[k], True))
        images.append(img)
    return WindowEvaluator(cascade, p.stride, p.rows), table, grids, images


def _kernel_cascade(cascade: Cascade, row_stride: int, tilted_rows: int) -> tuple:
    """The cascade as :func:`kernels.scan` reads it: its stages, then per node (in the order they
    are visited) its feature's corner offsets, weights, threshold and children; the leaves."""
    c = cascade
    nodes = c.node_feature.reshape(-1)
    corners = corner_offsets(c.features, 0)[nodes]                         # (N, 3, 4, (dy, dx))
    read = np.c_[np.ones((len(nodes), 2), bool), c.features.weights[nodes, 2] != 0]
    inside = (corners >= 0).all(-1) & (corners[..., 0] <= c.window[1]) & (corners[..., 1] <= c.window[0])
    outside = ~(inside.all(-1) | ~read).all(-1)            # the kernel reads without bounds checks
    if outside.any():
        raise ValueError(f"feature {nodes[outside][0]} of the cascade reaches outside its {c.window[0]}x"
                         f"{c.window[1]} window: the cascade is corrupt")
    ev = WindowEvaluator(c, row_stride, tilted_rows)

    def flat(a: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
        return np.ascontiguousarray(a, dtype).reshape(-1)

    return (flat(np.cumsum(c.stage_sizes) - c.stage_sizes, np.int64), flat(c.stage_sizes, np.int64),
            flat(ev.thresholds, np.float32), c.max_nodes, flat(ev.flat[0][nodes], np.int64),
            flat(ev.weights[0][nodes], np.float32), flat(c.node_threshold, np.float32),
            flat(np.stack([c.node_left, c.node_right], -1), np.int64), flat(c.leaves, np.float32))


def _scan_compiled(cascade: Cascade, gray: np.ndarray, scale_factor: float, min_size: tuple[int, int],
                   max_size: tuple[int, int], last_stage: bool) -> Candidates:
    """:func:`scan_opencv` by the compiled kernels: the pyramid, then every window of every scale."""
    import numba

    from vislab.classic.viola_jones import kernels

    gray = np.ascontiguousarray(_check_gray(gray))       # one compiled signature for every image
    p = _opencv_pyramid(cascade, gray, scale_factor, min_size, max_size)
    widths, heights = (np.array([size[k] for size in p.sizes], np.int64) for k in (0, 1))
    shapes = np.array(p.shapes, np.int64).reshape(-1, 2)
    steps = np.array(p.steps, np.int64)
    image_start, x_start, y_start, grid_start = (np.r_[0, np.cumsum(n)].astype(np.int64)
                                                 for n in (widths * heights, widths, heights, shapes.prod(1)))
    reached = np.full(grid_start[-1], -1, np.int32)   # per window: stages passed (-1 flat, -2 skipped)
    last_sum = np.zeros(grid_start[-1])               # ... and the sum of the last stage it saw
    if len(p.scales):
        table = np.empty((p.rows * (2 if p.tilted else 1), p.stride), np.int32)
        sq_table = np.empty((p.rows, p.stride), np.int32)
        row0 = np.array(p.row0, np.int64)
        row_grid = np.repeat(np.arange(len(shapes)), shapes[:, 0])                  # every row of windows
        row_index = np.arange(len(row_grid)) - np.repeat(np.cumsum(shapes[:, 0]) - shapes[:, 0], shapes[:, 0])
        x, y, w, h = inner_rect(cascade.window)
        norm = np.array([y * p.stride + x, y * p.stride + x + w, (y + h) * p.stride + x, (y + h) * p.stride + x + w])
        with numba.parallel_chunksize(1):   # scales and chunks of rows go to whichever thread is free
            kernels.build_pyramid(gray, np.stack([widths, heights], 1), row0, _linear_taps(gray.shape[1], widths),
                                  x_start, _linear_taps(gray.shape[0], heights), y_start, table, sq_table,
                                  p.rows if p.tilted else 0, np.empty(image_start[-1], np.uint8), image_start)
            kernels.scan(table.reshape(-1), sq_table.reshape(-1), p.stride, row0, steps, shapes, grid_start,
                         row_grid, row_index, norm, float(w * h), True, kernels.row_chunks(),
                         *_kernel_cascade(cascade, p.stride, p.rows), reached, last_sum)
    n = cascade.n_stages
    index = np.flatnonzero(reached >= (n - 1 if last_stage else n))
    gid = np.searchsorted(grid_start, index, side="right") - 1
    i, j = np.divmod(index - grid_start[gid], shapes[gid, 1])
    rects = _window_rects(steps, np.array(p.scales, np.float32), np.array(p.windows, np.int64).reshape(-1, 2),
                          gid, i, j)
    scores = last_sum[index] if last_stage else np.full(len(index), np.nan)
    return Candidates(rects, scores, reached[index] == n)


def scan_opencv(cascade: Cascade, gray: np.ndarray, scale_factor: float = 1.1,
                min_size: tuple[int, int] = (0, 0), max_size: tuple[int, int] = (0, 0),
                last_stage: bool = False, engine: str = "compiled") -> Candidates:
    """All windows OpenCV's ``detectMultiScale`` accepts before grouping (its scan, bit for bit).

    With ``last_stage=True`` every window that reaches the last stage is returned with that
    stage's sum, for ROC curves that move the last threshold.  ``engine`` is ``"compiled"``
    (numba kernels, every core) or ``"numpy"`` (the reference, one core): the same windows,
    the compiled ones in (scale, row, column) order.
    """
    if _check_engine(engine) == "compiled":
        return _scan_compiled(cascade, gray, scale_factor, min_size, max_size, last_stage)
    evaluator, table, grids, _ = _opencv_grids(cascade, gray, scale_factor, min_size, max_size)
    gid, i, j, scores, passed = _run(evaluator, table, grids, True, last_stage)
    return Candidates(_grid_rects(grids, gid, i, j), scores, passed)


@dataclass(frozen=True)
class WindowHits:
    """Windows an OpenCV-style scan accepted, with the resized images they are cut from.

    Attributes:
        images: the resized image of every scale.
        steps: the window stride of every scale.
        grid, row, col: (n,) scale index and grid position of each accepted window.
        textured: how many windows were classified at all (grey-level std > 10).
    """

    images: list[np.ndarray]
    steps: list[int]
    grid: np.ndarray
    row: np.ndarray
    col: np.ndarray
    textured: int

    def patches(self, index: np.ndarray, window: tuple[int, int]) -> np.ndarray:
        """The pixels (len(index), h, w) uint8 of the selected accepted windows."""
        w, h = window
        out = np.empty((len(index), h, w), np.uint8)
        for n, k in enumerate(np.asarray(index)):
            g = self.grid[k]
            y, x = self.row[k] * self.steps[g], self.col[k] * self.steps[g]
            out[n] = self.images[g][y:y + h, x:x + w]
        return out


def scan_opencv_windows(cascade: Cascade, gray: np.ndarray, scale_factor: float = 1.1) -> WindowHits:
    """The windows :func:`scan_opencv` accepts, as pixels the cascade saw (for hard negatives).

    On the numpy reference: training draws from these hits by index, and the compiled engine
    lists the same windows in another order, so switching would change which negatives a seed draws.
    """
    evaluator, table, grids, images = _opencv_grids(cascade, gray, scale_factor, (0, 0), (0, 0))
    gid, i, j, _, _ = _run(evaluator, table, grids, True, False)
    return WindowHits(images, [g.step for g in grids], gid, i, j, int(sum(g.ok.sum() for g in grids)))


# --------------------------------------------------------------------------- the paper's detector
def scale_features(features: HaarFeatures, scale: float) -> HaarFeatures:
    """Features scaled by ``scale`` for the paper's detector, with corrected weights.

    Upright rectangles scale their corners (so adjacent rectangles stay adjacent); tilted ones
    scale x, y, w, h.  Rounding changes areas, so the first weight becomes
    ``-sum(w_k * area_k, k >= 1) / area_0``: a feature still sums to zero on a flat patch.
    """
    r = features.rects.astype(np.float64)
    x0, y0 = np.rint(r[..., 0] * scale), np.rint(r[..., 1] * scale)
    upright = np.stack([x0, y0, np.rint((r[..., 0] + r[..., 2]) * scale) - x0,
                        np.rint((r[..., 1] + r[..., 3]) * scale) - y0], -1)
    tilted = np.rint(r * scale)
    rects = np.where(features.tilted[:, None, None], tilted, upright).astype(np.int32)
    weights = features.weights.astype(np.float64).copy()
    area = (rects[..., 2] * rects[..., 3]).astype(np.float64)
    rest = (weights[:, 1:] * area[:, 1:]).sum(1)
    weights[:, 0] = np.where(area[:, 0] > 0, -rest / np.maximum(area[:, 0], 1), weights[:, 0])
    return HaarFeatures(rects, weights.astype(np.float32), features.tilted)


def paper_scales(image_size: tuple[int, int], window: tuple[int, int], scale_factor: float,
                 min_size: tuple[int, int] = (0, 0), max_size: tuple[int, int] = (0, 0)) -> list[float]:
    img_w, img_h = image_size
    max_w, max_h = (img_w, img_h) if max_size[0] == 0 or max_size[1] == 0 else max_size
    scales, s = [], 1.0
    while np.rint(window[0] * s) <= min(img_w, max_w) and np.rint(window[1] * s) <= min(img_h, max_h):
        if np.rint(window[0] * s) >= min_size[0] and np.rint(window[1] * s) >= min_size[1]:
            scales.append(s)
        s *= scale_factor
    return scales


def scan_paper(cascade: Cascade, gray: np.ndarray, scale_factor: float = 1.25, step: float = 1.5,
               min_size: tuple[int, int] = (0, 0), max_size: tuple[int, int] = (0, 0),
               last_stage: bool = False) -> Candidates:
    """Viola and Jones' scan: one integral image, features scaled, window step ``round(step * s)``."""
    gray = _check_gray(gray)
    img_h, img_w = gray.shape
    tilted = bool(cascade.features.tilted.any())
    ii = integral_image(gray)
    sq = squared_integral_image(gray)
    table = np.concatenate([ii, tilted_integral_image(gray)]) if tilted else ii
    scales = paper_scales((img_w, img_h), cascade.window, scale_factor, min_size, max_size)
    corners, weights, grids = [], [], []
    norm = np.array([inner_rect(cascade.window)], np.int32)
    for k, s in enumerate(scales):
        feats = scale_features(cascade.features, s)
        corners.append(corner_offsets(feats, img_h + 1))
        weights.append(feats.weights)
        win = (int(np.rint(cascade.window[0] * s)), int(np.rint(cascade.window[1] * s)))
        st = max(1, int(np.rint(step * s)))
        shape = ((img_h - win[1]) // st + 1, (img_w - win[0]) // st + 1)
        nx0, ny0 = np.rint(norm[0, :2] * s)
        nrect = (int(nx0), int(ny0), int(np.rint((norm[0, 0] + norm[0, 2]) * s) - nx0),
                 int(np.rint((norm[0, 1] + norm[0, 3]) * s) - ny0))
        vnf, ok = _grid_normalisation(ii, sq, nrect, st, shape)
        grids.append(_Grid(0, 0, st, shape, vnf, ok, k, 1.0, win, False))
    if not scales:
        return Candidates(np.zeros((0, 4), np.int64), np.zeros(0), np.zeros(0, bool))
    evaluator = WindowEvaluator(cascade, img_w + 1, corners=np.stack(corners), weights=np.stack(weights))
    gid, i, j, scores, passed = _run(evaluator, table, grids, False, last_stage)
    return Candidates(_grid_rects(grids, gid, i, j), scores, passed)


# --------------------------------------------------------------------------- grouping
def _similar_pairs(a: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """OpenCV's SimilarRects for aligned rows of (x, y, w, h): all four edges within
    ``eps * (min width + min height) / 2``."""
    delta = eps * (np.minimum(a[:, 2], b[:, 2]) + np.minimum(a[:, 3], b[:, 3])) * 0.5
    return ((np.abs(a[:, 0] - b[:, 0]) <= delta) & (np.abs(a[:, 1] - b[:, 1]) <= delta)
            & (np.abs(a[:, 0] + a[:, 2] - b[:, 0] - b[:, 2]) <= delta)
            & (np.abs(a[:, 1] + a[:, 3] - b[:, 1] - b[:, 3]) <= delta))


def _similar_edges(rects: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of similar rects; many rects without testing all n^2 pairs.

    Up to ``_DENSE_GROUPING`` rects (a detector's usual few hundred) every pair is tested.  Beyond,
    as similar rects have all four edges within ``delta <= eps * (w + h) / 2`` and sizes
    ``w + h`` within a factor ``1 + 2 eps``, rects are banded by size (bands wider than that
    factor) and, in each pair of neighbouring bands, a k-d tree lists the pairs whose four edges
    are all within the band's largest delta; the exact test then keeps the similar ones.
    """
    if len(rects) <= _DENSE_GROUPING:
        i, j = np.triu_indices(len(rects), 1)
        keep = _similar_pairs(rects[i], rects[j], eps)
        return i[keep], j[keep]
    # imported here: scipy.spatial costs a fresh process 0.3 s
    from scipy.spatial import cKDTree

    size = (rects[:, 2] + rects[:, 3]).astype(np.float64)
    band = np.floor(np.log(np.maximum(size, 1)) / np.log(1.02 + 2 * eps)).astype(np.int64)
    edges = np.c_[rects[:, :2], rects[:, :2] + rects[:, 2:]].astype(np.float64)
    found_i, found_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for b in np.unique(band):
        sel = np.flatnonzero((band == b) | (band == b + 1))
        radius = eps * size[sel].max() * 0.5
        pairs = cKDTree(edges[sel]).query_pairs(radius, p=np.inf, output_type="ndarray")
        i, j = sel[pairs[:, 0]], sel[pairs[:, 1]]
        keep = _similar_pairs(rects[i], rects[j], eps)
        found_i.append(i[keep]), found_j.append(j[keep])
    return np.concatenate(found_i), np.concatenate(found_j)


def group_rectangles(rects: np.ndarray, group_threshold: int, eps: float = GROUP_EPS) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's ``groupRectangles``: cluster similar (x, y, w, h) rects, average each cluster,
    drop clusters of ``<= group_threshold`` rects and small clusters inside bigger ones.

    Returns ``(rects (m, 4) int64, neighbours (m,) int64)``; with ``group_threshold <= 0`` the
    rects come back unchanged, as in OpenCV.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rects = np.asarray(rects, np.int64).reshape(-1, 4)
    n = len(rects)
    if group_threshold <= 0 or n == 0:
        return rects.copy(), np.ones(n, np.int64)
    i, j = _similar_edges(rects, eps)
    _, labels = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    _, first = np.unique(labels, return_index=True)          # number clusters by first member, as OpenCV
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(np.argsort(first))] = np.arange(len(first))
    labels = rank[labels]
    count = np.bincount(labels)
    sums = np.stack([np.bincount(labels, rects[:, k]) for k in range(4)], 1)
    inv = (np.float32(1) / count.astype(np.float32))[:, None]
    avg = np.rint(sums.astype(np.float32) * inv).astype(np.int64)
    big = np.flatnonzero(count > group_threshold)
    a, n_a = avg[big], count[big]
    dx = np.rint(a[:, 2] * eps).astype(np.int64)
    dy = np.rint(a[:, 3] * eps).astype(np.int64)
    # inside[i, j]: big cluster i lies inside big cluster j grown by (dx_j, dy_j)
    inside = (a[:, None, 0] >= a[None, :, 0] - dx[None]) & (a[:, None, 1] >= a[None, :, 1] - dy[None])
    inside &= a[:, None, 0] + a[:, None, 2] <= a[None, :, 0] + a[None, :, 2] + dx[None]
    inside &= a[:, None, 1] + a[:, None, 3] <= a[None, :, 1] + a[None, :, 3] + dy[None]
    stronger = (n_a[None, :] > np.maximum(3, n_a[:, None])) | (n_a[:, None] < 3)
    np.fill_diagonal(inside, False)
    keep = ~(inside & stronger).any(1)
    return a[keep], n_a[keep]


# --------------------------------------------------------------------------- public entry point
ENGINES = ("compiled", "numpy")


def _check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    return engine


def _check_gray(gray: np.ndarray) -> np.ndarray:
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"detection needs a 2-D uint8 grey image, got {gray.dtype} {gray.shape}; "
                         "convert colour images with rgb_to_gray")
    return gray


def clip_rects(rects: np.ndarray, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's clipObjects: (x, y, w, h) rects cut to the image, as (x1, y1, x2, y2); and the kept mask."""
    w, h = image_size
    x1 = np.clip(rects[:, 0], 0, w)
    y1 = np.clip(rects[:, 1], 0, h)
    x2 = np.clip(rects[:, 0] + rects[:, 2], 0, w)
    y2 = np.clip(rects[:, 1] + rects[:, 3], 0, h)
    keep = (x2 > x1) & (y2 > y1)
    return np.stack([x1, y1, x2, y2], 1)[keep], keep


def detect(cascade: Cascade, gray: np.ndarray, mode: str = "opencv", scale_factor: float | None = None,
           min_neighbors: int = 3, min_size: tuple[int, int] = (0, 0), max_size: tuple[int, int] = (0, 0),
           step: float = 1.5, engine: str = "compiled") -> Detections:
    """Detect objects in a uint8 grey image.

    Args:
        cascade: the cascade (trained by vislab or read from OpenCV's XML).
        gray: (H, W) uint8 image.
        mode: ``"opencv"`` (resize the image; same boxes as ``cv2.CascadeClassifier``) or
            ``"paper"`` (scale the features).
        scale_factor: ratio between scales; default 1.1 (OpenCV's) or 1.25 (the paper's).
        min_neighbors: a detection must merge more than this many windows.
        min_size, max_size: bounds on the window size (0: none).
        step: paper mode only, window step at scale 1 (it grows with the scale).
        engine: OpenCV mode only, ``"compiled"`` (numba kernels, every core) or ``"numpy"``
            (the reference, one core); the paper's detector is numpy only.
    """
    _check_engine(engine)
    if mode == "opencv":
        cands = scan_opencv(cascade, gray, scale_factor or 1.1, min_size, max_size, engine=engine)
    elif mode == "paper":
        cands = scan_paper(cascade, gray, scale_factor or 1.25, step, min_size, max_size)
    else:
        raise ValueError(f"mode must be 'opencv' or 'paper', got {mode!r}")
    return group_candidates(cands.rects, min_neighbors, (gray.shape[1], gray.shape[0]))


def group_candidates(rects: np.ndarray, min_neighbors: int, image_size: tuple[int, int]) -> Detections:
    """Group raw (x, y, w, h) windows and clip them to the image, as detectMultiScale finishes."""
    grouped, neighbors = group_rectangles(rects, min_neighbors)
    boxes, keep = clip_rects(grouped, image_size)
    return Detections(boxes, neighbors[keep])
