"""The generative models (003, "Autoencoders", "GANs", "BiGANs"): output shapes and ranges of
every factory, the VAE's reparameterisation (train mode samples, eval mode takes the mean, and
the gradient reaches the log-variance through the sample), the encoder classifier sharing the
autoencoder's parameter names, DCGAN's initialisation, the registry, and an AE that learns a
few images."""

import pytest
import torch
import torch.nn.functional as F

from tests.models.test_fcn import one_thread  # noqa: F401  (fixture)
from vislab.generative.losses import reconstruction_loss
from vislab.models.generative import (
    AEOutput,
    VAEOutput,
    bigan,
    conv_ae,
    conv_ae_encoder,
    dcgan,
    dense_ae,
    dense_ae_encoder,
    init_dcgan,
    vae,
)
from vislab.models.registry import create_model, list_models, model_kind

pytestmark = pytest.mark.usefixtures("one_thread")

FACTORIES = {"dense_ae": dense_ae, "conv_ae": conv_ae, "vae": vae, "dcgan": dcgan, "bigan": bigan}
SIZES = [(1, 28), (3, 28), (1, 32), (3, 32)]
B = 3


@pytest.mark.parametrize("in_chans,img_size", SIZES)
@pytest.mark.parametrize("name", ["dense_ae", "conv_ae"])
def test_autoencoder_shapes(name, in_chans, img_size):
    model = FACTORIES[name](in_chans=in_chans, img_size=img_size, latent_dim=8)
    assert model.kind == "ae"
    x = torch.rand(B, in_chans, img_size, img_size)
    for mode in (True, False):
        model.train(mode)
        out = model(x)
        assert isinstance(out, AEOutput)
        assert out.logits.shape == (B, in_chans, img_size, img_size) and out.z.shape == (B, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x), out.z)
        assert model.reconstruct(x).shape == x.shape
        torch.testing.assert_close(model.reconstruct(x), torch.sigmoid(out.logits))


@pytest.mark.parametrize("in_chans,img_size", SIZES)
def test_vae_shapes_and_modes(in_chans, img_size):
    model = vae(in_chans=in_chans, img_size=img_size, latent_dim=6)
    assert model.kind == "vae"
    x = torch.rand(B, in_chans, img_size, img_size)
    out = model.train()(x)
    assert isinstance(out, VAEOutput)
    assert out.logits.shape == x.shape
    assert out.mu.shape == out.logvar.shape == out.z.shape == (B, 6)
    assert not torch.allclose(out.z, out.mu)                  # training decodes a sample
    out = model.eval()(x)
    assert torch.equal(out.z, out.mu)                         # eval mode decodes the mean
    torch.testing.assert_close(model.encode(x), out.mu)
    assert model.reconstruct(x).shape == x.shape


@pytest.mark.parametrize("in_chans,img_size", SIZES)
def test_dcgan_shapes_and_range(in_chans, img_size):
    model = dcgan(in_chans=in_chans, img_size=img_size)
    assert model.kind == "gan" and model.latent_dim == 64
    z = torch.randn(B, 64) * 10                               # far out: tanh saturates, still in range
    for mode in (True, False):
        model.train(mode)
        img = model(z)
        assert img.shape == (B, in_chans, img_size, img_size)
        assert img.min() >= 0 and img.max() <= 1
        assert model.discriminator(img).shape == (B,)
    torch.testing.assert_close(model.decode(z), model.generator(z))


@pytest.mark.parametrize("in_chans,img_size", SIZES)
def test_bigan_shapes(in_chans, img_size):
    model = bigan(in_chans=in_chans, img_size=img_size, latent_dim=16, width=16)
    assert model.kind == "bigan"
    x = torch.rand(B, in_chans, img_size, img_size)
    z = torch.randn(B, 16)
    for mode in (True, False):
        model.train(mode)
        assert model.encode(x).shape == (B, 16)
        img = model(z)
        assert img.shape == x.shape and img.min() >= 0 and img.max() <= 1
        assert model.discriminator(x, z).shape == (B,)
        rec = model.reconstruct(x)
        assert rec.shape == x.shape and rec.min() >= 0 and rec.max() <= 1


@pytest.mark.parametrize("name", list(FACTORIES) + ["conv_ae_encoder", "dense_ae_encoder"])
@pytest.mark.parametrize("img_size", [30, 27, 6])
def test_side_not_divisible_by_4_raises(name, img_size):
    with pytest.raises(ValueError, match="divisible by 4"):
        create_model(name, num_classes=10, in_chans=1, img_size=img_size)


@pytest.mark.parametrize("name", ["dense_ae", "conv_ae", "vae"])
def test_decode_is_on_the_unit_interval(name):
    model = FACTORIES[name](latent_dim=8).eval()
    with torch.no_grad():
        img = model.decode(torch.randn(5, 8) * 50)
    assert img.shape == (5, 1, 28, 28)
    assert img.min() >= 0 and img.max() <= 1


def test_vae_gradient_reaches_the_log_variance_through_the_sample():
    """The reparameterisation ``z = mu + exp(logvar / 2) eps``: in training the decoder's output
    depends on ``logvar``, so the rows of the encoder's last layer that give ``logvar`` get a
    gradient; in eval mode (``z = mu``) they get none."""
    torch.manual_seed(0)
    model = vae(latent_dim=4, width=8)
    x = torch.rand(4, 1, 28, 28)
    model.train()(x).logits.sum().backward()
    fc = model.encoder.fc
    assert fc.weight.grad is not None and model.encoder.features[0].weight.grad is not None
    assert fc.weight.grad[4:].abs().sum() > 0                 # logvar rows
    assert fc.weight.grad[:4].abs().sum() > 0                 # mu rows
    assert model.encoder.features[0].weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    model.eval()(x).logits.sum().backward()
    assert fc.weight.grad[:4].abs().sum() > 0
    assert torch.count_nonzero(fc.weight.grad[4:]) == 0      # z = mu: logvar is not used


