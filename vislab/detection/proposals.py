"""Region proposals by selective search (Uijlings et al. 2013, "Selective Search for Object
Recognition"), the proposals of R-CNN and Fast R-CNN.

An object can be anywhere at any scale, but it is almost always a union of a few regions of
uniform colour or texture.  Selective search therefore over-segments the image (Felzenszwalb and
Huttenlocher's graph-based segmentation) and groups the segments bottom-up: at each step the two
*neighbouring* regions of highest similarity are merged, until one region covers the image; every
region met on the way, the initial segments included, gives a proposal box.  The similarity of
regions ``i`` and ``j`` is ``a1*s_colour + a2*s_texture + a3*s_size + a4*s_fill`` (each ``a`` 0
or 1):

* colour: histogram intersection ``sum_k min(c_i^k, c_j^k)`` of 25-bin histograms of each colour
  channel, concatenated and L1-normalised (75 bins for three channels);
* texture: the same on histograms of Gaussian derivatives (sigma 1) in 8 orientations, 10 bins
  each, per channel (240 bins);
* size: ``1 - (size_i + size_j) / size_image``, so that small regions merge first and the
  hierarchy grows evenly across the image;
* fill: ``1 - (size(BB_ij) - size_i - size_j) / size_image``, with ``BB_ij`` the box around
  both: regions that fill each other's gaps merge early.

The merged region's histograms are the size-weighted mean of the two (exactly the L1-normalised
histogram of the union), its box the union box; nothing is recomputed from pixels.  No single
strategy suits every image, so the search is *diversified*: hierarchies are grown for several
colour spaces, segmentation scales ``k`` and similarity sets, and their boxes pooled.  Boxes are
ranked as in the paper: within a hierarchy, the region created last (the whole image) has level
1, the one before it level 2, and so on down to the initial segments; a region's rank is its
level times a random number in ``[0, 1]`` (seeded), so large regions tend to come first but every
strategy's small ones mix in.  The ranks of all strategies are sorted together, ascending, and
duplicate boxes keep their best rank.

Modes (the paper's section 5.2):

* ``single``: RGB, one ``k``, all four similarities: one hierarchy.
* ``fast`` (Selective Search Fast): colour spaces HSV and Lab, ``k`` in {50, 100}, similarity sets
  C+T+S+F and T+S+F: 8 hierarchies on 4 segmentations.
* ``quality`` (Selective Search Quality): colour spaces HSV, Lab, rgI, H and I, ``k`` in {50, 100,
  150, 300}, and the sets C+T+S+F, T+S+F, F and S: 80 hierarchies on 20 segmentations.

Scaled to vislab's 64x64 scenes: ``k`` keeps the paper's values (fast 50 and 100, quality 50 to
300: Felzenszwalb's threshold ``k / |C|`` is about region size in pixels, not image size, and on
these scenes 50-100 gives ~20-60 initial segments, where 25 gave twice as many for no better
recall), but Felzenszwalb's ``min_size``, which the paper's code sets to ``k``, is 16 pixels here
(the default): an object is 11-42 px across, and a 50-100 px floor would swallow the small ones
into the background.  "single" is RGB with ``k`` = 100.  Measured by ``benchmarks/fig_proposals.py``
on 200 test scenes (one thread, CPU time): single 6 ms per scene, 37 boxes, recall 0.95 at IoU 0.5;
fast 32 ms, ~270 boxes, recall 0.996 (IoU 0.5) and 0.94 (IoU 0.7) with 300 boxes; quality
150 ms, ~900 boxes.  Felzenszwalb's segmentation is scikit-image's (edge weights are Euclidean
distances across the channels, 8-connected components; ``scale`` is the paper's ``k`` on 0-255
values), so regions are neighbours when any of their pixels touch, diagonals included.

Texture: the paper does not say what its orientation histograms bin.  Here each orientation's
response ``max(0, cos(t) d/dx + sin(t) d/dy)`` of the Gaussian-smoothed channel (t = 0, 45, ...,
315 degrees, so the two signs of each axis have their own histograms) is divided by the largest
gradient magnitude of that channel in the image and cut into 10 equal bins of ``[0, 1]``.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from skimage.color import rgb2hsv, rgb2lab
from skimage.segmentation import felzenszwalb
from torch import Tensor

from vislab.detection.boxes import box_iou

COLOUR_BINS, TEXTURE_BINS, ORIENTATIONS = 25, 10, 8
SIGMA = 0.8                   # Felzenszwalb's pre-smoothing, the paper's
MIN_SIZE = 16                 # Felzenszwalb's smallest segment, in pixels (see the module docstring)
MODES = ("single", "fast", "quality")
# (colour spaces, ks, similarity sets as (colour, texture, size, fill) switches) per mode
_CTSF, _TSF, _F, _S = (1, 1, 1, 1), (0, 1, 1, 1), (0, 0, 0, 1), (0, 0, 1, 0)
STRATEGIES = {
    "single": (("rgb",), (100,), (_CTSF,)),
    "fast": (("hsv", "lab"), (50, 100), (_CTSF, _TSF)),
    "quality": (("hsv", "lab", "rgi", "h", "i"), (50, 100, 150, 300), (_CTSF, _TSF, _F, _S)),
}


# --------------------------------------------------------------------------- per image

def _colour_space(image: np.ndarray, space: str) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(H, W, C)`` float64 in ``[0, 1]`` in colour ``space``."""
    rgb = image.astype(np.float64) / 255
    if space == "rgb":
        return rgb
    if space in ("hsv", "h"):
        hsv = rgb2hsv(rgb)
        return hsv if space == "hsv" else hsv[..., :1]
    if space == "lab":
        lab = rgb2lab(rgb)
        return np.clip(np.stack((lab[..., 0] / 100, (lab[..., 1] + 128) / 255, (lab[..., 2] + 128) / 255), -1), 0, 1)
    intensity = rgb.mean(-1, keepdims=True)
    if space == "i":
        return intensity
    assert space == "rgi", space
    total = rgb.sum(-1, keepdims=True)
    rg = np.divide(rgb[..., :2], total, out=np.full_like(rgb[..., :2], 1 / 3), where=total > 0)
    return np.concatenate((rg, intensity), -1)


