"""How well cascades find faces: precision, recall and AP at IoU 0.5 on generated scenes, and
the ROC of the final cascade (faces found vs false positives as its last threshold moves).

Three detectors are compared on the same scenes: vislab's trained cascade, OpenCV's cascade
run by vislab, and OpenCV's cascade run by OpenCV.  A detection's score is the number of raw
windows it merges (``neighbors``), the usual confidence of a Viola-Jones detector.
:func:`evaluate_run` is all of ``vislab vj eval``: the table, the ROC and the pictures of a run.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vislab.classic.viola_jones.cascade import THRESHOLD_EPS, Cascade
from vislab.classic.viola_jones.data import Scene, make_scenes, sample_image
from vislab.classic.viola_jones.detect import (
    GROUP_EPS,
    clip_rects,
    detect,
    group_rectangles,
    scan_opencv,
)
from vislab.classic.viola_jones.opencv_xml import (
    load_opencv_cascade,
    resolve_cascade_path,
)
from vislab.classic.viola_jones.train import CASCADE_FILE, XML_FILE
from vislab.errors import UserError
from vislab.io import atomic_write_bytes, atomic_write_text
from vislab.metrics.detection import voc_evaluate
from vislab.report.plots import pyplot, save_figure

# a raw scan of one image: (x, y, w, h) windows that reached the last stage, and their last-stage sums
RawScan = tuple[np.ndarray, np.ndarray]


@dataclass
class DetectorReport:
    """Quality of one detector on a scene set."""

    name: str
    precision: float
    recall: float
    ap50: float
    detections: int
    seconds_per_image: float
    roc_thresholds: list[float]
    roc_detection_rate: list[float]
    roc_false_positives: list[int]

    def row(self) -> dict:
        return {"detector": self.name, "precision": self.precision, "recall": self.recall, "AP50": self.ap50,
                "detections": self.detections, "ms_per_image": 1000 * self.seconds_per_image}


def _voc(boxes: Sequence[np.ndarray], scores: Sequence[np.ndarray], scenes: Sequence[Scene]):
    preds = [{"boxes": b.reshape(-1, 4), "scores": s, "labels": np.zeros(len(b), np.int64)}
             for b, s in zip(boxes, scores)]
    targets = [{"boxes": sc.boxes, "labels": np.zeros(len(sc.boxes), np.int64)} for sc in scenes]
    return voc_evaluate(preds, targets, ["face"], iou_threshold=0.5)


def precision_recall_ap(boxes: Sequence[np.ndarray], scores: Sequence[np.ndarray],
                        scenes: Sequence[Scene]) -> tuple[float, float, float, int, int]:
    """``(precision, recall, AP50, true positives, false positives)`` of all detections at IoU 0.5.

    AP is Pascal VOC's (area under the monotone precision envelope), from vislab.metrics.
    """
    n_gt = sum(len(s.boxes) for s in scenes)
    n_det = sum(len(b) for b in boxes)
    ev = _voc(boxes, scores, scenes)
    if n_det == 0:
        return 0.0, 0.0, 0.0, 0, 0
    rec, prec = ev.curves["face"]
    tp = int(round(rec[-1] * n_gt))
    return float(prec[-1]), float(rec[-1]), float(ev.ap[0]), tp, n_det - tp


def roc_points(raw: Sequence[RawScan], scenes: Sequence[Scene], min_neighbors: int,
               thresholds: np.ndarray, group: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
               = group_rectangles) -> tuple[list[float], list[int]]:
    """Detection rate and false positives of the grouped detections for each last-stage threshold."""
    rates, fps = [], []
    for t in thresholds:
        boxes, scores = [], []
        for (rects, sums), scene in zip(raw, scenes):
            keep = sums >= np.float32(t) - THRESHOLD_EPS
            grouped, neighbors = group(rects[keep], min_neighbors)
            b, kept = clip_rects(np.asarray(grouped).reshape(-1, 4), scene.image.shape[::-1])
            boxes.append(b), scores.append(np.asarray(neighbors, np.float64)[kept])
        _, rec, _, _, fp = precision_recall_ap(boxes, scores, scenes)
        rates.append(rec), fps.append(fp)
    return rates, fps


def roc_thresholds(raw: Sequence[RawScan], own: float, n: int = 16) -> np.ndarray:
    """Last-stage thresholds to sweep: quantiles of the sums the scans saw, and the cascade's own."""
    sums = np.concatenate([s for _, s in raw] or [np.zeros(0)])
    return np.unique(np.r_[np.quantile(sums, np.linspace(0, 1, n)) if len(sums) else [], own])


