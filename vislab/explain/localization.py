"""Weakly supervised localisation: a box from a classifier's class activation map, trained on
labels alone, scored by IoU against boxes the project knows because it made the images.

Each test image is one item (e.g. a Fashion-MNIST garment on black) placed at a random position
on a larger black canvas; its true box is the tight box of the item's nonzero pixels.  A fully
convolutional network with global pooling runs on the larger canvas unchanged.  As in the CAM
paper, the map of the true class is thresholded at 20% of its maximum and the box of the
largest connected region is the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from vislab.detection.boxes import box_iou
from vislab.errors import UserError
from vislab.explain.cam import class_maps
from vislab.explain.hooks import inspecting


def place_on_canvas(images: np.ndarray, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Paste each uint8 image ``(N, C, h, w)`` at a uniformly random position of a black
    ``size x size`` canvas.  Returns the canvases ``(N, C, size, size)`` and the boxes
    ``(N, 4)`` ``(x1, y1, x2, y2)`` of the nonzero pixels (pixel ``p`` spans ``[p, p+1)``)."""
    N, C, h, w = images.shape
    if size < max(h, w):
        raise UserError(f"a canvas of {size} pixels cannot hold {h}x{w} images; use --canvas >= {max(h, w)}")
    rng = np.random.default_rng(seed)
    canvases = np.zeros((N, C, size, size), np.uint8)
    boxes = np.zeros((N, 4), np.float32)
    for n, img in enumerate(images):
        y0, x0 = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        canvases[n, :, y0:y0 + h, x0:x0 + w] = img
        ys, xs = np.nonzero(img.max(0))
        if len(ys) == 0:
            ys, xs = np.array([0, h - 1]), np.array([0, w - 1])
        boxes[n] = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
    return canvases, boxes


def box_from_map(heat: Tensor, threshold: float = 0.2) -> Tensor:
    """The box ``(4,)`` of the largest 8-connected region where ``heat`` ``(H, W)`` is at least
    ``threshold`` x its maximum (ties: the first region found); the whole image when the map
    has no positive value."""
    from scipy import ndimage
    H, W = heat.shape
    peak = float(heat.max())
    if peak <= 0:
        return torch.tensor([0.0, 0.0, W, H])
    mask = (heat >= threshold * peak).cpu().numpy()
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    ys, xs = np.nonzero(labels == largest)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


@dataclass
class Localization:
    boxes: Tensor           # (N, 4) predicted from the maps of the true class
    iou: Tensor             # (N,) against the true boxes
    correct: Tensor         # (N,) bool: the class predicted on the canvas is right
    baseline_iou: Tensor    # (N,) of a centred box of the mean true size, for comparison

    def summary(self) -> dict[str, float]:
        """Mean IoU, the fraction with IoU >= 0.5 (GT-known localisation accuracy), the same
        also requiring the right class (top-1 localisation), classification accuracy on the
        canvases, and the centred-box baseline."""
        hit = self.iou >= 0.5
        return {"images": len(self.iou), "mean_iou": float(self.iou.mean()),
                "gt_known_loc": float(hit.float().mean()),
                "top1_loc": float((hit & self.correct).float().mean()),
                "accuracy": float(self.correct.float().mean()),
                "baseline_mean_iou": float(self.baseline_iou.mean()),
                "baseline_gt_known_loc": float((self.baseline_iou >= 0.5).float().mean())}


def localize(model: nn.Module, x: Tensor, boxes: Tensor, labels: Tensor, method: str = "cam",
             layer: str | None = None, threshold: float = 0.2, batch_size: int = 128) -> Localization:
    """Boxes from the maps of the true classes of canvases ``x`` ``(N, C, H, W)`` and their IoU
    with the true ``boxes`` ``(N, 4)``."""
    pred, correct = [], []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], labels[i:i + batch_size].to(x.device)
        maps = class_maps(model, xb, yb, method, layer)
        pred += [box_from_map(m, threshold) for m in maps]
        with torch.no_grad(), inspecting(model):
            correct.append((model(xb).argmax(1) == yb).cpu())
    pred_boxes = torch.stack(pred)
    boxes = boxes.float().cpu()
    iou = box_iou(pred_boxes, boxes).diagonal()
    H, W = x.shape[-2:]
    bw, bh = (boxes[:, 2] - boxes[:, 0]).mean(), (boxes[:, 3] - boxes[:, 1]).mean()
    centred = torch.stack([(W - bw) / 2, (H - bh) / 2, (W + bw) / 2, (H + bh) / 2])
    baseline = box_iou(centred[None], boxes)[0]
    return Localization(pred_boxes, iou, torch.cat(correct), baseline)


__all__ = ["Localization", "box_from_map", "localize", "place_on_canvas"]