@pytest.mark.parametrize("ae_fn,clf_fn,kwargs", [
    (conv_ae, conv_ae_encoder, {"latent_dim": 12, "width": 8}),
    (dense_ae, dense_ae_encoder, {"latent_dim": 12, "hidden": (40, 20)}),
])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_encoder_classifier_has_the_autoencoders_encoder(ae_fn, clf_fn, kwargs, in_chans):
    torch.manual_seed(0)
    ae = ae_fn(in_chans=in_chans, img_size=32, **kwargs)
    clf = clf_fn(num_classes=7, in_chans=in_chans, img_size=32, **kwargs)
    ae_sd = {k: v for k, v in ae.state_dict().items() if k.startswith("encoder.")}
    clf_sd = {k: v for k, v in clf.state_dict().items() if not k.startswith("head.")}
    assert set(ae_sd) == set(clf_sd) and ae_sd
    assert all(ae_sd[k].shape == clf_sd[k].shape for k in ae_sd)
    # Give the AE's BN some running statistics, so that eval mode really tests the buffers.
    with torch.no_grad():
        ae.train()(torch.rand(8, in_chans, 32, 32))
    ae_sd = {k: v for k, v in ae.state_dict().items() if k.startswith("encoder.")}
    missing, unexpected = clf.load_state_dict(ae_sd, strict=False)
    assert sorted(missing) == ["head.bias", "head.weight"] and not unexpected
    ae.eval(), clf.eval()
    x = torch.rand(5, in_chans, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clf.forward_features(x), ae.encode(x), rtol=0, atol=0)
        assert clf(x).shape == (5, 7)
        assert clf.forward_head(clf.forward_features(x), pre_logits=True).shape == (5, 12)
    assert clf.num_features == 12 and clf.num_classes == 7
    clf.reset_classifier(3)
    assert clf(x).shape == (5, 3)


def test_init_dcgan_statistics():
    torch.manual_seed(0)
    model = dcgan(in_chans=3, img_size=32)                    # init_dcgan applied by the factory
    for w in (model.discriminator.features[3].weight,          # Conv2d 64 -> 128, 4x4: 131k weights
              model.generator.body[0].weight,                  # ConvTranspose2d 128 -> 64, 4x4
              model.generator.fc[0].weight):                   # Linear 64 -> 8192
        w = w.detach()
        assert w.numel() > 100_000
        assert abs(float(w.std()) - 0.02) < 0.2 * 0.02
        assert abs(float(w.mean())) < 0.002
    bn = model.generator.fc[1]                                 # BatchNorm1d(8192)
    assert abs(float(bn.weight.detach().mean()) - 1) < 0.002 and abs(float(bn.weight.detach().std()) - 0.02) < 0.004
    assert torch.count_nonzero(bn.bias) == 0
    assert torch.count_nonzero(model.discriminator.fc.bias) == 0
    # Also on a module built elsewhere: it rewrites every conv, linear and BN.
    ae = init_dcgan(conv_ae(width=64))
    w = ae.encoder.features[3].weight.detach()                 # Conv2d 64 -> 64, 4x4
    assert abs(float(w.std()) - 0.02) < 0.2 * 0.02
    assert abs(float(ae.encoder.features[1].weight.detach().mean()) - 1) < 0.01


def test_registry():
    assert list_models(kind="generative") == ["bigan", "conv_ae", "dcgan", "dense_ae", "vae"]
    for name in ("conv_ae", "dense_ae", "vae", "dcgan", "bigan"):
        assert model_kind(name) == "generative"
    for name in ("conv_ae_encoder", "dense_ae_encoder"):
        assert model_kind(name) == "classifier" and name in list_models()
    # Registry factories take num_classes and ignore it.
    assert create_model("conv_ae", num_classes=10, in_chans=1, latent_dim=5).latent_dim == 5


def blobs(n: int, size: int = 28, seed: int = 0) -> torch.Tensor:
    """``n`` images ``(n, 1, size, size)``: two Gaussian blobs each at random places, on [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    imgs = torch.zeros(n, 1, size, size)
    for i in range(n):
        for _ in range(2):
            cy, cx = torch.rand(2, generator=g) * (size - 8) + 4
            s = 2 + 3 * torch.rand((), generator=g)
            imgs[i, 0] += torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return imgs.clamp(0, 1)


def test_conv_ae_overfits_a_few_images():
    torch.manual_seed(0)
    x = blobs(8)
    model = conv_ae(latent_dim=16, width=16)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    with torch.no_grad():
        first = float(reconstruction_loss(model(x).logits, x, "mse"))
    for _ in range(150):
        loss = reconstruction_loss(model(x).logits, x, "mse")
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = float(reconstruction_loss(model(x).logits, x, "mse"))
        # The images themselves, not just their mean: better than the per-pixel mean image.
        mean_image = float(F.mse_loss(x.mean(0, keepdim=True).expand_as(x), x))
    assert last < first / 5, (first, last)
    assert last < mean_image / 10, (last, mean_image)     # measured: ~2e-4 vs ~0.05
