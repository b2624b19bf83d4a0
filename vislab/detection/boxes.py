"""Box geometry: format conversions, areas, the IoU family, clipping.

Boxes are ``(x1, y1, x2, y2)`` in continuous pixel coordinates (a pixel ``i`` spans ``[i, i+1)``),
as everywhere in vislab.  Pairwise functions take ``Tensor[N, 4]`` and ``Tensor[M, 4]`` and return
``Tensor[N, M]``.  Integer boxes are computed in floating point.

Degenerate boxes: a ratio whose denominator is zero (the IoU of two zero-area boxes, the GIoU
penalty when the enclosing box has zero area) is 0, as in pycocotools, where torchvision
returns NaN.  Everywhere else the results equal ``torchvision.ops``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_FORMATS = ("xyxy", "xywh", "cxcywh")


def _check(boxes: Tensor, name: str = "boxes") -> Tensor:
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {tuple(boxes.shape)}")
    return boxes if boxes.is_floating_point() else boxes.float()


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with 0 where ``den`` is 0 (degenerate boxes)."""
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)),
                       torch.zeros_like(num))


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``Tensor[N, 4]`` between 'xyxy' (corners), 'xywh' (corner + size) and 'cxcywh'
    (centre + size)."""
    for fmt in (in_fmt, out_fmt):
        if fmt not in _FORMATS:
            raise ValueError(f"unknown box format {fmt!r}; use one of {', '.join(_FORMATS)}")
    if in_fmt == out_fmt:
        return boxes.clone()
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    if out_fmt == "xywh":
        a, b, c, d = a, b, c - a, d - b
    elif out_fmt == "cxcywh":
        a, b, c, d = (a + c) / 2, (b + d) / 2, c - a, d - b
    return torch.stack((a, b, c, d), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """``Tensor[N, 4]`` -> ``Tensor[N]``: ``(x2 - x1) * (y2 - y1)`` (negative for inverted boxes)."""
    boxes = _check(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    area1, area2 = box_area(boxes1), box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])   # (N, M, 2)
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, area1[:, None] + area2[None, :] - inter


def _enclosing(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Width and height of the smallest box holding each pair: ``Tensor[N, M, 2]``."""
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    return (rb - lt).clamp(min=0)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union, ``Tensor[N, 4]`` x ``Tensor[M, 4]`` -> ``Tensor[N, M]``."""
    boxes1, boxes2 = _check(boxes1, "boxes1"), _check(boxes2, "boxes2")
    inter, union = _inter_union(boxes1, boxes2)
    return _safe_div(inter, union)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU (Rezatofighi et al. 2019): IoU minus the part of the enclosing box that the union
    leaves empty; in ``[-1, 1]`` and informative even for disjoint boxes."""
    boxes1, boxes2 = _check(boxes1, "boxes1"), _check(boxes2, "boxes2")
    inter, union = _inter_union(boxes1, boxes2)
    wh = _enclosing(boxes1, boxes2)
    enclosing = wh[..., 0] * wh[..., 1]
    return _safe_div(inter, union) - _safe_div(enclosing - union, enclosing)


def _diou_iou(boxes1: Tensor, boxes2: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    iou = box_iou(boxes1, boxes2)
    wh = _enclosing(boxes1, boxes2)
    diagonal2 = wh[..., 0] ** 2 + wh[..., 1] ** 2 + eps
    c1 = (boxes1[:, :2] + boxes1[:, 2:]) / 2
    c2 = (boxes2[:, :2] + boxes2[:, 2:]) / 2
    centres2 = ((c1[:, None] - c2[None]) ** 2).sum(-1)
    return iou - centres2 / diagonal2, iou


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """DIoU (Zheng et al. 2020): IoU minus the squared centre distance over the squared diagonal
    of the enclosing box (``eps`` keeps coincident points finite)."""
    boxes1, boxes2 = _check(boxes1, "boxes1"), _check(boxes2, "boxes2")
    return _diou_iou(boxes1, boxes2, eps)[0]


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """CIoU (Zheng et al. 2020): DIoU minus ``alpha * v``, where ``v`` measures the difference of
    aspect ratios and the trade-off ``alpha = v / (1 - IoU + v)`` is held constant for gradients,
    as in the paper."""
    boxes1, boxes2 = _check(boxes1, "boxes1"), _check(boxes2, "boxes2")
    diou, iou = _diou_iou(boxes1, boxes2, eps)
    w1, h1 = boxes1[:, 2] - boxes1[:, 0], boxes1[:, 3] - boxes1[:, 1]
    w2, h2 = boxes2[:, 2] - boxes2[:, 0], boxes2[:, 3] - boxes2[:, 1]
    # atan2(w, h) = atan(w / h) for h > 0, and stays finite for flat boxes
    v = (4 / math.pi ** 2) * (torch.atan2(w1, h1)[:, None] - torch.atan2(w2, h2)[None]) ** 2
    alpha = (v / (1 - iou + v + eps)).detach()
    return diou - alpha * v


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clamp ``Tensor[N, 4]`` boxes to an image of ``size = (height, width)``."""
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (``Tensor[K]`` int64) of the boxes whose width and height are both ``>= min_size``."""
    boxes = _check(boxes)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    return torch.nonzero(keep).flatten()
