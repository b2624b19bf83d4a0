"""The losses of the generative family, each as the notes write it.

- Reconstruction (003, "Autoencoders"): ``l(S) = sum_s ||s - D(E(s))||_2``, the L2 norm of each
  image's error (``"l2"``, averaged over the batch rather than summed, so the rate does not
  depend on the batch size); the squared error per pixel (``"mse"``); or the binary
  cross-entropy of the pixels as Bernoulli probabilities (``"bce"``, the VAE's usual likelihood).
- The latent regulariser ``lambda R``: an L1 penalty on the code (a sparse AE).
- The VAE's KL term ``KL(N(mu, sigma^2) || N(0, I))`` in closed form.
- The GAN's discriminator loss: the binary cross-entropy of real images labelled 1 and generated
  ones labelled 0.  The generator's: the minimax ``log(1 - D(G(z)))`` it minimises
  (``"saturating"``, flat when ``D`` rejects the samples early in training), or the notes'
  alternative, maximising ``log D(G(z))`` (``"non_saturating"``).
All take logits and are computed with ``softplus`` (``-log sigmoid(a) = softplus(-a)``), stable
where ``sigmoid`` saturates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vislab.errors import UserError

RECONSTRUCTION = ("l2", "mse", "bce")
GENERATOR_LOSSES = ("non_saturating", "saturating")


def reconstruction_error(images: Tensor, target: Tensor, kind: str = "mse") -> Tensor:
    """Per-image error ``(B,)`` between reconstructed images on ``[0, 1]`` and the target:
    the L2 norm (``"l2"``), the mean squared error over the pixels (``"mse"``) or the mean
    binary cross-entropy over the pixels (``"bce"``)."""
    if kind == "l2":
        return (images - target).flatten(1).norm(dim=1)
    if kind == "mse":
        return (images - target).pow(2).flatten(1).mean(dim=1)
    if kind == "bce":
        return F.binary_cross_entropy(images.clamp(1e-6, 1 - 1e-6), target, reduction="none").flatten(1).mean(dim=1)
    raise UserError(f"unknown reconstruction error {kind!r}: use one of {', '.join(RECONSTRUCTION)}")


def reconstruction_loss(logits: Tensor, target: Tensor, kind: str = "l2") -> Tensor:
    """The batch's mean reconstruction loss from the decoder's logits (``sigmoid(logits)`` is
    the image); ``"bce"`` is computed from the logits directly."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(dim=1).mean()
    return reconstruction_error(torch.sigmoid(logits), target, kind).mean()


def l1_sparsity(z: Tensor) -> Tensor:
    """``R = mean_s ||E(s)||_1 / d``: the L1 penalty that makes the code sparse."""
    return z.abs().mean()


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, diag(exp(logvar))) || N(0, I))`` per sample ``(B,)``:
    ``-1/2 sum(1 + logvar - mu^2 - exp(logvar))``."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


def vae_loss(logits: Tensor, target: Tensor, mu: Tensor, logvar: Tensor, beta: float = 1.0) -> Tensor:
    """The negative ELBO per image, averaged over the batch: the Bernoulli negative
    log-likelihood of the pixels (summed over them) plus ``beta`` times the KL term."""
    nll = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(dim=1)
    return (nll + beta * kl_standard_normal(mu, logvar)).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """``-[log D(s) + log(1 - D(G(z)))]``, each term averaged over its half of the batch: the
    binary cross-entropy the discriminator minimises (it maximises the notes' objective)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor, form: str = "non_saturating") -> Tensor:
    """What the generator minimises: ``-log D(G(z))`` (``"non_saturating"``) or the minimax
    ``log(1 - D(G(z)))`` (``"saturating"``)."""
    if form == "non_saturating":
        return F.softplus(-fake_logits).mean()
    if form == "saturating":
        return -F.softplus(fake_logits).mean()
    raise UserError(f"unknown generator loss {form!r}: use one of {', '.join(GENERATOR_LOSSES)}")


__all__ = ["GENERATOR_LOSSES", "RECONSTRUCTION", "discriminator_loss", "generator_loss", "kl_standard_normal",
           "l1_sparsity", "reconstruction_error", "reconstruction_loss", "vae_loss"]
