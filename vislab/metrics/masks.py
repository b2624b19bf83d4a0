"""Instance masks as COCO run-length encodings (RLE), and the mask IoU of COCO's ``segm`` evaluation.

An RLE is ``{"size": [H, W], "counts": ...}``: the lengths of alternating runs of 0s and 1s over
the mask read column by column (Fortran order), starting with a run of 0s (of length 0 when the
first pixel is set).  ``counts`` is a list of ints (the *uncompressed* form, as COCO ground
truth stores crowd regions) or a string (the *compressed* form that ``pycocotools.mask.encode``
writes): each count, minus the count two before it from the fourth on, in 5-bit groups, least
significant first, each group ``+ 48`` as one ASCII character, bit 0x20 set on all but the last
group of a number, bit 0x10 of the last group the sign (``rleToString`` in pycocotools'
``maskApi.c``).  The functions here read both forms and write the compressed one, bit-equal to
pycocotools'.

Mask IoU is pycocotools' ``rleIou``: intersection over union of the pixel sets; against a crowd
region the union is the detection's own area; 0 when the masks do not meet.  Polygon
segmentations (COCO's non-crowd ground truth) are not rasterised here: convert them to RLE
first (``pycocotools.mask.frPyObjects``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MASK_THRESHOLD = 0.5                 # a probability mask is the pixels >= this (Detectron2's rule)


def rle_counts(mask: np.ndarray) -> np.ndarray:
    """The uncompressed counts of a ``(H, W)`` mask: run lengths in column-major order, 0s first."""
    flat = np.asarray(mask).astype(bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.r_[0, change, flat.size])
    return np.r_[0, runs] if flat.size and flat[0] else runs


def counts_to_string(counts: np.ndarray | Sequence[int]) -> str:
    """pycocotools' compressed string of uncompressed ``counts`` (``rleToString``)."""
    x = np.asarray(counts, np.int64).copy()
    if len(x) > 3:
        x[3:] -= np.asarray(counts, np.int64)[1:-2]
    groups = []                      # one column per 5-bit group, -1 where a number has ended
    more = np.ones(len(x), bool)
    while more.any():
        c = np.where(more, x & 0x1F, -1)
        x = x >> 5
        go_on = np.where(c & 0x10, x != -1, x != 0) & more
        groups.append(np.where(go_on, c | 0x20, c))
        more = go_on
    if not groups:
        return ""
    chars = np.stack(groups, 1).ravel()
    return (chars[chars >= 0] + 48).astype(np.uint8).tobytes().decode("ascii")


def string_to_counts(s: str | bytes) -> np.ndarray:
    """Uncompressed counts of a compressed string (``rleFrString``)."""
    c = np.frombuffer(s.encode("ascii") if isinstance(s, str) else bytes(s), np.uint8).astype(np.int64) - 48
    if len(c) == 0:
        return np.zeros(0, np.int64)
    last = (c & 0x20) == 0
    number = np.r_[0, np.cumsum(last)[:-1]]
    start = np.r_[0, np.flatnonzero(last)[:-1] + 1]
    k = np.arange(len(c)) - start[number]
    x = np.zeros(int(last.sum()), np.int64)
    np.add.at(x, number, (c & 0x1F) << (5 * k))
    sign = (c[last] & 0x10) != 0
    x[sign] |= -1 << (5 * (k[last][sign] + 1))
    out = x.copy()                   # counts[i] = x[i] + counts[i - 2] for i > 2
    out[3::2] = np.cumsum(x[1::2])[1:]
    out[4::2] = np.cumsum(x[2::2])[1:]
    return out


def rle_encode(mask: np.ndarray) -> dict:
    """The compressed RLE ``{"size": [H, W], "counts": str}`` of a ``(H, W)`` mask (nonzero is
    set); equal to ``pycocotools.mask.encode`` (which gives ``counts`` as bytes)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode takes one (H, W) mask, got shape {tuple(mask.shape)}")
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts_to_string(rle_counts(mask))}


def rle_to_counts(rle: dict) -> np.ndarray:
    """The uncompressed counts of an RLE in either form; ``ValueError`` if they do not add up
    to ``H * W``."""
    counts = rle["counts"]
    counts = (string_to_counts(counts) if isinstance(counts, (str, bytes))
              else np.asarray(counts, np.int64).reshape(-1))
    h, w = rle["size"]
    if counts.sum() != h * w or (counts < 0).any():
        raise ValueError(f"an RLE of size {h}x{w} must have non-negative counts adding up to {h * w}, "
                         f"got {int(counts.sum())}")
    return counts


def rle_decode(rle: dict) -> np.ndarray:
    """The ``(H, W)`` uint8 mask of an RLE (compressed or not), as ``pycocotools.mask.decode``."""
    h, w = rle["size"]
    counts = rle_to_counts(rle)
    values = np.arange(len(counts)) % 2
    return np.repeat(values.astype(np.uint8), counts).reshape(w, h).T.copy()


def rle_area(rle: dict) -> int:
    """The number of set pixels, as ``pycocotools.mask.area``."""
    return int(rle_to_counts(rle)[1::2].sum())


def packed_masks(rles: Sequence[dict]) -> np.ndarray:
    """Masks as rows of bits ``(n, B)`` uint8, column-major, zero-padded to the longest: what
    :func:`pair_iou` takes."""
    flats = [np.packbits(np.repeat(np.arange(len(c)) % 2, c).astype(bool)) for c in map(rle_to_counts, rles)]
    width = max((len(f) for f in flats), default=0)
    out = np.zeros((len(flats), width), np.uint8)
    for i, f in enumerate(flats):
        out[i, :len(f)] = f
    return out


def pair_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of paired packed masks ``d[i]`` and ``g[i]`` (``(n, B)`` uint8, :func:`packed_masks`)
    with pycocotools' rule: a crowd region's union is the detection's area; 0 without overlap."""
    inter = np.bitwise_count(d & g).sum(1, dtype=np.int64)
    d_area = np.bitwise_count(d).sum(1, dtype=np.int64)
    union = np.where(crowd, d_area, d_area + np.bitwise_count(g).sum(1, dtype=np.int64) - inter)
    out = np.zeros(len(d))
    ok = inter > 0
    out[ok] = inter[ok] / union[ok]
    return out


def mask_iou(dt: Sequence[dict], gt: Sequence[dict], iscrowd: Sequence[bool]) -> np.ndarray:
    """IoU of every detection mask with every ground-truth mask, ``(len(dt), len(gt))``, as
    ``pycocotools.mask.iou(dt, gt, iscrowd)``."""
    if len(dt) == 0 or len(gt) == 0:
        return np.zeros((len(dt), len(gt)))
    packed = packed_masks(list(dt) + list(gt))
    d, g = packed[:len(dt)], packed[len(dt):]
    i, j = np.divmod(np.arange(len(dt) * len(gt)), len(gt))
    return pair_iou(d[i], g[j], np.asarray(iscrowd, bool)[j]).reshape(len(dt), len(gt))


__all__ = ["MASK_THRESHOLD", "counts_to_string", "mask_iou", "packed_masks", "pair_iou", "rle_area",
           "rle_counts", "rle_decode", "rle_encode", "rle_to_counts", "string_to_counts"]