def evaluate_vislab(name: str, cascade: Cascade, scenes: Sequence[Scene], scale_factor: float,
                    min_neighbors: int, roc_size: int = 16) -> DetectorReport:
    """vislab's OpenCV-compatible detector; its ROC moves the cascade's last stage threshold
    through every sum its scans saw (below the cascade's own threshold too)."""
    raw, boxes, scores, seconds = [], [], [], 0.0
    for scene in scenes:
        t0 = time.perf_counter()
        cands = scan_opencv(cascade, scene.image, scale_factor, last_stage=True)
        grouped, neighbors = group_rectangles(cands.accepted(), min_neighbors)
        b, kept = clip_rects(grouped, scene.image.shape[::-1])
        seconds += time.perf_counter() - t0
        raw.append((cands.rects, cands.scores))
        boxes.append(b), scores.append(neighbors[kept].astype(np.float64))
    precision, recall, ap, _, _ = precision_recall_ap(boxes, scores, scenes)
    thresholds = roc_thresholds(raw, float(cascade.stage_thresholds[-1]), roc_size)
    rates, fps = roc_points(raw, scenes, min_neighbors, thresholds)
    return DetectorReport(name, precision, recall, ap, sum(len(b) for b in boxes), seconds / max(len(scenes), 1),
                          thresholds.tolist(), rates, fps)


