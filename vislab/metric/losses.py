"""Metric-learning losses on a batch of embeddings ``(B, D)`` and labels ``(B,)``: the contrastive
loss of siamese networks and the triplet loss, over the pairs or triplets a miner chose
(:mod:`vislab.metric.miners`) or, by default, over all of them.

A loss with nothing to sum (no pairs, no triplets) is a zero still attached to the graph, so that
``loss.backward()`` works on every batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vislab.errors import UserError
from vislab.metric.miners import (
    Pairs,
    Triplets,
    all_pairs,
    batch_all_triplets,
    pairwise_distances,
)

CONTRASTIVE_FORMS = ("squared", "plain")
REDUCTIONS = ("mean_nonzero", "mean")


def _zero(emb: Tensor) -> Tensor:
    return emb.sum() * 0.0


def contrastive_loss(emb: Tensor, labels: Tensor, pairs: Pairs | None = None, margin: float = 1.0,
                     form: str = "squared", normalize: bool = False) -> Tensor:
    """Contrastive loss with margin ``m``, averaged over ``pairs`` (``(a, b)`` index tensors from a
    miner; ``None``: every pair ``a < b`` of the batch).  With ``d`` the Euclidean distance:

    - ``"squared"`` (Hadsell et al. 2006, without their factor 1/2):
      ``d²`` for a same-label pair, ``max(0, m - d)²`` for a different-label one;
    - ``"plain"`` (``(1 - y)/2 · d + y/2 · max(0, m - d)``, ``y = 0`` for the same label):
      ``d / 2`` for a same-label pair, ``max(0, m - d) / 2`` for a different-label one.

    ``normalize`` L2-normalises the embeddings first (distances then lie in ``[0, 2]``).
    """
    if form not in CONTRASTIVE_FORMS:
        raise UserError(f"unknown contrastive form {form!r}: choose one of {', '.join(CONTRASTIVE_FORMS)}")
    if normalize:
        emb = F.normalize(emb, dim=1)
    a, b = all_pairs(labels) if pairs is None else pairs
    if len(a) == 0:
        return _zero(emb)
    d = pairwise_distances(emb)[a, b]
    same = labels[a] == labels[b]
    if form == "squared":
        loss = torch.where(same, d ** 2, F.relu(margin - d) ** 2)
    else:
        loss = torch.where(same, d, F.relu(margin - d)) / 2
    return loss.mean()


def triplet_loss(emb: Tensor, labels: Tensor, triplets: Triplets | None = None, margin: float = 0.2,
                 squared: bool = False, normalize: bool = False, reduction: str = "mean_nonzero") -> Tensor:
    """Triplet loss ``max(0, d(a,p) - d(a,n) + m)`` over ``triplets`` (``(a, p, n)`` index tensors
    from a miner; ``None``: every valid triplet of the batch).

    ``d`` is the Euclidean distance, or its square with ``squared`` (FaceNet and the notes' first
    form).  ``reduction``: ``"mean"`` over the triplets, or ``"mean_nonzero"``, the mean over the
    triplets with a positive loss (pytorch-metric-learning's ``AvgNonZeroReducer``), which keeps
    the loss from fading as most triplets become easy.  ``normalize`` L2-normalises the embeddings
    first.
    """
    if reduction not in REDUCTIONS:
        raise UserError(f"unknown triplet-loss reduction {reduction!r}: choose one of {', '.join(REDUCTIONS)}")
    if normalize:
        emb = F.normalize(emb, dim=1)
    a, p, n = batch_all_triplets(labels) if triplets is None else triplets
    if len(a) == 0:
        return _zero(emb)
    d = pairwise_distances(emb, squared)
    loss = F.relu(d[a, p] - d[a, n] + margin)
    if reduction == "mean":
        return loss.mean()
    return loss.sum() / (loss > 0).sum().clamp_min(1)
