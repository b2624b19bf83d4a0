"""Detection metrics: COCO-style AP/AR with pycocotools' exact rules, and Pascal VOC AP.

COCO evaluation (Lin et al. 2014; the rules are those of ``pycocotools.cocoeval``):

* per image and category, detections sorted by score (stable, so ties keep their input order)
  and cut to the 100 best; a ground truth is *ignored* when it is a crowd region or its ``area``
  field lies outside the area range;
* IoU of boxes (``iou_type='bbox'``) or of masks (``'segm'``), except against a crowd region:
  intersection over the detection's area;
* at each IoU threshold ``.50:.05:.95`` each detection, best first, takes the unmatched
  ground truth it overlaps most (at least the threshold; ties go to the later ground truth),
  preferring regular ones over ignored ones; a crowd region may take any number of detections;
  detections matched to ignored ground truths, and unmatched detections outside the area range,
  count neither as true nor as false positives;
* per category, area range and detection limit (1, 10, 100 per image): precision made monotone
  and read at 101 recall points; categories without ground truth count as -1 and are left out of
  the means.

pycocotools loops over every image, category and detection in Python; here each step runs on
flat arrays: the IoU of all (detection, ground truth) pairs of the same image and category at
once, the greedy matching one detection rank at a time for all images together, and the
accumulation per category for all thresholds and area ranges together.  The twelve numbers equal
pycocotools' (tests check 1e-9 on random data); one difference: pycocotools treats a ground truth
whose annotation ``id`` is 0 as unmatched, vislab does not look at ids.

Mask evaluation (``iou_type='segm'``) differs only in the IoU, pycocotools' ``rleIou`` on the
tables' RLE masks (:mod:`vislab.metrics.masks`), and in the detections' area, which is the mask's
area for the small/medium/large ranges (a ground truth keeps its annotated area).  That is what
pycocotools does for results that hold only a ``segmentation``; given results with a ``bbox``
too, its ``loadRes`` takes the box area instead, which is why Detectron2 drops the boxes before
mask evaluation; vislab follows Detectron2.

Inputs are in memory: :class:`BoxTable` objects, or per-image dicts of arrays or tensors as the
detectors return them.  COCO files are read by :mod:`vislab.detection.formats` (its
``coco_evaluate`` takes files), and :func:`vislab.report.plots.plot_pr_curves` draws the curves.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vislab.errors import UserError
from vislab.metrics.masks import (
    MASK_THRESHOLD,
    packed_masks,
    pair_iou,
    rle_area,
    rle_encode,
)

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)            # as pycocotools: no arange rounding drift
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)
MAX_DETECTIONS = (1, 10, 100)
AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
               "large": (96.0 ** 2, 1e10)}
IOU_TYPES = ("bbox", "segm")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_PAIR_CHUNK = 1 << 22                                   # (detection, gt) pairs per IoU block
_MASK_CHUNK_BYTES = 1 << 25                             # packed mask bytes per mask-IoU block


@dataclass
class BoxTable:
    """The boxes of a whole data set as flat arrays, one row per box.

    ``image`` and ``category`` are indices (0..I-1, 0..K-1); ``boxes`` are ``(x, y, w, h)``
    float64 as in COCO files; ``area`` is the ground truth's annotated area or the detection's
    box area (mask area for mask evaluation); ``score`` belongs to detections, ``iscrowd`` to
    ground truth; ``masks`` (for ``iou_type='segm'``) one COCO RLE dict per row
    (:mod:`vislab.metrics.masks`).
    """
    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    area: np.ndarray
    score: np.ndarray | None = None
    iscrowd: np.ndarray | None = None
    masks: Sequence[dict] | None = None

    def __len__(self) -> int:
        return len(self.image)


@dataclass
class CocoEvaluation:
    """The accumulated COCO evaluation.

    ``precision[t, r, k, a, m]``: interpolated precision at IoU threshold ``t``, recall point
    ``r``, category ``k``, area range ``a`` (all, small, medium, large) and detection limit ``m``
    (1, 10, 100); ``recall[t, k, a, m]`` the recall reached.  -1 where a category has no ground
    truth.  Same layout as ``pycocotools.COCOeval.eval``.
    """
    precision: np.ndarray
    recall: np.ndarray
    categories: list[str]

    @property
    def stats(self) -> np.ndarray:
        """The twelve numbers of ``COCOeval.summarize()``, in :data:`STAT_NAMES` order."""
        return np.array([_mean_valid(self._select(name)) for name in STAT_NAMES])

    def _select(self, name: str, k: int | slice = slice(None)) -> np.ndarray:
        area = {"s": 1, "m": 2, "l": 3}.get(name[-1], 0)
        if name.startswith("AP"):
            iou = {"AP50": [0], "AP75": [5]}.get(name, slice(None))
            return self.precision[iou, :, k, area, 2]
        dets = {"AR1": 0, "AR10": 1}.get(name, 2)
        return self.recall[:, k, area, dets]

    def as_dict(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(STAT_NAMES, self.stats)}

    def per_category(self) -> dict[str, dict[str, float]]:
        """AP and AP50 of each category (all areas, 100 detections); -1 without ground truth."""
        return {c: {"AP": _mean_valid(self._select("AP", k)), "AP50": _mean_valid(self._select("AP50", k))}
                for k, c in enumerate(self.categories)}

    def pr_curves(self, iou: float = 0.5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per category with ground truth: the interpolated precision at the 101 recall points,
        at IoU threshold ``iou`` (all areas, 100 detections)."""
        t = int(np.argmin(np.abs(IOU_THRESHOLDS - iou)))
        if abs(IOU_THRESHOLDS[t] - iou) > 1e-9:
            raise ValueError(f"iou must be one of {np.round(IOU_THRESHOLDS, 2).tolist()}, not {iou}")
        return {c: (RECALL_THRESHOLDS, self.precision[t, :, k, 0, 2])
                for k, c in enumerate(self.categories) if self.precision[t, 0, k, 0, 2] > -1}

    def summary(self) -> str:
        """The twelve lines that pycocotools prints."""
        lines = []
        for name, value in zip(STAT_NAMES, self.stats):
            kind = "Average Precision  (AP)" if name.startswith("AP") else "Average Recall     (AR)"
            iou = {"AP50": "0.50", "AP75": "0.75"}.get(name, "0.50:0.95")
            area = {"s": "small", "m": "medium", "l": "large"}.get(name[-1], "all")
            dets = {"AR1": 1, "AR10": 10}.get(name, 100)
            lines.append(f" {kind} @[ IoU={iou:<9} | area={area:>6s} | maxDets={dets:>3d} ] = {value:0.3f}")
        return "\n".join(lines)


