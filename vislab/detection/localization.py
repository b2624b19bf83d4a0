"""Single-object localisation: classify the one object of an image and regress its box.

A classifier of the registry (``model.name``) gets a second head in parallel with its own: the
box head reads the last feature map (pooled to a small grid, so that it keeps where things
are; the class head's global pooling does not) and outputs the box as ``(cx, cy, w, h)``
divided by the image size.  Training minimises the notes' multi-task loss

    L = alpha * CE(class) + (1 - alpha) * R(box),   R = smooth-L1 (or L2),

on generated scenes with exactly one object (``data.name: scenes``).  The task that trains it
is :mod:`vislab.tasks.localization`: ``vislab train localization``, ``vislab evaluate RUN_DIR``.

``model.kwargs`` holds the backbone's arguments plus the localiser's own: ``alpha`` (0.5),
``box_loss`` (``smooth_l1`` or ``l2``), ``beta`` (smooth-L1's switch point, in image fractions:
0.05), ``box_hidden`` (256) and ``box_grid`` (4).  ``data.kwargs`` sets the scenes:
``source``, ``image_size``, ``scale``, ``max_truncation``, ``train``, ``val``, ``test`` (scene
counts) and ``seed``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.detection.boxes import box_convert, box_iou, clip_boxes_to_image
from vislab.detection.scenes import SceneConfig, SceneSet, resolve_scene_options
from vislab.errors import UserError

HEAD_KWARGS = {"box_hidden": 256, "box_grid": 4, "alpha": 0.5, "box_loss": "smooth_l1", "beta": 0.05}
SCENE_DEFAULTS = {"source": "fashion_mnist", "image_size": 64, "scale": [1.0, 2.0], "max_truncation": 0.4,
                  "train": 3000, "val": 300, "test": 1000, "seed": 0}


# --------------------------------------------------------------------------- model and loss

class Localizer(nn.Module):
    """A classifier plus a box-regression head in parallel.

    Args:
        backbone: a classifier of the registry (its ``forward_features`` must give a feature map
            ``(B, C, h, w)``); its own head classifies.
        in_chans / image_size: the input, to size the box head.
        box_hidden: width of the box head's hidden layer.
        box_grid: the feature map is average-pooled to ``box_grid x box_grid`` for the box head.
        alpha / box_loss / beta: the loss, see :func:`multitask_loss`.
    """

    def __init__(self, backbone: nn.Module, in_chans: int, image_size: tuple[int, int],
                 box_hidden: int = 256, box_grid: int = 4, alpha: float = 0.5,
                 box_loss: str = "smooth_l1", beta: float = 0.05) -> None:
        super().__init__()
        if not 0 <= alpha <= 1:
            raise UserError(f"model.kwargs.alpha is {alpha}; the loss weight lies in [0, 1]")
        if box_loss not in ("smooth_l1", "l2"):
            raise UserError(f"model.kwargs.box_loss is {box_loss!r}; use smooth_l1 or l2")
        self.alpha, self.box_loss, self.beta = alpha, box_loss, beta
        self.backbone = backbone
        was_training = backbone.training
        with torch.no_grad():
            feats = backbone.eval().forward_features(torch.zeros(1, in_chans, *image_size))
        backbone.train(was_training)
        if feats.ndim != 4:
            raise UserError(f"{type(backbone).__name__} gives tokens, not a feature map: the box head "
                            "needs a convolutional backbone (small_cnn, resnet18, ...)")
        c = feats.shape[1]
        self.box_head = nn.Sequential(nn.AdaptiveAvgPool2d(box_grid), nn.Flatten(),
                                      nn.Linear(c * box_grid * box_grid, box_hidden), nn.ReLU(inplace=True),
                                      nn.Linear(box_hidden, 4))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:   # (B, C, H, W) -> (B, K), (B, 4)
        f = self.backbone.forward_features(x)
        return self.backbone.forward_head(f), self.box_head(f)

    def loss(self, out: tuple[Tensor, Tensor], target: Tensor, label_smoothing: float = 0.0) -> Tensor:
        return multitask_loss(*out, target, self.alpha, self.box_loss, self.beta, label_smoothing)


def multitask_loss(logits: Tensor, boxes: Tensor, target: Tensor, alpha: float = 0.5,
                   box_loss: str = "smooth_l1", beta: float = 0.05, label_smoothing: float = 0.0) -> Tensor:
    """``alpha * CE + (1 - alpha) * R``: ``target`` ``(B, 5)`` is the label then the box as
    :func:`encode_boxes` gives it; ``R`` is smooth-L1 with switch point ``beta`` or the mean
    squared error (``box_loss='l2'``), averaged over the four coordinates and the batch."""
    cls = F.cross_entropy(logits, target[:, 0].long(), label_smoothing=label_smoothing)
    t = target[:, 1:].to(boxes.dtype)
    reg = F.smooth_l1_loss(boxes, t, beta=beta) if box_loss == "smooth_l1" else F.mse_loss(boxes, t)
    return alpha * cls + (1 - alpha) * reg


def encode_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """``(x1, y1, x2, y2)`` pixels ``(N, 4)`` -> ``(cx, cy, w, h)`` as fractions of the image."""
    h, w = size
    return box_convert(boxes.float(), "xyxy", "cxcywh") / boxes.new_tensor([w, h, w, h], dtype=torch.float32)


def decode_boxes(t: Tensor, size: tuple[int, int]) -> Tensor:
    """Inverse of :func:`encode_boxes`, clipped to the image."""
    h, w = size
    return clip_boxes_to_image(box_convert(t.float() * t.new_tensor([w, h, w, h], dtype=torch.float32),
                                           "cxcywh", "xyxy"), size)


# --------------------------------------------------------------------------- data

def scene_options(kwargs: dict) -> tuple[SceneConfig, dict]:
    """``data.kwargs`` -> the scene configuration (one object each) and the other options
    (counts, seed), defaults filled in."""
    return resolve_scene_options(kwargs, SCENE_DEFAULTS, "localisation", objects=(1, 1))


def scene_tensors(scenes: SceneSet) -> tuple[Tensor, Tensor, list[int]]:
    """uint8 images ``(N, 3, H, W)``, targets ``(N, 5)`` (label, encoded box) and indices of the
    scenes that hold their object (a scene whose object could not be placed is left out)."""
    keep = [i for i, t in enumerate(scenes.targets) if len(t["labels"]) == 1]
    if not keep:
        raise UserError(f"none of the {len(scenes)} {scenes.split} scenes holds an object; "
                        "ask for more scenes or a larger image_size")
    size = tuple(scenes.images.shape[-2:])
    labels = torch.stack([scenes.targets[i]["labels"][0] for i in keep]).float()
    boxes = encode_boxes(torch.cat([scenes.targets[i]["boxes"] for i in keep]), size)
    return scenes.images[keep], torch.cat((labels[:, None], boxes), 1), keep


# --------------------------------------------------------------------------- metrics

@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[Tensor], amp_dtype: torch.dtype | None = None,
            flip: bool = False) -> tuple[Tensor, Tensor]:
    """Logits ``(N, K)`` and encoded boxes ``(N, 4)`` (float32, CPU) of normalised batches, in
    eval mode (train mode is restored).  ``flip``: averaged with the mirror image's."""
    was_training = model.training
    model.eval()
    logits, boxes = [], []
    try:
        for x in batches:
            with torch.autocast(x.device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                lg, bx = (t.float() for t in model(x))
                if flip:                   # the mirror image's box, mirrored back: cx -> 1 - cx
                    lf, bf = (t.float() for t in model(x.flip(3)))
                    bf[:, 0] = 1 - bf[:, 0]
                    lg, bx = (lg + lf) / 2, (bx + bf) / 2
            logits.append(lg.cpu())
            boxes.append(bx.cpu())
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(boxes)


def localisation_metrics(logits: Tensor, boxes: Tensor, target: Tensor) -> dict[str, float]:
    """Accuracy, mean IoU of the predicted boxes, and localisation accuracy (right class and
    IoU >= 0.5, the ILSVRC rule), all over the images."""
    labels = target[:, 0].long()
    iou = box_iou(decode_boxes(boxes, (1, 1)), decode_boxes(target[:, 1:], (1, 1))).diagonal()
    hit = logits.argmax(1) == labels
    return {"top1": float(hit.float().mean()), "miou": float(iou.mean()),
            "loc_acc": float((hit & (iou >= 0.5)).float().mean())}


def detections(logits: Tensor, boxes: Tensor, size: tuple[int, int]) -> list[dict[str, Tensor]]:
    """One box per image, scored for every class by its probability (best class first)."""
    probs = torch.softmax(logits, 1)
    order = probs.argsort(1, descending=True)
    pixel = decode_boxes(boxes, size)
    return [{"boxes": pixel[i].expand(len(order[i]), 4), "scores": probs[i, order[i]], "labels": order[i]}
            for i in range(len(logits))]


__all__ = ["HEAD_KWARGS", "Localizer", "SCENE_DEFAULTS", "decode_boxes", "detections", "encode_boxes",
           "localisation_metrics", "multitask_loss", "predict", "scene_options", "scene_tensors"]
