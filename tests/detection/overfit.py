"""Shared checks of every detector's tests: it overfits a handful of generated scenes, and its detections are well formed."""

from __future__ import annotations

import torch
from torch import nn

from tests.metrics.coco_oracle import pycocotools_eval


def overfit_ap50(model: nn.Module, steps: int, lr: float = 3e-3, num_scenes: int = 8) -> float:
    """Train ``model`` full-batch for ``steps`` AdamW steps on ``num_scenes`` 64x64 scenes of 1-3
    objects, then return AP50 on those same scenes by pycocotools (the reference)."""
    from vislab.detection.detect import coco_files
    from vislab.detection.scenes import SceneConfig, make_scenes
    torch.manual_seed(0)
    scenes = make_scenes("train", num_scenes, SceneConfig(image_size=(64, 64), objects=(1, 3), scale=(0.8, 1.6)))
    x = scenes.images.float() / 255
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in scenes.targets]
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(x, targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        dets = model.eval()(x)
    gt, results = coco_files(scenes.targets, dets, scenes.categories, (64, 64))
    return pycocotools_eval(gt, results).stats[1]


def check_detections(d: dict, most: int, least: int = 1, width: int = 80, height: int = 64,
                     num_classes: int = 3, score_thresh: float = 0.05) -> None:
    """One image's detections as every detector returns them: ``least``..``most`` boxes with as
    many scores and labels, scores sorted and above the threshold, boxes inside the image,
    labels int64 in ``0..num_classes-1``."""
    assert least <= len(d["boxes"]) <= most and len(d["boxes"]) == len(d["scores"]) == len(d["labels"])
    assert (d["scores"][:-1] >= d["scores"][1:]).all() and (d["scores"] > score_thresh).all()
    b = d["boxes"]
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= width).all() and (b[:, 3] <= height).all()
    assert d["labels"].dtype == torch.int64 and ((d["labels"] >= 0) & (d["labels"] < num_classes)).all()
