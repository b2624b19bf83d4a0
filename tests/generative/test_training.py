"""vislab.generative.training: each GAN half moves its own player the right way and leaves the
other untouched (``no_grad`` for the generator in the discriminator's update, ``frozen`` for
the discriminator in the generator's), BiGAN's step, the denoising AE's clean target, and the
Trainer's per-term epoch means from a ``step_fn``."""

import math

import pytest
import torch
from torch import nn

from tests.models.test_fcn import one_thread  # noqa: F401  (fixture)
from vislab.config import GenerativeConfig
from vislab.engine.trainer import Trainer
from vislab.generative.losses import (
    discriminator_loss,
    generator_loss,
    kl_standard_normal,
    l1_sparsity,
    reconstruction_loss,
)
from vislab.generative.training import (
    STEPS,
    ae_step,
    bigan_step,
    frozen,
    gan_step,
    step_for,
    vae_step,
)
from vislab.models.generative import bigan, conv_ae, dcgan, vae

pytestmark = pytest.mark.usefixtures("one_thread")


class Loader:
    """The least a Trainer needs of a loader: batches, a length and a generator."""

    def __init__(self, batches):
        self.batches, self.gen = list(batches), torch.Generator()

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class Recorder(Trainer):
    """The real :meth:`Trainer.optimize`, with ``before(loss)`` and ``after()`` around each call."""

    def __init__(self, *args, before=None, after=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.before, self.after, self.calls = before, after, 0

    def optimize(self, loss):
        if self.before:
            self.before(self.calls, loss)
        super().optimize(loss)
        if self.after:
            self.after(self.calls)
        self.calls += 1


def trainer(model, step_fn, batches, lr=1e-3, **kwargs):
    return Recorder(model, torch.optim.Adam(model.parameters(), lr=lr), None, Loader(batches), max_epochs=1,
                    log=lambda s: None, step_fn=step_fn, **kwargs)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in module.named_parameters()}


def same(module: nn.Module, snap: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(p, snap[k]) for k, p in module.named_parameters())


def all_changed(module: nn.Module, snap: dict[str, torch.Tensor]) -> bool:
    return all(not torch.equal(p, snap[k]) for k, p in module.named_parameters())


def adam_steps(opt: torch.optim.Optimizer, module: nn.Module) -> set:
    """The Adam step counts of ``module``'s parameters (0: no state, never stepped)."""
    return {int(opt.state[p]["step"]) if p in opt.state else 0 for p in module.parameters()}


