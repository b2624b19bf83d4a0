"""Compiled kernels (numba) of OpenCV's detector: the image pyramid and the cascade scan.

They do what ``cv2.CascadeClassifier.detectMultiScale`` does, window by window, with OpenCV's
arithmetic (int32 tables, float32 features, stage sums in float64), so they give the same
windows as the numpy reference of :mod:`detect` and as OpenCV, bit for bit; the tests check
both on random images and on every kind of cascade OpenCV ships (stumps, trees, tilted
features).  Both kernels run on numba's threads (``numba.set_num_threads``), as OpenCV runs
on its own: the pyramid scale by scale, the scan row by row, rows of all scales interleaved so
that every thread gets a share of the big scales.

Compiled code is cached on disk (``cache=True``: ``__pycache__`` next to this file or, where
that is read-only, numba's user cache or ``NUMBA_CACHE_DIR``), so only the first process
anywhere pays for the compilation.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from vislab.classic.viola_jones.haar import _FLAT_LIMIT


def row_chunks() -> int:
    """How many parallel chunks a scan's rows are shared out among: several per thread, so that
    a thread slowed down by other work leaves its later chunks to the others."""
    return 4 * numba.get_num_threads()


@njit(cache=True, nogil=True)
def _resize(gray, x0, x1, a0, a1, y0, y1, b0, b1, out):
    """OpenCV's INTER_LINEAR_EXACT (as ``detect.resize_linear_exact``): 8-bit weights, rows
    first, then columns, rounded once (exact integers: no sum reaches 2**32)."""
    h, w = out.shape
    for y in range(h):
        top, bottom, dst = gray[y0[y]], gray[y1[y]], out[y]
        for x in range(w):
            up = np.int64(top[x0[x]]) * a0[x] + np.int64(top[x1[x]]) * a1[x]
            down = np.int64(bottom[x0[x]]) * a0[x] + np.int64(bottom[x1[x]]) * a1[x]
            dst[x] = (up * b0[y] + down * b1[y] + (1 << 15)) >> 16


@njit(cache=True, nogil=True)
def _integrals(img, table, sq_table, row0):
    """Summed-area tables of ``img`` and of its squares into rows ``row0 .. row0 + h`` and columns
    ``0 .. w`` of ``table`` and ``sq_table``: int32, wrapping as OpenCV's do."""
    h, w = img.shape
    for x in range(w + 1):
        table[row0, x] = 0
        sq_table[row0, x] = 0
    for y in range(h):
        src, above, above_sq = img[y], table[row0 + y], sq_table[row0 + y]
        out, out_sq = table[row0 + y + 1], sq_table[row0 + y + 1]
        out[0] = 0
        out_sq[0] = 0
        run = np.int64(0)
        run_sq = np.int64(0)
        for x in range(w):
            v = np.int64(src[x])
            run += v
            run_sq += v * v
            out[x + 1] = np.int32(above[x + 1] + run)
            out_sq[x + 1] = np.int32(above_sq[x + 1] + run_sq)


@njit(cache=True, nogil=True)
def _tilted(img, table, row0):
    """OpenCV's 45-degree table of ``img`` (as ``integral.tilted_integral_image``) into
    ``table[row0:row0 + h + 1, :w + 1]``.

    ``T(Y, X) = T(Y-1, X-1) + T(Y-1, X+1) - T(Y-2, X) + img[Y-1, X-1] + img[Y-2, X-1]``, on rows
    widened by ``h + 1`` columns on each side: the triangles of columns outside the image are
    needed, and the ones past the widened edge are empty, so the recurrence is exact there.
    """
    h, w = img.shape
    pad = h + 1
    width = w + 2 * pad + 1
    rows = np.zeros((3, width), np.int64)            # T(Y - 2), T(Y - 1), T(Y), by Y % 3
    for x in range(w + 1):
        table[row0, x] = 0
    for y in range(1, h + 1):
        cur, prev, prev2 = rows[y % 3], rows[(y - 1) % 3], rows[(y - 2) % 3]
        for c in range(width):
            x = c - pad                              # table column X
            v = np.int64(0)
            if c > 0:
                v += prev[c - 1]
            if c < width - 1:
                v += prev[c + 1]
            if y >= 2:
                v -= prev2[c]
            if 1 <= x <= w:
                v += img[y - 1, x - 1]
                if y >= 2:
                    v += img[y - 2, x - 1]
            cur[c] = v
        for x in range(w + 1):
            table[row0 + y, x] = np.int32(cur[x + pad])


@njit(cache=True, parallel=True)
def build_pyramid(gray, sizes, row0, x_taps, x_start, y_taps, y_start, table, sq_table, tilted_rows, images,
                  image_start):
    """Every scale of OpenCV's pyramid: the resized image and its tables, scales in parallel.

    Args (S scales):
        gray: (H, W) uint8 image.
        sizes: (S, 2) width and height of each scale; row0: (S,) its first table row.
        x_taps, y_taps: (4, n) int64 resize taps (first source pixel, second, their weights) of
            the columns and of the rows of every scale, scale k's from ``x_start[k]``, ``y_start[k]``.
        table, sq_table: (rows, stride) int32, filled: the tables of the pixels and of their
            squares; with ``tilted_rows`` > 0, ``table`` holds the tilted tables that many rows
            further down.
        images: flat uint8, filled: the resized images, scale k's from ``image_start[k]``.
    """
    for s in prange(sizes.shape[0]):
        w, h = sizes[s, 0], sizes[s, 1]
        xs, ys = x_start[s], y_start[s]
        img = images[image_start[s]:image_start[s] + w * h].reshape((h, w))
        _resize(gray, x_taps[0, xs:xs + w], x_taps[1, xs:xs + w], x_taps[2, xs:xs + w], x_taps[3, xs:xs + w],
                y_taps[0, ys:ys + h], y_taps[1, ys:ys + h], y_taps[2, ys:ys + h], y_taps[3, ys:ys + h], img)
        _integrals(img, table, sq_table, row0[s])
        if tilted_rows:
            _tilted(img, table, tilted_rows + row0[s])


