"""Non-maximum suppression: greedy NMS, class-aware batched NMS and Soft-NMS.

All take boxes ``Tensor[N, 4]`` as ``(x1, y1, x2, y2)`` and scores ``Tensor[N]``.  Equal scores
are visited in index order (a stable sort), so results do not depend on the sorting algorithm.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vislab.detection.boxes import box_iou


def _check(boxes: Tensor, scores: Tensor) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores must have shape ({boxes.shape[0]},), got {tuple(scores.shape)}")


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS: visit boxes by decreasing score, keep a box unless it overlaps an already
    kept one with IoU ``> iou_threshold``.

    Returns the indices (``Tensor[K]`` int64) of the kept boxes, by decreasing score.
    """
    _check(boxes, scores)
    order = torch.sort(scores, descending=True, stable=True).indices
    if len(order) == 0:
        return order
    b = boxes[order]
    # one IoU matrix, then a loop over the kept boxes only (on the CPU, where it is cheap)
    over = (box_iou(b, b) > iou_threshold).cpu().numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[torch.as_tensor(keep, device=order.device)]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS per category: boxes with different ``idxs`` never suppress each other.

    Shifts each category's boxes by its own offset, larger than every coordinate, so that boxes
    of different categories cannot overlap, then runs one :func:`nms`.
    """
    _check(boxes, scores)
    if idxs.shape != scores.shape:
        raise ValueError(f"idxs must have shape {tuple(scores.shape)}, got {tuple(idxs.shape)}")
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    b = boxes if boxes.is_floating_point() else boxes.float()
    span = b.max() - b.min() + 1
    offsets = (idxs.to(b) * span)[:, None]
    return nms(b + offsets, scores, iou_threshold)


def soft_nms(boxes: Tensor, scores: Tensor, method: str = "linear", iou_threshold: float = 0.3,
             sigma: float = 0.5, score_threshold: float = 0.001) -> tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al. 2017): instead of removing the boxes that overlap the current best
    box ``M``, lower their scores, so that a second object close to the first can survive.

    At each step the box ``M`` with the highest current score is kept and every remaining box
    ``b`` gets ``s_b <- s_b * f(IoU(M, b))`` with

    * ``method='linear'``:   ``f = 1 - IoU`` if ``IoU >= iou_threshold`` else ``1``;
    * ``method='gaussian'``: ``f = exp(-IoU**2 / sigma)`` for every box;

    boxes whose score falls below ``score_threshold`` are dropped.

    Returns ``(keep, new_scores)``: indices into ``boxes`` in the order they were kept (by
    decreasing decayed score) and their decayed scores.
    """
    _check(boxes, scores)
    if method not in ("linear", "gaussian"):
        raise ValueError(f"soft_nms method must be 'linear' or 'gaussian', not {method!r}")
    iou = box_iou(boxes, boxes)
    s = scores.clone().to(iou.dtype)
    alive = s >= score_threshold
    keep, kept_scores = [], []
    while bool(alive.any()):
        best = int(torch.where(alive, s, s.new_tensor(-float("inf"))).argmax())
        keep.append(best)
        kept_scores.append(s[best])
        alive[best] = False
        overlap = iou[best]
        if method == "linear":
            decay = torch.where(overlap >= iou_threshold, 1 - overlap, torch.ones_like(overlap))
        else:
            decay = torch.exp(-overlap ** 2 / sigma)
        s = torch.where(alive, s * decay, s)
        alive &= s >= score_threshold
    idx = torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)
    new_scores = torch.stack(kept_scores).to(scores.dtype) if keep else scores[:0]
    return idx, new_scores
