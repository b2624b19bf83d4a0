"""Anchors: a grid of reference boxes on each feature level, and anchor shapes learned by k-means.

An anchor generator places ``len(sizes) * len(aspect_ratios)`` boxes at every cell of every
feature map (Faster R-CNN, RetinaNet).  SSD (Liu et al. 2016) calls them default boxes and ties
one scale to each feature map instead: small 3x3 detectors on early, fine maps look for small
objects and those on late, coarse maps for large ones (:class:`DefaultBoxGenerator`).
:func:`kmeans_anchors` instead learns the anchor shapes from the training boxes, clustering
widths and heights with the distance ``1 - IoU`` (YOLOv2, Redmon & Farhadi 2017), so that large
boxes do not dominate as they would with a Euclidean distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class AnchorGenerator(nn.Module):
    """Anchors for several feature levels.

    Args:
        sizes: per level, the anchor sizes in pixels (the square root of the anchor's area),
            e.g. ``((32,), (64,), (128,))``.
        aspect_ratios: per level, the height/width ratios, e.g. ``((0.5, 1.0, 2.0),) * 3``;
            a single tuple is used for every level.
        offset: where the anchors sit in a cell, in strides: 0 puts them on the cell's top-left
            corner (torchvision, Detectron), 0.5 on its centre.

    At level ``l`` with stride ``s`` the anchors of cell ``(i, j)`` are centred at
    ``((j + offset) * s, (i + offset) * s)``; the order is cell by cell (rows first), then
    aspect ratio, then size — the order of a head's ``(H, W, A)`` outputs.  Corners are rounded
    to whole pixels, as in the original Faster R-CNN code.
    """

    def __init__(self, sizes: Sequence[Sequence[float]],
                 aspect_ratios: Sequence[Sequence[float]] = ((0.5, 1.0, 2.0),),
                 offset: float = 0.0) -> None:
        super().__init__()
        if len(aspect_ratios) == 1 and len(sizes) > 1:
            aspect_ratios = tuple(aspect_ratios) * len(sizes)
        if len(aspect_ratios) != len(sizes):
            raise ValueError(f"{len(sizes)} levels of sizes but {len(aspect_ratios)} of aspect "
                             "ratios; give one tuple of ratios per level (or one for all)")
        self.sizes = [tuple(float(s) for s in level) for level in sizes]
        self.aspect_ratios = [tuple(float(r) for r in level) for level in aspect_ratios]
        self.offset = offset
        for level, (s, r) in enumerate(zip(self.sizes, self.aspect_ratios)):
            self.register_buffer(f"cell_anchors_{level}", self.make_cell_anchors(s, r),
                                 persistent=False)

    @staticmethod
    def make_cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> Tensor:
        """The ``Tensor[R * S, 4]`` anchors of one cell, centred on 0: for ratio ``r`` and size
        ``s``, width ``s / sqrt(r)`` and height ``s * sqrt(r)``."""
        s = torch.as_tensor(sizes, dtype=torch.float32)
        r = torch.as_tensor(aspect_ratios, dtype=torch.float32)
        if (s <= 0).any() or (r <= 0).any():
            raise ValueError(f"anchor sizes {tuple(sizes)} and aspect ratios {tuple(aspect_ratios)} "
                             "must be positive")
        h_ratio = torch.sqrt(r)
        ws = ((1 / h_ratio)[:, None] * s[None, :]).flatten()
        hs = (h_ratio[:, None] * s[None, :]).flatten()
        return (torch.stack((-ws, -hs, ws, hs), dim=1) / 2).round()

    @property
    def num_levels(self) -> int:
        return len(self.sizes)

    def cell_anchors(self, level: int) -> Tensor:
        return getattr(self, f"cell_anchors_{level}")

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def grid_anchors(self, grid_sizes: Sequence[tuple[int, int]],
                     strides: Sequence[tuple[float, float]]) -> list[Tensor]:
        """Per level, the ``Tensor[H * W * A, 4]`` anchors of an ``(H, W)`` grid with stride
        ``(stride_y, stride_x)`` in pixels."""
        if not len(grid_sizes) == len(strides) == self.num_levels:
            raise ValueError(f"the generator has {self.num_levels} levels; got {len(grid_sizes)} "
                             f"grid sizes and {len(strides)} strides")
        out = []
        for level, ((gh, gw), (sy, sx)) in enumerate(zip(grid_sizes, strides)):
            cell = self.cell_anchors(level)
            ys = (torch.arange(gh, device=cell.device, dtype=cell.dtype) + self.offset) * sy
            xs = (torch.arange(gw, device=cell.device, dtype=cell.dtype) + self.offset) * sx
            y, x = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack((x, y, x, y), dim=-1).reshape(-1, 1, 4)       # (H*W, 1, 4)
            out.append((shifts + cell[None]).reshape(-1, 4))                   # (H*W*A, 4)
        return out

    def forward(self, images: Tensor, features: Sequence[Tensor]) -> Tensor:
        """All anchors ``Tensor[sum_l H_l * W_l * A_l, 4]`` for a padded batch ``images``
        ``(B, C, H, W)`` and its feature maps ``(B, C_l, H_l, W_l)``; one set serves every image
        of the batch.  Each level's stride is ``image size // feature size``."""
        h, w = images.shape[-2:]
        grid_sizes = [tuple(f.shape[-2:]) for f in features]
        strides = [(h // gh, w // gw) for gh, gw in grid_sizes]
        return torch.cat(self.grid_anchors(grid_sizes, strides)).to(features[0].dtype)


class DefaultBoxGenerator(nn.Module):
    """The default boxes of SSD, one scale per feature map (Liu et al. 2016, section 2.2).

    Args:
        aspect_ratios: per feature map, the ratios ``a`` (width / height) besides 1, e.g.
            ``[[2], [2, 3], [2, 3], [2, 3], [2], [2]]`` for SSD300; each also places ``1 / a``.
        min_ratio, max_ratio: ``s_min`` and ``s_max`` of the paper, as fractions of the image side;
            used only when ``scales`` is not given.
        scales: ``m + 1`` explicit scales for ``m`` feature maps; the last one serves only
            ``s'_m``.  torchvision's SSD300 passes ``[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]``:
            an extra, smaller first scale for the fine ``conv4_3`` map, as the paper does.
        steps: per feature map, the spacing of the box centres in pixels (the stride of the
            original Caffe prior-box layer); by default the feature map tiles the whole image.
        clip: keep every box no larger than the image (see below).

    With ``m`` feature maps the scales are ``s_k = s_min + (s_max - s_min) (k - 1) / (m - 1)``
    for ``k = 1..m``, and ``s_{m+1} = 1`` (torchvision's convention; with a single map the scales
    are ``(s_min, s_max)``).  Every cell of map ``k`` holds, in this order:

    1. a square of side ``s_k``;
    2. a square of side ``s'_k = sqrt(s_k * s_{k+1})``;
    3. for each ratio ``a`` of the level, a box of width ``s_k sqrt(a)`` and height
       ``s_k / sqrt(a)``, then its transpose (ratio ``1 / a``).

    So ``2 + 2 * len(aspect_ratios[k])`` boxes per cell (:meth:`num_anchors_per_location`).  The
    boxes of a level run cell by cell (rows first), then in the order above: the order of a
    head's ``(H, W, A)`` outputs; the levels follow one another.  A cell ``(i, j)`` of an
    ``(H, W)`` map is centred at ``((j + 0.5) / f_x, (i + 0.5) / f_y)`` of the image, with
    ``(f_y, f_x) = (H, W)``, or with ``steps`` ``f = image size / step`` (a centre every ``step``
    pixels).  Widths are fractions of the image's width and heights of its height, so on a
    non-square image the "square" boxes take the image's proportions (as in torchvision; the
    paper's images are square).

    Note the ratio is width / height here (the paper's ``w = s sqrt(a)``), height / width in
    :class:`AnchorGenerator`; ``clip``, as in torchvision, caps the widths and heights at the
    image's before the corners are computed: it does not cut boxes at the image border, so a box
    near it still reaches past it.  The boxes are the same, in the same order, as torchvision's
    ``DefaultBoxGenerator`` with the same arguments.
    """

    def __init__(self, aspect_ratios: Sequence[Sequence[float]], min_ratio: float = 0.15,
                 max_ratio: float = 0.9, scales: Sequence[float] | None = None,
                 steps: Sequence[float] | None = None, clip: bool = True) -> None:
        super().__init__()
        m = len(aspect_ratios)
        if m == 0:
            raise ValueError("aspect_ratios must give one list of ratios per feature map, got none")
        if any(a <= 0 for level in aspect_ratios for a in level):
            raise ValueError(f"aspect ratios {aspect_ratios!r} must be positive")
        if steps is not None and len(steps) != m:
            raise ValueError(f"{len(steps)} steps for {m} feature maps; give one step per map")
        if scales is None:
            if m > 1:
                scales = [min_ratio + (max_ratio - min_ratio) * k / (m - 1.0) for k in range(m)]
                scales.append(1.0)
            else:
                scales = [min_ratio, max_ratio]
        elif len(scales) != m + 1:
            raise ValueError(f"{len(scales)} scales for {m} feature maps; give m + 1 = {m + 1} "
                             "(the last one serves only the extra square of the last map)")
        if any(s <= 0 for s in scales):
            raise ValueError(f"scales {scales!r} must be positive")
        self.aspect_ratios = [tuple(float(a) for a in level) for level in aspect_ratios]
        self.scales = [float(s) for s in scales]
        self.steps = None if steps is None else [float(s) for s in steps]
        self.clip = clip
        for k in range(m):
            self.register_buffer(f"box_sizes_{k}", self.make_box_sizes(k), persistent=False)

    def make_box_sizes(self, k: int) -> Tensor:
        """The ``Tensor[A, 2]`` widths and heights of a cell's boxes on map ``k``, as fractions
        of the image's width and height, in the order of the class docstring."""
        s, s_next = self.scales[k], self.scales[k + 1]
        s_prime = math.sqrt(s * s_next)
        wh = [(s, s), (s_prime, s_prime)]
        for a in self.aspect_ratios[k]:
            wide, narrow = s * math.sqrt(a), s / math.sqrt(a)
            wh += [(wide, narrow), (narrow, wide)]
        wh = torch.tensor(wh, dtype=torch.float32)
        return wh.clamp(0, 1) if self.clip else wh

    @property
    def num_levels(self) -> int:
        return len(self.aspect_ratios)

    def box_sizes(self, level: int) -> Tensor:
        return getattr(self, f"box_sizes_{level}")

    def num_anchors_per_location(self) -> list[int]:
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    def grid_default_boxes(self, image_size: tuple[int, int],
                           grid_sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
        """Per level, the ``Tensor[H * W * A, 4]`` boxes ``(x1, y1, x2, y2)`` in pixels of an
        ``(H, W)`` feature map on an image of ``image_size = (height, width)`` pixels."""
        if len(grid_sizes) != self.num_levels:
            raise ValueError(f"the generator has {self.num_levels} levels; got {len(grid_sizes)} "
                             "feature map sizes")
        img_h, img_w = image_size
        out = []
        for k, (gh, gw) in enumerate(grid_sizes):
            wh = self.box_sizes(k)
            f_y, f_x = (gh, gw) if self.steps is None else (img_h / self.steps[k], img_w / self.steps[k])
            ys = (torch.arange(gh, device=wh.device, dtype=wh.dtype) + 0.5) / f_y
            xs = (torch.arange(gw, device=wh.device, dtype=wh.dtype) + 0.5) / f_x
            y, x = torch.meshgrid(ys, xs, indexing="ij")
            centres = torch.stack((x, y), dim=-1).reshape(-1, 1, 2)          # (H*W, 1, 2)
            scale = torch.tensor([img_w, img_h], device=wh.device, dtype=wh.dtype)
            corners = torch.cat((centres - 0.5 * wh, centres + 0.5 * wh), dim=-1)  # (H*W, A, 4)
            out.append((corners * scale.repeat(2)).reshape(-1, 4))
        return out

    def forward(self, images: Tensor, features: Sequence[Tensor]) -> Tensor:
        """All default boxes ``Tensor[sum_k H_k * W_k * A_k, 4]`` for a padded batch ``images``
        ``(B, C, H, W)`` and its feature maps ``(B, C_k, H_k, W_k)``.

        Like :class:`AnchorGenerator`, one set serves every image of the batch (torchvision
        returns a list holding the same boxes once per image); the image size is the padded
        batch's, as in torchvision."""
        h, w = images.shape[-2:]
        grid_sizes = [tuple(f.shape[-2:]) for f in features]
        return torch.cat(self.grid_default_boxes((h, w), grid_sizes)).to(features[0].dtype)


def wh_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """IoU of boxes given only by width and height, placed on a common corner:
    ``Tensor[N, 2]`` x ``Tensor[K, 2]`` -> ``Tensor[N, K]``."""
    inter = torch.min(wh1[:, None, 0], wh2[None, :, 0]) * torch.min(wh1[:, None, 1], wh2[None, :, 1])
    union = (wh1[:, 0] * wh1[:, 1])[:, None] + (wh2[:, 0] * wh2[:, 1])[None] - inter
    return inter / union


def mean_best_iou(wh: Tensor, anchors: Tensor) -> float:
    """Average over boxes of the IoU with their closest anchor (YOLOv2's "Avg IOU")."""
    return float(wh_iou(wh, anchors).max(dim=1).values.mean())


def kmeans_anchors(wh: Tensor, k: int, iters: int = 100, restarts: int = 3,
                   seed: int = 0) -> Tensor:
    """Anchor shapes ``Tensor[k, 2]`` (width, height), sorted by area, from the box sizes
    ``wh`` ``Tensor[N, 2]`` by k-means with the distance ``1 - IoU``.

    Centres start by k-means++ sampling under the same distance; a centre is the mean of its
    boxes (YOLOv2); an empty cluster takes the box farthest from its centre.  Of ``restarts``
    runs, the one with the highest :func:`mean_best_iou` wins.
    """
    wh = torch.as_tensor(wh, dtype=torch.float64)
    if wh.ndim != 2 or wh.shape[1] != 2 or (wh <= 0).any():
        raise ValueError("wh must be (N, 2) positive widths and heights")
    if not 1 <= k <= len(wh):
        raise ValueError(f"k={k} must lie in 1..{len(wh)} (the number of boxes)")
    gen = torch.Generator().manual_seed(seed)
    best, best_fit = None, -1.0
    for _ in range(restarts):
        centres = _kmeanspp(wh, k, gen)
        assign = None
        for _ in range(iters):
            iou = wh_iou(wh, centres)
            new_assign = iou.argmax(dim=1)
            if assign is not None and torch.equal(new_assign, assign):
                break
            assign = new_assign
            for c in range(k):
                members = wh[assign == c]
                if len(members):
                    centres[c] = members.mean(dim=0)
                else:   # re-seed an empty cluster with the worst-served box
                    far = int(iou.max(dim=1).values.argmin())
                    centres[c] = wh[far]
                    assign[far] = c
        fit = mean_best_iou(wh, centres)
        if fit > best_fit:
            best, best_fit = centres, fit
    return best[torch.argsort(best[:, 0] * best[:, 1])].float()


def _kmeanspp(wh: Tensor, k: int, gen: torch.Generator) -> Tensor:
    centres = [wh[torch.randint(len(wh), (1,), generator=gen)][0]]
    for _ in range(1, k):
        d = 1 - wh_iou(wh, torch.stack(centres)).max(dim=1).values
        p = d ** 2
        i = torch.multinomial(p / p.sum(), 1, generator=gen) if p.sum() > 0 else \
            torch.randint(len(wh), (1,), generator=gen)
        centres.append(wh[i][0])
    return torch.stack(centres).clone()
