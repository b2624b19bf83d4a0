"""RoI pooling: a fixed-size feature for every region of interest, and FPN's choice of level.

Fast R-CNN (Girshick 2015) runs the backbone once on the whole image instead of once per
proposal: each proposal is projected onto the feature map (its corners times ``spatial_scale``,
``1 / stride``) and max-pooled over a fixed grid of bins (7 x 7), so that every region, whatever
its size, gives the same-sized input to the fully connected head.  That is :func:`roi_pool`.
It quantises twice: the projected corners are rounded to whole cells, and the bin edges are
floored and ceiled to whole cells, which shifts the pooled features by up to half a stride
(8 pixels at stride 16) -- harmless for classifying a box, ruinous for a pixel-accurate mask.

Mask R-CNN (He et al. 2017) therefore replaced it with RoIAlign, :func:`roi_align`: nothing is
rounded; each bin is sampled at a regular grid of points (``sampling_ratio`` per side; 2 x 2 = the
paper's four points), each sample is read by bilinear interpolation from its four neighbouring
cells, and the samples are averaged.  (The course notes max-pool the four samples; the paper
allows max or average, and Detectron and torchvision average, as vislab does.)  ``aligned=True`` (Detectron2's ROIAlignV2) also subtracts half a pixel: a box corner
``x`` is a continuous coordinate, while feature cell ``j`` holds the value at ``j + 0.5``.

Both functions take torchvision's arguments (``boxes`` as ``Tensor[K, 5]`` rows of
``(batch index, x1, y1, x2, y2)`` or as one ``Tensor[L, 4]`` per image) and reproduce its
boundary rules, so their outputs equal ``torchvision.ops.roi_pool`` / ``roi_align``:

* RoIPool rounds the scaled corners half away from zero (C's ``round``), gives an RoI of
  ``x2 - x1 + 1`` cells (at least 1), cuts it into bins ``[floor(i * b), ceil((i + 1) * b))``
  with ``b = cells / bins``, clips the bins to the map, and returns 0 for an empty bin.
* RoIAlign (``aligned=False``) stretches RoIs smaller than one cell to one cell; a sample
  outside ``[-1, H] x [-1, W]`` counts as 0, one inside is clamped to ``[0, H - 1] x [0, W - 1]``
  before interpolating; the adaptive grid is ``ceil(roi_size / output_size)`` per RoI and side.

Both are plain tensor operations, so autograd gives the gradients: to each bin's argmax for
RoIPool, to the four neighbours with the bilinear weights for RoIAlign.  As in torchvision the
boxes get no gradient.  RoIPool's gather and max are one ``F.embedding_bag`` over the map's cells
(a "bag" is the cells of one output bin), vectorised over RoIs and bins, looping only over groups
of RoIs with the same window size, so that a large RoI does not pad the bags of all the small
ones.  RoIAlign is separable: a sample's weight is its row weight times its column weight, and
the mean over a bin's grid of samples is the mean over its rows times the mean over its columns.
So each RoI is two small matrices, ``A_y`` (``out_h x H``: row ``i`` holds bin ``i``'s averaged
bilinear weights on the map's rows) and ``A_x`` (``out_w x W``), and its output is
``A_y @ map @ A_x^T`` per channel: two matrix products per image, forward and backward
(gathering the four neighbours of every sample instead made the backward pass, a scatter of
millions of rows, the largest cost of a two-stage detector's training step).

With a feature pyramid (FPN, Lin et al. 2017) each RoI is pooled from one level, chosen by its
size (:func:`assign_fpn_levels`, the paper's eq. 1), by :func:`multiscale_roi_align`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def convert_boxes_to_rois(boxes: Tensor | Sequence[Tensor]) -> Tensor:
    """A list of ``Tensor[L_i, 4]`` boxes, one per image, -> ``Tensor[K, 5]`` rows of
    ``(batch index, x1, y1, x2, y2)``, in the list's order.  A ``Tensor[K, 5]`` is returned as it is."""
    if isinstance(boxes, Tensor):
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(f"boxes given as one tensor must be Tensor[K, 5] rows of (batch index, "
                             f"x1, y1, x2, y2), got shape {tuple(boxes.shape)}; pass one image's "
                             "Tensor[L, 4] as a list, [boxes]")
        return boxes
    if not isinstance(boxes, (list, tuple)) or not all(isinstance(b, Tensor) for b in boxes):
        raise TypeError(f"boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(boxes).__name__}")
    if len(boxes) == 0:
        raise ValueError("boxes is an empty list; give one Tensor[L, 4] per image (L may be 0)")
    for i, b in enumerate(boxes):
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes[{i}] must be Tensor[L, 4] as (x1, y1, x2, y2), got shape {tuple(b.shape)}")
    coords = torch.cat(list(boxes))
    counts = torch.tensor([len(b) for b in boxes], device=coords.device)
    image = torch.repeat_interleave(torch.arange(len(boxes), device=coords.device), counts)
    return torch.cat((image[:, None].to(coords.dtype), coords), dim=1)


