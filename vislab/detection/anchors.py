"""Anchors: a grid of reference boxes on each feature level, and anchor shapes learned by k-means.

An anchor generator places ``len(sizes) * len(aspect_ratios)`` boxes at every cell of every
feature map (Faster R-CNN, RetinaNet).  :func:`kmeans_anchors` instead learns the anchor shapes
from the training boxes, clustering widths and heights with the distance ``1 - IoU`` (YOLOv2,
Redmon & Farhadi 2017), so that large boxes do not dominate as they would with a Euclidean
distance.
"""

from __future__ import annotations

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
