"""Non-maximum suppression: greedy NMS, class-aware batched NMS and Soft-NMS.

All take boxes ``Tensor[N, 4]`` as ``(x1, y1, x2, y2)`` and scores ``Tensor[N]``.  Equal scores
are visited in index order (a stable sort), so results do not depend on the sorting algorithm.
IoUs are computed as :func:`~vislab.detection.boxes.box_iou` computes them: float16 and bfloat16
boxes in float32, as torchvision's NMS does under autocast.  Malformed input raises
:class:`~vislab.detection.boxes.BoxError`, both a ``ValueError`` and torchvision's ``RuntimeError``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vislab.detection.boxes import BoxError, box_iou, remove_small_boxes


def _check(boxes: Tensor, scores: Tensor) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise BoxError(f"boxes must have shape (N, 4) as (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise BoxError(f"scores must have shape ({boxes.shape[0]},), one per box, "
                       f"got {tuple(scores.shape)}")


def _by_score(scores: Tensor) -> Tensor:
    """Indices by decreasing score; equal scores in index order."""
    return torch.sort(scores, descending=True, stable=True).indices


def _greedy(boxes: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS over ``Tensor[N, 4]`` already sorted by decreasing score: the ``Tensor[N]``
    bool mask of the kept boxes."""
    # one IoU matrix, then a loop over the kept boxes only (on the CPU, where it is cheap)
    over = (box_iou(boxes, boxes) > iou_threshold).cpu().numpy()
    keep = np.zeros(len(boxes), dtype=bool)
    suppressed = np.zeros(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        if not suppressed[i]:
            keep[i] = True
            suppressed |= over[i]
    return torch.from_numpy(keep).to(boxes.device)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS: visit boxes by decreasing score, keep a box unless it overlaps an already
    kept one with IoU ``> iou_threshold``.

    Returns the indices (``Tensor[K]`` int64) of the kept boxes, by decreasing score.
    """
    _check(boxes, scores)
    order = _by_score(scores)
    return order[_greedy(boxes[order], iou_threshold)]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS per category: boxes with different ``idxs`` (``Tensor[N]``) never suppress each other.

    Runs the greedy pass on each category's boxes alone, as torchvision's per-class path does:
    its coordinate trick (shift each category by ``k * (max + 1)``, run one NMS) gives the same
    except where shifted coordinates round differently or go below -1, and takes one ``N x N``
    IoU matrix where this takes one ``n_c x n_c`` per category.  Returns the kept
    indices (``Tensor[K]`` int64) by decreasing score; empty ``boxes`` give an empty result
    whatever the other arguments, as in torchvision.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    _check(boxes, scores)
    if idxs.shape != scores.shape:
        raise BoxError(f"idxs must have shape {tuple(scores.shape)}, one category per box, "
                       f"got {tuple(idxs.shape)}")
    order = _by_score(scores)
    categories = idxs[order]
    keep = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    for c in torch.unique(categories):
        where = torch.nonzero(categories == c).flatten()      # positions in score order
        keep[where] = _greedy(boxes[order[where]], iou_threshold)
    return order[keep]


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


def filter_detections(boxes: Tensor, scores: Tensor, labels: Tensor, score_thresh: float, nms_thresh: float,
                      detections_per_img: int, min_size: float = 1e-2) -> dict[str, Tensor]:
    """One image's final detections from its scored candidates (the last step of the R-CNN
    family's inference): scores above ``score_thresh``, boxes at least ``min_size`` a side,
    class-wise NMS at ``nms_thresh``, the ``detections_per_img`` best by decreasing score."""
    keep = scores > score_thresh
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = remove_small_boxes(boxes, min_size)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
