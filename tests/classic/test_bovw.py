"""Bag of visual words: descriptors against OpenCV's, histograms against a brute-force count and
scikit-learn's tf-idf, and a fit on scikit-learn's 8x8 digits."""

import copy

import cv2
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.feature_extraction.text import TfidfTransformer

from vislab.classic.bovw import BagOfVisualWords, dense_keypoints, dense_sift
from vislab.errors import UserError

GRID = {"upscale": 32, "patch": 16, "step": 4}      # digits 8x8 -> 32x32, a 5x5 grid


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return np.clip(d.images * 16, 0, 255).astype(np.uint8), d.target


@pytest.fixture(scope="module")
def model(digits):
    """Fitted on the first 300 digits."""
    images, labels = digits
    return BagOfVisualWords(vocab_size=32, max_descriptors=3000, **GRID).fit(images[:300], labels[:300])


def _with_norm(model, norm):
    """The fitted model, histograms normalised by ``norm`` (vocabulary and idf stay)."""
    other = copy.copy(model)
    other.norm = norm
    return other


def _opencv_descriptors(images):
    """Descriptors of an independently built 5x5 grid: centres 8, 12, ..., 24 of the 32x32 image,
    OpenCV size 16 / 6 (4x4 cells of 3 * size / 2 = 4 pixels), angle 0."""
    keypoints = [cv2.KeyPoint(float(x), float(y), 16 / 6, 0) for y in range(8, 25, 4) for x in range(8, 25, 4)]
    sift = cv2.SIFT_create()
    return np.stack([sift.compute(cv2.resize(im, (32, 32), interpolation=cv2.INTER_LINEAR), keypoints)[1]
                     for im in images])


def _brute_force_counts(images, vocabulary):
    d = _opencv_descriptors(images).astype(np.float64)                            # (N, 25, 128)
    nearest = ((d[:, :, None, :] - vocabulary) ** 2).sum(-1).argmin(-1)           # (N, 25)
    counts = np.zeros((len(images), len(vocabulary)))
    for i, words in enumerate(nearest):
        for w in words:
            counts[i, w] += 1
    return counts


def test_descriptors_equal_opencv(digits):
    images = digits[0][:6]
    np.testing.assert_array_equal(dense_sift(images, **GRID), _opencv_descriptors(images))


def test_grid_keeps_windows_inside():
    kps = dense_keypoints((20, 32), step=5, patch=10)
    xs, ys = sorted({k.pt[0] for k in kps}), sorted({k.pt[1] for k in kps})
    assert xs == [5, 10, 15, 20, 25] and ys == [5, 10, 15]
    assert len(kps) == 15 and all(k.size == pytest.approx(10 / 6) and k.angle == 0 for k in kps)


def test_histograms_equal_brute_force(digits, model):
    images = digits[0][300:310]
    counts = _brute_force_counts(images, model.vocabulary_)
    tf = counts / counts.sum(1, keepdims=True)
    np.testing.assert_allclose(_with_norm(model, "l1").transform(images), tf, rtol=1e-12)
    np.testing.assert_allclose(model.transform(images), np.sqrt(tf), rtol=1e-12)        # Hellinger
    train_counts = _brute_force_counts(digits[0][:300], model.vocabulary_)
    tfidf = TfidfTransformer().fit(train_counts).transform(counts).toarray()      # smoothed idf, L2
    np.testing.assert_allclose(_with_norm(model, "tfidf").transform(images), tfidf, rtol=1e-12)


def test_fit_and_score_above_chance(digits, model):
    images, labels = digits
    assert model.score(images[300:600], labels[300:600]) > 0.6      # chance: 0.1
    np.testing.assert_array_equal(model.transform(images[:5, None]), model.transform(images[:5]))


@pytest.mark.parametrize("call", [
    lambda m, x, y: m.fit(x.astype(np.float32), y),
    lambda m, x, y: m.fit(np.repeat(x[:, None], 3, 1), y),
    lambda m, x, y: m.fit(x[0], y),
    lambda m, x, y: m.fit(x, y[:-1]),
    lambda m, x, y: m.fit(x, np.zeros_like(y)),
    lambda m, x, y: m.predict(x),
    lambda m, x, y: BagOfVisualWords(upscale=12, patch=16).fit(x, y),
    lambda m, x, y: BagOfVisualWords(norm="l2"),
], ids=["float", "colour", "one image", "labels", "one class", "unfitted", "patch > image", "norm"])
def test_bad_input_raises_user_error(digits, call):
    with pytest.raises(UserError):
        call(BagOfVisualWords(vocab_size=8, max_descriptors=1000, **GRID), digits[0][:20], digits[1][:20])