@pytest.mark.parametrize("form", ["non_saturating", "saturating"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gan_step_moves_each_player_and_leaves_the_other(seed, form):
    torch.manual_seed(seed)
    model = dcgan(in_chans=1, img_size=16, latent_dim=8, width=8)
    gen, disc = model.generator, model.discriminator
    x = torch.rand(8, 1, 16, 16)
    cfg = GenerativeConfig(generator_loss=form)
    # The step draws the discriminator's z, then the generator's: the same draws here.
    torch.manual_seed(100 + seed)
    z_d, z_g = torch.randn(8, 8), torch.randn(8, 8)
    with torch.no_grad():
        fake = gen.train()(z_d)

    def d_loss():
        with torch.no_grad():
            return float(discriminator_loss(disc(x), disc(fake)))

    def g_loss():
        with torch.no_grad():
            return float(generator_loss(disc(gen(z_g)), form))

    seen = {}

    def before(call, loss):
        seen[call] = {"g": snapshot(gen), "d": snapshot(disc)}
        measure = d_loss if call == 0 else g_loss
        seen[call]["loss"] = measure()
        # the batches measured here are the step's own
        assert float(loss.detach()) == pytest.approx(seen[call]["loss"], rel=1e-5, abs=1e-6)

    def after(call):
        s, opt = seen[call], t.optimizer
        if call == 0:                                          # the discriminator's update
            assert d_loss() < s["loss"]
            assert same(gen, s["g"]) and all_changed(disc, s["d"])
            assert all(p.grad is None for p in gen.parameters())
            assert adam_steps(opt, gen) == {0} and adam_steps(opt, disc) == {1}
        else:                                                  # the generator's
            assert g_loss() < s["loss"]
            assert same(disc, s["d"]) and all_changed(gen, s["g"])
            assert all(p.grad is None for p in disc.parameters())
            assert adam_steps(opt, gen) == {1} and adam_steps(opt, disc) == {1}
            assert all(p.requires_grad for p in disc.parameters())   # frozen() undone

    t = trainer(model, gan_step(cfg), [(x, torch.zeros(8))], before=before, after=after)
    torch.manual_seed(100 + seed)
    t.run_epoch()
    assert t.calls == 2
    m = t.epoch_metrics
    assert {"train_loss", "train_d_loss", "train_g_loss", "train_d_real", "train_d_fake"} <= set(m)
    assert m["train_d_loss"] == pytest.approx(seen[0]["loss"], rel=1e-5)
    assert m["train_g_loss"] == pytest.approx(seen[1]["loss"], rel=1e-5)
    assert m["train_loss"] == pytest.approx(m["train_d_loss"] + m["train_g_loss"], rel=1e-5)
    assert 0 < m["train_d_real"] < 1 and 0 < m["train_d_fake"] < 1


def test_gan_d_steps():
    """``d_steps=3``: three discriminator updates (the generator never stepped), then one."""
    torch.manual_seed(0)
    model = dcgan(in_chans=1, img_size=8, latent_dim=4, width=4)
    steps = []
    t = trainer(model, gan_step(GenerativeConfig(d_steps=3)), [(torch.rand(4, 1, 8, 8), torch.zeros(4))],
                after=lambda call: steps.append((adam_steps(t.optimizer, model.generator),
                                                 adam_steps(t.optimizer, model.discriminator))))
    t.run_epoch()
    assert steps == [({0}, {1}), ({0}, {2}), ({0}, {3}), ({1}, {3})]


def test_frozen_restores_requires_grad():
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    m[0].bias.requires_grad_(False)
    flags = [p.requires_grad for p in m.parameters()]
    assert flags == [True, False, True, True]
    with frozen(m):
        assert not any(p.requires_grad for p in m.parameters())
        out = m(torch.randn(2, 3)).sum()
        assert not out.requires_grad
    assert [p.requires_grad for p in m.parameters()] == flags
    with pytest.raises(RuntimeError, match="boom"), frozen(m):
        raise RuntimeError("boom")
    assert [p.requires_grad for p in m.parameters()] == flags
    # inputs that need a gradient still get one through a frozen module
    x = torch.randn(2, 3, requires_grad=True)
    with frozen(m):
        m(x).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in m.parameters())


def test_bigan_step():
    torch.manual_seed(0)
    model = bigan(in_chans=1, img_size=16, latent_dim=8, width=8)
    enc, gen, disc = model.encoder, model.generator, model.discriminator
    x = torch.rand(6, 1, 16, 16)
    seen = {}

    def before(call, loss):
        seen[call] = (snapshot(enc), snapshot(gen), snapshot(disc), float(loss.detach()))

    def after(call):
        e, g, d, _ = seen[call]
        if call == 0:
            assert same(enc, e) and same(gen, g) and not same(disc, d)
        else:
            assert same(disc, d) and not same(enc, e) and not same(gen, g)
            assert all(p.requires_grad for p in disc.parameters())

    t = trainer(model, bigan_step(GenerativeConfig()), [(x, torch.zeros(6))], before=before, after=after)
    t.run_epoch()
    assert t.calls == 2
    m = t.epoch_metrics
    assert all(math.isfinite(m[k]) for k in ("train_loss", "train_d_loss", "train_g_loss"))
    assert m["train_d_loss"] == pytest.approx(seen[0][3], rel=1e-5)
    assert m["train_g_loss"] == pytest.approx(seen[1][3], rel=1e-5)
    model.eval()
    with torch.no_grad():
        assert model.encode(x).shape == (6, 8)
        rec = model.reconstruct(x)
    assert rec.shape == x.shape and rec.min() >= 0 and rec.max() <= 1


class Spy(nn.Module):
    """Records what the wrapped model is given and gives back."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.inputs, self.outputs = model, [], []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        out = self.model(x)
        self.outputs.append(out)
        return out


@pytest.mark.parametrize("recon", ["l2", "mse", "bce"])
def test_denoising_ae_reconstructs_the_clean_image(recon):
    torch.manual_seed(0)
    spy = Spy(conv_ae(img_size=16, latent_dim=4, width=4))
    x = torch.rand(8, 1, 16, 16)
    cfg = GenerativeConfig(latent_reg="denoise", noise_std=0.3, recon_loss=recon)
    losses = []
    t = trainer(spy, ae_step(cfg), [(x, torch.zeros(8))], before=lambda c, loss: losses.append(float(loss.detach())))
    t.run_epoch()
    (inp,), (out,) = spy.inputs, spy.outputs
    noise = inp - x
    assert not torch.equal(inp, x)
    assert float(noise.std()) == pytest.approx(0.3, rel=0.1) and abs(float(noise.mean())) < 0.05
    clean = float(reconstruction_loss(out.logits.detach(), x, recon))
    noisy = float(reconstruction_loss(out.logits.detach(), inp, recon))
    assert losses == [pytest.approx(clean, rel=1e-6)] and clean != pytest.approx(noisy, rel=1e-3)
    assert t.epoch_metrics["train_recon"] == pytest.approx(clean, rel=1e-6)


def test_plain_and_sparse_ae_steps():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 16, 16)
    spy = Spy(conv_ae(img_size=16, latent_dim=4, width=4))
    t = trainer(spy, ae_step(GenerativeConfig()), [(x, torch.zeros(4))])
    t.run_epoch()
    assert torch.equal(spy.inputs[0], x)                       # no noise without denoise
    cfg = GenerativeConfig(latent_reg="l1", reg_weight=0.5)
    spy = Spy(conv_ae(img_size=16, latent_dim=4, width=4))
    losses = []
    t = trainer(spy, ae_step(cfg), [(x, torch.zeros(4))], before=lambda c, loss: losses.append(float(loss.detach())))
    t.run_epoch()
    out = spy.outputs[0]
    rec = float(reconstruction_loss(out.logits.detach(), x, "l2"))
    assert losses[0] == pytest.approx(rec + 0.5 * float(l1_sparsity(out.z.detach())), rel=1e-6)
    assert t.epoch_metrics["train_recon"] == pytest.approx(rec, rel=1e-6)


def test_vae_step():
    torch.manual_seed(0)
    spy = Spy(vae(img_size=16, latent_dim=3, width=4))
    x = torch.rand(4, 1, 16, 16)
    t = trainer(spy, vae_step(GenerativeConfig(beta=2.0)), [(x, torch.zeros(4))])
    t.run_epoch()
    out = spy.outputs[0]
    kl = float(kl_standard_normal(out.mu.detach(), out.logvar.detach()).mean())
    assert t.epoch_metrics["train_kl"] == pytest.approx(kl, rel=1e-6)
    assert math.isfinite(t.epoch_metrics["train_loss"])


def test_step_for():
    assert set(STEPS) == {"ae", "vae", "gan", "bigan"}
    for kind in STEPS:
        assert callable(step_for(kind, GenerativeConfig()))


def test_trainer_logs_batch_weighted_means_of_the_step_terms():
    model = nn.Linear(2, 1)
    sizes = [4, 2, 3]
    values = {4: (1.0, 10.0, -1.0), 2: (2.0, 20.0, 5.0), 3: (4.0, 40.0, 0.5)}   # loss, foo, bar per batch size

    def step(t, x, y):
        loss, foo, bar = values[len(x)]
        t.optimize(model(x).pow(2).mean())                     # a real update, not what is logged
        return {"loss": torch.tensor(loss), "foo": torch.tensor(foo), "bar": torch.tensor(bar)}

    t = trainer(model, step, [(torch.randn(n, 2), torch.zeros(n)) for n in sizes])
    t.run_epoch()
    n = sum(sizes)
    expect = {k: sum(values[s][i] * s for s in sizes) / n for i, k in enumerate(("loss", "foo", "bar"))}
    m = t.epoch_metrics
    assert set(m) == {"train_loss", "train_foo", "train_bar"}            # no accuracy without correct_fn
    for k, v in expect.items():
        assert m[f"train_{k}"] == pytest.approx(v, rel=1e-6)
    assert m["train_loss"] == pytest.approx(20 / 9) and m["train_foo"] == pytest.approx(200 / 9)
    assert t.step == 3 and t.seen == 9 and t.calls == 3 and t.epoch == 1
    # a second epoch starts its means afresh
    values.update({4: (0.0, 1.0, 1.0), 2: (0.0, 1.0, 1.0), 3: (0.0, 1.0, 1.0)})
    t.run_epoch()
    assert t.epoch_metrics["train_foo"] == pytest.approx(1.0) and t.epoch_metrics["train_loss"] == 0