def _colour_bins(img: np.ndarray) -> np.ndarray:
    """Each pixel's colour bin per channel, ``(H*W, C)`` int64 in ``[0, 25 C)`` (channel
    ``c``'s bins are ``25 c .. 25 c + 24``)."""
    h, w, c = img.shape
    bins = np.minimum((img.reshape(h * w, c) * COLOUR_BINS).astype(np.int64), COLOUR_BINS - 1)
    return bins + COLOUR_BINS * np.arange(c)


def _texture_bins(img: np.ndarray) -> np.ndarray:
    """Each pixel's texture bin per (channel, orientation), ``(H*W, 8 C)`` int64 in ``[0, 80 C)``:
    the rectified Gaussian derivative (sigma 1) in 8 orientations, over the channel's largest
    gradient magnitude, in 10 bins."""
    h, w, c = img.shape
    dx = ndimage.gaussian_filter(img, sigma=(1, 1, 0), order=(0, 1, 0))        # (H, W, C)
    dy = ndimage.gaussian_filter(img, sigma=(1, 1, 0), order=(1, 0, 0))
    theta = np.arange(ORIENTATIONS) * (2 * np.pi / ORIENTATIONS)
    resp = np.maximum(dx[..., None] * np.cos(theta) + dy[..., None] * np.sin(theta), 0)   # (H, W, C, 8)
    top = np.sqrt(dx ** 2 + dy ** 2).reshape(-1, c).max(0)                     # (C,)
    resp = resp / np.where(top > 0, top, 1)[:, None]
    bins = np.minimum((resp.reshape(h * w, c * ORIENTATIONS) * TEXTURE_BINS).astype(np.int64), TEXTURE_BINS - 1)
    return bins + TEXTURE_BINS * np.arange(c * ORIENTATIONS)


def _histograms(labels: np.ndarray, bins: np.ndarray, n: int, width: int) -> np.ndarray:
    """L1-normalised histograms ``(n, width)`` of the ``n`` regions of ``labels`` ``(H*W,)``, from
    the pixels' bin indices ``bins`` ``(H*W, D)``: one ``bincount``."""
    counts = np.bincount((labels[:, None] * width + bins).ravel(), minlength=n * width).reshape(n, width)
    return counts / counts.sum(1, keepdims=True)


