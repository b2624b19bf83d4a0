"""Metrics for generative models and anomaly scores: the Fréchet distance (FID), ROC AUC, and the
confidence and class diversity a classifier sees in generated samples.

The Fréchet distance between Gaussians ``N(mu1, S1)`` and ``N(mu2, S2)`` is
``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``.  pytorch-fid computes the trace term with
``scipy.linalg.sqrtm`` of the non-symmetric ``S1 S2``, adding ``eps * I`` when that fails and
dropping a small imaginary part.  Here it comes from the symmetric matrix
``S1^(1/2) S2 S1^(1/2)``, which has the eigenvalues of ``S1 S2``: ``Tr (S1 S2)^(1/2)`` is the sum
of the square roots of its eigenvalues, real by construction, and exact for rank-deficient
covariances (fewer samples than dimensions), where ``sqrtm`` loses accuracy.  Both agree to a
relative 1e-6 (tests/metrics/test_generative.py).
"""

from __future__ import annotations

import numpy as np
import torch

from vislab.errors import UserError
from vislab.metrics.retrieval import roc_auc

__all__ = ["classifier_confidence", "feature_statistics", "fid_from_features", "frechet_distance", "roc_auc"]

# Eigenvalues within this multiple of machine epsilon (times the dimension and the largest
# eigenvalue) of zero are round-off: their square roots (~1e-8 of the scale each) would add up.
_ROUND_OFF = np.finfo(np.float64).eps
# A covariance with an eigenvalue below -_NOT_PSD * (its largest) is not a covariance; float32
# accumulation stays far above it.
_NOT_PSD = 1e-5


def _float64(x: object, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise UserError(f"{name} contains NaN or inf")
    return x


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of (N, D) features, in float64, the covariance unbiased
    (divided by N - 1) as ``np.cov(features, rowvar=False)``."""
    x = _float64(features, "features")
    if x.ndim != 2:
        raise UserError(f"features must have shape (N, D), got {x.shape}")
    if len(x) < 2:
        raise UserError(f"a covariance needs at least 2 feature vectors, got {len(x)}")
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def _eigh_psd(s: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (round-off negatives and near-zeros set to 0) and eigenvectors of the
    symmetric positive semi-definite ``s``."""
    w, v = np.linalg.eigh(s)
    top = max(float(np.abs(w).max()), np.finfo(np.float64).tiny)
    if w.min() < -_NOT_PSD * top:
        raise UserError(f"{name} is not positive semi-definite (eigenvalue {w.min():.3g}, "
                        f"largest {top:.3g}); pass a covariance matrix")
    w[w < len(w) * _ROUND_OFF * top] = 0.0
    return w, v


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``Tr (S1 S2)^(1/2)`` from the eigenvalues of ``S1^(1/2) S2 S1^(1/2)``."""
    w, v = _eigh_psd(sigma1, "sigma1")
    root = (v * np.sqrt(w)) @ v.T                       # S1^(1/2)
    m = root @ sigma2 @ root
    # S2 not semi-definite shows as a negative eigenvalue here (on the range of S1).
    w, _ = _eigh_psd((m + m.T) / 2, "sigma2")
    return float(np.sqrt(w).sum())


def frechet_distance(mu1: np.ndarray | torch.Tensor, sigma1: np.ndarray | torch.Tensor,
                     mu2: np.ndarray | torch.Tensor, sigma2: np.ndarray | torch.Tensor,
                     eps: float = 1e-6) -> float:
    """Fréchet (2-Wasserstein squared) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``:
    means (D,), covariances (D, D); scalars are taken as D = 1, as pytorch-fid does.

    ``eps`` is added to both diagonals only if the eigen-decomposition does not converge, as
    pytorch-fid adds it when ``sqrtm`` fails.  Round-off can leave a distance of ~-1e-13 between
    identical statistics; the result is clamped at 0.
    """
    mu1, mu2 = np.atleast_1d(_float64(mu1, "mu1")), np.atleast_1d(_float64(mu2, "mu2"))
    sigma1, sigma2 = np.atleast_2d(_float64(sigma1, "sigma1")), np.atleast_2d(_float64(sigma2, "sigma2"))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise UserError(f"means must have shape (D,) and covariances (D, D), got mu1 {mu1.shape}, "
                        f"sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}")
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.allclose(s, s.T, rtol=1e-5, atol=1e-8 * np.abs(s).max()):
            raise UserError(f"{name} is not symmetric; pass a covariance matrix")
    try:
        tr_covmean = _trace_sqrt_product(sigma1, sigma2)
    except np.linalg.LinAlgError:
        offset = eps * np.eye(d)
        tr_covmean = _trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    diff = mu1 - mu2
    return max(float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean), 0.0)


def fid_from_features(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between the Gaussians fitted to two (N, D) feature sets (the FID when the
    features are Inception-v3 pool features).  It is biased upwards at small N, so compare values
    computed with the same N."""
    mu1, sigma1 = feature_statistics(real)
    mu2, sigma2 = feature_statistics(fake)
    if mu1.shape != mu2.shape:
        raise UserError(f"real features have shape {tuple(np.shape(real))} but fake {tuple(np.shape(fake))}; "
                        "extract both with the same model and layer")
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def classifier_confidence(probs: np.ndarray | torch.Tensor) -> dict:
    """What a classifier makes of (N, K) class probabilities of N generated samples:

    * ``confidence``: the mean of each sample's largest probability (high: samples look like
      some class: the sharpness the Inception score rewards);
    * ``histogram``: how many samples fall in each class (argmax), a list of K counts;
    * ``diversity``: the entropy of that histogram divided by ``log K``: 1 when every class comes
      out equally often, 0 when all samples fall in one class (mode collapse).
    """
    p = _float64(probs, "probs")
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise UserError(f"probs must have shape (N, K) with N >= 1 and K >= 2 classes, got {p.shape}")
    if p.min() < 0 or not np.allclose(p.sum(1), 1.0, atol=1e-3):
        raise UserError("probs rows must be probabilities summing to 1; apply softmax to logits first")
    counts = np.bincount(p.argmax(1), minlength=p.shape[1])
    freq = counts[counts > 0] / len(p)                 # 0 log 0 = 0
    return {"confidence": float(p.max(1).mean()), "histogram": counts.tolist(),
            "diversity": float(-(freq * np.log(freq)).sum() / np.log(p.shape[1]))}
