"""Losses and targets of the one-stage detectors: RetinaNet's focal loss, CenterNet's heatmaps.

A one-stage detector scores every anchor (RetinaNet) or every position of a heatmap (CenterNet)
against every class, so almost all of its training examples are easy negatives: background that
the model already calls background.  Their cross-entropy is small but not negligible, and summed
over ~100k positions it drowns out the few hard examples.  The focal loss (Lin et al. 2017)
multiplies the cross-entropy by ``(1 - p_t)^gamma``, where ``p_t`` is the probability given to
the right answer: a well-classified example (``p_t`` near 1) weighs almost nothing, a wrong one
weighs as much as in plain cross-entropy.  An optional ``alpha_t`` (``alpha`` for positives,
``1 - alpha`` for negatives) balances the two classes' counts.  Classes are scored by
independent sigmoids (multi-label), not a softmax, and there is no background class: a position
is background when every class score is low.

CenterNet (Zhou et al. 2019, "Objects as Points") drops the anchors: an object is the peak of a
per-class heatmap at its centre, at ``1/stride`` of the input resolution, plus a regressed size
and a sub-pixel offset that undoes the rounding of the centre onto the grid.  The target heatmap
is not a hard 0/1 map but a Gaussian around each centre, whose radius grows with the object
(:func:`gaussian_radius`), and the focal loss is "penalty-reduced" near the centres by
``(1 - Y)^beta``, so that a prediction one pixel off is hardly punished.  At inference a 3x3
max-pool finds the peaks, which replaces NMS.

Coordinates follow vislab: pixel ``i`` spans ``[i, i + 1)``, so output cell ``(x, y)`` covers the
input pixels ``[x * stride, (x + 1) * stride)`` and a centre ``c`` (in output units) falls in cell
``floor(c)``, with offset ``c - floor(c)`` in ``[0, 1)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_REDUCTIONS = ("none", "mean", "sum")


def sigmoid_focal_loss(inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "none") -> Tensor:
    """RetinaNet's binary focal loss, element by element, on logits (``torchvision.ops``' API).

    Args:
        inputs: logits of any shape.
        targets: same shape, in ``[0, 1]``: 1 for the positive class, 0 for the negative one
            (soft values are accepted, as in binary cross-entropy).
        alpha: weight of the positives, ``1 - alpha`` of the negatives; negative: no weighting.
        gamma: focusing exponent of ``(1 - p_t)``; 0 gives (alpha-weighted) cross-entropy.
        reduction: ``'none'`` (a tensor shaped as ``inputs``), ``'mean'`` or ``'sum'``.

    ``1 - p_t`` is computed as ``p (1 - t) + (1 - p) t`` with both sigmoids evaluated directly,
    so that it keeps its precision for confident predictions (``1 - (1 - p)`` would round to 0).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; use one of {', '.join(_REDUCTIONS)}")
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must "
                         "have the same shape")
    targets = targets.to(inputs.dtype)
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    one_minus_p_t = torch.sigmoid(inputs) * (1 - targets) + torch.sigmoid(-inputs) * targets
    loss = ce * one_minus_p_t ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def heatmap_focal_loss(pred_logits: Tensor, target_heatmap: Tensor, alpha: float = 2.0,
                       beta: float = 4.0) -> Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss (eq. 1 of "Objects as Points").

    Args:
        pred_logits: ``Tensor[B, C, H, W]`` (any shape) heatmap logits.
        target_heatmap: same shape, in ``[0, 1]``, exactly 1 at the object centres.
        alpha: focusing exponent, on ``(1 - p)`` at the centres and on ``p`` elsewhere.
        beta: exponent of the penalty reduction ``(1 - Y)^beta`` near the centres.

    Returns the scalar ``-1/N sum(...)``: ``(1 - p)^alpha log p`` where ``Y = 1``,
    ``(1 - Y)^beta p^alpha log(1 - p)`` elsewhere, ``N = max(1, number of centres)`` over the
    whole batch.  ``log p`` and ``log(1 - p)`` come from ``logsigmoid``, so the loss and its
    gradient stay finite for any finite logit (no clamping of ``p`` needed).
    """
    if pred_logits.shape != target_heatmap.shape:
        raise ValueError(f"pred_logits {tuple(pred_logits.shape)} and target_heatmap "
                         f"{tuple(target_heatmap.shape)} must have the same shape")
    target = target_heatmap.to(pred_logits.dtype)
    pos = target == 1
    log_p, log_not_p = F.logsigmoid(pred_logits), F.logsigmoid(-pred_logits)
    p, not_p = torch.sigmoid(pred_logits), torch.sigmoid(-pred_logits)
    pos_loss = not_p ** alpha * log_p
    neg_loss = (1 - target) ** beta * p ** alpha * log_not_p
    num_pos = pos.sum().clamp(min=1)
    return -torch.where(pos, pos_loss, neg_loss).sum() / num_pos


def gaussian_radius(height: float | Tensor, width: float | Tensor,
                    min_overlap: float = 0.7) -> float | Tensor:
    """The largest ``r`` such that moving a box's corners by ``r`` keeps IoU >= ``min_overlap``.

    CornerNet's rule (Law & Deng 2018), reused by CenterNet to size the Gaussian of each object.
    A box ``h x w`` is compared with the same box with each corner moved by ``r`` along both
    axes, in three ways; each gives a quadratic in ``r`` whose root is where the IoU falls to
    ``o = min_overlap``, and the radius is the smallest of the three roots:

    1. both corners move the same way (the box slides diagonally by ``(r, r)``):
       ``(w - r)(h - r) / (2wh - (w - r)(h - r)) = o``;
    2. both corners move inwards (the box shrinks by ``2r``): ``(w - 2r)(h - 2r) / (wh) = o``;
    3. both corners move outwards (the box grows by ``2r``): ``wh / ((w + 2r)(h + 2r)) = o``.

    Each root taken is the smallest non-negative one (the other is past the box's size or
    negative), written as ``2c / (b + sqrt(b^2 - 4ac))`` rather than ``(b - sqrt(...)) / 2a``,
    which cancels for small boxes.  The radius is
    the one the rule describes, at which the worst of the three shifted boxes has IoU exactly
    ``min_overlap``, as in CornerNet's corrected code.  CornerNet's first release (a bug its
    authors acknowledged in CornerNet issue #37, derived in #110) and CenterNet's reference code,
    which copied it, take the far root or divide by 2 instead of ``2a``: their radii are about 3.5
    times larger at ``o = 0.7`` (27 instead of 8.2 cells for a 100 x 100 box).

    Args:
        height, width: box size, floats or broadcastable tensors (then the result is a tensor of
            their floating dtype, float32 for integer tensors).
        min_overlap: IoU to keep, in ``(0, 1]``.
    """
    if not 0 < min_overlap <= 1:
        raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap}")
    as_float = not isinstance(height, Tensor) and not isinstance(width, Tensor)
    h, w = torch.as_tensor(height), torch.as_tensor(width)
    dtype = torch.promote_types(h.dtype, w.dtype)
    dtype = torch.float64 if as_float else (dtype if dtype.is_floating_point else torch.float32)
    h, w = h.to(dtype), w.to(dtype)
    if (h < 0).any() or (w < 0).any():
        raise ValueError("box heights and widths must be non-negative")
    o = min_overlap
    s, area = h + w, h * w

    def small_root(a: float, b: Tensor, c: Tensor) -> Tensor:
        """The root of ``a r^2 - b r + c`` nearer to 0, ``2c / (b + sqrt(b^2 - 4ac))``."""
        den = b + torch.sqrt((b * b - 4 * a * c).clamp(min=0))
        return torch.where(den > 0, 2 * c / torch.where(den > 0, den, 1), 0)

    r1 = small_root(1.0, s, area * (1 - o) / (1 + o))
    r2 = small_root(4.0, 2 * s, area * (1 - o))
    r3 = small_root(-4.0 * o, 2 * o * s, area * (1 - o))     # -(4o r^2 + 2o s r - (1 - o) wh)
    r = torch.minimum(torch.minimum(r1, r2), r3)
    return r.item() if as_float else r


def draw_gaussian(heatmap: Tensor, center: tuple[int, int], radius: int) -> Tensor:
    """Draw, in place, a Gaussian peak of height 1 at integer ``center = (x, y)`` of ``heatmap``
    ``Tensor[H, W]``, and return it.

    The Gaussian has ``sigma = (2 * radius + 1) / 6`` (the ``2r + 1`` window spans six sigmas)
    and is drawn in that window only, clipped at the borders; where objects overlap the
    heatmap keeps the element-wise maximum, so a nearby object never lowers another's peak.
    """
    if heatmap.ndim != 2 or not heatmap.is_floating_point():
        raise ValueError(f"heatmap must be a floating-point (H, W) tensor, got "
                         f"{tuple(heatmap.shape)} {heatmap.dtype}")
    radius = int(radius)
    if radius < 0:
        raise ValueError(f"radius must be non-negative, got {radius}")
    x, y = int(center[0]), int(center[1])
    height, width = heatmap.shape
    x0, x1 = max(0, x - radius), min(width, x + radius + 1)
    y0, y1 = max(0, y - radius), min(height, y + radius + 1)
    if x0 >= x1 or y0 >= y1:
        return heatmap
    sigma = (2 * radius + 1) / 6
    dx = torch.arange(x0 - x, x1 - x, dtype=heatmap.dtype, device=heatmap.device)
    dy = torch.arange(y0 - y, y1 - y, dtype=heatmap.dtype, device=heatmap.device)
    gaussian = torch.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / (2 * sigma * sigma))
    window = heatmap[y0:y1, x0:x1]
    torch.maximum(window, gaussian, out=window)
    return heatmap


def centernet_targets(boxes: Tensor, labels: Tensor, num_classes: int, output_size: tuple[int, int],
                      stride: float) -> dict[str, Tensor]:
    """CenterNet's training targets for one image.

    Args:
        boxes: ``Tensor[N, 4]`` ``(x1, y1, x2, y2)`` in input pixels.
        labels: ``Tensor[N]`` class indices in ``[0, num_classes)``.
        num_classes: number of heatmap channels ``C``.
        output_size: ``(H, W)`` of the output grid.
        stride: input pixels per output cell.

    Returns a dict of
        ``heatmap`` ``Tensor[C, H, W]``: a Gaussian per object (radius ``max(0, int(
        gaussian_radius(h, w)))`` of the box size in output cells), 1 at the centre cells;
        ``size`` ``Tensor[N, 2]``: box ``(w, h)`` in output cells;
        ``offset`` ``Tensor[N, 2]``: the centre minus its cell, ``(dx, dy)`` in ``[0, 1)``;
        ``index`` ``Tensor[N]`` int64: the centre cell ``y * W + x`` (0 where ``mask`` is False,
        so that it can always be used to gather);
        ``mask`` ``Tensor[N]`` bool: the box's centre falls on the grid (only those are drawn).
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) as (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if labels.shape != boxes.shape[:1]:
        raise ValueError(f"labels {tuple(labels.shape)} must have shape ({boxes.shape[0]},), one per box")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got {labels.tolist()}")
    if (boxes[:, 2:] < boxes[:, :2]).any():
        raise ValueError("boxes must have x2 >= x1 and y2 >= y1")
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    height, width = output_size
    dtype = boxes.dtype if boxes.is_floating_point() else torch.float32
    boxes = boxes.to(dtype) / stride                                   # (N, 4) in output cells
    size = boxes[:, 2:] - boxes[:, :2]                                 # (N, 2) as (w, h)
    centre = 0.5 * (boxes[:, :2] + boxes[:, 2:])                       # (N, 2) as (x, y)
    cell = centre.floor()
    offset = centre - cell
    cell = cell.long()
    mask = (cell[:, 0] >= 0) & (cell[:, 0] < width) & (cell[:, 1] >= 0) & (cell[:, 1] < height)
    index = torch.where(mask, cell[:, 1] * width + cell[:, 0], 0)

    heatmap = torch.zeros(num_classes, height, width, dtype=dtype, device=boxes.device)
    radii = gaussian_radius(size[:, 1], size[:, 0]).floor().clamp(min=0).long()
    for label, (x, y), r, on_grid in zip(labels.tolist(), cell.tolist(), radii.tolist(), mask.tolist()):
        if on_grid:
            draw_gaussian(heatmap[label], (x, y), r)
    return {"heatmap": heatmap, "size": size, "offset": offset, "index": index, "mask": mask}


def centernet_decode(heatmap_logits: Tensor, size: Tensor, offset: Tensor, stride: float,
                     k: int = 100) -> list[dict[str, Tensor]]:
    """Detections from CenterNet's outputs, without NMS.

    Args:
        heatmap_logits: ``Tensor[B, C, H, W]``.
        size: ``Tensor[B, 2, H, W]`` box ``(w, h)`` in output cells.
        offset: ``Tensor[B, 2, H, W]`` sub-cell centre offset ``(dx, dy)``.
        stride: input pixels per output cell.
        k: detections per image (at most ``C * H * W``).

    A position is a peak when no position of its 3x3 neighbourhood, in the same class, scores
    higher (ties all stay); the ``k`` best peaks over all classes and positions become boxes
    ``(x + dx +- w / 2, y + dy +- h / 2) * stride``.  Returns per image a dict of ``boxes``
    ``Tensor[k, 4]``, ``scores`` ``Tensor[k]`` (sigmoid; 0 for non-peaks, which fill the list
    when an image has fewer than ``k`` peaks) and ``labels`` ``Tensor[k]``.  The peaks are found
    on the logits, where the sigmoid's float32 saturation cannot make a plateau of two 1.0s.
    """
    if heatmap_logits.ndim != 4:
        raise ValueError(f"heatmap_logits must be (B, C, H, W), got {tuple(heatmap_logits.shape)}")
    batch, num_classes, height, width = heatmap_logits.shape
    for name, t in (("size", size), ("offset", offset)):
        if t.shape != (batch, 2, height, width):
            raise ValueError(f"{name} must have shape {(batch, 2, height, width)} to match "
                             f"heatmap_logits, got {tuple(t.shape)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    k = min(k, num_classes * height * width)

    pooled = F.max_pool2d(heatmap_logits, 3, stride=1, padding=1)
    scores = torch.where(pooled == heatmap_logits, torch.sigmoid(heatmap_logits), 0)
    top_scores, top = scores.flatten(1).topk(k)                        # (B, k)
    labels = top // (height * width)
    position = top % (height * width)
    ys, xs = (position // width).to(size.dtype), (position % width).to(size.dtype)
    gather = position[:, None].expand(-1, 2, -1)                       # (B, 2, k)
    wh = size.flatten(2).gather(2, gather)
    dxy = offset.flatten(2).gather(2, gather)
    cx, cy = xs + dxy[:, 0], ys + dxy[:, 1]
    half_w, half_h = 0.5 * wh[:, 0], 0.5 * wh[:, 1]
    boxes = torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1) * stride
    return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(boxes, top_scores, labels)]