def _adjacency(seg: np.ndarray, n: int) -> np.ndarray:
    """``(n, n)`` bool: regions of ``seg`` ``(H, W)`` with 8-connected touching pixels."""
    pairs = [(seg[:, :-1], seg[:, 1:]), (seg[:-1], seg[1:]), (seg[:-1, :-1], seg[1:, 1:]), (seg[:-1, 1:], seg[1:, :-1])]
    a = np.concatenate([p.ravel() for p, _ in pairs])
    b = np.concatenate([q.ravel() for _, q in pairs])
    adj = np.zeros((n, n), bool)
    adj[a, b] = adj[b, a] = True
    adj[np.arange(n), np.arange(n)] = False
    return adj


def _initial_boxes(seg: np.ndarray, n: int) -> np.ndarray:
    """Tight boxes ``(n, 4)`` ``(x1, y1, x2, y2)``, ``x2``/``y2`` exclusive, of the regions."""
    return np.array([(s[1].start, s[0].start, s[1].stop, s[0].stop)
                     for s in ndimage.find_objects(seg + 1, max_label=n)], np.float64)


# --------------------------------------------------------------------------- grouping

def region_similarity(hist_i: np.ndarray, hist_j: np.ndarray, size_i: np.ndarray, size_j: np.ndarray,
                      box_i: np.ndarray, box_j: np.ndarray, image_size: int, size_weight: float = 1.0,
                      fill_weight: float = 1.0) -> np.ndarray:
    """The paper's ``s(r_i, r_j) = a1 s_colour + a2 s_texture + a3 s_size + a4 s_fill`` of pairs
    of regions, vectorised over the pairs (numpy broadcasting: one side may be a single region).

    Args:
        hist_i / hist_j: ``(..., D)`` the regions' L1-normalised colour and texture histograms,
            concatenated, each pre-multiplied by its weight ``a1`` / ``a2``: since
            ``min(a x, a y) = a min(x, y)``, their intersection is ``a1 s_colour + a2 s_texture``.
        size_i / size_j: pixel counts ``(...)``; box_i / box_j: boxes ``(..., 4)``, ``x2``/``y2``
            exclusive.
        image_size: the image's pixel count; size_weight / fill_weight: ``a3`` / ``a4``.
    """
    s = np.minimum(hist_i, hist_j).sum(-1)
    both = size_i + size_j
    if size_weight:
        s = s + size_weight * (1 - both / image_size)
    if fill_weight:
        lo = np.minimum(box_i[..., :2], box_j[..., :2])
        hi = np.maximum(box_i[..., 2:], box_j[..., 2:])
        s = s + fill_weight * (1 - ((hi - lo).prod(-1) - both) / image_size)
    return s


