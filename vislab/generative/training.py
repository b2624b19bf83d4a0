"""One training step per model kind, for the engine's ``Trainer(step_fn=...)``.

Each step returns detached scalars: ``loss`` and the terms the log shows.  The GAN steps follow
the notes' alternating updates (003, "GAN training"): ``d_steps`` discriminator updates on the
batch's real images against fresh generated ones (the generator untouched: its output is made
without gradients), then one generator update through the discriminator (the discriminator
frozen: its parameters get no gradient, so the one optimizer leaves them as they are).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from vislab.config import GenerativeConfig
from vislab.generative.losses import (
    discriminator_loss,
    generator_loss,
    kl_standard_normal,
    l1_sparsity,
    reconstruction_loss,
    vae_loss,
)

StepFn = Callable[..., dict[str, Tensor]]


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """``requires_grad=False`` on ``module``'s parameters inside the block (restored after)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


def ae_objective(g: GenerativeConfig) -> Callable[[object, Tensor], tuple[Tensor, Tensor]]:
    """``(output, clean images) -> (loss, reconstruction term)`` of an autoencoder: the
    reconstruction loss ``generative.recon_loss`` plus ``reg_weight`` times the L1 of the code
    when ``latent_reg=l1``."""
    def objective(out, x: Tensor) -> tuple[Tensor, Tensor]:
        rec = reconstruction_loss(out.logits.float(), x, g.recon_loss)
        reg = g.reg_weight * l1_sparsity(out.z.float()) if g.latent_reg == "l1" else 0.0
        return rec + reg, rec
    return objective


def ae_step(g: GenerativeConfig) -> StepFn:
    """Reconstruct the batch (from a noisy copy when ``latent_reg=denoise``: the denoising AE)."""
    objective = ae_objective(g)

    def step(t, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        inp = x + g.noise_std * torch.randn_like(x) if g.latent_reg == "denoise" else x
        with t.autocast():
            loss, rec = objective(t.model(inp), x)
        t.optimize(loss)
        return {"loss": loss.detach(), "recon": rec.detach()}
    return step


def vae_step(g: GenerativeConfig) -> StepFn:
    """Minimise the negative ELBO: the pixels' Bernoulli negative log-likelihood + beta KL."""
    def step(t, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        with t.autocast():
            out = t.model(x)
            loss = vae_loss(out.logits.float(), x, out.mu.float(), out.logvar.float(), g.beta)
        t.optimize(loss)
        return {"loss": loss.detach(), "kl": kl_standard_normal(out.mu, out.logvar).mean().detach()}
    return step


def gan_step(g: GenerativeConfig) -> StepFn:
    """DCGAN: ``d_steps`` discriminator updates, then one generator update."""
    def step(t, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        gen, disc = t.model.generator, t.model.discriminator
        for _ in range(g.d_steps):
            z = torch.randn(len(x), t.model.latent_dim, device=x.device)
            with torch.no_grad(), t.autocast():
                fake = gen(z)
            with t.autocast():
                real_logits, fake_logits = disc(x).float(), disc(fake).float()
                d_loss = discriminator_loss(real_logits, fake_logits)
            t.optimize(d_loss)
        z = torch.randn(len(x), t.model.latent_dim, device=x.device)
        with frozen(disc), t.autocast():
            g_logits = disc(gen(z)).float()
            g_loss = generator_loss(g_logits, g.generator_loss)
        t.optimize(g_loss)
        return {"loss": (d_loss + g_loss).detach(), "d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
                "d_real": torch.sigmoid(real_logits).mean().detach(),
                "d_fake": torch.sigmoid(fake_logits).mean().detach()}
    return step


def bigan_step(g: GenerativeConfig) -> StepFn:
    """BiGAN: the discriminator tells real pairs ``(s, E(s))`` from fake ones ``(G(z), z)``;
    then encoder and generator together make it wrong (labels swapped: the generator's loss on
    the fake pairs, the same loss on the real pairs' negated logits, since
    ``1 - sigmoid(a) = sigmoid(-a)``)."""
    def step(t, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        m = t.model
        for _ in range(g.d_steps):
            z = torch.randn(len(x), m.latent_dim, device=x.device)
            with torch.no_grad(), t.autocast():
                ez, gz = m.encoder(x), m.generator(z)
            with t.autocast():
                real_logits, fake_logits = m.discriminator(x, ez).float(), m.discriminator(gz, z).float()
                d_loss = discriminator_loss(real_logits, fake_logits)
            t.optimize(d_loss)
        z = torch.randn(len(x), m.latent_dim, device=x.device)
        with frozen(m.discriminator), t.autocast():
            real = m.discriminator(x, m.encoder(x)).float()
            fake = m.discriminator(m.generator(z), z).float()
            eg_loss = generator_loss(fake, g.generator_loss) + generator_loss(-real, g.generator_loss)
        t.optimize(eg_loss)
        return {"loss": (d_loss + eg_loss).detach(), "d_loss": d_loss.detach(), "g_loss": eg_loss.detach(),
                "d_real": torch.sigmoid(real_logits).mean().detach(),
                "d_fake": torch.sigmoid(fake_logits).mean().detach()}
    return step


STEPS = {"ae": ae_step, "vae": vae_step, "gan": gan_step, "bigan": bigan_step}


def step_for(kind: str, g: GenerativeConfig) -> StepFn:
    """The training step of a model kind (``model.kind``)."""
    return STEPS[kind](g)


__all__ = ["STEPS", "ae_objective", "ae_step", "bigan_step", "frozen", "gan_step", "step_for", "vae_step"]