@njit(cache=True, nogil=True)
def _scan_row(table, sq_table, row_base, step, first, nx, norm, area, skip_rule, stage_start, stage_size,
              stage_threshold, max_nodes, corners, weights, thresholds, children, leaves, reached, last_sum):
    """One row of windows, left to right: each goes through the stages until one rejects it.

    A window is normalised as OpenCV's ``HaarEvaluator::setWindow`` does it, and a node's feature
    value is OpenCV's float32 ``(w0 * S0 + w1 * S1 (+ w2 * S2)) * vnf``, each rectangle sum S an
    int32; the node data are flat arrays in the order they are visited.  (The feature is written
    out here rather than in a function: numba passes each array to a function it does not inline
    as several words, and its own inlining adds reference counting to every call.)
    """
    n_stages = stage_start.shape[0]
    skip = False
    for j in range(nx):
        k = first + j
        if skip:
            reached[k] = -2
            skip = False
            continue
        base = row_base + j * step
        pixels = np.int32(np.int64(table[np.uint64(base + norm[0])]) - table[np.uint64(base + norm[1])]
                         - table[np.uint64(base + norm[2])] + table[np.uint64(base + norm[3])])
        squares = (np.int64(sq_table[np.uint64(base + norm[0])]) - sq_table[np.uint64(base + norm[1])]
                    - sq_table[np.uint64(base + norm[2])] + sq_table[np.uint64(base + norm[3])]) & 0xFFFFFFFF
        nf = area * np.float64(squares) - np.float64(pixels) * np.float64(pixels)   # OpenCV: unsigned squares
        v = np.float32(1.0 / np.sqrt(nf)) if nf > 0 else np.float32(1)
        if nf <= 0 or area * np.float64(v) >= _FLAT_LIMIT:                         # flat: never classified
            reached[k] = -1
            continue
        stage = 0
        total = 0.0
        while stage < n_stages:
            total = 0.0
            for t in range(stage_start[stage], stage_start[stage] + stage_size[stage]):
                node = 0
                while True:
                    n = t * max_nodes + node
                    value = np.float32(0)
                    for r in range(3):
                        w = weights[3 * n + r]
                        if r == 2 and w == 0:
                            break
                        c = 12 * n + 4 * r
                        # unsigned indices: numba then skips its negative-index wraparound
                        rect = np.int32(np.int64(table[np.uint64(base + corners[c])])
                                        - table[np.uint64(base + corners[c + 1])]
                                        - table[np.uint64(base + corners[c + 2])]
                                        + table[np.uint64(base + corners[c + 3])])
                        value = w * np.float32(rect) if r == 0 else value + w * np.float32(rect)
                    value *= v
                    nxt = children[2 * n] if value < thresholds[n] else children[2 * n + 1]
                    if nxt <= 0:
                        total += leaves[t * (max_nodes + 1) - nxt]
                        break
                    node = nxt
            if total < stage_threshold[stage]:
                break
            stage += 1
        reached[k] = stage
        last_sum[k] = total
        skip = skip_rule and stage == 0


@njit(cache=True, parallel=True)
def scan(table, sq_table, row_stride, grid_row0, steps, grid_shape, grid_start, row_grid, row_index, norm, area,
         skip_rule, n_chunks, stage_start, stage_size, stage_threshold, max_nodes, corners, weights, thresholds,
         children, leaves, reached, last_sum):
    """Run the cascade on every window of every grid, as OpenCV's ``CascadeClassifierInvoker``.

    Args (G grids, R rows of windows in all, N = T * M nodes of T weak trees of M nodes):
        table, sq_table: flat int32 tables of the pixels and of their squares; row_stride: their
            row length.
        grid_row0, steps, grid_shape, grid_start: (G,), (G,), (G, 2), (G,) each grid's first
            table row, stride, (rows, columns) of windows and first window index.
        row_grid, row_index: (R,) the grid and the row in it of every row of windows.
        norm, area: (4,) flat offsets of the corners of the rectangle that normalises a window,
            and its area.
        skip_rule: skip the window right of one that failed the first stage (OpenCV's scan).
        n_chunks: rows are shared out among this many parallel chunks, row r to chunk r % n_chunks.
        stage_start, stage_size, stage_threshold: (S,) each stage's first tree, tree count and
            float32 threshold (less 1e-5).
        max_nodes: M; node ``t * M + m`` is node m of tree t.
        corners: (N * 12,) int64 flat offsets of the 4 corners of the 3 rectangles of each node's
            feature; weights: (N * 3,) float32 their weights; thresholds: (N,) float32.
        children: (N * 2,) left and right child of each node (``<= 0``: leaf ``-child``).
        leaves: (T * (M + 1),) float32.
        reached: (n_windows,) int32, filled: stages passed (S: accepted), -1 for a flat
            window, -2 for a skipped one.
        last_sum: (n_windows,) float64, filled: the sum of the last stage evaluated.
    """
    n_rows = row_grid.shape[0]
    for chunk in prange(n_chunks):
        for r in range(chunk, n_rows, n_chunks):
            g, i = row_grid[r], row_index[r]
            _scan_row(table, sq_table, (grid_row0[g] + i * steps[g]) * row_stride, steps[g],
                      grid_start[g] + i * grid_shape[g, 1], grid_shape[g, 1], norm, area, skip_rule, stage_start,
                      stage_size, stage_threshold, max_nodes, corners, weights, thresholds, children, leaves,
                      reached, last_sum)
