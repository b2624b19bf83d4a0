"""Single-object localisation: classify the one object of an image and regress its box.

A classifier of the registry (``model.name``) gets a second head in parallel with its own: the
box head reads the last feature map (pooled to a small grid, so that it keeps where things
are; the class head's global pooling does not) and outputs the box as ``(cx, cy, w, h)``
divided by the image size.  Training minimises the notes' multi-task loss

    L = alpha * CE(class) + (1 - alpha) * R(box),   R = smooth-L1 (or L2),

on generated scenes with exactly one object (``data.name: scenes``).  The task is registered
as ``localization``: ``vislab train configs/localization.yaml``, ``vislab evaluate RUN_DIR``.

``model.kwargs`` holds the backbone's arguments plus the localiser's own: ``alpha`` (0.5),
``box_loss`` (``smooth_l1`` or ``l2``), ``beta`` (smooth-L1's switch point, in image fractions:
0.05), ``box_hidden`` (256) and ``box_grid`` (4).  ``data.kwargs`` sets the scenes:
``source``, ``image_size``, ``scale``, ``max_truncation``, ``train``, ``val``, ``test`` (scene
counts) and ``seed``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.config import Config
from vislab.data.loader import to_tensor
from vislab.detection.boxes import box_convert, box_iou, clip_boxes_to_image
from vislab.detection.scenes import SceneConfig, SceneSet, make_scenes
from vislab.engine.tasks import Task, register_task
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


def build_model(cfg: Config, stats: dict) -> Localizer:
    """The backbone ``model.name`` (sized as for classification) with a box head; the keys of
    ``model.kwargs`` named in :data:`HEAD_KWARGS` go to the localiser, the rest to the backbone."""
    from vislab.engine.classification import build_model as build_classifier
    kw = dict(cfg.model.kwargs)
    head = {k: kw.pop(k, v) for k, v in HEAD_KWARGS.items()}
    plain = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kwargs=kw))
    backbone = build_classifier(plain, stats)
    cfg.model.kwargs = {**plain.model.kwargs, **head}      # fully resolved, as classification does
    return Localizer(backbone, stats["in_chans"], tuple(stats["image_size"]), **head)


def loss_fn(cfg: Config, model: Localizer):
    """The localiser's own multi-task loss, with ``train.label_smoothing`` on the class term."""
    return lambda out, y: model.loss(out, y, cfg.train.label_smoothing)


def correct(out: tuple[Tensor, Tensor], y: Tensor) -> Tensor:
    return (out[0].argmax(1) == y[:, 0].long()).sum()


# --------------------------------------------------------------------------- data

def scene_options(kwargs: dict) -> tuple[SceneConfig, dict]:
    """``data.kwargs`` -> the scene configuration (one object each) and the other options
    (counts, seed), defaults filled in."""
    unknown = set(kwargs) - set(SCENE_DEFAULTS)
    if unknown:
        raise UserError(f"unknown data.kwargs {sorted(unknown)} for localisation scenes; known: "
                        f"{', '.join(SCENE_DEFAULTS)}")
    opts = {**SCENE_DEFAULTS, **kwargs}
    size = opts["image_size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    config = SceneConfig(source=opts["source"], image_size=size, objects=(1, 1), scale=tuple(opts["scale"]),
                         max_truncation=opts["max_truncation"])
    return config, opts


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


def prepare(cfg: Config, device: torch.device, val_indices: np.ndarray | None = None):
    """Train and val scenes (one object each) as normalised tensors with ``(N, 5)`` targets."""
    from vislab.engine.classification import Prepared
    if cfg.data.name != "scenes":
        raise UserError(f"the localization task generates its images: set data.name: scenes (not "
                        f"{cfg.data.name!r}) and the scene options in data.kwargs")
    if val_indices is not None:
        raise UserError("cross-validation (--folds) is not available for localisation; it has its own val scenes")
    config, opts = scene_options(cfg.data.kwargs)
    n_train = min(opts["train"], cfg.data.limit_train or opts["train"])
    train = make_scenes("train", n_train, config, opts["seed"], cfg.data.root)
    val = make_scenes("val", opts["val"], config, opts["seed"], cfg.data.root)
    (tx, ty, _), (vx, vy, _) = scene_tensors(train), scene_tensors(val)
    x = tx.float() / 255
    mean, std = x.mean((0, 2, 3)).tolist(), [max(s, 1e-6) for s in x.std((0, 2, 3)).tolist()]
    stats = {"mean": mean, "std": std, "classes": list(train.categories), "in_chans": 3,
             "image_size": list(config.image_size), "dataset": "scenes", "scenes": opts}
    return Prepared(to_tensor(tx.numpy(), mean, std, device), ty.to(device),
                    to_tensor(vx.numpy(), mean, std, device), vy.to(device), stats)


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


