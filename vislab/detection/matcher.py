"""Assign anchors (or proposals) to ground-truth boxes by IoU thresholds."""

from __future__ import annotations

import torch
from torch import Tensor


class Matcher:
    """Each prediction gets the index of its best ground truth, or a negative label.

    For a prediction whose best IoU with the ground truth is ``q``: ``q >= high`` -> that ground
    truth's index (foreground); ``low <= q < high`` -> :attr:`BETWEEN_THRESHOLDS` (ignored in the
    loss); ``q < low`` -> :attr:`BELOW_LOW_THRESHOLD` (background).

    With ``allow_low_quality_matches`` (Faster R-CNN's RPN rule), a ground truth that no
    prediction reaches ``high`` with still gets the predictions that overlap it most (ties
    included): each of them is set to its own best ground truth.  A ground truth that overlaps
    nothing (best IoU 0) gives no match, where torchvision would mark every prediction that
    misses it.

    Args:
        high_threshold, low_threshold: the two IoU thresholds, ``low <= high``.
        allow_low_quality_matches: the rule above.
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float,
                 allow_low_quality_matches: bool = False) -> None:
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold {low_threshold} must be <= high_threshold {high_threshold}")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, quality: Tensor) -> Tensor:
        """``quality``: ``Tensor[M, N]`` (IoU of M ground truths with N predictions) ->
        ``Tensor[N]`` int64 of ground-truth indices or negative labels.  With no ground truth
        (M = 0) every prediction is background."""
        if quality.ndim != 2:
            raise ValueError(f"quality must be (M ground truths, N predictions), got {tuple(quality.shape)}")
        if quality.shape[0] == 0:
            return torch.full((quality.shape[1],), self.BELOW_LOW_THRESHOLD, dtype=torch.int64,
                              device=quality.device)
        best, best_gt = quality.max(dim=0)
        matches = best_gt.clone()
        matches[best < self.high_threshold] = self.BETWEEN_THRESHOLDS
        matches[best < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        if self.allow_low_quality_matches and quality.shape[1] > 0:
            best_per_gt = quality.max(dim=1, keepdim=True).values
            top = (quality == best_per_gt) & (best_per_gt > 0)
            preds = top.any(dim=0)
            matches[preds] = best_gt[preds]
        return matches


def matched_targets(targets, matched: Tensor) -> tuple[Tensor, Tensor]:
    """Per anchor, the label and the box of the object it was matched to.

    Args:
        targets: per image ``labels`` ``Tensor[N]`` and ``boxes`` ``Tensor[N, 4]``.
        matched: ``Tensor[B, A]`` object index per anchor (negative: not matched).

    Returns ``labels`` ``Tensor[B, A]`` int64 and ``boxes`` ``Tensor[B, A, 4]`` float32; where an
    anchor is not matched (or the image has no object) they hold object 0's values or zeros, to
    be masked by ``matched >= 0``.
    """
    labels, boxes = [], []
    for t, m in zip(targets, matched):
        if len(t["labels"]):
            index = m.clamp(min=0)
            labels.append(t["labels"].to(m.device)[index])
            boxes.append(t["boxes"].to(m.device, torch.float32)[index])
        else:
            labels.append(torch.zeros_like(m))
            boxes.append(torch.zeros(*m.shape, 4, device=m.device))
    return torch.stack(labels), torch.stack(boxes)