def evaluate_opencv(name: str, xml_path: str, scenes: Sequence[Scene], scale_factor: float,
                    min_neighbors: int, thresholds: Sequence[float], own_threshold: float) -> DetectorReport:
    """``cv2.CascadeClassifier`` itself; its ROC regroups (with ``cv2.groupRectangles``) the windows
    ``detectMultiScale3`` reports with their last-stage sums, so it has points only at thresholds
    at or above the cascade's own: OpenCV does not report windows that fail the last stage."""
    import cv2

    clf = cv2.CascadeClassifier(str(xml_path))
    if clf.empty():
        raise ValueError(f"OpenCV cannot read {xml_path}")
    raw, boxes, scores, seconds = [], [], [], 0.0
    for scene in scenes:
        t0 = time.perf_counter()
        rects, neighbors = clf.detectMultiScale2(scene.image, scaleFactor=scale_factor, minNeighbors=min_neighbors)
        seconds += time.perf_counter() - t0
        rects = np.asarray(rects, np.int64).reshape(-1, 4)
        boxes.append(np.c_[rects[:, :2], rects[:, :2] + rects[:, 2:]])
        scores.append(np.asarray(neighbors, np.float64).reshape(-1))
        all_rects, _, sums = clf.detectMultiScale3(scene.image, scaleFactor=scale_factor, minNeighbors=0,
                                                   outputRejectLevels=True)
        raw.append((np.asarray(all_rects, np.int64).reshape(-1, 4), np.asarray(sums, np.float64).reshape(-1)))
    precision, recall, ap, _, _ = precision_recall_ap(boxes, scores, scenes)

    def cv_group(rects: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k <= 0 or not len(rects):
            return rects, np.ones(len(rects), np.int64)
        out, weights = cv2.groupRectangles(rects.tolist(), k, GROUP_EPS)
        return np.asarray(out, np.int64).reshape(-1, 4), np.asarray(weights, np.int64).reshape(-1)

    thresholds = np.asarray(thresholds, np.float64)
    reachable = thresholds[thresholds >= own_threshold]
    rates, fps = roc_points(raw, scenes, min_neighbors, reachable, cv_group)
    pad = len(thresholds) - len(reachable)
    return DetectorReport(name, precision, recall, ap, sum(len(b) for b in boxes), seconds / max(len(scenes), 1),
                          thresholds.tolist(), [float("nan")] * pad + rates, [-1] * pad + fps)


def compare(ours: Cascade, ours_xml, theirs_path, theirs: Cascade, scenes: Sequence[Scene],
            scale_factor: float, min_neighbors: int, roc_size: int = 16) -> list[DetectorReport]:
    """The comparison table of ``vislab vj eval``: vislab's cascade and OpenCV's, each run by
    vislab's detector and by OpenCV (vislab's through its exported XML, when given)."""
    name = Path(theirs_path).stem.removeprefix("haarcascade_")
    reports = [evaluate_vislab("vislab cascade, vislab detector", ours, scenes, scale_factor, min_neighbors,
                               roc_size)]
    if ours_xml is not None:
        reports.append(evaluate_opencv("vislab cascade, OpenCV detector", str(ours_xml), scenes, scale_factor,
                                       min_neighbors, reports[0].roc_thresholds, float(ours.stage_thresholds[-1])))
    reports.append(evaluate_vislab(f"OpenCV {name}, vislab detector", theirs, scenes, scale_factor, min_neighbors,
                                   roc_size))
    reports.append(evaluate_opencv(f"OpenCV {name}, OpenCV detector", str(theirs_path), scenes, scale_factor,
                                   min_neighbors, reports[-1].roc_thresholds, float(theirs.stage_thresholds[-1])))
    return reports


def plot_roc(reports: Sequence[DetectorReport], path: str) -> str:
    """Detection rate against false positives, one curve per detector, traced as the last
    stage's threshold goes down (grouping can make the curve step back now and then)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in reports:
        pts = [(fp, d) for fp, d in zip(r.roc_false_positives, r.roc_detection_rate) if fp >= 0]
        if pts:
            fp, d = zip(*pts[::-1])
            ax.plot(fp, d, marker=".", label=r.name)
    ax.set(xlabel="false positives (all scenes)", ylabel="detection rate (IoU >= 0.5)", xscale="symlog",
           ylim=(0, 1.02), title="ROC: moving the last stage's threshold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def draw_boxes(gray: np.ndarray, boxes: np.ndarray, path: str, truth: np.ndarray | None = None) -> str:
    """Save a PNG of a grey image with detections (red) and, if given, true boxes (green)."""
    img = Image.fromarray(gray).convert("RGB")
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(gray.shape) / 250))
    for b in [] if truth is None else truth:
        draw.rectangle([int(v) for v in b], outline=(40, 200, 40), width=width)
    for b in boxes:
        draw.rectangle([int(v) for v in b], outline=(230, 30, 30), width=width)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


@dataclass
class RunEvaluation:
    """What ``vislab vj eval`` measured: ``payload`` is what ``eval.json`` holds."""

    payload: dict
    eval_json: Path
    plots: list[Path]


def evaluate_run(run_dir: str | Path, scenes: int = 60, seed: int = 0,
                 opencv_cascade: str = "frontalface_default", scale_factor: float = 1.1,
                 min_neighbors: int = 3, roc_points: int = 16) -> RunEvaluation:
    """Compare a trained run's cascade with an OpenCV cascade on ``scenes`` generated scenes.

    Writes ``eval.json`` (the table of :func:`compare` and the ROC points), ``plots/vj_roc.png``
    and the boxes of both cascades on the astronaut and on the first scene.  Bad arguments (a
    run without a cascade, no scenes, a scale factor not above 1) raise UserError before
    anything is written.
    """
    run = Path(run_dir)
    if not (run / CASCADE_FILE).is_file():
        raise UserError(f"run directory {run} has no {CASCADE_FILE}; train it first with "
                        f"`vislab vj train --run-dir {run}`")
    if scenes < 1:
        raise UserError(f"the number of scenes must be at least 1, got {scenes}")
    if scale_factor <= 1:
        raise UserError(f"the scale factor must be above 1 (e.g. 1.1), got {scale_factor}")
    ours = Cascade.load(run / CASCADE_FILE)
    theirs_path = resolve_cascade_path(opencv_cascade)
    theirs = load_opencv_cascade(theirs_path)
    test_scenes = make_scenes(scenes, seed)
    ours_xml = run / XML_FILE
    reports = compare(ours, ours_xml if ours_xml.is_file() else None, theirs_path, theirs, test_scenes,
                      scale_factor, min_neighbors, max(roc_points, 2))
    plots = run / "plots"
    written = [Path(plot_roc(reports, str(plots / "vj_roc.png")))]
    astronaut = sample_image("astronaut")
    for label, cascade in (("vislab", ours), ("opencv", theirs)):
        boxes = detect(cascade, astronaut, "opencv", scale_factor, min_neighbors).boxes
        written.append(Path(draw_boxes(astronaut, boxes, str(plots / f"vj_astronaut_{label}.png"))))
        scene = test_scenes[0]
        boxes = detect(cascade, scene.image, "opencv", scale_factor, min_neighbors).boxes
        written.append(Path(draw_boxes(scene.image, boxes, str(plots / f"vj_scene_{label}.png"), truth=scene.boxes)))
    payload = {"scenes": scenes, "seed": seed, "scale_factor": scale_factor, "min_neighbors": min_neighbors,
               "faces": int(sum(len(s.boxes) for s in test_scenes)), "table": [r.row() for r in reports],
               "roc": {r.name: {"threshold": r.roc_thresholds,   # null: OpenCV reports no windows there
                                "detection_rate": [None if np.isnan(d) else d for d in r.roc_detection_rate],
                                "false_positives": r.roc_false_positives} for r in reports}}
    atomic_write_text(run / "eval.json", json.dumps(payload, indent=2, allow_nan=False))
    return RunEvaluation(payload, run / "eval.json", written)
