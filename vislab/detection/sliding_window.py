"""Sliding-window detection: a window classifier (the items of the scenes plus a background
class) run over every window of a scale-and-aspect pyramid, then non-maximum suppression.
The baseline that the notes use to motivate R-CNN.

A window is ``window x window`` pixels of a pyramid level; the object it stands for is its
central part, ``margin`` pixels in from each side (the rest is context).  A level resizes the
image by ``(sx, sy)``, so a window stands for a box of ``(window - 2 margin) / sx`` by
``(window - 2 margin) / sy`` image pixels: scales give the sizes, ratios (height / width) the
shapes.  Windows step by ``stride`` pixels of their level.

The same windows are scored two ways:

* explicitly: every window cropped and classified on its own (``conv=False``);
* convolutionalised: the classifier's fully connected head turned into convolutions
  (:func:`vislab.analysis.convolutionalise`), so that one forward pass over a level scores all
  its windows at once, sharing the convolutions of overlapping windows.  This needs a classifier
  whose convolutions do not pad and whose total stride is ``stride``, such as
  :class:`~vislab.models.window_cnn.WindowCNN` (model ``window_cnn``).

The training windows (data set ``scene_patches``) are cut from the pyramid of training scenes
exactly as the detector cuts them: a window is an object of class ``k`` when the box it stands
for overlaps an object of class ``k`` with IoU >= 0.6, background when it overlaps every object
with IoU < 0.3 (half of them "hard", IoU >= 0.1), and left out in between.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.analysis import convolutionalise
from vislab.data.datasets import ArrayDataset
from vislab.detection.datasets import WINDOW
from vislab.detection.boxes import box_iou, clip_boxes_to_image
from vislab.detection.nms import batched_nms
from vislab.detection.scenes import load_scenes
from vislab.errors import UserError
from vislab.models import window_cnn  # noqa: F401  (registers the window_cnn model)

BACKGROUND = "background"


# --------------------------------------------------------------------------- the pyramid

@dataclass(frozen=True)
class PyramidConfig:
    """Which windows the detector looks at.

    Args:
        window: the classifier's input side in pixels.
        margin: context pixels on each side of the part of a window that stands for the object.
        stride: step between windows within a level (the classifier's total stride for the
            convolutionalised path).
        scales: level scales; a window at scale ``s`` (ratio 1) stands for a box of side
            ``(window - 2 margin) / s``.  The defaults cover boxes of about 14 to 57 pixels in
            steps of 2^(1/3).
        ratios: box shapes, height / width.
    """
    window: int = WINDOW
    margin: int = 4
    stride: int = 4
    scales: tuple[float, ...] = (1.7, 1.35, 1.07, 0.85, 0.67, 0.53, 0.42)
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) <= 0 or not self.ratios or min(self.ratios) <= 0:
            raise UserError(f"pyramid scales {self.scales} and ratios {self.ratios} must be "
                            "non-empty and positive, e.g. --scales 1.5 1 0.67")
        if not 0 <= 2 * self.margin < self.window or self.stride < 1:
            raise UserError(f"window {self.window}, margin {self.margin}, stride {self.stride}: "
                            "need 0 <= 2 * margin < window and stride >= 1")

    @property
    def levels(self) -> list[tuple[float, float]]:
        """``(sx, sy)`` of every level, scales outer, ratios inner."""
        return [(s * math.sqrt(r), s / math.sqrt(r)) for s in self.scales for r in self.ratios]


@dataclass
class Level:
    """One pyramid level: the resized image padded by ``margin`` (zeros), ``(C, h, w)`` in
    ``[0, 1]``, its scale factors, and the boxes its windows stand for, ``(ny * nx, 4)`` in image
    pixels, row by row (the order of a score map flattened)."""
    image: Tensor
    sx: float
    sy: float
    grid: tuple[int, int]
    boxes: Tensor = field(repr=False)


def pyramid(image: Tensor, config: PyramidConfig = PyramidConfig()) -> list[Level]:
    """The levels of an image ``(C, H, W)`` in ``[0, 1]`` that hold at least one window."""
    _, H, W = image.shape
    m, win, st = config.margin, config.window, config.stride
    levels = []
    for sx, sy in config.levels:
        h, w = max(round(H * sy), 1), max(round(W * sx), 1)
        ny, nx = (h + 2 * m - win) // st + 1, (w + 2 * m - win) // st + 1
        if ny < 1 or nx < 1:
            continue
        resized = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False,
                                antialias=True)[0]
        sx, sy = w / W, h / H                              # the exact factors after rounding
        y0 = torch.arange(ny, dtype=torch.float32) * st   # window origin in the padded level
        x0 = torch.arange(nx, dtype=torch.float32) * st   # = box origin in the level
        yy, xx = torch.meshgrid(y0, x0, indexing="ij")
        inner = win - 2 * m
        boxes = torch.stack((xx / sx, yy / sy, (xx + inner) / sx, (yy + inner) / sy), -1).reshape(-1, 4)
        levels.append(Level(F.pad(resized, (m, m, m, m)), sx, sy, (ny, nx), boxes))
    return levels


def _normalise(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return (x - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)


def explicit_scores(model: nn.Module, level: Tensor, window: int, stride: int, batch: int = 2048) -> Tensor:
    """Logits ``(ny * nx, K)`` of every window of a normalised level ``(C, h, w)``, each window
    cropped and classified on its own."""
    crops = F.unfold(level[None], window, stride=stride)[0].T           # (L, C * window * window)
    crops = crops.reshape(-1, level.shape[0], window, window)
    return torch.cat([model(crops[i:i + batch]) for i in range(0, len(crops), batch)])


def conv_scores(fcn: nn.Module, level: Tensor) -> Tensor:
    """Logits ``(ny * nx, K)`` of every window of a normalised level from one pass of a
    convolutionalised classifier (a ``(K, ny, nx)`` score map)."""
    scores = fcn(level[None])[0]
    return scores.flatten(1).T


# --------------------------------------------------------------------------- the detector

class SlidingWindowDetector:
    """A trained window classifier run over the pyramid of an image.

    Args:
        model: a classifier of ``config.window``-sized windows.
        mean / std: the per-channel normalisation it was trained with.
        classes: its class names, the last one ``'background'``.
        config: the pyramid.
        conv: score the windows with the convolutionalised classifier (needs a model with
            ``as_sequential``, e.g. ``window_cnn``), else one window at a time.
    """

    def __init__(self, model: nn.Module, mean: list[float], std: list[float], classes: list[str],
                 config: PyramidConfig = PyramidConfig(), conv: bool = False) -> None:
        if not classes or classes[-1] != BACKGROUND:
            raise UserError(f"a sliding-window classifier needs '{BACKGROUND}' as its last class, "
                            f"got {classes[-1:]}; train it on scene_patches")
        self.model, self.classes, self.config, self.conv = model.eval(), list(classes), config, conv
        p = next(model.parameters())
        self.mean = torch.tensor(mean, dtype=p.dtype, device=p.device)
        self.std = torch.tensor(std, dtype=p.dtype, device=p.device)
        self.fcn = convolutionalised(model, len(mean), config) if conv else None

    @torch.no_grad()
    def candidates(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Every window of an image ``(C, H, W)`` in ``[0, 1]``: the boxes it stands for
        ``(N, 4)`` and its class probabilities ``(N, K)``."""
        boxes, probs = [], []
        for level in pyramid(image.to(self.mean.device, self.mean.dtype), self.config):
            x = _normalise(level.image, self.mean, self.std)
            logits = (conv_scores(self.fcn, x) if self.conv
                      else explicit_scores(self.model, x, self.config.window, self.config.stride))
            boxes.append(level.boxes.to(x.device))
            probs.append(torch.softmax(logits.float(), 1))
        if not boxes:
            return torch.zeros(0, 4), torch.zeros(0, len(self.classes))
        return torch.cat(boxes), torch.cat(probs)

    @torch.no_grad()
    def __call__(self, image: Tensor, score_thr: float = 0.5, nms_iou: float = 0.3,
                 max_dets: int = 100, pre_nms: int = 1000) -> dict[str, Tensor]:
        """Detections of one image ``(C, H, W)`` in ``[0, 1]``: ``boxes`` ``(n, 4)``, ``scores``,
        ``labels`` (object classes; the background never comes out), best first."""
        boxes, probs = self.candidates(image)
        return select(boxes, probs, image.shape[-2:], score_thr, nms_iou, max_dets, pre_nms)


