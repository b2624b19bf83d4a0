"""Box geometry: format conversions, areas, the IoU family, clipping.

Boxes are ``(x1, y1, x2, y2)`` in continuous pixel coordinates (a pixel ``i`` spans ``[i, i+1)``),
as everywhere in vislab.  Pairwise functions take ``Tensor[..., N, 4]`` and ``Tensor[..., M, 4]``
(leading dimensions broadcast, as in torchvision 0.29) and return ``Tensor[..., N, M]``.

Dtypes follow ``torchvision.ops``: float16 and bfloat16 boxes are computed in float32 (float16
overflows at 65,504, a box 256 pixels square; bfloat16 keeps 8 significant bits), 8- and 16-bit
integer boxes in int32; ratios of integer boxes are float32.

Degenerate boxes: a ratio whose denominator is zero (the IoU of two zero-area boxes, the GIoU
penalty when the enclosing box has zero area, CIoU's aspect angle of a point box) is 0, as in
pycocotools, where torchvision returns NaN.  Everywhere else the results equal ``torchvision.ops``,
but for half precision, where vislab upcasts the corners before subtracting them (torchvision's
IoU and GIoU subtract first); docs/detection.md lists the differences.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_FORMATS = ("xyxy", "xywh", "cxcywh")


class BoxError(ValueError, RuntimeError):
    """Malformed boxes, scores or category indices.

    A ``ValueError``, as for every user mistake in vislab, and a ``RuntimeError``, which is what
    ``torchvision.ops.nms`` raises for the same input: code written against either catches it.
    """


def _upcast(boxes: Tensor) -> Tensor:
    """The dtype torchvision computes in: float16/bfloat16 -> float32, 8/16-bit ints -> int32."""
    if boxes.is_floating_point():
        return boxes if boxes.dtype in (torch.float32, torch.float64) else boxes.float()
    return boxes if boxes.dtype in (torch.int32, torch.int64) else boxes.int()


def _check(boxes: Tensor, name: str = "boxes", min_ndim: int = 1) -> Tensor:
    if boxes.ndim < min_ndim or boxes.shape[-1] != 4:
        want = "(..., N, 4)" if min_ndim == 2 else "(..., 4)"
        raise BoxError(f"{name} must have shape {want} as (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    return _upcast(boxes)


def _check_pair(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    boxes1, boxes2 = _check(boxes1, "boxes1", 2), _check(boxes2, "boxes2", 2)
    try:
        torch.broadcast_shapes(boxes1.shape[:-2], boxes2.shape[:-2])
    except RuntimeError:
        raise BoxError(f"the leading dimensions of boxes1 {tuple(boxes1.shape)} and boxes2 "
                       f"{tuple(boxes2.shape)} do not broadcast") from None
    return boxes1, boxes2


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with 0 where ``den`` is 0 (degenerate boxes)."""
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, 1), 0)   # no 0 / 0, not even in the gradient


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``Tensor[..., 4]`` between 'xyxy' (corners), 'xywh' (corner + size) and 'cxcywh'
    (centre + size).  The dtype is kept, except that integer boxes become float32 where a centre
    is involved (a centre or a corner from a centre can be half a pixel), as in torchvision."""
    for fmt in (in_fmt, out_fmt):
        if fmt not in _FORMATS:
            raise ValueError(f"unknown box format {fmt!r}; use one of {', '.join(_FORMATS)}")
    _check(boxes)
    if in_fmt == out_fmt:
        return boxes.clone()
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        c, d = a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    if out_fmt == "xywh":
        c, d = c - a, d - b
    elif out_fmt == "cxcywh":
        a, b, c, d = (a + c) / 2, (b + d) / 2, c - a, d - b
    return torch.stack((a, b, c, d), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """``Tensor[..., 4]`` -> ``Tensor[...]``: ``(x2 - x1) * (y2 - y1)`` (negative for inverted
    boxes); float32 for float16/bfloat16 boxes, int32 for 8/16-bit integer boxes."""
    boxes = _check(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _pairs(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """``boxes1`` as ``(..., N, 1, 4)`` and ``boxes2`` as ``(..., 1, M, 4)``, to broadcast."""
    return boxes1.unsqueeze(-2), boxes2.unsqueeze(-3)


def _inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    area1, area2 = box_area(boxes1), box_area(boxes2)
    p1, p2 = _pairs(boxes1, boxes2)
    lt = torch.max(p1[..., :2], p2[..., :2])                  # (..., N, M, 2)
    rb = torch.min(p1[..., 2:], p2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter, area1.unsqueeze(-1) + area2.unsqueeze(-2) - inter


def _enclosing(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Width and height of the smallest box holding each pair: ``Tensor[..., N, M, 2]``."""
    p1, p2 = _pairs(boxes1, boxes2)
    lt = torch.min(p1[..., :2], p2[..., :2])
    rb = torch.max(p1[..., 2:], p2[..., 2:])
    return (rb - lt).clamp(min=0)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union, ``Tensor[..., N, 4]`` x ``Tensor[..., M, 4]`` -> ``Tensor[..., N, M]``."""
    boxes1, boxes2 = _check_pair(boxes1, boxes2)
    inter, union = _inter_union(boxes1, boxes2)
    return _safe_div(inter, union)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU (Rezatofighi et al. 2019): IoU minus the part of the enclosing box that the union
    leaves empty; in ``[-1, 1]`` and informative even for disjoint boxes.
    ``Tensor[..., N, 4]`` x ``Tensor[..., M, 4]`` -> ``Tensor[..., N, M]``."""
    boxes1, boxes2 = _check_pair(boxes1, boxes2)
    inter, union = _inter_union(boxes1, boxes2)
    wh = _enclosing(boxes1, boxes2)
    enclosing = wh[..., 0] * wh[..., 1]
    return _safe_div(inter, union) - _safe_div(enclosing - union, enclosing)


