"""Losses of the notes, written on the stable log-softmax: log p_k = z_k - logsumexp(z)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vislab.errors import UserError


def log_softmax(z: Tensor, dim: int = -1) -> Tensor:
    """``z - logsumexp(z)``: subtracting the max inside logsumexp keeps exp() from overflowing."""
    return z - torch.logsumexp(z, dim=dim, keepdim=True)


def cross_entropy(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of ``logits (B, K)`` against int labels ``(B,)`` or soft targets ``(B, K)``.

    Label smoothing (Szegedy et al. 2016) mixes the target with the uniform distribution:
    ``q = (1 - eps) * target + eps / K``.
    """
    logp = log_softmax(logits.float(), dim=1)
    k = logits.shape[1]
    q = F.one_hot(target, k).to(logp.dtype) if target.ndim == 1 else target.to(logp.dtype)
    if label_smoothing:
        q = q * (1 - label_smoothing) + label_smoothing / k
    return -(q * logp).sum(dim=1).mean()


def build_loss(name: str, label_smoothing: float = 0.0):
    """``(logits, target) -> loss`` for ``cross_entropy``, ``bce`` (one-vs-all sigmoid heads) or
    ``mse`` (on softmax probabilities)."""
    if name == "cross_entropy":
        return lambda z, y: cross_entropy(z, y, label_smoothing)
    if name == "bce":
        return lambda z, y: F.binary_cross_entropy_with_logits(z.float(), _dense(y, z))
    if name == "mse":
        return lambda z, y: F.mse_loss(z.float().softmax(1), _dense(y, z))
    raise UserError(f"unknown loss {name!r}: use cross_entropy, bce or mse")


def _dense(y: Tensor, z: Tensor) -> Tensor:
    return F.one_hot(y, z.shape[1]).float() if y.ndim == 1 else y.float()
