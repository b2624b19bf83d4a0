"""Trained runs as detectors (what ``vislab detect`` runs): a localisation run or a
sliding-window classifier run, find the objects of an image, draw them (with their masks when
the detector gives masks), and evaluate on the run's test scenes with COCO's numbers (and, for
sliding windows, the time of the explicit and of the convolutionalised window scoring); and the
COCO files of detections with masks, evaluated by ``vislab eval-detections --iou-type segm``."""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vislab.detection.formats import (
    CocoGroundTruth,
    DetectionSet,
    ImageAnnotations,
    _read_json,
    dataset_to_coco,
    parse_coco,
)
from vislab.detection.localization import decode_boxes
from vislab.detection.localization import predict as localisation_predict
from vislab.detection.scenes import load_scenes
from vislab.detection.sliding_window import (
    BACKGROUND,
    PyramidConfig,
    SlidingWindowDetector,
    select,
)
from vislab.errors import UserError
from vislab.io import atomic_write_bytes, atomic_write_text
from vislab.io import read_image as io_read_image
from vislab.metrics.detection import (
    BoxTable,
    CocoEvaluation,
    evaluate_detections,
    evaluate_tables,
)
from vislab.metrics.masks import MASK_THRESHOLD, rle_area, rle_encode, rle_to_counts
from vislab.report.plots import plot_pr_curves

MASK_ALPHA = 0.45                # opacity of a drawn mask
PER_DETECTION = ("boxes", "scores", "labels", "masks")

if TYPE_CHECKING:
    from vislab.tasks.trained import TrainedRun


@dataclass
class Detector:
    """``detect(image)`` takes an image ``(3, H, W)`` in ``[0, 1]`` and gives ``boxes``,
    ``scores`` and ``labels`` (indices into ``classes``, the object classes)."""
    kind: str                                   # 'detection', 'localization' or 'sliding_window'
    classes: list[str]
    detect: Callable[[Tensor], dict[str, Tensor]]


def as_detector(run: TrainedRun, pyramid: PyramidConfig = PyramidConfig(), conv: bool = False,
                score_thr: float = 0.5, nms_iou: float = 0.3) -> Detector:
    """The detector of a trained run: a detection run's detector (its task's ``detect``), its
    localiser (one box per image), or its window classifier run over the pyramid (a
    ``classification`` run on ``scene_patches``)."""
    info, model = run.info, run.model
    if hasattr(run.task, "detect"):                # a detector's task (RetinaNet): its own boxes, over score_thr
        def detect(image: Tensor) -> dict[str, Tensor]:
            det = run.task.detect(run, image)
            return select_detections(det, det["scores"] >= score_thr)
        return Detector(run.task.name, list(info.classes), detect)
    if run.task.name == "localization":
        def localise(image: Tensor) -> dict[str, Tensor]:
            x = F.interpolate(image[None].to(run.device), size=info.image_size, mode="bilinear",
                              align_corners=False, antialias=True)
            logits, boxes = localisation_predict(model, [info.norm.normalize(x)])
            probs = torch.softmax(logits, 1)
            return {"boxes": decode_boxes(boxes, tuple(image.shape[-2:])), "scores": probs.max(1).values,
                    "labels": probs.argmax(1)}
        return Detector("localization", list(info.classes), localise)
    classes = list(info.classes)
    if classes[-1:] != [BACKGROUND] or info.in_chans != 3:
        raise UserError(f"{run.run_dir} is a {run.task.name} run on {info.dataset!r}: `vislab detect` needs a "
                        "localization run or a classifier trained on scene_patches (`vislab train sliding_window`)")
    windows = SlidingWindowDetector(model, list(info.norm.mean), list(info.norm.std), classes, pyramid, conv)
    return Detector("sliding_window", classes[:-1],
                    lambda image: windows(image, score_thr=score_thr, nms_iou=nms_iou))


def select_detections(det: dict, keep: Tensor) -> dict:
    """The detections where ``keep`` (a boolean mask or indices) holds: the per-detection
    entries (:data:`PER_DETECTION`) indexed, per-image ones (a panoptic map) kept whole."""
    return {k: (v[keep] if k in PER_DETECTION else v) for k, v in det.items()}


