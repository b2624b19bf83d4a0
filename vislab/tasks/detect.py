"""``vislab detect``: any run that can find objects, used as a detector — drawn on an image, or
evaluated on the run's test scenes with COCO's numbers (files for ``vislab eval-detections``)."""

from __future__ import annotations

import json
import os

from vislab.detection.detect import (
    as_detector,
    draw_detections,
    evaluate_sliding_window,
    read_image,
)
from vislab.detection.sliding_window import PyramidConfig
from vislab.errors import UserError
from vislab.io import atomic_write_text
from vislab.tasks.trained import load_run

EVAL_FILES = ("detect_eval.json", "detect_gt.json", "detect_detections.json")


def detect_image(run_dir: str, image_path: str, out: str | None = None, pyramid: PyramidConfig = PyramidConfig(),
                 conv: bool = False, score_thr: float = 0.5, nms_iou: float = 0.3,
                 device: str = "auto") -> tuple[dict, list[str], list[str]]:
    """Detections of one image file, drawn to ``out`` (default ``IMAGE_STEM_detections.png``;
    a panoptic run also draws its panoptic map beside it, ``..._panoptic.png``): returns them,
    the class names and the paths written."""
    if out is not None and os.path.isdir(out):
        out = os.path.join(out, f"{os.path.splitext(os.path.basename(image_path))[0]}_detections.png")
    image = read_image(image_path)
    run = load_run(run_dir, device)
    detector = as_detector(run, pyramid, conv, score_thr, nms_iou)
    det = detector.detect(image)
    out = out or f"{os.path.splitext(os.path.basename(image_path))[0]}_detections.png"
    draw_detections(image, det, detector.classes, out)
    paths = [out]
    if hasattr(run.task, "draw_panoptic"):
        paths.append(run.task.draw_panoptic(run, image, os.path.splitext(out)[0] + "_panoptic.png"))
    return det, detector.classes, paths


def evaluate_detector(run_dir: str, num_scenes: int | None = None, time_scenes: int = 5,
                      pyramid: PyramidConfig = PyramidConfig(), score_thr: float = 0.05, nms_iou: float = 0.3,
                      device: str = "auto") -> dict:
    """COCO evaluation of a run's detections on its test scenes (``num_scenes``: the first N);
    writes ``detect_eval.json``, ``detect_gt.json`` and ``detect_detections.json``."""
    if num_scenes is not None and num_scenes < 0:
        raise UserError(f"--eval-scenes must be >= 0 (0: all), got {num_scenes}")
    run = load_run(run_dir, device)
    if hasattr(run.task, "evaluate_scenes"):       # localization and detection runs: their own test scenes
        report, gt, results = run.task.evaluate_scenes(run, num_scenes or None)
    else:
        report, gt, results = evaluate_sliding_window(run, num_scenes or None, time_scenes, pyramid,
                                                      score_thr, nms_iou)
    for name, data in zip(EVAL_FILES, (report, gt, results)):
        atomic_write_text(run.path(name), json.dumps(data, indent=1 if name == EVAL_FILES[0] else None))
    return report


__all__ = ["EVAL_FILES", "detect_image", "evaluate_detector"]