def _diou_iou(boxes1: Tensor, boxes2: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    inter, union = _inter_union(boxes1, boxes2)
    iou = _safe_div(inter, union)
    wh = _enclosing(boxes1, boxes2)
    diagonal2 = wh[..., 0] ** 2 + wh[..., 1] ** 2 + eps
    p1, p2 = _pairs(boxes1, boxes2)
    centres = (p1[..., :2] + p1[..., 2:]) / 2 - (p2[..., :2] + p2[..., 2:]) / 2
    return iou - (centres ** 2).sum(-1) / diagonal2, iou


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """DIoU (Zheng et al. 2020): IoU minus the squared centre distance over the squared diagonal
    of the enclosing box (``eps`` keeps coincident points finite).
    ``Tensor[..., N, 4]`` x ``Tensor[..., M, 4]`` -> ``Tensor[..., N, M]``."""
    boxes1, boxes2 = _check_pair(boxes1, boxes2)
    return _diou_iou(boxes1, boxes2, eps)[0]


def _aspect_angle(boxes: Tensor) -> Tensor:
    """``atan(w / h)`` of ``Tensor[..., 4]``, with its limit ``sign(w) * pi / 2`` for flat boxes
    (0 for a point, where torchvision's 0 / 0 gives NaN)."""
    w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    flat = h == 0
    return torch.where(flat, torch.sign(w) * (math.pi / 2),
                       torch.atan(w / torch.where(flat, torch.ones_like(h), h)))


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """CIoU (Zheng et al. 2020): DIoU minus ``alpha * v``, where ``v`` measures the difference of
    aspect ratios and the trade-off ``alpha = v / (1 - IoU + v)`` is held constant for gradients,
    as in the paper.  ``Tensor[..., N, 4]`` x ``Tensor[..., M, 4]`` -> ``Tensor[..., N, M]``."""
    boxes1, boxes2 = _check_pair(boxes1, boxes2)
    diou, iou = _diou_iou(boxes1, boxes2, eps)
    angle1, angle2 = _aspect_angle(boxes1), _aspect_angle(boxes2)
    v = (4 / math.pi ** 2) * (angle1.unsqueeze(-1) - angle2.unsqueeze(-2)) ** 2
    alpha = (v / (1 - iou + v + eps)).detach()
    return diou - alpha * v


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clamp ``Tensor[..., 4]`` boxes to an image of ``size = (height, width)``."""
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (``Tensor[K]`` int64) of the boxes ``Tensor[N, 4]`` whose width and height are both
    ``>= min_size``."""
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise BoxError(f"boxes must have shape (N, 4) as (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    boxes = _upcast(boxes)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    return torch.nonzero(keep).flatten()