def _mean_valid(s: np.ndarray) -> float:
    valid = s[s > -1]
    return float(np.mean(valid)) if valid.size else -1.0


# --------------------------------------------------------------------------- inputs

def tables_from_tensors(predictions: Sequence[Mapping], targets: Sequence[Mapping], iou_type: str = "bbox"
                        ) -> tuple[BoxTable, BoxTable]:
    """Box tables ``(detections, ground truth)`` from per-image dicts as the detectors use them:
    targets with ``boxes`` ``(x1, y1, x2, y2)`` and ``labels`` (optional ``iscrowd``, ``area``),
    predictions with ``boxes``, ``scores`` and ``labels``.  For ``iou_type='segm'`` both also
    need ``masks``: ``(n, H, W)`` (a prediction's probabilities count from
    :data:`~vislab.metrics.masks.MASK_THRESHOLD`) or a list of ``n`` COCO RLEs; the tables then
    carry RLEs, and the detections' area is their mask's."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} images")
    _check_iou_type(iou_type)
    segm = iou_type == "segm"
    return _table(predictions, is_gt=False, segm=segm), _table(targets, is_gt=True, segm=segm)


def _check_iou_type(iou_type: str) -> None:
    if iou_type not in IOU_TYPES:
        raise UserError(f"iou_type {iou_type!r}: use one of {', '.join(IOU_TYPES)}")


def _rles(items: Sequence[Mapping], is_gt: bool) -> list[dict]:
    """The RLE of every mask of every item, in row order."""
    out = []
    for i, d in enumerate(items):
        if "masks" not in d:
            raise UserError(f"{'target' if is_gt else 'prediction'} {i} has no 'masks': mask evaluation "
                            "(iou_type='segm') needs the instance masks; use iou_type='bbox'")
        m = d["masks"]
        if len(m) != len(d["boxes"]):
            raise ValueError(f"item {i}: {len(m)} masks for {len(d['boxes'])} boxes")
        if isinstance(m, (list, tuple)) and all(isinstance(x, Mapping) for x in m):
            out += list(m)                                     # COCO RLEs already
            continue
        m = _numpy(m)
        m = m.reshape(-1, *m.shape[-2:]) if m.ndim >= 2 else m.reshape(0, 0, 0)
        out += [rle_encode(x >= MASK_THRESHOLD if x.dtype.kind == "f" else x) for x in m]
    return out


def _table(items: Sequence[Mapping], is_gt: bool, segm: bool = False) -> BoxTable:
    """One table of per-image dicts; with ``segm`` the RLE of each mask, and the mask areas
    (a ground truth's given ``area`` first)."""
    masks = _rles(items, is_gt) if segm else None
    mask_area = np.array([rle_area(r) for r in masks], np.float64) if segm else None
    cols: dict[str, list[np.ndarray]] = {"image": [], "category": [], "boxes": [], "area": [], "extra": []}
    row = 0
    for i, d in enumerate(items):
        b = _numpy(d["boxes"]).reshape(-1, 4).astype(np.float64)
        xywh = np.column_stack((b[:, :2], b[:, 2:] - b[:, :2]))
        cols["image"].append(np.full(len(b), i, np.int64))
        cols["category"].append(_numpy(d["labels"]).astype(np.int64).reshape(-1))
        cols["boxes"].append(xywh)
        own_area = xywh[:, 2] * xywh[:, 3] if mask_area is None else mask_area[row:row + len(b)]
        row += len(b)
        if is_gt:
            cols["area"].append(_numpy(d["area"]).astype(np.float64) if "area" in d else own_area)
            cols["extra"].append(_numpy(d["iscrowd"]).astype(bool) if "iscrowd" in d else np.zeros(len(b), bool))
        else:
            cols["area"].append(own_area)
            cols["extra"].append(_numpy(d["scores"]).astype(np.float64))
    empty = {"image": np.zeros(0, np.int64), "category": np.zeros(0, np.int64), "boxes": np.zeros((0, 4)),
             "area": np.zeros(0), "extra": np.zeros(0, bool if is_gt else np.float64)}
    c = {k: np.concatenate(v) if v else empty[k] for k, v in cols.items()}
    extra = {"iscrowd": c["extra"]} if is_gt else {"score": c["extra"]}
    return BoxTable(c["image"], c["category"], c["boxes"], c["area"], **extra, masks=masks)


def evaluate_detections(predictions: Sequence[Mapping], targets: Sequence[Mapping],
                        categories: Sequence[str] | None = None, iou_type: str = "bbox") -> CocoEvaluation:
    """COCO evaluation of a detector's outputs, one dict per image (see
    :func:`tables_from_tensors`); labels index ``categories`` (default: 0..max label);
    ``iou_type`` ``'bbox'`` or ``'segm'`` (masks)."""
    dets, gt = tables_from_tensors(predictions, targets, iou_type)
    top = max([int(t.category.max()) for t in (dets, gt) if len(t)], default=-1) + 1
    names = list(categories) if categories is not None else [str(k) for k in range(top)]
    if top > len(names) or any(len(t) and t.category.min() < 0 for t in (dets, gt)):
        raise UserError(f"labels must lie in 0..{len(names) - 1} (one per category name), found "
                        f"{top - 1}; pass the right category list")
    precision, recall = evaluate_tables(gt, dets, len(targets), len(names), iou_type)
    return CocoEvaluation(precision, recall, names)


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


# --------------------------------------------------------------------------- the evaluation

def evaluate_tables(gt: BoxTable, dt: BoxTable, num_images: int, num_categories: int, iou_type: str = "bbox"
                    ) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools' ``evaluate()`` + ``accumulate()`` on box tables: ``(precision, recall)``;
    ``iou_type='segm'`` compares the tables' ``masks``, and the detections' ``area`` should be
    their masks' (:func:`tables_from_tensors` and the COCO readers set it)."""
    _check_iou_type(iou_type)
    if iou_type == "segm" and (gt.masks is None or dt.masks is None):
        raise UserError("mask evaluation (iou_type='segm') needs the masks of the ground truth and of "
                        "the detections; use iou_type='bbox'")
    I, K = num_images, num_categories
    T, R, A, M = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES), len(MAX_DETECTIONS)

    # detections grouped by (category, image), best first, ties in input order; 100 per group
    d_group_all = dt.category * I + dt.image
    order = np.lexsort((-dt.score, d_group_all))
    rank = _rank_in_group(d_group_all[order])
    order, rank = order[rank < MAX_DETECTIONS[-1]], rank[rank < MAX_DETECTIONS[-1]]
    d_group, d_cat = d_group_all[order], dt.category[order]
    d_box, d_area, d_score = dt.boxes[order], dt.area[order], dt.score[order]
    # ground truths grouped the same way, in file order within a group
    g_order = np.argsort(gt.category * I + gt.image, kind="stable")
    g_group = (gt.category * I + gt.image)[g_order]
    g_box, g_area, g_crowd, g_cat = gt.boxes[g_order], gt.area[g_order], gt.iscrowd[g_order], gt.category[g_order]

    if iou_type == "segm":
        iou_fn = _mask_iou_fn(dt.masks, order, gt.masks, g_order, g_crowd)
    else:
        def iou_fn(pd, pg):
            return _coco_iou(d_box[pd], g_box[pg], g_crowd[pg])
    pair_det, pair_gt, pair_iou = _candidate_pairs(d_group, g_group, iou_fn, min(IOU_THRESHOLDS[0], 1 - 1e-10),
                                                   _PAIR_CHUNK if iou_type == "bbox" else _mask_chunk(gt.masks))
    tp = np.zeros((A, T, len(order)), bool)
    fp = np.zeros((A, T, len(order)), bool)
    npig = np.zeros((K, A), np.int64)
    for a, (lo, hi) in enumerate(AREA_RANGES.values()):
        g_ignore = g_crowd | (g_area < lo) | (g_area > hi)
        npig[:, a] = np.bincount(g_cat[~g_ignore], minlength=K)
        match = _greedy_match(pair_det, pair_gt, pair_iou, rank, g_ignore, g_crowd, len(g_box))
        matched = match >= 0
        d_ignore = np.where(matched, g_ignore[np.maximum(match, 0)], (d_area < lo) | (d_area > hi))
        tp[a] = matched & ~d_ignore
        fp[a] = ~matched & ~d_ignore

    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    by_score = np.lexsort((-d_score, d_cat))             # per category, best first, ties stable
    for m, max_det in enumerate(MAX_DETECTIONS):
        sel = by_score[rank[by_score] < max_det]
        bounds = np.searchsorted(d_cat[sel], np.arange(K + 1))
        for k in np.flatnonzero(npig[:, 0] > 0):
            d = sel[bounds[k]:bounds[k + 1]]
            tp_sum = np.cumsum(tp[:, :, d], axis=2).astype(float)     # (A, T, n)
            fp_sum = np.cumsum(fp[:, :, d], axis=2).astype(float)
            for a in np.flatnonzero(npig[k] > 0):
                p, r = _interpolated_precision(tp_sum[a], fp_sum[a], int(npig[k, a]))
                precision[:, :, k, a, m], recall[:, k, a, m] = p, r
    return precision, recall


