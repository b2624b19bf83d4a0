"""The latent space: the Gaussian fitted to an autoencoder's training codes (what sampling
draws from when the AE has no prior of its own, 003 "Sampling the Latent Space"), the standard
normal of the VAE and the GANs, likelihoods under them, and interpolation between two codes."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vislab.errors import UserError


class Gaussian:
    """A multivariate normal ``N(mean, cov)`` in ``d`` dimensions."""

    def __init__(self, mean: Tensor, cov: Tensor) -> None:
        self.mean, self.cov = mean.double(), cov.double()
        self._chol = torch.linalg.cholesky(self.cov)

    @classmethod
    def standard(cls, d: int) -> Gaussian:
        return cls(torch.zeros(d), torch.eye(d))

    @classmethod
    def fit(cls, z: Tensor, ridge: float = 1e-5) -> Gaussian:
        """Maximum-likelihood mean and covariance of codes ``(N, d)``; ``ridge`` times the mean
        variance is added to the diagonal so that a degenerate code still has a density."""
        if z.ndim != 2 or len(z) < 2:
            raise UserError(f"fitting a Gaussian needs at least 2 codes of shape (N, d), got {tuple(z.shape)}")
        z = z.double()
        mean = z.mean(dim=0)
        cov = torch.cov(z.T, correction=0).reshape(z.shape[1], z.shape[1])
        cov = cov + ridge * max(float(cov.diagonal().mean()), 1e-12) * torch.eye(z.shape[1], dtype=cov.dtype)
        return cls(mean, cov)

    @property
    def dim(self) -> int:
        return len(self.mean)

    def sample(self, n: int, gen: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``(n, d)`` as float32."""
        eps = torch.randn(n, self.dim, generator=gen, dtype=torch.float64)
        return (self.mean + eps @ self._chol.T).float()

    def log_prob(self, z: Tensor) -> Tensor:
        """Log-density of each code ``(N,)``."""
        diff = (z.double() - self.mean).T
        sol = torch.linalg.solve_triangular(self._chol, diff, upper=False)
        logdet = 2 * self._chol.diagonal().log().sum()
        return (-0.5 * (sol.pow(2).sum(dim=0) + logdet + self.dim * math.log(2 * math.pi))).float()


def interpolate(z0: Tensor, z1: Tensor, steps: int) -> Tensor:
    """``steps`` codes on the segment from ``z0`` to ``z1`` (both ends included), ``(steps, d)``."""
    t = torch.linspace(0, 1, steps, dtype=z0.dtype, device=z0.device).unsqueeze(1)
    return (1 - t) * z0.unsqueeze(0) + t * z1.unsqueeze(0)


__all__ = ["Gaussian", "interpolate"]
