"""Haar features against sums computed directly from the pixels."""

import numpy as np
import pytest

from vislab.classic.viola_jones.haar import (
    SHAPES,
    feature_values,
    haar_features,
    normalisation,
    pool_value_blocks,
    raw_feature_values,
    window_normalisation,
)


def _expected_count(w: int, h: int) -> int:
    """Number of features, counted by enumerating sizes and positions."""
    total = 0
    for bw, bh in [(2, 1), (1, 2), (3, 1), (1, 3), (2, 2)]:
        for fw in range(bw, w + 1, bw):
            for fh in range(bh, h + 1, bh):
                total += (w - fw + 1) * (h - fh + 1)
    return total


def test_pool_size():
    assert len(haar_features((24, 24))) == _expected_count(24, 24) == 162_336   # Viola & Jones' figure
    assert len(haar_features((19, 11))) == _expected_count(19, 11)
    assert len(haar_features((24, 24), ("edge_x",))) == 43_200


def _box(img, x, y, w, h):
    return img[y:y + h, x:x + w].astype(np.int64).sum()


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_are_the_viola_jones_differences(shape):
    rng = np.random.default_rng(0)
    feats = haar_features((12, 10), (shape,))
    img = rng.integers(0, 256, (1, 10, 12), dtype=np.uint8)
    raw = raw_feature_values(feats, img)[:, 0]
    for f in rng.choice(len(feats), 20, replace=False):
        x, y, w, h = feats.rects[f, 0]          # the whole feature
        i = img[0]
        if shape == "edge_x":
            want = _box(i, x + w // 2, y, w // 2, h) - _box(i, x, y, w // 2, h)
        elif shape == "edge_y":
            want = _box(i, x, y + h // 2, w, h // 2) - _box(i, x, y, w, h // 2)
        elif shape == "line_x":
            u = w // 3
            want = 2 * _box(i, x + u, y, u, h) - _box(i, x, y, u, h) - _box(i, x + 2 * u, y, u, h)
        elif shape == "line_y":
            u = h // 3
            want = 2 * _box(i, x, y + u, w, u) - _box(i, x, y, w, u) - _box(i, x, y + 2 * u, w, u)
        else:
            u, v = w // 2, h // 2
            want = (_box(i, x, y, u, v) + _box(i, x + u, y + v, u, v)
                    - _box(i, x + u, y, u, v) - _box(i, x, y + v, u, v))
        assert raw[f] == want


def test_normalisation_is_opencvs_formula():
    rng = np.random.default_rng(1)
    wins = rng.integers(0, 256, (30, 24, 24), dtype=np.uint8)
    wins[0] = 7                                  # flat: never classified
    wins[1, :, :12], wins[1, :, 12:] = 100, 110  # std 5 <= 10: rejected like OpenCV does
    vnf, ok = window_normalisation(wins)
    inner = wins[:, 1:23, 1:23].reshape(30, -1).astype(np.float64)
    want = 1 / (inner.shape[1] * inner[2:].std(axis=1))      # 1 / sqrt(area * sum x^2 - (sum x)^2)
    np.testing.assert_allclose(vnf[2:], want, rtol=1e-6)
    assert not ok[0] and not ok[1] and ok[2:].all()
    v, o = normalisation(np.array([10]), np.array([10]), 10)   # sum 10, sum of squares 10, area 10: flat
    assert not o[0] and v[0] == 1


def test_normalised_values_and_the_fast_pool_path_agree_with_direct_sums():
    rng = np.random.default_rng(2)
    wins = rng.integers(0, 256, (40, 24, 24), dtype=np.uint8)
    pool = haar_features((24, 24))
    idx = np.sort(rng.choice(len(pool), 500, replace=False))
    vnf, _ = window_normalisation(wins)
    got = feature_values(pool.subset(idx), wins, vnf)
    for n, f in enumerate(idx[:40]):
        raw = sum(np.float32(pool.weights[f, k]) * np.float32(_box(wins[0], *pool.rects[f, k]))
                  for k in range(3) if pool.weights[f, k] != 0)
        assert got[n, 0] == np.float32(raw) * vnf[0]
    fast = np.concatenate(list(pool_value_blocks(wins, vnf=vnf)))
    np.testing.assert_array_equal(fast[idx], got)
