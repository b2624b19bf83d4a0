"""Models that learn without labels (003, "Autoencoders", "Generative Adversarial Networks",
"BiGANs"): dense and convolutional autoencoders, the variational autoencoder, DCGAN and BiGAN,
and the classifier made of an autoencoder's encoder (the notes' "AE for classifier initialization").

Every model here sees images on the ``[0, 1]`` scale, ``(B, C, H, W)`` with ``H`` and ``W``
divisible by 4, and gives images back on that scale: decoders end in logits (``sigmoid`` gives
the image, and the binary cross-entropy takes the logits directly); generators end in ``tanh``
mapped to ``[0, 1]``, and discriminators map their input to ``[-1, 1]`` first, DCGAN's range.

``kind`` tells the generative task how to train each: ``"ae"``, ``"vae"``, ``"gan"`` or
``"bigan"``.  The factories take ``num_classes`` like every registry factory and ignore it (the
models are unconditional).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from vislab.models.base import Classifier
from vislab.models.registry import register_model


def _side(img_size: int) -> tuple[int, int]:
    if img_size % 4:
        raise ValueError(f"img_size {img_size}: the generative models halve the image twice; use a side divisible by 4")
    return img_size, img_size


class ConvEncoder(nn.Module):
    """``x -> z``: a 3x3 conv at full resolution, two stride-2 4x4 convs (each conv-BN-ReLU,
    or LeakyReLU(0.2) as DCGAN's discriminator has it), then a linear map to ``out_dim``."""

    def __init__(self, in_chans: int, image_size: tuple[int, int], out_dim: int, width: int,
                 leaky: bool = False) -> None:
        super().__init__()
        act = (lambda: nn.LeakyReLU(0.2, inplace=True)) if leaky else (lambda: nn.ReLU(inplace=True))
        h, w = image_size
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), act(),
            nn.Conv2d(width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), act(),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), act(),
            nn.Flatten())
        self.fc = nn.Linear(2 * width * (h // 4) * (w // 4), out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


class ConvDecoder(nn.Module):
    """``z -> logits``: a linear map to ``2 width`` maps at a quarter of the size, two stride-2
    4x4 transposed convolutions (each BN-ReLU) back to full size, a 3x3 conv to the channels."""

    def __init__(self, in_chans: int, image_size: tuple[int, int], latent_dim: int, width: int) -> None:
        super().__init__()
        h, w = image_size
        self.shape = (2 * width, h // 4, w // 4)
        self.fc = nn.Sequential(nn.Linear(latent_dim, math.prod(self.shape)), nn.ReLU(inplace=True))
        self.body = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, in_chans, 3, 1, 1))

    def forward(self, z: Tensor) -> Tensor:
        return self.body(self.fc(z).view(-1, *self.shape))


class DenseEncoder(nn.Sequential):
    """``x -> z``: flatten, fully connected ReLU layers of ``hidden`` units, a linear map to ``out_dim``."""

    def __init__(self, in_chans: int, image_size: tuple[int, int], out_dim: int, hidden: tuple[int, ...]) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        dim = in_chans * image_size[0] * image_size[1]
        for h in hidden:
            layers += [nn.Linear(dim, h), nn.ReLU(inplace=True)]
            dim = h
        super().__init__(*layers, nn.Linear(dim, out_dim))


class DenseDecoder(nn.Module):
    """``z -> logits``: the encoder's layers in reverse."""

    def __init__(self, in_chans: int, image_size: tuple[int, int], latent_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = (in_chans, *image_size)
        layers: list[nn.Module] = []
        dim = latent_dim
        for h in reversed(hidden):
            layers += [nn.Linear(dim, h), nn.ReLU(inplace=True)]
            dim = h
        self.body = nn.Sequential(*layers, nn.Linear(dim, math.prod(self.shape)))

    def forward(self, z: Tensor) -> Tensor:
        return self.body(z).view(-1, *self.shape)


class AEOutput(NamedTuple):
    logits: Tensor          # the reconstruction before the sigmoid
    z: Tensor               # the latent code E(s)


class VAEOutput(NamedTuple):
    logits: Tensor
    mu: Tensor
    logvar: Tensor
    z: Tensor               # mu + sigma * eps in training, mu in eval mode


class AutoEncoder(nn.Module):
    """``D(E(s))``: ``encoder`` to a ``latent_dim`` code, ``decoder`` back to image logits."""
    kind = "ae"

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, latent_dim

    def forward(self, x: Tensor) -> AEOutput:
        z = self.encoder(x)
        return AEOutput(self.decoder(z), z)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Latent codes -> images on ``[0, 1]``."""
        return torch.sigmoid(self.decoder(z))

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


class VAE(AutoEncoder):
    """The variational autoencoder: the encoder gives ``mu`` and ``log sigma^2`` of a diagonal
    Gaussian ``q(z|s)``; training decodes ``z = mu + sigma * eps`` (the reparameterisation, so
    that gradients reach the encoder through a sample); the ELBO's KL term pulls ``q(z|s)``
    towards ``N(0, I)``, the distribution that sampling then draws from."""
    kind = "vae"

    def forward(self, x: Tensor) -> VAEOutput:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return VAEOutput(self.decoder(z), mu, logvar, z)

    def encode(self, x: Tensor) -> Tensor:
        """The posterior means ``mu``."""
        return self.encoder(x).chunk(2, dim=1)[0]


class Generator(nn.Module):
    """DCGAN's generator: ``z`` -> a linear map (BN-ReLU) to ``2 width`` maps at a quarter of
    the size -> a 4x4 stride-2 transposed conv (BN-ReLU) -> a 4x4 stride-2 transposed conv to the
    channels -> ``tanh``, mapped to ``[0, 1]``."""

    def __init__(self, in_chans: int, image_size: tuple[int, int], latent_dim: int, width: int) -> None:
        super().__init__()
        h, w = image_size
        self.shape = (2 * width, h // 4, w // 4)
        self.fc = nn.Sequential(nn.Linear(latent_dim, math.prod(self.shape), bias=False),
                                nn.BatchNorm1d(math.prod(self.shape)), nn.ReLU(inplace=True))
        self.body = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, in_chans, 4, 2, 1))

    def forward(self, z: Tensor) -> Tensor:
        return (torch.tanh(self.body(self.fc(z).view(-1, *self.shape))) + 1) / 2


class Discriminator(nn.Module):
    """DCGAN's discriminator: 4x4 stride-2 convs with LeakyReLU(0.2) (no BN on the first), a
    linear map to one logit; ``D(s) = sigmoid(logit)`` is the posterior that ``s`` is real."""

    def __init__(self, in_chans: int, image_size: tuple[int, int], width: int, drop: float = 0.0) -> None:
        super().__init__()
        h, w = image_size
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True), nn.Dropout(drop),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2, inplace=True), nn.Dropout(drop), nn.Flatten())
        self.num_features = 2 * width * (h // 4) * (w // 4)
        self.fc = nn.Linear(self.num_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x * 2 - 1)).squeeze(1)


class JointDiscriminator(nn.Module):
    """BiGAN's discriminator ``D(s, z)``: the image through DCGAN's discriminator trunk, the
    code through a linear layer, both joined by a two-layer MLP to one logit: real pairs are
    ``(s, E(s))``, fake ones ``(G(z), z)``."""

    def __init__(self, in_chans: int, image_size: tuple[int, int], latent_dim: int, width: int,
                 hidden: int = 512, drop: float = 0.2) -> None:
        super().__init__()
        self.image = Discriminator(in_chans, image_size, width, drop)
        self.image.fc = nn.Identity()
        self.code = nn.Sequential(nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2, inplace=True), nn.Dropout(drop))
        self.joint = nn.Sequential(nn.Linear(self.image.num_features + hidden, hidden),
                                   nn.LeakyReLU(0.2, inplace=True), nn.Dropout(drop), nn.Linear(hidden, 1))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        feats = self.image.features(x * 2 - 1)
        return self.joint(torch.cat([feats, self.code(z)], dim=1)).squeeze(1)


class GAN(nn.Module):
    """A generator and its discriminator; ``forward(z)`` generates."""
    kind = "gan"

    def __init__(self, generator: Generator, discriminator: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.generator, self.discriminator, self.latent_dim = generator, discriminator, latent_dim

    def forward(self, z: Tensor) -> Tensor:
        return self.generator(z)

    def decode(self, z: Tensor) -> Tensor:
        return self.generator(z)


class BiGAN(GAN):
    """The bidirectional GAN: an encoder ``E`` beside the generator, trained with it against a
    discriminator of (image, code) pairs, so that ``E`` learns to invert ``G``: ``G(E(s))``
    reconstructs ``s``, and ``E(s)`` is a code whose likelihood under ``N(0, I)`` can be scored."""
    kind = "bigan"

    def __init__(self, encoder: nn.Module, generator: Generator, discriminator: JointDiscriminator,
                 latent_dim: int) -> None:
        super().__init__(generator, discriminator, latent_dim)
        self.encoder = encoder

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.generator(self.encoder(x))


def init_dcgan(module: nn.Module) -> nn.Module:
    """DCGAN's initialisation: conv and linear weights from ``N(0, 0.02)``, BN scales from
    ``N(1, 0.02)``, biases zero."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


@register_model(kind="generative")
def dense_ae(num_classes: int = 0, in_chans: int = 1, img_size: int = 28,
             latent_dim: int = 32, hidden: tuple[int, ...] = (512, 256)) -> AutoEncoder:
    """Fully connected autoencoder; ``hidden`` units per layer, mirrored in the decoder."""
    size, hidden = _side(img_size), tuple(hidden)
    return AutoEncoder(DenseEncoder(in_chans, size, latent_dim, hidden),
                       DenseDecoder(in_chans, size, latent_dim, hidden), latent_dim)


@register_model(kind="generative")
def conv_ae(num_classes: int = 0, in_chans: int = 1, img_size: int = 28,
            latent_dim: int = 32, width: int = 32) -> AutoEncoder:
    """Convolutional autoencoder: convs down, transposed convs up (``width`` and ``2 width`` channels)."""
    size = _side(img_size)
    return AutoEncoder(ConvEncoder(in_chans, size, latent_dim, width),
                       ConvDecoder(in_chans, size, latent_dim, width), latent_dim)


@register_model(kind="generative")
def vae(num_classes: int = 0, in_chans: int = 1, img_size: int = 28,
        latent_dim: int = 16, width: int = 32) -> VAE:
    """Convolutional variational autoencoder (the encoder of :func:`conv_ae` giving ``mu`` and ``log sigma^2``)."""
    size = _side(img_size)
    return VAE(ConvEncoder(in_chans, size, 2 * latent_dim, width),
               ConvDecoder(in_chans, size, latent_dim, width), latent_dim)


@register_model(kind="generative")
def dcgan(num_classes: int = 0, in_chans: int = 1, img_size: int = 28,
          latent_dim: int = 64, width: int = 64) -> GAN:
    """DCGAN-style generator and discriminator for small images, DCGAN's initialisation."""
    size = _side(img_size)
    return init_dcgan(GAN(Generator(in_chans, size, latent_dim, width),
                          Discriminator(in_chans, size, width), latent_dim))


@register_model(kind="generative")
def bigan(num_classes: int = 0, in_chans: int = 1, img_size: int = 28,
          latent_dim: int = 64, width: int = 32, hidden: int = 256) -> BiGAN:
    """BiGAN: DCGAN's generator, an encoder of DCGAN's discriminator trunk, a joint discriminator
    with ``hidden`` units (half DCGAN's width by default: it trains once per class in the
    one-class benchmark)."""
    size = _side(img_size)
    return init_dcgan(BiGAN(ConvEncoder(in_chans, size, latent_dim, width, leaky=True),
                            Generator(in_chans, size, latent_dim, width),
                            JointDiscriminator(in_chans, size, latent_dim, width, hidden), latent_dim))


class EncoderClassifier(Classifier):
    """An autoencoder's encoder with a linear head on its latent code: the classifier of the
    notes' "AE for classifier initialization".  ``encoder`` has the structure (and parameter
    names) of the autoencoder's, so ``model.init_from`` an autoencoder run loads it."""

    def __init__(self, encoder: nn.Module, latent_dim: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_classes, self.num_features = num_classes, latent_dim
        self.feature_info = []
        self.head = nn.Linear(latent_dim, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x if pre_logits else self.head(x)


@register_model
def dense_ae_encoder(num_classes: int = 10, in_chans: int = 1, img_size: int = 28,
                     latent_dim: int = 32, hidden: tuple[int, ...] = (512, 256)) -> EncoderClassifier:
    """The encoder of :func:`dense_ae` with a linear classifier on its code."""
    return EncoderClassifier(DenseEncoder(in_chans, _side(img_size), latent_dim, tuple(hidden)),
                             latent_dim, num_classes)


@register_model
def conv_ae_encoder(num_classes: int = 10, in_chans: int = 1, img_size: int = 28,
                    latent_dim: int = 32, width: int = 32) -> EncoderClassifier:
    """The encoder of :func:`conv_ae` with a linear classifier on its code."""
    return EncoderClassifier(ConvEncoder(in_chans, _side(img_size), latent_dim, width), latent_dim, num_classes)


ENCODER_CLASSIFIERS = {"dense_ae": "dense_ae_encoder", "conv_ae": "conv_ae_encoder"}
"""Each autoencoder's classifier: ``model.init_from`` an autoencoder run starts it from the encoder."""

__all__ = [
    "ENCODER_CLASSIFIERS",
    "GAN",
    "VAE",
    "AEOutput",
    "AutoEncoder",
    "BiGAN",
    "EncoderClassifier",
    "VAEOutput",
    "bigan",
    "conv_ae",
    "conv_ae_encoder",
    "dcgan",
    "dense_ae",
    "dense_ae_encoder",
    "init_dcgan",
    "vae",
]