def read_image(path: str) -> Tensor:
    """An image file as RGB ``(3, H, W)`` float in ``[0, 1]``."""
    return torch.from_numpy(io_read_image(path, "RGB")).permute(2, 0, 1).float() / 255


def draw_detections(image: Tensor, det: dict[str, Tensor], classes: Sequence[str], path: str,
                    min_side: int = 480) -> str:
    """Draw boxes with "label score" on the image (enlarged, pixels kept sharp, until its longer
    side reaches ``min_side``) and write a PNG atomically.  Boxes take their class's colour; with
    ``masks`` ``(n, H, W)`` (probabilities at the image's size) each instance takes its own
    colour instead, laid translucently over its pixels >= 0.5 and on its box."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    H, W = image.shape[-2:]
    zoom = max(1, math.ceil(min_side / max(H, W)))
    palette = colormaps["tab10"]
    masks = det.get("masks")

    def colour_of(n: int, label: int) -> tuple[int, ...]:
        return tuple(int(255 * c) for c in palette((n if masks is not None else label) % 10)[:3])

    rgb = image.float().expand(3, -1, -1).permute(1, 2, 0).clamp(0, 1).clone()        # (H, W, 3)
    if masks is not None:
        if tuple(masks.shape[-2:]) != (H, W):
            raise ValueError(f"masks of size {tuple(masks.shape[-2:])} for an image of size {(H, W)}")
        for n, (m, label) in enumerate(zip(masks, det["labels"].tolist())):
            on = m >= MASK_THRESHOLD
            rgb[on] = rgb[on] * (1 - MASK_ALPHA) + torch.tensor(colour_of(n, label)) / 255 * MASK_ALPHA
    arr = (rgb * 255).round().to(torch.uint8).numpy()
    im = Image.fromarray(arr).resize((W * zoom, H * zoom), Image.NEAREST)
    draw = ImageDraw.Draw(im)
    for n, (box, score, label) in enumerate(zip(det["boxes"].tolist(), det["scores"].tolist(),
                                                det["labels"].tolist())):
        colour = colour_of(n, label)
        x1, y1, x2, y2 = (v * zoom for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
        text = f"{classes[label]} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        ty = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1 + 2
        draw.rectangle((x1, ty, x1 + right - left + 4, ty + bottom - top + 2), fill=colour)
        draw.text((x1 + 2, ty - (top - y1)), text, fill=(0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path


def coco_files(targets: Sequence[dict], dets: Sequence[dict], classes: Sequence[str],
               size: tuple[int, int]) -> tuple[dict, list[dict]]:
    """Ground truth (a COCO dict, images ``1..N``) and detections (COCO results) of a set of
    ``size`` images, for ``vislab eval-detections`` and pycocotools.  Targets with ``masks``
    write their ``segmentation`` (uncompressed RLE), detections with ``masks`` (probabilities
    ``(n, H, W)`` or RLEs) theirs (compressed RLE of the pixels >= 0.5), for ``--iou-type segm``."""
    H, W = size
    ds = DetectionSet(list(classes), [ImageAnnotations(f"{i:06d}.png", W, H, t["boxes"], t["labels"],
                                                       area=t.get("area"), masks=t.get("masks"), image_id=i + 1)
                                      for i, t in enumerate(targets)])
    results = []
    for i, d in enumerate(dets):
        masks = d["masks"] if "masks" in d else [None] * len(d["boxes"])
        for (x1, y1, x2, y2), score, label, m in zip(d["boxes"].tolist(), d["scores"].tolist(),
                                                     d["labels"].tolist(), masks):
            r = {"image_id": i + 1, "category_id": ds.category_ids[int(label)],
                 "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            if isinstance(m, Mapping):                       # an RLE already
                r["segmentation"] = dict(m)
            elif m is not None:
                r["segmentation"] = rle_encode((m >= MASK_THRESHOLD).cpu().numpy())
            results.append(r)
    return dataset_to_coco(ds), results


def coco_segmentations(items: Sequence[Mapping], images: Mapping[Any, Mapping], what: str, source: str
                       ) -> list[dict]:
    """The RLE ``segmentation`` of each COCO annotation or result, checked: present, an RLE (not
    a polygon) of its image's size (when the image gives ``height`` and ``width``)."""
    out = []
    for n, item in enumerate(items):
        seg = item.get("segmentation") if isinstance(item, Mapping) else None
        if seg is None:
            raise UserError(f"{source}: {what} {n} has no 'segmentation'; --iou-type segm needs every "
                            "mask as COCO RLE (or evaluate the boxes with --iou-type bbox)")
        if not isinstance(seg, Mapping):
            raise UserError(f"{source}: {what} {n} has a polygon segmentation; vislab reads masks as "
                            "RLE only: convert the polygons with pycocotools.mask.frPyObjects")
        try:
            rle_to_counts(seg)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{source}: {what} {n}: 'segmentation' is not a valid RLE ({e}); fix the file") from None
        im = images.get(item.get("image_id"), {})
        if "height" in im and "width" in im and list(seg["size"]) != [im["height"], im["width"]]:
            raise UserError(f"{source}: {what} {n} has a mask of size {list(seg['size'])} on image "
                            f"{item['image_id']!r} of size {[im['height'], im['width']]}; masks must cover the image")
        out.append(seg)
    return out


