"""vislab.generative.losses against torch.distributions, torch's binary cross-entropies and
values computed by hand, and the notes' claim that the minimax generator loss saturates."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from vislab.errors import UserError
from vislab.generative.losses import (
    discriminator_loss,
    generator_loss,
    kl_standard_normal,
    l1_sparsity,
    reconstruction_error,
    reconstruction_loss,
    vae_loss,
)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def test_kl_matches_torch_distributions(gen):
    mu = torch.randn(7, 5, generator=gen, dtype=torch.float64) * 2
    logvar = torch.randn(7, 5, generator=gen, dtype=torch.float64) * 1.5
    ref = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(1)
    out = kl_standard_normal(mu, logvar)
    assert out.shape == (7,)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    # float32 too, and zero exactly at the prior
    torch.testing.assert_close(kl_standard_normal(mu.float(), logvar.float()), ref.float(), rtol=1e-5, atol=1e-5)
    assert torch.equal(kl_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3))


def test_discriminator_loss_is_the_bce(gen):
    real = torch.randn(6, generator=gen) * 3
    fake = torch.randn(10, generator=gen) * 3
    ref = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
           + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    torch.testing.assert_close(discriminator_loss(real, fake), ref)
    # stable where sigmoid saturates: a perfect discriminator has loss ~0, not nan
    assert float(discriminator_loss(torch.full((4,), 200.0), torch.full((4,), -200.0))) == pytest.approx(0, abs=1e-30)
    assert float(discriminator_loss(torch.zeros(4), torch.zeros(4))) == pytest.approx(2 * math.log(2))


def test_generator_losses(gen):
    fake = torch.randn(9, generator=gen) * 2                  # moderate logits
    torch.testing.assert_close(generator_loss(fake, "non_saturating"),
                               F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake)))
    torch.testing.assert_close(generator_loss(fake), generator_loss(fake, "non_saturating"))
    torch.testing.assert_close(generator_loss(fake, "saturating"), torch.log(1 - torch.sigmoid(fake)).mean())
    with pytest.raises(UserError, match="unknown generator loss"):
        generator_loss(fake, "wasserstein")


def test_saturating_loss_has_a_vanishing_gradient_where_d_rejects():
    """The notes: early in training D rejects the samples confidently (logit -8, D(G(z)) ~ 3e-4);
    ``log(1 - D(G(z)))`` is then flat, while ``-log D(G(z))`` still gives a strong gradient.
    Both push the logits up."""
    grads = {}
    for form in ("saturating", "non_saturating"):
        fake = torch.full((16,), -8.0, requires_grad=True)
        generator_loss(fake, form).backward()
        grads[form] = fake.grad
        assert (fake.grad < 0).all()                           # descent raises D(G(z))
    ratio = grads["non_saturating"].abs() / grads["saturating"].abs()
    assert (ratio >= 100).all(), ratio
    # by hand: d/da softplus(-a) = -sigmoid(-a), d/da -softplus(a) = -sigmoid(a), over the 16 samples
    torch.testing.assert_close(grads["saturating"], torch.full((16,), -torch.sigmoid(torch.tensor(-8.0)).item() / 16))
    torch.testing.assert_close(grads["non_saturating"], torch.full((16,), -torch.sigmoid(torch.tensor(8.0)).item() / 16))
    # where D accepts (logit +8) it is the other way round
    a = torch.full((4,), 8.0, requires_grad=True)
    generator_loss(a, "saturating").backward()
    b = torch.full((4,), 8.0, requires_grad=True)
    generator_loss(b, "non_saturating").backward()
    assert (a.grad.abs() > 100 * b.grad.abs()).all()


def test_reconstruction_loss_by_hand():
    # logits 0: every pixel 0.5; target 0: each 2x2 image's error norm is sqrt(4 * 0.25) = 1
    logits, target = torch.zeros(3, 1, 2, 2), torch.zeros(3, 1, 2, 2)
    assert float(reconstruction_loss(logits, target, "l2")) == pytest.approx(1.0)
    assert float(reconstruction_loss(logits, target, "mse")) == pytest.approx(0.25)
    assert float(reconstruction_loss(logits, target, "bce")) == pytest.approx(math.log(2))


def test_reconstruction_loss_kinds(gen):
    logits = torch.randn(4, 3, 5, 6, generator=gen) * 2
    x = torch.rand(4, 3, 5, 6, generator=gen)
    img = torch.sigmoid(logits)
    l2 = sum(torch.sqrt(((img[i] - x[i]) ** 2).sum()) for i in range(4)) / 4
    torch.testing.assert_close(reconstruction_loss(logits, x, "l2"), l2)
    torch.testing.assert_close(reconstruction_loss(logits, x), l2)          # the default is the notes' l2
    torch.testing.assert_close(reconstruction_loss(logits, x, "mse"), F.mse_loss(img, x))
    torch.testing.assert_close(reconstruction_loss(logits, x, "bce"), F.binary_cross_entropy_with_logits(logits, x))
    # the per-image errors agree with the batch losses
    for kind in ("l2", "mse", "bce"):
        err = reconstruction_error(img, x, kind)
        assert err.shape == (4,)
        torch.testing.assert_close(err.mean(), reconstruction_loss(logits, x, kind), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reconstruction_error(img, x, "mse"), ((img - x) ** 2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(reconstruction_error(img, x, "bce"),
                               F.binary_cross_entropy(img, x, reduction="none").mean(dim=(1, 2, 3)))
    # bce of saturated images stays finite (clamped), from logits exact
    assert torch.isfinite(reconstruction_error(torch.ones(2, 4), torch.zeros(2, 4), "bce")).all()
    assert torch.isfinite(reconstruction_loss(torch.full((2, 4), 500.0), torch.zeros(2, 4), "bce"))


@pytest.mark.parametrize("kind", ["l1", "L2", ""])
def test_unknown_reconstruction_kind_raises(kind):
    with pytest.raises(UserError, match="unknown reconstruction error"):
        reconstruction_loss(torch.zeros(2, 4), torch.zeros(2, 4), kind)
    with pytest.raises(UserError, match="unknown reconstruction error"):
        reconstruction_error(torch.zeros(2, 4), torch.zeros(2, 4), kind)


def test_l1_sparsity():
    z = torch.tensor([[1.0, -2.0], [0.0, 3.0]])
    assert float(l1_sparsity(z)) == pytest.approx(1.5)


@pytest.mark.parametrize("beta", [1.0, 0.25, 4.0])
def test_vae_loss(gen, beta):
    logits = torch.randn(5, 1, 4, 4, generator=gen, dtype=torch.float64) * 2
    x = torch.rand(5, 1, 4, 4, generator=gen, dtype=torch.float64)
    mu = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    logvar = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    nll = torch.stack([F.binary_cross_entropy_with_logits(logits[i], x[i], reduction="sum") for i in range(5)])
    kl = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(1)
    torch.testing.assert_close(vae_loss(logits, x, mu, logvar, beta), (nll + beta * kl).mean())
    if beta == 1.0:
        torch.testing.assert_close(vae_loss(logits, x, mu, logvar), (nll + kl).mean())