def select(boxes: Tensor, probs: Tensor, size: tuple[int, int], score_thr: float = 0.5,
           nms_iou: float = 0.3, max_dets: int = 100, pre_nms: int = 1000) -> dict[str, Tensor]:
    """Windows -> detections: each window's best object class (the last class is background)
    scored by its probability; the ``pre_nms`` best of those above ``score_thr`` clipped to the
    image and suppressed per class (:func:`~vislab.detection.nms.batched_nms`, whose IoU matrix
    grows as the square of the candidates), at most ``max_dets`` kept."""
    scores, labels = probs[:, :-1].max(1)
    keep = torch.nonzero(scores >= score_thr).flatten()
    keep = keep[torch.sort(scores[keep], descending=True, stable=True).indices[:pre_nms]]
    boxes, scores, labels = clip_boxes_to_image(boxes[keep], tuple(size)), scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_iou)[:max_dets]
    return {"boxes": boxes[keep].cpu(), "scores": scores[keep].cpu(), "labels": labels[keep].cpu()}


def convolutionalised(model: nn.Module, in_chans: int, config: PyramidConfig) -> nn.Module:
    """The fully convolutional copy of a window classifier, checked to step by ``config.stride``."""
    if not hasattr(model, "as_sequential"):
        raise UserError(f"{type(model).__name__} cannot be convolutionalised (its head is not "
                        "Flatten + Linear layers over unpadded convolutions); drop --conv, or "
                        "train a window_cnn (`vislab train sliding_window`)")
    if getattr(model, "stride", config.stride) != config.stride:
        raise UserError(f"the classifier steps by {model.stride} pixels but the pyramid by "
                        f"{config.stride}; they must agree for the convolutionalised path")
    return convolutionalise(model.as_sequential(), (in_chans, config.window, config.window)).eval()