def _pair(output_size: int | Sequence[int]) -> tuple[int, int]:
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"output_size must be a positive int or a (height, width) pair, got {output_size!r}")
    return size


def _prepare(input: Tensor, boxes: Tensor | Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Check the input; return the RoIs in the dtype torchvision computes in (float32 for half
    precision), detached, and each RoI's image index."""
    if input.ndim != 4:
        raise ValueError(f"input must be Tensor[N, C, H, W], got shape {tuple(input.shape)}")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got {input.dtype}")
    n = input.shape[0]
    dtype = input.dtype if input.dtype in (torch.float32, torch.float64) else torch.float32
    rois = convert_boxes_to_rois(boxes).detach().to(device=input.device, dtype=dtype)
    batch = rois[:, 0].long()
    if len(batch) and (int(batch.min()) < 0 or int(batch.max()) >= n):
        raise ValueError(f"RoI batch indices must lie in [0, {n - 1}] for a batch of {n}, "
                         f"got {int(batch.min())}..{int(batch.max())}")
    return rois, batch


def _cell_table(input: Tensor, dtype: torch.dtype) -> Tensor:
    """The map's cells as rows, ``(N * H * W + 1, C)``, cell ``(n, y, x)`` at row
    ``(n * H + y) * W + x``, and a last row of zeros, the padding of windows that are cut short."""
    n, c, h, w = input.shape
    return torch.cat((input.movedim(1, -1).reshape(n * h * w, c), input.new_zeros(1, c))).to(dtype)


def _round_half_away(x: Tensor) -> Tensor:
    """C's ``round``: halves away from zero (``torch.round`` sends them to the even neighbour)."""
    whole = x.trunc()
    return torch.where((x - whole).abs() == 0.5, whole + x.sign(), x.round())


def _pool_bins(start: Tensor, end: Tensor, bins: int, size: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """RoIPool's bins along one axis: from the rounded corners ``start``, ``end`` (``Tensor[K]``
    cells) to the first and one-past-last cell of each bin, ``Tensor[K, bins]`` each, clipped to
    ``[0, size]``.  The arithmetic is in ``dtype``, as in torchvision, so that the floors and
    ceilings agree."""
    cells = (end - start + 1).clamp(min=1)                     # a malformed RoI becomes one cell
    edges = torch.arange(bins + 1, device=start.device, dtype=dtype) * (cells.to(dtype) / bins)[:, None]
    lo = edges[:, :-1].floor().long() + start[:, None]
    hi = edges[:, 1:].ceil().long() + start[:, None]
    return lo.clamp(0, size), hi.clamp(0, size)


def _grouped(key: Tensor, pool: Callable[[Tensor, int], Tensor]) -> Tensor:
    """``pool(idx, value)`` for each group of RoIs ``idx`` that share a ``key`` value, the results
    concatenated back into the order of the RoIs.  Pooling a group at a time keeps every gather
    vectorised without padding small RoIs to the size of the largest."""
    pooled, order = [], []
    for value in key.unique().tolist():
        idx = torch.nonzero(key == value).squeeze(1)
        pooled.append(pool(idx, value))
        order.append(idx)
    return torch.cat(pooled)[torch.argsort(torch.cat(order).to(pooled[0].device))]


def _reduce_bags(cells: Tensor, table: Tensor, weights: Tensor | None = None) -> Tensor:
    """Reduce the table rows ``cells``, ``Tensor[K, bh, bw, ...]``, over the trailing dimensions:
    the weighted sum with ``weights``, else the maximum (0 where every cell is padding).
    ``Tensor[K, bh, bw, C]``.

    ``embedding_bag`` is a gather fused with the reduction, so the ``(..., C)`` values are never
    materialised; its gradient goes to the gathered rows, weighted (sum) or to the argmax, the
    first one on ties as in torchvision's C++ loop (max)."""
    k, bh, bw = cells.shape[:3]
    bags = cells.reshape(k * bh * bw, -1)
    if bags.shape[1] == 0:
        return table.new_zeros(k, bh, bw, table.shape[1])
    if weights is None:
        out = F.embedding_bag(bags, table, mode="max", padding_idx=len(table) - 1)
    else:
        out = F.embedding_bag(bags, table, mode="sum", per_sample_weights=weights.reshape(bags.shape))
    return out.view(k, bh, bw, -1)


def roi_pool(input: Tensor, boxes: Tensor | Sequence[Tensor], output_size: int | Sequence[int],
             spatial_scale: float = 1.0) -> Tensor:
    """Fast R-CNN's RoI max pooling, equal to ``torchvision.ops.roi_pool``.

    Args:
        input: ``Tensor[N, C, H, W]`` feature maps.
        boxes: ``Tensor[K, 5]`` rows of ``(batch index, x1, y1, x2, y2)``, or a list of
            ``Tensor[L_i, 4]``, one per image, in image pixels.
        output_size: bins per RoI, an int or ``(height, width)``.
        spatial_scale: feature cells per image pixel, ``1 / stride``.

    Returns ``Tensor[K, C, height, width]``.
    """
    out_h, out_w = _pair(output_size)
    rois, batch = _prepare(input, boxes)
    c, h, w = input.shape[1:]
    if len(rois) == 0:
        return input.new_zeros(0, c, out_h, out_w)
    table, base = _cell_table(input, rois.dtype), batch * (h * w)
    x0, y0, x1, y1 = _round_half_away(rois[:, 1:] * spatial_scale).long().unbind(1)
    ys0, ys1 = _pool_bins(y0, y1, out_h, h, rois.dtype)              # (K, out_h)
    xs0, xs1 = _pool_bins(x0, x1, out_w, w, rois.dtype)              # (K, out_w)
    extent_h = (ys1 - ys0).clamp(min=0).amax(1)                      # (K,) each RoI's tallest bin
    extent_w = (xs1 - xs0).clamp(min=0).amax(1)
    span = int(extent_w.max()) + 1
    padding = len(table) - 1

    def pool(idx: Tensor, key: int) -> Tensor:                      # RoIs whose bins fit one window
        eh, ew = divmod(key, span)
        ys = ys0[idx, :, None] + torch.arange(eh, device=ys0.device)                    # (Kg, out_h, eh)
        xs = xs0[idx, :, None] + torch.arange(ew, device=xs0.device)                    # (Kg, out_w, ew)
        inside = (ys < ys1[idx, :, None])[:, :, None, :, None] & (xs < xs1[idx, :, None])[:, None, :, None, :]
        cells = base[idx, None, None, None, None] + ys[:, :, None, :, None] * w + xs[:, None, :, None, :]
        return _reduce_bags(torch.where(inside, cells, padding), table)                 # (Kg, out_h, out_w, C)

    out = _grouped(extent_h * span + extent_w, pool)
    return out.permute(0, 3, 1, 2).to(input.dtype).contiguous()


def _sample_points(start: Tensor, bin_size: Tensor, bins: int, grid: int) -> Tensor:
    """RoIAlign's sample coordinates along one axis, ``Tensor[K, bins * grid]``: ``grid`` evenly
    spaced points in each bin, at the centres of its ``grid`` equal parts.  The operations are
    in torchvision's order, so that a sample on the ``-1`` or ``H`` boundary falls the same way."""
    cell = torch.arange(bins, device=start.device, dtype=start.dtype)
    part = torch.arange(grid, device=start.device, dtype=start.dtype) + 0.5
    step = bin_size[:, None, None]
    points = (start[:, None, None] + cell[:, None] * step) + part * step / grid
    return points.reshape(len(start), bins * grid)


def _neighbours(coord: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """For sample coordinates ``Tensor[K, S]`` along one axis: the cells below and above each,
    and their bilinear weights, ``Tensor[K, S, 2]`` each; both weights are 0 for a sample
    outside ``[-1, size]``."""
    inside = ((coord >= -1) & (coord <= size)).to(coord.dtype)
    coord = coord.clamp(min=0)
    low = coord.long()                                               # floor, as coord >= 0
    edge = low >= size - 1                                           # on or past the last cell: take it
    low = low.clamp(max=size - 1)
    high = torch.where(edge, low, low + 1)
    frac = torch.where(edge, 0, coord - low)
    return torch.stack((low, high), -1), torch.stack(((1 - frac) * inside, frac * inside), -1)


def roi_align(input: Tensor, boxes: Tensor | Sequence[Tensor], output_size: int | Sequence[int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """Mask R-CNN's RoIAlign, equal to ``torchvision.ops.roi_align``.

    Args:
        input: ``Tensor[N, C, H, W]`` feature maps.
        boxes: ``Tensor[K, 5]`` rows of ``(batch index, x1, y1, x2, y2)``, or a list of
            ``Tensor[L_i, 4]``, one per image, in image pixels.
        output_size: bins per RoI, an int or ``(height, width)``.
        spatial_scale: feature cells per image pixel, ``1 / stride``.
        sampling_ratio: samples per bin and side; ``<= 0`` adapts it to each RoI,
            ``ceil(roi_size / output_size)``.
        aligned: shift the box by -0.5 cell, so that a corner on a pixel's edge samples between
            two cells (Detectron2's ROIAlignV2); False is the original RoIAlign.

    Returns ``Tensor[K, C, height, width]``.
    """
    out_h, out_w = _pair(output_size)
    rois, batch = _prepare(input, boxes)
    c, h, w = input.shape[1:]
    k = len(rois)
    if k == 0:
        return input.new_zeros(0, c, out_h, out_w)
    x0, y0, x1, y1 = (rois[:, 1:] * spatial_scale - (0.5 if aligned else 0.0)).unbind(1)
    roi_w, roi_h = x1 - x0, y1 - y0
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1), roi_h.clamp(min=1)
    bin_w, bin_h = roi_w / out_w, roi_h / out_h
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full((k,), sampling_ratio, device=rois.device)
    else:
        grid_h, grid_w = bin_h.ceil().clamp(min=0).long(), bin_w.ceil().clamp(min=0).long()
    ay = _grouped(grid_h, lambda idx, g: _axis_weights(y0[idx], bin_h[idx], out_h, g, h))     # (K, out_h, H)
    ax = _grouped(grid_w, lambda idx, g: _axis_weights(x0[idx], bin_w[idx], out_w, g, w))     # (K, out_w, W)
    maps = input.to(rois.dtype)

    def pool(idx: Tensor, n: int) -> Tensor:      # one image's RoIs: (ay @ map) @ ax^T, two matrix products
        rows = ay[idx].reshape(-1, h) @ maps[n].transpose(0, 1).reshape(h, c * w)          # (Kn * out_h, C * W)
        both = rows.view(len(idx), out_h * c, w) @ ax[idx].transpose(1, 2)                  # (Kn, out_h * C, out_w)
        return both.view(len(idx), out_h, c, out_w).transpose(1, 2)

    out = _grouped(batch, pool)
    return out.to(input.dtype).contiguous()


def _axis_weights(start: Tensor, bin_size: Tensor, bins: int, grid: int, size: int) -> Tensor:
    """RoIAlign along one axis as a matrix, ``Tensor[K, bins, size]``: row ``i`` holds the mean,
    over bin ``i``'s ``grid`` samples, of each sample's two bilinear weights on the cells below
    and above it (all 0 where ``grid`` is 0)."""
    k = len(start)
    cells, weights = _neighbours(_sample_points(start, bin_size, bins, grid), size)     # (K, bins * grid, 2)
    row = torch.arange(bins, device=start.device).repeat_interleave(grid)[:, None] * size   # (bins * grid, 1)
    out = weights.new_zeros(k, bins * size)
    out.scatter_add_(1, (row + cells).reshape(k, -1), weights.reshape(k, -1) / max(grid, 1))
    return out.view(k, bins, size)


def assign_fpn_levels(boxes: Tensor, k0: int = 4, canonical_size: float = 224, k_min: int = 2,
                      k_max: int = 5, eps: float = 1e-6) -> Tensor:
    """The FPN level of each box, ``Tensor[K, 4]`` -> ``Tensor[K]`` int64 (FPN's eq. 1):
    ``k = floor(k0 + log2(sqrt(w * h) / canonical_size) + eps)``, clamped to ``[k_min, k_max]``.

    A box of ``canonical_size`` pixels a side goes to level ``k0`` (stride ``2 ** k0``); one twice
    as large goes a level up, half as large a level down, so that every RoI covers about the same
    number of cells on its level.  224 is ImageNet's training size and ``k0 = 4`` the stride-16
    map that single-scale Faster R-CNN pools from; ``eps`` keeps a box of exactly
    ``canonical_size * 2 ** j`` on level ``k0 + j`` despite the rounding of ``log2``.  Flat and
    inverted boxes go to ``k_min``.  The levels equal torchvision's ``LevelMapper`` plus ``k_min``.

    The constants suit COCO-sized images (shorter side 800 pixels, of which 224 is 28%).  On
    smaller images every object would land on ``k_min`` and the coarse levels would go unused:
    scale the canonical size with the image, ``canonical_size = 224 * shorter_side / 800``
    (72 for 256-pixel images, 18 for 64-pixel scenes), which sends a box covering the same
    fraction of the image to the same level.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be Tensor[K, 4] as (x1, y1, x2, y2), got shape {tuple(boxes.shape)}")
    if k_min > k_max:
        raise ValueError(f"k_min {k_min} is above k_max {k_max}")
    if boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.float()
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
    size = torch.sqrt(wh[:, 0] * wh[:, 1])
    level = torch.floor(k0 + torch.log2(size / canonical_size) + eps)
    return level.clamp(k_min, k_max).long()


def multiscale_roi_align(features: Mapping[str, Tensor] | Sequence[Tensor], boxes: Tensor | Sequence[Tensor],
                         output_size: int | Sequence[int], strides: Sequence[int], sampling_ratio: int = 2,
                         canonical_size: float = 224, k0: int = 4, *, aligned: bool = False) -> Tensor:
    """RoIAlign from a feature pyramid: each RoI from the level :func:`assign_fpn_levels` picks.

    Args:
        features: the pyramid's maps ``Tensor[N, C, H_l, W_l]``, finest first, as a list or a
            dict (its order is used).
        boxes: ``Tensor[K, 5]`` or a list of ``Tensor[L_i, 4]`` per image, in image pixels.
        output_size: bins per RoI, an int or ``(height, width)``.
        strides: image pixels per cell of each map, powers of two doubling from level to level
            (4, 8, 16, 32 for P2-P5); level ``l`` is ``log2(stride)``.
        sampling_ratio, aligned: as in :func:`roi_align`.
        canonical_size, k0: as in :func:`assign_fpn_levels`.

    Returns ``Tensor[K, C, height, width]`` in the order of the RoIs.  With the same settings
    it equals ``torchvision.ops.MultiScaleRoIAlign``, which infers the strides from the sizes
    of the maps and the image.
    """
    maps = list(features.values()) if isinstance(features, Mapping) else list(features)
    strides = [int(s) for s in strides]
    if not maps or len(maps) != len(strides):
        raise ValueError(f"give one stride per feature map: {len(maps)} maps, {len(strides)} strides")
    if strides[0] < 1 or strides[0] & (strides[0] - 1) or strides != [strides[0] << i for i in range(len(strides))]:
        raise ValueError(f"strides must be powers of two that double from level to level, finest "
                         f"first (e.g. 4, 8, 16, 32), got {strides}")
    channels = {m.shape[1] for m in maps}
    if len(channels) != 1:
        raise ValueError(f"all levels must have the same number of channels, got {sorted(channels)}")
    size = _pair(output_size)
    rois = convert_boxes_to_rois(boxes)
    k_min = strides[0].bit_length() - 1
    levels = assign_fpn_levels(rois[:, 1:], k0, canonical_size, k_min, k_min + len(maps) - 1) - k_min
    if len(levels) == 0:
        return maps[0].new_zeros(0, channels.pop(), *size)

    def pool(idx: Tensor, level: int) -> Tensor:
        return roi_align(maps[level], rois[idx], size, 1.0 / strides[level], sampling_ratio, aligned)

    return _grouped(levels, pool)