def coco_segm_tables(gt: Any, results: Any, gt_source: str = "<ground truth>", results_source: str = "<results>"
                     ) -> tuple[CocoGroundTruth, BoxTable]:
    """Ground truth (a COCO dict) and results (a list with ``segmentation`` RLEs) as tables for
    mask evaluation: images and categories sorted by id (pycocotools' order), masks on both
    tables, a detection's area its mask's (boxes are not read from the results)."""
    truth = parse_coco(gt, gt_source).by_id()
    images = {im["id"]: im for im in truth.images}
    truth.table.masks = coco_segmentations(gt["annotations"], images, "annotation", gt_source)
    if not isinstance(results, (list, tuple)):
        raise UserError(f"{results_source}: COCO results must be a list of {{image_id, category_id, "
                        "segmentation, score}}; did you pass a ground-truth file as the predictions?")
    image_index = {im["id"]: n for n, im in enumerate(truth.images)}
    cat_index = {c: k for k, c in enumerate(truth.category_ids)}
    masks = coco_segmentations(results, images, "result", results_source)
    try:
        img = np.array([image_index[r["image_id"]] for r in results], np.int64)
        cat = np.array([cat_index[r["category_id"]] for r in results], np.int64)
        score = np.array([r["score"] for r in results], np.float64)
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{results_source}: every result needs an 'image_id' and a 'category_id' of the ground "
                        "truth, and a numeric 'score'; the results belong to another data set, or fix the file") from None
    area = np.array([rle_area(m) for m in masks], np.float64)
    return truth, BoxTable(img, cat, np.zeros((len(results), 4)), area, score=score, masks=masks)


def evaluate_coco_segm_files(gt: str | os.PathLike, results: str | os.PathLike, per_category: bool = False,
                             plot: str | None = None, json_path: str | None = None
                             ) -> tuple[CocoEvaluation, dict]:
    """``vislab eval-detections --iou-type segm``: COCO mask evaluation of a results file
    against a ground-truth file, the report as :func:`vislab.detection.formats.evaluate_coco_files`
    makes it (``coco``: the twelve numbers; ``per_category``; the PR curves at IoU 0.5 in ``plot``)."""
    truth, dets = coco_segm_tables(_read_json(gt, "ground-truth file"), _read_json(results, "results file"),
                                   os.fspath(gt), os.fspath(results))
    precision, recall = evaluate_tables(truth.table, dets, len(truth.images), len(truth.category_ids), "segm")
    ev = CocoEvaluation(precision, recall, truth.categories)
    report: dict = {"gt": os.fspath(gt), "pred": os.fspath(results), "iou_type": "segm", "coco": ev.as_dict()}
    if per_category:
        report["per_category"] = ev.per_category()
    if plot:
        plot_pr_curves(ev.pr_curves(0.5), plot, "precision-recall of masks, IoU 0.5")
    if json_path:
        atomic_write_text(json_path, json.dumps(report, indent=2))
    return ev, report


