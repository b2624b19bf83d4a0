"""Miners: which pairs and triplets of a batch a metric loss looks at.

A miner returns index tensors into the batch: pairs ``(a, b)``, or triplets ``(a, p, n)`` with
``labels[a] == labels[p] != labels[n]`` and ``a != p``.  Miners only choose: they run under
``no_grad`` and the loss recomputes the distances it differentiates.

With ``d`` the Euclidean distance (squared with ``squared=True``) and margin ``m``, a triplet is
(Schroff et al. 2015, FaceNet; the lecture notes)

- hard:      ``d(a,n) <= d(a,p)``                (ties count as hard, as in pytorch-metric-learning)
- semi-hard: ``d(a,p) < d(a,n) < d(a,p) + m``
- easy:      ``d(a,n) >= d(a,p) + m``            (zero triplet loss)

so hard and semi-hard together are exactly the triplets with a positive loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from vislab.errors import UserError

Pairs = tuple[Tensor, Tensor]
Triplets = tuple[Tensor, Tensor, Tensor]


def pairwise_distances(emb: Tensor, squared: bool = False, eps: float = 1e-12) -> Tensor:
    """Euclidean distances ``Tensor[B, B]`` between the rows of ``emb: Tensor[B, D]``, or their
    squares with ``squared``.

    One matmul (the Gram matrix), computed in at least float32 even under autocast; the diagonal
    is exactly 0.  The square root is safe: where the squared distance is below ``eps`` (two
    coincident embeddings) the distance is 0 with gradient 0, not the NaN of ``sqrt'(0) = inf``.
    """
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be (B, D), got shape {tuple(emb.shape)}")
    x = emb.float() if emb.dtype in (torch.float16, torch.bfloat16) else emb
    with torch.autocast(x.device.type, enabled=False):
        sq = (x * x).sum(1)
        d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0)       # (B, B)
    d2 = d2.masked_fill(torch.eye(len(x), dtype=torch.bool, device=x.device), 0)
    if squared:
        return d2
    return torch.where(d2 > eps, d2.clamp_min(eps).sqrt(), torch.zeros_like(d2))


def _label_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(pos, neg)``, each ``(B, B)`` bool: same label and not the same sample; different label."""
    if labels.ndim != 1:
        raise ValueError(f"labels must be (B,), got shape {tuple(labels.shape)}")
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def _rand(shape: tuple[int, ...], gen: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform ``[0, 1)`` draws from ``gen`` (on its own device), moved to ``device``."""
    return torch.rand(shape, generator=gen, device=gen.device if gen is not None else device).to(device)


def _randint(high: int, size: int, gen: torch.Generator | None, device: torch.device) -> Tensor:
    """``size`` uniform integers in ``[0, high)`` (``size`` may be 0 when ``high`` is)."""
    return (_rand((size,), gen, device) * high).long().clamp_(max=max(high - 1, 0))


def _pick(mask: Tensor, gen: torch.Generator | None) -> Tensor:
    """For each row of ``mask: Tensor[N, B]``, the column of one ``True`` entry drawn uniformly
    (each row must have one)."""
    keys = _rand(tuple(mask.shape), gen, mask.device).masked_fill(~mask, -1.0)
    return keys.argmax(1)


def _empty_triplets(labels: Tensor) -> Triplets:
    e = torch.empty(0, dtype=torch.long, device=labels.device)
    return e, e, e


@torch.no_grad()
def all_pairs(labels: Tensor) -> Pairs:
    """Every pair ``(a, b)`` of the batch with ``a < b``."""
    a, b = torch.triu_indices(len(labels), len(labels), 1, device=labels.device)
    return a, b


@torch.no_grad()
def random_pairs(labels: Tensor, n: int, generator: torch.Generator | None = None) -> Pairs:
    """``n`` pairs ``(a, b)``, ``a < b``: half of them (``n // 2``) drawn uniformly with replacement
    from the same-label pairs of the batch, the rest from the different-label pairs.  When the
    batch has only one kind, all ``n`` are of that kind; with none (B < 2), no pairs."""
    pos, neg = _label_masks(labels)
    pa, pb = torch.triu(pos, 1).nonzero(as_tuple=True)
    na, nb = torch.triu(neg, 1).nonzero(as_tuple=True)
    n_pos = (n // 2 if len(na) else n) if len(pa) else 0
    n_neg = n - n_pos if len(na) else 0
    i = _randint(len(pa), n_pos, generator, labels.device)
    j = _randint(len(na), n_neg, generator, labels.device)
    return torch.cat([pa[i], na[j]]), torch.cat([pb[i], nb[j]])


@torch.no_grad()
def random_triplets(labels: Tensor, n: int, generator: torch.Generator | None = None) -> Triplets:
    """``n`` triplets, each drawn uniformly: an anchor among the samples that have a positive and
    a negative in the batch, then one of its positives and one of its negatives."""
    pos, neg = _label_masks(labels)
    anchors = (pos.any(1) & neg.any(1)).nonzero().squeeze(1)
    if len(anchors) == 0 or n <= 0:
        return _empty_triplets(labels)
    a = anchors[_randint(len(anchors), n, generator, labels.device)]
    return a, _pick(pos[a], generator), _pick(neg[a], generator)


@torch.no_grad()
def batch_all_triplets(labels: Tensor) -> Triplets:
    """Every valid triplet of the batch, in lexicographic ``(a, p, n)`` order."""
    pos, neg = _label_masks(labels)
    a, p, n = (pos[:, :, None] & neg[:, None, :]).nonzero(as_tuple=True)    # (B, B, B) mask
    return a, p, n


@torch.no_grad()
def batch_hard_triplets(emb: Tensor, labels: Tensor, squared: bool = False) -> Triplets:
    """One triplet per anchor that has a positive and a negative: its farthest positive and its
    nearest negative (Hermans et al. 2017, "In Defense of the Triplet Loss", batch hard)."""
    d = pairwise_distances(emb, squared)
    pos, neg = _label_masks(labels)
    keep = pos.any(1) & neg.any(1)
    p = d.masked_fill(~pos, -torch.inf).argmax(1)
    n = d.masked_fill(~neg, torch.inf).argmin(1)
    a = torch.arange(len(labels), device=labels.device)[keep]
    return a, p[keep], n[keep]


def _all_with_distances(emb: Tensor, labels: Tensor, squared: bool) -> tuple[Triplets, Tensor, Tensor, Tensor]:
    """All triplets, the distance matrix, and each triplet's ``d(a,p)`` and ``d(a,n)``."""
    a, p, n = batch_all_triplets(labels)
    d = pairwise_distances(emb, squared)
    return (a, p, n), d, d[a, p], d[a, n]


@torch.no_grad()
def hard_triplets(emb: Tensor, labels: Tensor, squared: bool = False) -> Triplets:
    """All triplets with ``d(a,n) <= d(a,p)`` (pytorch-metric-learning's
    ``TripletMarginMiner(type_of_triplets="hard")``).  The notes warn that training on these alone
    is dominated by mislabelled and poor images."""
    (a, p, n), _, dap, dan = _all_with_distances(emb, labels, squared)
    hard = dan <= dap
    return a[hard], p[hard], n[hard]


@torch.no_grad()
def semi_hard_triplets(emb: Tensor, labels: Tensor, margin: float = 0.2, squared: bool = False,
                       fallback: bool = True) -> Triplets:
    """All semi-hard triplets, ``d(a,p) < d(a,n) < d(a,p) + margin``, as pytorch-metric-learning's
    ``TripletMarginMiner(type_of_triplets="semihard")`` returns them (``fallback=False``).

    With ``fallback`` (the default), each positive pair ``(a, p)`` none of whose negatives lies
    farther than ``p`` also gets a triplet with its farthest negative, the least hard of its hard
    ones: FaceNet's rule, as in TensorFlow Addons' ``TripletSemiHardLoss``.  Without it such
    pairs give no loss at all, so a batch whose embeddings have collapsed together (or one early
    in training where every negative is close) has no semi-hard triplet and nothing to learn from.
    """
    (a, p, n), d, dap, dan = _all_with_distances(emb, labels, squared)
    semi = (dan > dap) & (dan < dap + margin)
    a, p, n = a[semi], p[semi], n[semi]
    if not fallback:
        return a, p, n
    pos, neg = _label_masks(labels)
    far_d, far_n = d.masked_fill(~neg, -torch.inf).max(1)                  # farthest negative per anchor
    fa, fp = (pos & neg.any(1)[:, None] & (far_d[:, None] <= d)).nonzero(as_tuple=True)
    return torch.cat([a, fa]), torch.cat([p, fp]), torch.cat([n, far_n[fa]])


_MINERS: dict[str, Callable[[Tensor, Tensor, float, bool, torch.Generator | None], Triplets]] = {
    "random": lambda emb, labels, margin, squared, gen: random_triplets(labels, len(labels), gen),
    "batch_all": lambda emb, labels, margin, squared, gen: batch_all_triplets(labels),
    "batch_hard": lambda emb, labels, margin, squared, gen: batch_hard_triplets(emb, labels, squared),
    "semi_hard": lambda emb, labels, margin, squared, gen: semi_hard_triplets(emb, labels, margin, squared),
    "hard": lambda emb, labels, margin, squared, gen: hard_triplets(emb, labels, squared),
}
MINERS = tuple(_MINERS)


def mine(name: str, emb: Tensor, labels: Tensor, margin: float = 0.2, squared: bool = False,
         generator: torch.Generator | None = None) -> Triplets:
    """Triplets ``(a, p, n)`` of the batch chosen by the miner ``name`` (one of :data:`MINERS`).

    ``random`` draws ``B`` triplets (one per sample on average) from ``generator``; ``semi_hard``
    uses the FaceNet fallback (:func:`semi_hard_triplets`); ``margin`` only matters to it.
    """
    if name not in _MINERS:
        raise UserError(f"unknown miner {name!r}: choose one of {', '.join(MINERS)}")
    return _MINERS[name](emb, labels, margin, squared, generator)
