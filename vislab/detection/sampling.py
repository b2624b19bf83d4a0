"""Which anchors enter the classification loss: hard-negative mining and balanced sampling.

Nearly every anchor of an image is background, and most of them are easy.  Trained on all of
them, a detector would learn mostly to say "background".  Two-stage detectors (Faster R-CNN's RPN
and box head) draw a fixed-size minibatch per image with at most a given fraction of foreground
(:func:`sample_balanced`).  SSD (Liu et al. 2016, section 2.2 "Hard negative mining") keeps every
positive and only the negatives the model gets most wrong, the ones of highest loss, at most
three per positive (:func:`hard_negative_mask`).  RetinaNet's focal loss replaces both by
down-weighting the easy examples instead of dropping them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def hard_negative_mask(cls_loss: Tensor, positive: Tensor, neg_pos_ratio: float = 3) -> Tensor:
    """SSD's hard-negative mining: the bool ``Tensor[B, A]`` mask of the anchors whose
    classification loss counts.

    Args:
        cls_loss: ``Tensor[B, A]``, the classification loss of each anchor of each image (with
            the background as the target for the negatives).
        positive: bool ``Tensor[B, A]``, the anchors matched to an object.
        neg_pos_ratio: negatives kept per positive.

    Per image, every positive is kept, and of the negatives the ``neg_pos_ratio * num_pos`` of
    highest loss (all of them when there are fewer; for a fractional product, its ceiling).
    Equal losses go to the lower anchor index first, so the mask is deterministic.  An image
    without a positive keeps no negative either, and so adds nothing to the classification loss:
    torchvision's ``SSD.compute_loss`` does the same (its line that would keep ``neg_pos_ratio``
    negatives there is commented out).  The loss is only read, never differentiated through.
    """
    if cls_loss.ndim != 2 or positive.shape != cls_loss.shape:
        raise ValueError(f"cls_loss {tuple(cls_loss.shape)} and positive {tuple(positive.shape)} "
                         "must both be (B images, A anchors)")
    if positive.dtype != torch.bool:
        raise TypeError(f"positive must be a bool mask, got {positive.dtype}; "
                        "pass e.g. matched_idxs >= 0")
    if neg_pos_ratio < 0:
        raise ValueError(f"neg_pos_ratio {neg_pos_ratio} must be >= 0")
    # positives go last; a stable sort keeps equal losses in anchor order
    neg_loss = cls_loss.detach().masked_fill(positive, -float("inf"))
    order = neg_loss.sort(dim=1, descending=True, stable=True).indices     # (B, A)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    num_neg = neg_pos_ratio * positive.sum(dim=1, keepdim=True)             # (B, 1)
    return positive | ((rank < num_neg) & ~positive)


def sample_balanced(labels: Sequence[Tensor], batch_size_per_image: int,
                    positive_fraction: float, generator: torch.Generator | None = None,
                    ) -> tuple[list[Tensor], list[Tensor]]:
    """The minibatch of a two-stage detector: per image, a bool mask of the foreground and one
    of the background anchors (or proposals) drawn for the loss.

    Args:
        labels: per image, ``Tensor[N_i]`` with values ``>= 1`` for foreground (1 for the RPN,
            the class for the box head), 0 for background, and negative (-1) for ignored; a
            ``Tensor[B, N]`` serves as its rows.
        batch_size_per_image: anchors drawn per image.
        positive_fraction: at most this fraction of them foreground.
        generator: the random generator; the global one by default.

    Per image ``num_pos = min(#foreground, int(batch_size_per_image * positive_fraction))``
    foreground anchors and ``min(#background, batch_size_per_image - num_pos)`` background ones
    are drawn uniformly without replacement; ignored anchors never are.  When foreground runs
    short the background fills the batch (Faster R-CNN's rule).  The semantics and, with the
    global generator, the random draws (one ``randperm`` for the foreground, then one for the
    background, image after image) are those of torchvision's
    ``BalancedPositiveNegativeSampler``, which returns uint8 masks where these are bool.
    """
    if batch_size_per_image < 0:
        raise ValueError(f"batch_size_per_image {batch_size_per_image} must be >= 0")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction {positive_fraction} must lie in [0, 1]")
    max_pos = int(batch_size_per_image * positive_fraction)
    pos_masks, neg_masks = [], []
    for lab in labels:
        if lab.ndim != 1:
            raise ValueError(f"labels of one image must be 1-D, got shape {tuple(lab.shape)}")
        pos_masks.append(_draw(torch.where(lab >= 1)[0], max_pos, lab, generator))
        num_pos = int(pos_masks[-1].sum())
        neg_masks.append(_draw(torch.where(lab == 0)[0], batch_size_per_image - num_pos, lab,
                               generator))
    return pos_masks, neg_masks


def _draw(candidates: Tensor, k: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Bool mask shaped as ``like`` with ``min(k, len(candidates))`` of ``candidates`` drawn."""
    device = like.device if generator is None else generator.device
    perm = torch.randperm(candidates.numel(), generator=generator, device=device)
    mask = torch.zeros_like(like, dtype=torch.bool)
    mask[candidates[perm[:k].to(candidates.device)]] = True
    return mask