def hierarchical_grouping(seg: np.ndarray, colour: np.ndarray, texture: np.ndarray,
                          weights: Sequence[float]) -> np.ndarray:
    """Grow one hierarchy: merge the most similar neighbours until one region is left.

    Args:
        seg: ``(H, W)`` int, the initial segmentation, labels ``0..n-1``.
        colour / texture: the segments' L1-normalised histograms, ``(n, Dc)`` / ``(n, Dt)``.
        weights: the similarity's ``(a1, a2, a3, a4)``.

    Returns the boxes ``(n + merges, 4)`` float64 of every region in creation order: the ``n``
    initial segments, then one per merge (the last is the whole image: the segments are connected).

    The candidate pairs wait in a heap, best first; a pair whose region has been merged away is
    dropped when it surfaces, and each merge pushes the new region's pairs with its neighbours.
    """
    a1, a2, a3, a4 = weights
    h, w = seg.shape
    n = int(seg.max()) + 1
    total = 2 * n - 1                         # every region the hierarchy can hold
    parts = [a * x for a, x in ((a1, colour), (a2, texture)) if a]
    hist = np.zeros((total, sum(p.shape[1] for p in parts)))
    if parts:
        hist[:n] = np.concatenate(parts, 1)
    size = np.zeros(total)
    size[:n] = np.bincount(seg.ravel(), minlength=n)
    boxes = np.zeros((total, 4))
    boxes[:n] = _initial_boxes(seg, n)
    adj = _adjacency(seg, n)
    neighbours = [set(np.nonzero(row)[0].tolist()) for row in adj]
    alive = [True] * n + [False] * (n - 1)

    def similarity(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
        return region_similarity(hist[a], hist[b], size[a], size[b], boxes[a], boxes[b], h * w, a3, a4)

    i, j = np.nonzero(np.triu(adj))
    heap = list(zip((-similarity(i, j)).tolist(), i.tolist(), j.tolist()))
    heapq.heapify(heap)
    for new in range(n, total):
        while heap:
            _, i, j = heapq.heappop(heap)
            if alive[i] and alive[j]:
                break
        else:                                 # no pairs left (a disconnected segmentation)
            return boxes[:new]
        si, sj = size[i], size[j]
        size[new] = si + sj
        hist[new] = (si * hist[i] + sj * hist[j]) / (si + sj)
        bi, bj = boxes[i], boxes[j]
        boxes[new] = (min(bi[0], bj[0]), min(bi[1], bj[1]), max(bi[2], bj[2]), max(bi[3], bj[3]))
        alive[i] = alive[j] = False
        alive[new] = True
        nb = (neighbours[i] | neighbours[j]) - {i, j}
        for m in nb:
            neighbours[m] -= {i, j}
            neighbours[m].add(new)
        neighbours.append(nb)
        k = np.fromiter(nb, np.int64, len(nb))
        for s, m in zip((-similarity(k, new)).tolist(), k.tolist()):
            heapq.heappush(heap, (s, m, new))
    return boxes


# --------------------------------------------------------------------------- selective search

def selective_search(image: np.ndarray, mode: str = "fast", min_size: int = MIN_SIZE,
                     max_proposals: int | None = None, seed: int = 0) -> np.ndarray:
    """Selective search's proposals of one image (see the module docstring).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        mode: ``single``, ``fast`` or ``quality``.
        min_size: Felzenszwalb's smallest initial segment, in pixels.
        max_proposals: keep the best-ranked ones only (all when None).
        seed: of the random factors of the ranking.

    Returns ``(N, 4)`` float32 boxes ``(x1, y1, x2, y2)`` in pixels (``x2``/``y2`` exclusive, as
    the scenes' boxes), distinct, best-ranked first.
    """
    if mode not in STRATEGIES:
        raise ValueError(f"mode {mode!r} is not a selective search mode; use one of {', '.join(MODES)}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if max_proposals is not None and max_proposals < 1:
        raise ValueError(f"max_proposals must be >= 1 or None, got {max_proposals}")
    spaces, ks, sets = STRATEGIES[mode]
    rng = np.random.default_rng(seed)
    all_boxes, all_ranks = [], []
    for space in spaces:
        img = _colour_space(image, space)
        colour_bins, texture_bins = _colour_bins(img), _texture_bins(img)
        c = img.shape[2]
        for k in ks:
            seg = felzenszwalb(img, scale=k, sigma=SIGMA, min_size=min_size, channel_axis=-1)
            seg = np.unique(seg, return_inverse=True)[1].reshape(seg.shape)
            n, labels = int(seg.max()) + 1, seg.ravel()
            colour = _histograms(labels, colour_bins, n, COLOUR_BINS * c)
            texture = _histograms(labels, texture_bins, n, TEXTURE_BINS * ORIENTATIONS * c)
            for weights in sets:
                boxes = hierarchical_grouping(seg, colour, texture, weights)
                level = np.arange(len(boxes), 0, -1)               # the last region created: level 1
                all_boxes.append(boxes)
                all_ranks.append(level * rng.random(len(boxes)))
    boxes, ranks = np.concatenate(all_boxes), np.concatenate(all_ranks)
    boxes = boxes[np.argsort(ranks, kind="stable")]
    first = np.unique(boxes, axis=0, return_index=True)[1]           # each box's best rank
    return boxes[np.sort(first)[:max_proposals]].astype(np.float32)


def _to_uint8(image: Tensor) -> np.ndarray:
    """A normalised ``(C, H, W)`` image -> ``(H, W, 3)`` uint8, each channel stretched min-max to
    0..255 (monotonic per channel, so the segments' edges stay where they were; the colours'
    balance changes); one channel is repeated to three."""
    x = image.detach().float().cpu()
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    if x.shape[0] != 3:
        raise ValueError(f"selective search takes 1- or 3-channel images, got {x.shape[0]} channels")
    lo = x.amin((1, 2), keepdim=True)
    span = (x.amax((1, 2), keepdim=True) - lo).clamp(min=1e-12)
    return ((x - lo) / span * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


class SelectiveSearch:
    """Selective search on a batch of normalised images, for R-CNN and Fast R-CNN.

    Not a module and holds no tensors a ``state_dict`` would see.  With ``cache`` the boxes of
    each image seen with ``use_cache=True`` are kept, keyed by a hash of its uint8 bytes: training
    sees the same scenes every epoch, so the search runs once per scene; evaluation should not
    use the cache, so that its timings include the search.  The cache is dropped on pickling and
    copying (a checkpoint or an EMA copy starts without it).

    Args:
        mode: ``single``, ``fast`` or ``quality``.
        max_proposals: boxes kept per image, best-ranked first.
        min_size: Felzenszwalb's smallest initial segment, in pixels.
        cache: keep the boxes of the images seen with ``use_cache=True``.
        seed: of the ranking's random factors.
    """

    def __init__(self, mode: str = "fast", max_proposals: int = 300, min_size: int = MIN_SIZE,
                 cache: bool = True, seed: int = 0) -> None:
        if mode not in STRATEGIES:
            raise ValueError(f"mode {mode!r} is not a selective search mode; use one of {', '.join(MODES)}")
        self.mode, self.max_proposals, self.min_size, self.seed = mode, max_proposals, min_size, seed
        self.cache: dict[bytes, np.ndarray] | None = {} if cache else None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["cache"] = None if self.cache is None else {}
        return state

    def search(self, image: np.ndarray, use_cache: bool = False) -> np.ndarray:
        """The boxes ``(N, 4)`` float32 of one ``(H, W, 3)`` uint8 image."""
        if not (use_cache and self.cache is not None):
            return selective_search(image, self.mode, self.min_size, self.max_proposals, self.seed)
        key = hashlib.blake2b(image.tobytes() + repr(image.shape).encode(), digest_size=16).digest()
        if key not in self.cache:
            self.cache[key] = selective_search(image, self.mode, self.min_size, self.max_proposals, self.seed)
        return self.cache[key]

    def __call__(self, images: Tensor, use_cache: bool = False) -> list[Tensor]:
        """Proposals ``[Tensor[K_i, 4]]`` float32 on ``images``' device, for ``images``
        ``Tensor[B, C, H, W]`` normalised (any per-channel affine map; see :func:`_to_uint8`)."""
        if images.ndim != 4:
            raise ValueError(f"images must be Tensor[B, C, H, W], got shape {tuple(images.shape)}")
        return [torch.from_numpy(self.search(_to_uint8(im), use_cache)).to(images.device) for im in images]


def proposal_recall(proposals: Sequence[Tensor], gt_boxes: Sequence[Tensor], counts: Sequence[int],
                    iou: float = 0.5) -> list[float]:
    """The fraction of ground-truth boxes that the first ``n`` proposals of their image cover
    (best IoU ``>= iou``), for each ``n`` in ``counts``.

    Args:
        proposals: per image ``Tensor[P_i, 4]``, best first; gt_boxes: per image ``Tensor[G_i, 4]``.
    """
    if len(proposals) != len(gt_boxes):
        raise ValueError(f"{len(proposals)} proposal lists for {len(gt_boxes)} images")
    first = []                         # per ground-truth box: the index of the first proposal covering it
    for props, gt in zip(proposals, gt_boxes):
        if len(gt) == 0:
            continue
        if len(props) == 0:
            first.append(torch.full((len(gt),), torch.iinfo(torch.int64).max))
            continue
        hit = box_iou(gt.float(), props.float().to(gt.device)) >= iou                 # (G, P)
        idx = torch.where(hit.any(1), hit.float().argmax(1), torch.iinfo(torch.int64).max)
        first.append(idx.cpu())
    if not first:
        return [float("nan")] * len(counts)
    first_t = torch.cat(first)
    return [float((first_t < n).float().mean()) for n in counts]


__all__ = ["MODES", "STRATEGIES", "SelectiveSearch", "hierarchical_grouping", "proposal_recall", "region_similarity",
           "selective_search"]