def evaluate_sliding_window(run: TrainedRun, num_scenes: int | None = None, time_scenes: int = 5,
                            pyramid: PyramidConfig = PyramidConfig(), score_thr: float = 0.05,
                            nms_iou: float = 0.3) -> tuple[dict, dict, list]:
    """Detect on the first ``num_scenes`` test scenes of the run's scene folder (all: ``None``)
    and report COCO's numbers; on the first ``time_scenes`` of them, score the windows both
    explicitly and convolutionalised, timing each and checking that they agree.  Returns the
    report, the ground truth (COCO) and the detections (COCO results)."""
    run_dir, model, cfg, norm = run.run_dir, run.model, run.config, run.info.norm
    classes = list(run.info.classes)
    if classes[-1:] != [BACKGROUND]:
        raise UserError(f"{run_dir} was not trained on scene_patches; run `vislab train sliding_window`")
    root = cfg.data.root
    if not root or not os.path.exists(os.path.join(root, "test.json")):
        raise UserError(f"the run's scene folder {root!r} has no test scenes; make them with "
                        f"`vislab data make-scenes DIR --test N` and train with data.root=DIR")
    scenes = load_scenes(root, "test")
    n = len(scenes) if not num_scenes else min(num_scenes, len(scenes))
    explicit = SlidingWindowDetector(model, list(norm.mean), list(norm.std), classes, pyramid, conv=False)
    fast = (SlidingWindowDetector(model, list(norm.mean), list(norm.std), classes, pyramid, conv=True)
            if hasattr(model, "as_sequential") else explicit)
    size = tuple(scenes.images.shape[-2:])
    dets, times, windows, diff = [], {"explicit": 0.0, "conv": 0.0}, 0, 0.0
    for i in range(n):
        image = scenes[i][0]
        if i < time_scenes and fast is not explicit:
            t0 = time.perf_counter()
            boxes, ref = explicit.candidates(image)
            t1 = time.perf_counter()
            boxes2, probs = fast.candidates(image)
            times["explicit"] += t1 - t0
            times["conv"] += time.perf_counter() - t1
            assert torch.equal(boxes, boxes2), "the two paths scored different windows"
            windows += len(boxes)
            diff = max(diff, float((ref - probs).abs().max())) if len(probs) else diff
        else:
            boxes, probs = fast.candidates(image)
        dets.append(select(boxes, probs, size, score_thr, nms_iou))
    targets = [scenes.targets[i] for i in range(n)]
    ev = evaluate_detections(dets, targets, classes[:-1])
    timed = min(time_scenes, n) if fast is not explicit else 0
    report = {"task": "sliding_window", "run_dir": run_dir, "model": cfg.model.name, "scenes": root,
              "num_images": n, "num_objects": sum(len(t["labels"]) for t in targets),
              "score_thr": score_thr, "nms_iou": nms_iou,
              "pyramid": {"window": pyramid.window, "margin": pyramid.margin, "stride": pyramid.stride,
                          "scales": list(pyramid.scales), "ratios": list(pyramid.ratios)},
              "coco": ev.as_dict(), "per_category": ev.per_category()}
    lines = [f"{n} test scenes of {root}, {report['num_objects']} objects", ev.summary()]
    if timed:
        t_exp, t_conv = times["explicit"] / timed, times["conv"] / timed
        report["timing"] = {"scenes": timed, "windows_per_image": windows / timed,
                            "explicit_s_per_image": t_exp, "conv_s_per_image": t_conv,
                            "speedup": t_exp / t_conv, "max_prob_difference": diff}
        lines.append(f"window scoring on {timed} scenes ({windows / timed:.0f} windows each): explicit "
                     f"{t_exp * 1000:.0f} ms/image, convolutionalised {t_conv * 1000:.0f} ms/image "
                     f"({t_exp / t_conv:.1f}x); largest probability difference {diff:.1e}")
    report["summary"] = "\n".join(lines)
    gt, results = coco_files(targets, dets, classes[:-1], size)
    return report, gt, results