def validate(model: nn.Module, loader, amp_dtype=None) -> dict[str, float]:
    batches = list(loader)
    logits, boxes = predict(model, (x for x, _ in batches), amp_dtype)
    target = torch.cat([y.cpu() for _, y in batches])
    m = localisation_metrics(logits, boxes, target)
    return {"val_loss": float(F.cross_entropy(logits, target[:, 0].long())), "val_top1": m["top1"],
            "val_miou": m["miou"], "val_loc_acc": m["loc_acc"]}


def detections(logits: Tensor, boxes: Tensor, size: tuple[int, int]) -> list[dict[str, Tensor]]:
    """One box per image, scored for every class by its probability (best class first)."""
    probs = torch.softmax(logits, 1)
    order = probs.argsort(1, descending=True)
    pixel = decode_boxes(boxes, size)
    return [{"boxes": pixel[i].expand(len(order[i]), 4), "scores": probs[i, order[i]], "labels": order[i]}
            for i in range(len(logits))]


def evaluate_run(run_dir: str, num_scenes: int | None = None, tta: bool = False,
                 device: str = "auto") -> tuple[dict, dict, list]:
    """Run a localisation run on generated test scenes: the report (accuracy, mean IoU,
    localisation accuracy, the classification report of the class head, COCO's twelve numbers),
    the ground truth as COCO and the detections as COCO results."""
    from vislab.detection.detect import coco_files
    from vislab.engine.run import load_run_model
    from vislab.engine.trainer import resolve_device
    from vislab.metrics.classification import classification_report
    from vislab.metrics.detection import evaluate_detections
    dev = resolve_device(device)
    model, stats, cfg = load_run_model(run_dir, dev)
    config, opts = scene_options(stats["scenes"])
    test = make_scenes("test", num_scenes or opts["test"], config, opts["seed"], cfg.data.root)
    images, target, keep = scene_tensors(test)
    x = to_tensor(images.numpy(), stats["mean"], stats["std"], dev)
    bs = cfg.train.eval_batch_size
    logits, boxes = predict(model, (x[i:i + bs] for i in range(0, len(x), bs)), flip=tta)
    size = tuple(stats["image_size"])
    dets = detections(logits, boxes, size)
    gts = [test.targets[i] for i in keep]
    ev = evaluate_detections(dets, gts, stats["classes"])
    report = classification_report(logits, target[:, 0].long(), stats["classes"])
    report.update(localisation_metrics(logits, boxes, target))
    report.update(task="localization", run_dir=run_dir, tta=tta, dataset="scenes", model=cfg.model.name,
                  scenes=opts, coco=ev.as_dict(), per_category=ev.per_category())
    report["summary"] = (f"{report['num_samples']} test scenes: accuracy {report['top1']:.4f}, mean IoU "
                         f"{report['miou']:.4f}, localisation accuracy (class and IoU >= 0.5) "
                         f"{report['loc_acc']:.4f}\n{ev.summary()}")
    gt, results = coco_files(gts, dets, stats["classes"], size)
    return report, gt, results


def evaluate(run_dir: str, tta: bool = False, device: str = "auto") -> dict:
    """``vislab evaluate``: :func:`evaluate_run` on the run's test scenes, written to
    ``eval.json`` (and ``eval_gt.json`` / ``eval_detections.json`` for ``vislab eval-detections``)."""
    from vislab.engine.checkpoint import atomic_write_text
    report, gt, results = evaluate_run(run_dir, None, tta, device)
    atomic_write_text(os.path.join(run_dir, "eval_gt.json"), json.dumps(gt))
    atomic_write_text(os.path.join(run_dir, "eval_detections.json"), json.dumps(results))
    atomic_write_text(os.path.join(run_dir, "eval.json"), json.dumps(report, indent=1))
    return report


register_task(Task("localization", prepare, build_model, loss_fn, validate, evaluate, correct, augment=False))
