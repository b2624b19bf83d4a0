"""Integral images (summed-area tables) and rectangle sums in four look-ups.

The tables follow OpenCV's layout: one row and one column of zeros in front, so an
``(H, W)`` image gives an ``(H + 1, W + 1)`` table and ``ii[y, x]`` is the sum of
``img[:y, :x]``.  Integer images are summed in int64 and float images in float64: the
course notes warn that integral images overflow on large images, and a uint8 image would
need more than 10^14 pixels to overflow int64 squares (255**2 * H * W < 2**63).
"""

from __future__ import annotations

import numpy as np


def _sum_dtype(img: np.ndarray) -> type[np.generic]:
    if img.dtype == np.bool_ or np.issubdtype(img.dtype, np.integer):
        return np.int64
    if np.issubdtype(img.dtype, np.floating):
        return np.float64
    raise ValueError(f"integral images need an integer, bool or float image, got dtype {img.dtype}")


def integral_image(img: np.ndarray) -> np.ndarray:
    """Summed-area table of ``img`` (..., H, W) -> (..., H + 1, W + 1), int64 or float64.

    Leading dimensions are a batch: a stack of training windows gets all its tables at once.
    """
    img = np.asarray(img)
    if img.ndim < 2:
        raise ValueError(f"integral_image needs an (..., H, W) array, got shape {img.shape}")
    return _summed(img, squared=False)


def squared_integral_image(img: np.ndarray) -> np.ndarray:
    """Summed-area table of ``img ** 2``: with :func:`integral_image` it gives any window's variance."""
    return _summed(np.asarray(img), squared=True)


def _summed(img: np.ndarray, squared: bool) -> np.ndarray:
    # widen first, then sum in place: numpy's cumsum is several times slower when it casts
    out = np.zeros(img.shape[:-2] + (img.shape[-2] + 1, img.shape[-1] + 1), dtype=_sum_dtype(img))
    inner = out[..., 1:, 1:]
    inner[...] = img
    if squared:
        inner *= inner
    np.cumsum(inner, axis=-2, out=inner)
    np.cumsum(inner, axis=-1, out=inner)
    return out


def tilted_integral_image(img: np.ndarray) -> np.ndarray:
    """OpenCV's 45-degree rotated summed-area table of a 2-D image, (H + 1, W + 1).

    ``t[Y, X]`` is the sum of ``img[y, x]`` over ``y < Y`` and ``|x - X + 1| <= Y - y - 1``: the
    upward triangle with its apex at pixel ``(Y - 1, X - 1)``, clipped to the image.  Each row
    of the triangle is a difference of two row-prefix sums, taken along the diagonals and the
    anti-diagonals with cumulative sums, so the table needs no loop over pixels.
    """
    img = np.asarray(img)
    if img.ndim != 2:
        raise ValueError(f"tilted_integral_image needs an (H, W) image, got shape {img.shape}")
    dtype = _sum_dtype(img)
    h, w = img.shape
    # prefix[y, k + 1] = sum(img[y, :k + 1]) for k = -1 .. w - 1
    prefix = np.zeros((h, w + 1), dtype=dtype)
    np.cumsum(img, axis=1, dtype=dtype, out=prefix[:, 1:])
    rows = np.arange(h)[:, None]

    def prefix_at(k: np.ndarray) -> np.ndarray:  # row prefix sums, clamped outside the image
        return prefix[rows, np.clip(k, -1, w - 1) + 1]

    cols = np.arange(w + h + 1)[None, :]
    anti = np.zeros((h + 1, w + h + 1), dtype=dtype)   # anti[Y, c + 2]: sum_{y<Y} P(y, c - y)
    np.cumsum(prefix_at(cols - 2 - rows), axis=0, out=anti[1:])
    diag = np.zeros((h + 1, w + h + 1), dtype=dtype)   # diag[Y, d + h + 1]: sum_{y<Y} P(y, d + y)
    np.cumsum(prefix_at(cols - (h + 1) + rows), axis=0, out=diag[1:])
    yy, xx = np.mgrid[0:h + 1, 0:w + 1]
    return anti[yy, xx + yy] - diag[yy, xx - yy + h]


def rect_sum(ii: np.ndarray, x, y, w, h) -> np.ndarray:
    """Sum of the upright rectangle (x, y, w, h) from an integral image, in four look-ups.

    ``ii`` is (..., H + 1, W + 1); x, y, w, h are ints or integer arrays broadcast together
    with the batch dimensions of ``ii``.
    """
    x, y, w, h = (np.asarray(v, dtype=np.int64) for v in (x, y, w, h))
    ii = np.asarray(ii)
    idx = ii.shape[:-2]
    batch = tuple(np.ogrid[tuple(slice(0, n) for n in idx)]) if idx else ()

    def at(r, c):
        return ii[batch + (r, c)] if batch else ii[r, c]

    return at(y + h, x + w) - at(y, x + w) - at(y + h, x) + at(y, x)


def tilted_rect_sum(tii: np.ndarray, x, y, w, h) -> np.ndarray:
    """Sum of OpenCV's 45-degree rectangle (x, y, w, h) from a tilted integral image.

    The rectangle hangs from its top corner (x, y): w pixels down-right, h pixels down-left
    (OpenCV's ``CV_TILTED_OFS``); the four corners of the table are (x, y), (x - h, y + h),
    (x + w, y + w) and (x + w - h, y + w + h).
    """
    x, y, w, h = (np.asarray(v, dtype=np.int64) for v in (x, y, w, h))
    return tii[y, x] - tii[y + h, x - h] - tii[y + w, x + w] + tii[y + w + h, x + w - h]
