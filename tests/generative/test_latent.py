"""vislab.generative.latent: the fitted Gaussian against numpy's covariance and
torch.distributions.MultivariateNormal, its samples' statistics, and interpolation."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal

from vislab.errors import UserError
from vislab.generative.latent import Gaussian, interpolate


def codes(n: int = 200, d: int = 4, seed: int = 0) -> torch.Tensor:
    """Correlated codes ``(n, d)`` with a non-zero mean."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g)
    return torch.randn(n, d, generator=g) @ a.T + torch.arange(d, dtype=torch.float32)


@pytest.mark.parametrize("ridge", [1e-5, 0.1, 0.0])
def test_fit_matches_numpy(ridge):
    z = codes()
    g = Gaussian.fit(z, ridge=ridge)
    zn = z.double().numpy()
    cov = np.cov(zn.T, bias=True)                               # maximum likelihood: divide by N
    cov = cov + ridge * cov.diagonal().mean() * np.eye(4)        # the documented ridge
    np.testing.assert_allclose(g.mean.numpy(), zn.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.cov.numpy(), cov, rtol=1e-12, atol=1e-12)
    assert g.dim == 4 and g.mean.dtype == torch.float64


def test_fit_default_ridge_and_one_dimension():
    z = codes()
    zn = z.double().numpy()
    cov = np.cov(zn.T, bias=True)
    np.testing.assert_allclose(Gaussian.fit(z).cov.numpy(), cov + 1e-5 * cov.diagonal().mean() * np.eye(4),
                               rtol=1e-12, atol=1e-12)
    one = Gaussian.fit(z[:, :1])                                 # d = 1: torch.cov gives a scalar
    assert one.cov.shape == (1, 1)
    assert float(one.cov[0, 0]) == pytest.approx(float(zn[:, 0].var()) * (1 + 1e-5), rel=1e-12)


def test_degenerate_codes_still_have_a_density():
    z = codes(d=3)
    z[:, 2] = 1.5                                                # a dead unit: zero variance
    g = Gaussian.fit(z)
    assert torch.isfinite(g.log_prob(z)).all()
    assert torch.isfinite(Gaussian.fit(torch.zeros(5, 2)).log_prob(torch.zeros(1, 2))).all()  # all equal


def test_log_prob_matches_multivariate_normal():
    g = Gaussian.fit(codes(), ridge=1e-3)
    x = codes(n=50, seed=1) * 1.5
    ref = MultivariateNormal(g.mean, covariance_matrix=g.cov).log_prob(x.double())
    out = g.log_prob(x)
    assert out.shape == (50,) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-4)


def test_standard():
    s = Gaussian.standard(5)
    assert torch.equal(s.mean, torch.zeros(5, dtype=torch.float64)) and torch.equal(s.cov, torch.eye(5).double())
    assert float(s.log_prob(torch.zeros(1, 5))[0]) == pytest.approx(-2.5 * math.log(2 * math.pi), rel=1e-6)
    z = torch.randn(20, 5)
    ref = MultivariateNormal(torch.zeros(5), torch.eye(5)).log_prob(z)
    torch.testing.assert_close(s.log_prob(z), ref, rtol=1e-5, atol=1e-5)


def test_sample_statistics():
    g = Gaussian.fit(codes(d=3), ridge=0.0)
    s = g.sample(100_000, gen=torch.Generator().manual_seed(0))
    assert s.shape == (100_000, 3) and s.dtype == torch.float32
    sd = g.cov.diagonal().sqrt()
    # mean: standard error sd / sqrt(1e5) ~ 0.003 sd; covariance: ~0.005 sd_i sd_j
    assert ((s.double().mean(0) - g.mean).abs() < 0.02 * sd).all()
    emp = torch.from_numpy(np.cov(s.double().numpy().T, bias=True))
    assert ((emp - g.cov).abs() < 0.03 * torch.outer(sd, sd)).all(), (emp, g.cov)
    # reproducible from the generator
    a = g.sample(7, gen=torch.Generator().manual_seed(3))
    b = g.sample(7, gen=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("bad", [torch.zeros(1, 3), torch.zeros(0, 3), torch.zeros(10)])
def test_fit_needs_two_codes(bad):
    with pytest.raises(UserError, match="at least 2 codes"):
        Gaussian.fit(bad)


def test_interpolate():
    z0, z1 = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([4.0, -2.0, 1.0])
    path = interpolate(z0, z1, 5)
    assert path.shape == (5, 3) and path.dtype == z0.dtype
    assert torch.equal(path[0], z0) and torch.equal(path[-1], z1)
    torch.testing.assert_close(path[2], (z0 + z1) / 2)
    torch.testing.assert_close(path[1], 0.75 * z0 + 0.25 * z1)
    torch.testing.assert_close(path[3], 0.25 * z0 + 0.75 * z1)
    torch.testing.assert_close(path.diff(dim=0), ((z1 - z0) / 4).expand(4, 3))   # evenly spaced
    two = interpolate(z0.double(), z1.double(), 2)
    assert two.dtype == torch.float64 and torch.equal(two, torch.stack([z0, z1]).double())
