"""vislab.metrics.generative against pytorch-fid's calculate_frechet_distance, numpy's mean and
covariance, scikit-learn's roc_auc_score, and values computed by hand."""

import math
import warnings

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from sklearn import metrics as skm

from vislab.errors import UserError
from vislab.metrics.generative import (
    classifier_confidence,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    roc_auc,
)

# Agreement with pytorch-fid: relative, with an absolute floor for distances near 0.  Measured:
# ~1e-14 relative on full-rank statistics, ~1e-8 on rank-deficient ones (sqrtm's round-off).
TOL = {"rel": 1e-6, "abs": 1e-6}


def reference(mu1, sigma1, mu2, sigma2) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # its sqrtm(disp=False) on SciPy >= 1.16
        return float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))


def sample_statistics(seed: int, n: int, d: int) -> tuple[np.ndarray, ...]:
    """Statistics of two different random feature sets: rank min(n - 1, d) covariances."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d)) * rng.uniform(0.1, 10)
    b = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / math.sqrt(d) + rng.normal(size=d)
    return (*feature_statistics(a), *feature_statistics(b))


@pytest.mark.parametrize("n, d", [(200, 8), (500, 64), (10, 32), (3, 8)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_distance_matches_pytorch_fid(seed, n, d):
    stats = sample_statistics(seed, n, d)
    assert frechet_distance(*stats) == pytest.approx(reference(*stats), **TOL)


@pytest.mark.parametrize("d", [4, 32])
def test_frechet_distance_matches_pytorch_fid_with_a_zero_eigenvalue(d):
    rng = np.random.default_rng(d)
    b = rng.normal(size=(d, d - 1))
    singular = b @ b.T / d                                  # rank d - 1
    full = np.cov(rng.normal(size=(4 * d, d)), rowvar=False)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    for s1, s2 in [(singular, full), (full, singular), (singular, singular + 0.1 * np.eye(d))]:
        assert np.linalg.eigvalsh(singular)[0] < 1e-12
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference(mu1, s1, mu2, s2), **TOL)


@pytest.mark.parametrize("n, d", [(500, 64), (10, 32), (40, 64)])
def test_identical_distributions_are_at_distance_zero(n, d):
    mu, sigma = feature_statistics(np.random.default_rng(0).normal(size=(n, d)) * 3)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-6)
    if n > d:   # pytorch-fid's sqrtm leaves ~1e-6 of round-off when the covariance is singular
        assert reference(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-6)


def test_frechet_distance_of_1d_gaussians_by_hand():
    # (m1 - m2)^2 + (s1 - s2)^2 with standard deviations s1 = 2, s2 = 3.
    assert frechet_distance(1.0, 4.0, -0.5, 9.0) == pytest.approx(1.5**2 + 1.0)
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), torch.tensor([-0.5]),
                            torch.tensor([[9.0]])) == pytest.approx(3.25)
    # Independent coordinates add up: diagonal covariances, by hand, and pytorch-fid (whose sqrtm
    # call breaks on a 1 x 1 matrix with SciPy 1.17).
    stats = np.array([1.0, 0.0]), np.diag([4.0, 1.0]), np.array([-0.5, 2.0]), np.diag([9.0, 1.0])
    assert frechet_distance(*stats) == pytest.approx(3.25 + 2.0**2)
    assert reference(*stats) == pytest.approx(3.25 + 2.0**2)


def test_frechet_distance_takes_tensors():
    stats = sample_statistics(3, 50, 16)
    assert frechet_distance(*(torch.from_numpy(s) for s in stats)) == pytest.approx(frechet_distance(*stats))


def test_eps_offset_when_the_eigendecomposition_fails(monkeypatch):
    mu1, s1, mu2, s2 = sample_statistics(4, 20, 8)
    # As in pytorch-fid, the offset enters the square root only, not Tr S1 + Tr S2.
    offset = 1e-3 * np.eye(8)
    expected = frechet_distance(mu1, s1 + offset, mu2, s2 + offset) - 2 * np.trace(offset)
    eigh, calls = np.linalg.eigh, []

    def fails_first(a):
        calls.append(1)
        if len(calls) == 1:
            raise np.linalg.LinAlgError("Eigenvalues did not converge")
        return eigh(a)

    monkeypatch.setattr(np.linalg, "eigh", fails_first)
    assert frechet_distance(mu1, s1, mu2, s2, eps=1e-3) == pytest.approx(expected)


def test_feature_statistics_match_numpy():
    x = np.random.default_rng(0).normal(size=(30, 5))
    mu, sigma = feature_statistics(torch.from_numpy(x).float())
    assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (5, 5)
    np.testing.assert_allclose(mu, np.mean(x.astype(np.float32), axis=0), rtol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float32), rowvar=False), rtol=1e-6)
    mu, sigma = feature_statistics(x[:, :1])                    # D = 1 keeps its (1, 1) shape
    assert sigma.shape == (1, 1) and sigma[0, 0] == pytest.approx(np.var(x[:, 0], ddof=1))


def test_fid_from_features_is_the_distance_of_the_statistics():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(40, 16)), rng.normal(0.3, 1.2, size=(25, 16))
    assert fid_from_features(real, torch.from_numpy(fake)) == pytest.approx(
        frechet_distance(*feature_statistics(real), *feature_statistics(fake)), rel=1e-12)


@pytest.mark.parametrize("kind", ["continuous", "integer ties", "imbalanced"])
def test_roc_auc_matches_sklearn(kind):
    rng = np.random.default_rng(0)
    labels = (rng.random(600) < (0.02 if kind == "imbalanced" else 0.5)).astype(int)
    scores = rng.normal(labels * 0.8, 1.0)
    if kind == "integer ties":
        scores = np.round(scores * 2).astype(int)
    assert roc_auc(scores, labels) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    assert roc_auc(torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(roc_auc(scores, labels))


def test_classifier_confidence_by_hand():
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    got = classifier_confidence(torch.from_numpy(probs))
    assert got["confidence"] == pytest.approx((0.9 + 0.7 + 0.6 + 0.8) / 4)
    assert got["histogram"] == [2, 1, 1]
    # Entropy of (1/2, 1/4, 1/4) = 1.5 log 2, over log 3.
    assert got["diversity"] == pytest.approx(1.5 * math.log(2) / math.log(3))
    assert classifier_confidence(np.eye(4))["diversity"] == pytest.approx(1.0)
    collapsed = classifier_confidence(np.tile([0.1, 0.9], (5, 1)))
    assert collapsed["histogram"] == [0, 5] and collapsed["diversity"] == 0.0


M8, S8 = np.zeros(8), np.eye(8)


@pytest.mark.parametrize("call, message", [
    (lambda: feature_statistics(np.zeros((1, 4))), "at least 2"),
    (lambda: feature_statistics(np.zeros(4)), r"\(N, D\)"),
    (lambda: feature_statistics(np.full((3, 2), np.nan)), "NaN"),
    (lambda: frechet_distance(M8, S8, np.zeros(4), np.eye(4)), r"mu2 \(4,\), sigma2 \(4, 4\)"),
    (lambda: frechet_distance(M8, np.eye(4), M8, S8), r"sigma1 \(4, 4\)"),
    (lambda: frechet_distance(M8, -S8, M8, S8), "sigma1 is not positive semi-definite"),
    (lambda: frechet_distance(M8, S8, M8, -S8), "sigma2 is not positive semi-definite"),
    (lambda: frechet_distance(M8, np.triu(np.ones((8, 8))), M8, S8), "sigma1 is not symmetric"),
    (lambda: fid_from_features(np.zeros((5, 3)), np.zeros((5, 4))), r"\(5, 3\) but fake \(5, 4\)"),
    (lambda: roc_auc(np.random.rand(5), np.zeros(5)), "positive and negative"),
    (lambda: classifier_confidence(np.array([[2.0, -1.0]])), "softmax"),
    (lambda: classifier_confidence(np.ones((3, 1))), "K >= 2"),
])
def test_bad_inputs_raise_user_error(call, message):
    with pytest.raises(UserError, match=message):
        call()
