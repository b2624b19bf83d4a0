"""Integral images against direct sums and OpenCV's ``cv2.integral3``."""

import cv2
import numpy as np
import pytest

from vislab.classic.viola_jones.integral import (
    integral_image,
    rect_sum,
    squared_integral_image,
    tilted_integral_image,
    tilted_rect_sum,
)


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (31, 40)])
def test_tables_match_direct_sums_and_opencv(shape):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    ii, sq, tilted = integral_image(img), squared_integral_image(img), tilted_integral_image(img)
    h, w = shape
    direct = np.array([[img[:y, :x].astype(np.int64).sum() for x in range(w + 1)] for y in range(h + 1)])
    np.testing.assert_array_equal(ii, direct)
    s, q, t = cv2.integral3(img, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)
    np.testing.assert_array_equal(ii, s)
    np.testing.assert_array_equal(sq, q)
    np.testing.assert_array_equal(tilted, t)
    assert ii.dtype == np.int64 and sq.dtype == np.int64


def test_float_images_and_batches():
    rng = np.random.default_rng(1)
    imgs = rng.random((3, 6, 4))
    ii = integral_image(imgs)
    assert ii.dtype == np.float64 and ii.shape == (3, 7, 5)
    for k in range(3):
        np.testing.assert_allclose(ii[k], cv2.integral(imgs[k]), rtol=1e-12)


def test_no_overflow_on_large_images():
    """255**2 * 1500**2 = 1.46e11 does not fit 32 bits; the squared table must still be exact."""
    img = np.full((1500, 1500), 255, np.uint8)
    assert squared_integral_image(img)[-1, -1] == 255 ** 2 * 1500 * 1500
    assert integral_image(img)[-1, -1] == 255 * 1500 * 1500


def test_rect_sum_is_four_lookups_of_the_direct_sum():
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (50, 24, 24), dtype=np.uint8)
    ii = integral_image(imgs)
    x, y = rng.integers(0, 20, 50), rng.integers(0, 20, 50)
    w, h = rng.integers(1, 25 - x), rng.integers(1, 25 - y)
    got = rect_sum(ii, x, y, w, h)            # one rectangle per window, broadcast over the batch
    want = [imgs[k, y[k]:y[k] + h[k], x[k]:x[k] + w[k]].astype(np.int64).sum() for k in range(50)]
    np.testing.assert_array_equal(got, want)


def _triangle(img, Y, X):
    """OpenCV's definition of the tilted table, summed pixel by pixel."""
    return sum(int(img[y, x]) for y in range(min(Y, img.shape[0])) for x in range(img.shape[1])
               if abs(x - X + 1) <= Y - y - 1)


def test_tilted_rect_sum_is_a_rotated_rectangle():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    tii = tilted_integral_image(img)
    for x, y, w, h in [(5, 0, 3, 2), (8, 2, 4, 4), (4, 3, 1, 1), (10, 1, 2, 5)]:
        # the four corners combine triangles into a 45-degree rectangle of 2*w*h pixels
        corners = [(y, x, 1), (y + h, x - h, -1), (y + w, x + w, -1), (y + w + h, x + w - h, 1)]
        member = np.zeros(img.shape, np.int64)
        for yy in range(16):
            for xx in range(16):
                delta = np.zeros(img.shape, np.uint8)
                delta[yy, xx] = 1
                member[yy, xx] = sum(s * _triangle(delta, Y, X) for Y, X, s in corners)
        assert set(np.unique(member)) <= {0, 1} and member.sum() == 2 * w * h
        assert tilted_rect_sum(tii, x, y, w, h) == int((img.astype(np.int64) * member).sum())