# --------------------------------------------------------------------------- training windows

POS_IOU, NEG_IOU, HARD_IOU = 0.6, 0.3, 0.1
POS_PER_OBJECT = 4                 # positive windows drawn per object
NEG_PER_POS = 1.0                  # background windows per positive (at least NEG_MIN per scene)
NEG_MIN = 4


def label_windows(boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor, background: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The windows (given by the boxes they stand for, ``(N, 4)``) that train the classifier,
    and as what: indices into ``boxes`` and labels.  Up to ``POS_PER_OBJECT`` windows per object
    with IoU >= ``POS_IOU`` (an object's class), then as many background windows (at least
    ``NEG_MIN``) overlapping every object with IoU < ``NEG_IOU``, half of them "hard" (IoU >=
    ``HARD_IOU``) when there are enough."""
    iou = box_iou(boxes, gt_boxes)
    if len(gt_boxes):
        best, owner = iou.max(1)
    else:
        best, owner = torch.zeros(len(boxes)), torch.zeros(len(boxes), dtype=torch.long)
    index, label = [], []
    for j in range(len(gt_boxes)):
        pos = rng.permutation(torch.nonzero((best >= POS_IOU) & (owner == j)).flatten().numpy())[:POS_PER_OBJECT]
        index += pos.tolist()
        label += [int(gt_labels[j])] * len(pos)
    n_neg = max(NEG_MIN, round(NEG_PER_POS * len(index)))
    hard = rng.permutation(torch.nonzero((best >= HARD_IOU) & (best < NEG_IOU)).flatten().numpy())
    easy = rng.permutation(torch.nonzero(best < HARD_IOU).flatten().numpy())
    n_hard = min(len(hard), n_neg // 2)
    neg = np.concatenate((hard[:n_hard], easy[:n_neg - n_hard])).astype(np.int64)
    return np.asarray(index + neg.tolist(), np.int64), np.asarray(label + [background] * len(neg), np.int64)


def window_patches(images: Tensor, targets: list[dict[str, Tensor]], background: int,
                   config: PyramidConfig = PyramidConfig(), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Training windows of scenes ``(N, C, H, W)`` uint8 with their ``targets`` (``boxes``,
    ``labels``), chosen by :func:`label_windows`: uint8 patches ``(M, C, window, window)`` and
    labels ``(M,)``, scene by scene.  Windows are cut from the pyramid as the detector cuts them."""
    win, st = config.window, config.stride
    patches, labels = [], []
    for i in range(len(images)):
        levels = pyramid(images[i].float() / 255, config)
        if not levels:
            continue
        starts = np.cumsum([0] + [lv.grid[0] * lv.grid[1] for lv in levels])
        index, label = label_windows(torch.cat([lv.boxes for lv in levels]), targets[i]["boxes"],
                                     targets[i]["labels"], background, np.random.default_rng([seed, i]))
        crops = []
        for t in index:
            n = int(np.searchsorted(starts, t, side="right")) - 1
            r, c = divmod(int(t - starts[n]), levels[n].grid[1])
            crops.append(levels[n].image[:, r * st:r * st + win, c * st:c * st + win])
        if crops:       # to uint8 now: views would keep every level of every scene alive
            patches.append((torch.stack(crops) * 255).round().clamp(0, 255).to(torch.uint8))
            labels.append(label)
    if not patches:
        return np.zeros((0, images.shape[1], win, win), np.uint8), np.zeros(0, np.int64)
    return torch.cat(patches).numpy(), np.concatenate(labels)


def scene_patches(folder: str, split: str) -> ArrayDataset:
    """The ``scene_patches`` data set (see :mod:`vislab.detection.datasets`): windows of the
    ``train`` scenes of a folder written by ``vislab data make-scenes`` for the train split;
    those of its ``val`` scenes for the test split."""
    source = "train" if split == "train" else "val"
    if not os.path.exists(os.path.join(folder, f"{source}.json")):
        raise UserError(f"{folder} has no {source}.json: scene_patches reads a scene folder; make "
                        f"one with `vislab data make-scenes {folder}` and pass it as data.root")
    scenes = load_scenes(folder, source)
    classes = list(scenes.categories) + [BACKGROUND]
    x, y = window_patches(scenes.images, scenes.targets, len(classes) - 1)
    return ArrayDataset(x, y, classes, f"scene_patches:{folder}/{source}")


__all__ = ["BACKGROUND", "Level", "PyramidConfig", "SlidingWindowDetector", "conv_scores",
           "convolutionalised", "explicit_scores", "label_windows", "pyramid", "scene_patches", "select", "window_patches"]