def _rank_in_group(groups: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal values (``groups`` sorted)."""
    if len(groups) == 0:
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    counts = np.diff(np.r_[starts, len(groups)])
    return np.arange(len(groups)) - np.repeat(starts, counts)


def _coco_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of paired ``(x, y, w, h)`` rows with pycocotools' arithmetic (``bbIou`` in
    ``maskApi.c``), so that equal inputs give bit-equal IoUs: a crowd region's union is the
    detection's area."""
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    inter = w * h
    d_area = d[:, 2] * d[:, 3]
    union = np.where(crowd, d_area, d_area + g[:, 2] * g[:, 3] - inter)
    ok = (w > 0) & (h > 0)
    out = np.zeros(len(d))
    out[ok] = inter[ok] / union[ok]
    return out


def _mask_iou_fn(d_masks: Sequence[dict], d_order: np.ndarray, g_masks: Sequence[dict], g_order: np.ndarray,
                 g_crowd: np.ndarray):
    """Mask IoU of (detection, gt) index pairs of the reordered tables: the block's masks
    decoded to bits once, then pycocotools' ``rleIou`` rule (:func:`~vislab.metrics.masks.pair_iou`)."""
    def iou(pd: np.ndarray, pg: np.ndarray) -> np.ndarray:
        ud, d_inv = np.unique(pd, return_inverse=True)
        ug, g_inv = np.unique(pg, return_inverse=True)
        d_bits = packed_masks([d_masks[i] for i in d_order[ud]])
        g_bits = packed_masks([g_masks[i] for i in g_order[ug]])
        width = max(d_bits.shape[1], g_bits.shape[1])
        d_bits = np.pad(d_bits, ((0, 0), (0, width - d_bits.shape[1])))
        g_bits = np.pad(g_bits, ((0, 0), (0, width - g_bits.shape[1])))
        return pair_iou(d_bits[d_inv], g_bits[g_inv], g_crowd[pg])
    return iou


def _mask_chunk(masks: Sequence[dict]) -> int:
    """Pairs per mask-IoU block: about ``_MASK_CHUNK_BYTES`` of packed bits."""
    pixels = max((int(np.prod(r["size"])) for r in masks), default=1)
    return max(1, _MASK_CHUNK_BYTES // max(1, pixels // 8))


def _group_pairs(d_group: np.ndarray, g_group: np.ndarray, chunk: int | None = None
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All (detection, ground truth) index pairs of the same group, in blocks of about
    ``chunk`` pairs (default ``_PAIR_CHUNK``); ``g_group`` must be sorted, ``d_group`` need not be."""
    chunk = chunk or _PAIR_CHUNK
    start = np.searchsorted(g_group, d_group, "left")
    count = np.searchsorted(g_group, d_group, "right") - start
    ends = np.cumsum(count)
    lo = 0
    while lo < len(d_group):
        hi = max(int(np.searchsorted(ends, (ends[lo - 1] if lo else 0) + chunk, "right")), lo + 1)
        c = count[lo:hi]
        offset = np.cumsum(c) - c
        pair_det = np.repeat(np.arange(lo, hi), c)
        pair_gt = np.arange(c.sum()) - np.repeat(offset - start[lo:hi], c)
        yield pair_det, pair_gt
        lo = hi


def _candidate_pairs(d_group, g_group, iou_fn, min_iou, chunk):
    """The (detection, gt, IoU) triples of one group with IoU >= ``min_iou``: the only pairs
    that can match at any threshold; ``iou_fn(pd, pg)`` gives the IoU of index pairs."""
    dets, gts, ious = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    for pd, pg in _group_pairs(d_group, g_group, chunk):
        iou = iou_fn(pd, pg)
        keep = iou >= min_iou
        dets.append(pd[keep])
        gts.append(pg[keep])
        ious.append(iou[keep])
    return np.concatenate(dets), np.concatenate(gts), np.concatenate(ious)


def _greedy_match(pair_det, pair_gt, pair_iou, rank, g_ignore, g_crowd, num_gt) -> np.ndarray:
    """pycocotools' greedy matching at every IoU threshold: ``match[t, d]`` = gt index or -1.

    Detections are visited rank by rank (best first within each image and category); a rank
    holds one detection per group, so all groups advance together without conflicts.  Each
    detection takes its first still available candidate in the order: regular before ignored,
    higher IoU first, later ground truth first on ties.
    """
    T, nd = len(IOU_THRESHOLDS), len(rank)
    match = np.full((T, nd), -1, np.int64)
    if len(pair_det) == 0:
        return match
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
    ignored = g_ignore[pair_gt]
    order = np.lexsort((-pair_gt, -pair_iou, ignored, pair_det, rank[pair_det]))
    # one entry per (pair, threshold it passes); entries of a detection stay in candidate order
    n_thr = np.searchsorted(thr, pair_iou[order], "right")
    entry = np.repeat(order, n_thr)
    offset = np.cumsum(n_thr) - n_thr
    t = np.arange(len(entry)) - np.repeat(offset, n_thr)
    e_det, e_gt = pair_det[entry], pair_gt[entry]
    e_slot = t * num_gt + e_gt                            # ground truth at one threshold
    e_seg = t * nd + e_det                                # detection at one threshold
    e_crowd = g_crowd[e_gt]
    taken = np.zeros(T * num_gt, bool)
    e_rank = rank[e_det]
    bounds = np.searchsorted(e_rank, np.arange(e_rank[-1] + 2)) if len(e_rank) else [0]
    for r in range(len(bounds) - 1):
        lo, hi = bounds[r], bounds[r + 1]
        if lo == hi:
            continue
        free = np.flatnonzero(~taken[e_slot[lo:hi]] | e_crowd[lo:hi]) + lo
        if len(free) == 0:
            continue
        _, first = np.unique(e_seg[free], return_index=True)
        chosen = free[first]
        taken[e_slot[chosen]] = True
        match[t[chosen], e_det[chosen]] = e_gt[chosen]
    return match


def _interpolated_precision(tp_sum: np.ndarray, fp_sum: np.ndarray, npig: int
                            ) -> tuple[np.ndarray, np.ndarray]:
    """``(precision (T, R), recall (T,))`` from cumulative TP/FP counts ``(T, n)``, with
    pycocotools' arithmetic: monotone precision read at the first detection reaching each
    recall point (0 past the last)."""
    T, n = tp_sum.shape
    if n == 0:
        return np.zeros((T, len(RECALL_THRESHOLDS))), np.zeros(T)
    rc = tp_sum / npig
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    q = np.zeros((T, len(RECALL_THRESHOLDS)))
    for t in range(T):
        idx = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
        inside = idx < n
        q[t, inside] = pr[t, idx[inside]]
    return q, rc[:, -1]


# --------------------------------------------------------------------------- Pascal VOC

def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """Area under a precision-recall curve as Pascal VOC defines it.

    ``use_07_metric``: the VOC2007 11-point rule, mean over ``r in 0, 0.1, ..., 1`` of the best
    precision at recall ``>= r``.  Otherwise (VOC2010+) the exact area under the monotone
    envelope of the curve.
    """
    recall, precision = np.asarray(recall, np.float64), np.asarray(precision, np.float64)
    if use_07_metric:
        return float(np.mean([precision[recall >= r].max(initial=0.0) for r in np.linspace(0, 1, 11)]))
    mrec = np.r_[0.0, recall, 1.0]
    mpre = np.maximum.accumulate(np.r_[0.0, precision, 0.0][::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


@dataclass
class VocEvaluation:
    """Per-category AP (NaN without ground truth), their mean and the raw PR curves."""
    ap: np.ndarray
    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    categories: list[str]

    @property
    def mean_ap(self) -> float:
        return float(np.nanmean(self.ap)) if np.isfinite(self.ap).any() else float("nan")


def voc_evaluate(predictions: Sequence[Mapping], targets: Sequence[Mapping],
                 categories: Sequence[str] | None = None, iou_threshold: float = 0.5,
                 use_07_metric: bool = False) -> VocEvaluation:
    """Pascal VOC evaluation of per-image dicts (as :func:`evaluate_detections`); a target's
    ``iscrowd`` marks VOC's *difficult* objects.  See :func:`voc_evaluate_tables`."""
    dt, gt = tables_from_tensors(predictions, targets)
    top = max([int(t.category.max()) for t in (dt, gt) if len(t)], default=-1) + 1
    names = list(categories) if categories is not None else [str(k) for k in range(top)]
    if top > len(names):
        raise UserError(f"labels must lie in 0..{len(names) - 1}, found {top - 1}; pass the right category list")
    return voc_evaluate_tables(gt, dt, len(targets), names, iou_threshold, use_07_metric)


def voc_evaluate_tables(gt: BoxTable, dt: BoxTable, num_images: int, categories: Sequence[str],
                        iou_threshold: float = 0.5, use_07_metric: bool = False) -> VocEvaluation:
    """Pascal VOC AP per category.

    Per category, detections of all images are visited by decreasing score (stable); each is
    compared with its image's ground truth of that category: if the best IoU exceeds
    ``iou_threshold`` and that object is not difficult (``iscrowd``), the first such detection
    is a true positive and later ones are duplicates (false positives); a best match on a
    difficult object is ignored; otherwise a false positive.  IoU in continuous coordinates (no
    VOC "+1").
    """
    names, I = list(categories), num_images
    g_order = np.argsort(gt.category * I + gt.image, kind="stable")
    g_group, g_box, g_diff = (gt.category * I + gt.image)[g_order], gt.boxes[g_order], gt.iscrowd[g_order]
    d_order = np.lexsort((-dt.score, dt.category))
    d_group, d_box, d_cat = (dt.category * I + dt.image)[d_order], dt.boxes[d_order], dt.category[d_order]

    best_iou, best_gt = np.zeros(len(d_order)), np.full(len(d_order), -1)
    for pd, pg in _group_pairs(d_group, g_group):
        iou = _coco_iou(d_box[pd], g_box[pg], np.zeros(len(pg), bool))
        o = np.lexsort((pg, -iou, pd))                   # per detection: best IoU, first gt
        first = o[np.r_[True, pd[o][1:] != pd[o][:-1]]] if len(o) else o
        best_iou[pd[first]], best_gt[pd[first]] = iou[first], pg[first]
    hit = best_iou > iou_threshold
    difficult = hit & g_diff[np.maximum(best_gt, 0)]
    tp = np.zeros(len(d_order), bool)
    claims = np.flatnonzero(hit & ~difficult)
    _, first_claim = np.unique(best_gt[claims], return_index=True)
    tp[claims[first_claim]] = True
    fp = ~tp & ~difficult

    npos = np.bincount(gt.category[~gt.iscrowd], minlength=len(names))
    ap = np.full(len(names), np.nan)
    curves = {}
    bounds = np.searchsorted(d_cat, np.arange(len(names) + 1))
    for k, name in enumerate(names):
        if npos[k] == 0:
            continue
        sl = slice(bounds[k], bounds[k + 1])
        counted = ~difficult[sl]
        tps, fps = np.cumsum(tp[sl][counted]), np.cumsum(fp[sl][counted])
        rec = tps / npos[k]
        prec = tps / np.maximum(tps + fps, np.finfo(np.float64).eps)
        ap[k] = voc_ap(rec, prec, use_07_metric)
        curves[name] = (rec, prec)
    return VocEvaluation(ap, curves, names)

