"""The detection task: every object of a generated scene, its class, its box and its mask, by a
detector of the registry (``kind="detection"``: RetinaNet, Faster R-CNN, Mask R-CNN...) --
``vislab train retinanet``, ``vislab evaluate RUN`` (COCO AP on the test scenes; mask AP too for
a detector that gives masks), ``vislab predict RUN IMAGE`` and ``vislab detect RUN IMAGE``.

The scenes hold several objects each, so a target is a variable-length list of boxes, with a
mask per object.  The engine's :class:`~vislab.data.loader.TensorLoader` batches tensors by
indexing, so the targets travel as one self-describing float32 tensor per scene
(:func:`pack_targets`): the number of object slots ``M`` and of maps, ``M`` rows ``(label, x1,
y1, x2, y2)`` padded with -1, then per-pixel maps flattened -- map 0 the scene's instance map
(object ``j`` is ``j + 1``), from which the masks are cut, and a subclass may add more (the
panoptic task's stuff map).  The task's ``step_fn`` turns a batch back into the list of
``dict(boxes, labels, masks[, semantic])`` that the detector takes (:func:`unpack_targets`; a
box-only detector ignores the masks), and the detector computes its own loss dict.  Image-only
augmentations are off (``augment = False``): a flip or crop would move the objects without
their boxes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.config import Config
from vislab.data.formats import load_image
from vislab.data.info import DataInfo, Normalization
from vislab.detection import (  # noqa: F401  (registers the detection models)
    centernet,
    mask_rcnn,
    panoptic,
    rcnn,
    retinanet,
    ssd,
    tv_detection,
    two_stage,
    yolov3,
)
from vislab.detection.detect import coco_files, draw_detections, select_detections
from vislab.detection.scenes import (
    SceneSet,
    make_scenes,
    resolve_scene_options,
    task_scenes,
)
from vislab.errors import UserError
from vislab.io import atomic_write_text
from vislab.metrics.detection import evaluate_detections
from vislab.metrics.masks import MASK_THRESHOLD, rle_decode, rle_encode
from vislab.report import html as H
from vislab.report.plots import plot_pr_curves
from vislab.tasks.base import (
    DataBundle,
    Section,
    create_kind_model,
    inference,
    register_task,
    shuffled_batches,
)
from vislab.tasks.trained import TrainedRun

SCENE_DEFAULTS = {"source": "fashion_mnist", "image_size": 64, "objects": [1, 4], "scale": [0.8, 1.6],
                  "max_truncation": 0.4, "max_occlusion": 0.5, "train": 3000, "val": 300, "test": 1000, "seed": 0}
FIGURE_SCENES = 6
SHOW_SCORE = 0.3         # lowest score drawn in the report and printed by predict (focal-loss scores run low)


def scene_options(kwargs: dict):
    """``data.kwargs`` -> the scene configuration and the other options, defaults filled in."""
    return resolve_scene_options(kwargs, SCENE_DEFAULTS, "detection")


def pack_targets(targets: Sequence[dict[str, Tensor]], maps: Sequence[Tensor] = ()) -> Tensor:
    """Per-image ``boxes`` / ``labels`` and per-pixel maps ``(N, H, W)`` -> one float32 tensor
    ``(N, 2 + 5 M + len(maps) H W)``: column 0 the object slots ``M`` (the most objects of an
    image), column 1 the number of maps, then ``M`` rows ``(label, x1, y1, x2, y2)`` padded with
    rows of -1, then each map flattened.  Map 0 is the instance map (object ``j`` is ``j + 1``,
    0 elsewhere: :attr:`SceneSet.instance_maps`); a map 1 a semantic (stuff) map."""
    slots = max([len(t["labels"]) for t in targets], default=0)
    rows = torch.full((len(targets), slots, 5), -1.0)
    for i, t in enumerate(targets):
        n = len(t["labels"])
        rows[i, :n, 0] = t["labels"].float()
        rows[i, :n, 1:] = t["boxes"].float()
    head = torch.tensor([[float(slots), float(len(maps))]]).expand(len(targets), 2)
    flat = [m.reshape(len(targets), -1).float() for m in maps]
    return torch.cat([head, rows.flatten(1), *flat], 1)


def unpack_targets(y: Tensor, image_size: Sequence[int]) -> list[dict[str, Tensor]]:
    """Inverse of :func:`pack_targets` for images of ``image_size`` ``(H, W)``: per image
    ``boxes`` ``(n, 4)`` float32 and ``labels`` ``(n,)`` int64; with maps also ``masks``
    ``(n, H, W)`` uint8 (``instance map == j + 1``), and with a second map ``semantic``
    ``(H, W)`` int64."""
    if len(y) == 0:
        return []
    slots, num_maps = int(y[0, 0]), int(y[0, 1])
    h, w = image_size
    rows = y[:, 2:2 + 5 * slots].reshape(len(y), slots, 5)
    maps = y[:, 2 + 5 * slots:].reshape(len(y), num_maps, h, w)
    out = []
    for i in range(len(y)):
        r = rows[i][rows[i, :, 0] >= 0]
        t = {"boxes": r[:, 1:].float(), "labels": r[:, 0].long()}
        if num_maps:
            ids = torch.arange(1, len(r) + 1, device=y.device, dtype=y.dtype)
            t["masks"] = (maps[i, 0][None] == ids[:, None, None]).to(torch.uint8)
        if num_maps > 1:
            t["semantic"] = maps[i, 1].long()
        out.append(t)
    return out


def scene_targets(scenes: SceneSet) -> list[dict[str, Tensor]]:
    """The scenes' targets with their ``masks`` ``(n, H, W)`` uint8 added."""
    return [{**t, "masks": (m[None] == torch.arange(1, len(t["labels"]) + 1, dtype=m.dtype)[:, None, None])
             .to(torch.uint8)} for t, m in zip(scenes.targets, scenes.instance_maps)]


def detector_step(t, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """The trainer's ``step_fn``: the detector's own loss dict on the unpacked targets, one
    optimizer step on ``loss``; every term is logged (``train_cls``, ``train_box``)."""
    with t.autocast():
        losses = t.model(x, unpack_targets(y, x.shape[-2:]))
    t.optimize(losses["loss"])
    return {k: v.detach().float() for k, v in losses.items()}


@torch.no_grad()
def detect_batches(model: nn.Module, x: Tensor, batch_size: int, amp_dtype: torch.dtype | None = None,
                   masks: str = "probs") -> list[dict[str, Tensor]]:
    """The detections (float32, CPU) of normalised images ``x``, in eval mode.  A detector's
    ``masks`` ``(n, H, W)`` stay probabilities (``masks='probs'``), become a list of COCO RLEs of
    the pixels >= 0.5 batch by batch (``'rle'``: a thousand scenes of 100 full-image float masks
    would not fit in memory), or are dropped (``'none'``)."""
    if masks not in ("probs", "rle", "none"):
        raise ValueError(f"masks={masks!r}: use 'probs', 'rle' or 'none'")
    out = []
    with inference(model, amp_dtype):
        for i in range(0, len(x), batch_size):
            for d in model(x[i:i + batch_size]):
                d = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in d.items()
                     if k != "masks" or masks != "none"}
                if "masks" in d and masks == "rle":
                    d["masks"] = [rle_encode(m.numpy()) for m in d["masks"] >= MASK_THRESHOLD]
                out.append(d)
    return out


class DetectionTask:
    name = "detection"
    augment = False          # a crop or flip would move the objects without their boxes
    monitor = "val_ap"

    def build_data(self, cfg: Config, device: torch.device, val_indices: np.ndarray | None = None) -> DataBundle:
        """Train and val scenes as normalised tensors with packed targets and instance maps
        (:func:`pack_targets`)."""
        config, opts = scene_options(cfg.data.kwargs)
        train, val = task_scenes(cfg.data, "detection", config, opts, val_indices)
        x = train.images.float() / 255
        norm = Normalization(tuple(x.mean((0, 2, 3)).tolist()),
                             tuple(max(s, 1e-6) for s in x.std((0, 2, 3)).tolist()))
        info = DataInfo("scenes", tuple(train.categories), 3, tuple(config.image_size), norm, {"scenes": opts})
        n_obj = sum(len(t["labels"]) for t in train.targets)
        notes = [f"{len(train)} training scenes with {n_obj} objects, {len(val)} validation scenes"]
        if cfg.model.name == "yolov3":         # its anchors against hand-picked ones, as the notes ask
            anchors = cfg.model.kwargs.get("anchors") or yolov3.SCENE_ANCHORS
            notes.append(yolov3.anchor_note(torch.cat([t["boxes"] for t in train.targets]), anchors))
        return DataBundle(norm.from_uint8(train.images, device),
                          pack_targets(train.targets, [train.instance_maps]).to(device),
                          norm.from_uint8(val.images, device),
                          pack_targets(val.targets, [val.instance_maps]).to(device), info, notes)

    def train_loader(self, cfg: Config, data: DataBundle, gen: torch.Generator):
        return shuffled_batches(cfg, data, gen, self.augment)

    def build_model(self, cfg: Config, info: DataInfo) -> nn.Module:
        """A detector of the registry; ``model.kwargs`` completed with every default."""
        return create_kind_model(cfg, "detection", self.name, info.num_classes, info.in_chans)

    def loss(self, cfg: Config, model: nn.Module):
        def no_single_loss(out, y):
            raise TypeError("a detector computes its own loss (train_step), not one loss of its output")
        return no_single_loss

    def train_step(self, cfg: Config, model: nn.Module):
        return detector_step

    def correct(self, out, target: Tensor) -> None:
        return

    def validate(self, model: nn.Module, loader, amp_dtype=None) -> dict[str, float]:
        """COCO box AP and AP50 on the validation scenes."""
        dets = detect_batches(model, loader.images, loader.batch_size, amp_dtype, masks="none")
        targets = unpack_targets(loader.labels.cpu(), loader.images.shape[-2:])
        classes = [str(k) for k in range(model.num_classes)]
        coco = evaluate_detections(dets, targets, classes).as_dict()
        return {"val_ap": coco["AP"], "val_ap50": coco["AP50"]}

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, run: TrainedRun, tta: bool = False, num_scenes: int | None = None) -> dict:
        """COCO's twelve numbers on the run's generated test scenes, per category AP, and a figure
        of detections on a few of them; writes ``eval.json``, and ``eval_gt.json`` /
        ``eval_detections.json`` for ``vislab eval-detections``."""
        if tta:
            raise UserError("--tta is not available for detection runs (a flip would need the boxes flipped back)")
        report, gt, results = self.evaluate_scenes(run, num_scenes)
        atomic_write_text(run.path("eval_gt.json"), json.dumps(gt))
        atomic_write_text(run.path("eval_detections.json"), json.dumps(results))
        atomic_write_text(run.path("eval.json"), json.dumps(report, indent=1))
        return report

    def evaluate_scenes(self, run: TrainedRun, num_scenes: int | None = None) -> tuple[dict, dict, list]:
        """The report, the ground truth as COCO and the detections as COCO results (what
        ``vislab detect RUN --eval-scenes N`` writes too).  A detector that gives masks is also
        evaluated on them (``coco_segm``, ``per_category_segm``), and both files carry the
        masks (``segmentation``) for ``vislab eval-detections --iou-type segm``."""
        test, dets = self._test_detections(run, num_scenes)
        return self.score_scenes(run, test, dets)

    def score_scenes(self, run: TrainedRun, test: SceneSet, dets: list[dict]) -> tuple[dict, dict, list]:
        """:meth:`evaluate_scenes` of detections ``dets`` already made on the test scenes ``test``."""
        classes = list(run.classes)
        targets = scene_targets(test)
        ev = evaluate_detections(dets, targets, classes)
        size = tuple(run.info.image_size)
        _, opts = scene_options(run.info.extra["scenes"])
        figure = self._figure(run, test, dets)
        curves = plot_pr_curves(ev.pr_curves(0.5), run.path("plots", "pr_curves.png"),
                                title=f"precision-recall at IoU 0.5, {len(test)} test scenes")
        report = {"task": self.name, "run_dir": run.run_dir, "dataset": "scenes", "model": run.config.model.name,
                  "scenes": opts, "num_images": len(test), "num_objects": sum(len(t["labels"]) for t in test.targets),
                  "coco": ev.as_dict(), "per_category": ev.per_category(),
                  "plots": [os.path.basename(figure), os.path.basename(curves)]}
        report["summary"] = f"{len(test)} test scenes, {report['num_objects']} objects\n{ev.summary()}"
        if dets and "masks" in dets[0]:
            segm = evaluate_detections(dets, targets, classes, iou_type="segm")
            report["coco_segm"], report["per_category_segm"] = segm.as_dict(), segm.per_category()
            report["summary"] += f"\nmasks:\n{segm.summary()}"
        gt, results = coco_files(targets, dets, classes, size)
        return report, gt, results

    def _test_detections(self, run: TrainedRun, num_scenes: int | None) -> tuple[SceneSet, list[dict]]:
        config, opts = scene_options(run.info.extra["scenes"])
        test = make_scenes("test", num_scenes or opts["test"], config, opts["seed"], run.config.data.root)
        x = run.norm.from_uint8(test.images, run.device)
        return test, detect_batches(run.model, x, run.config.train.eval_batch_size, masks="rle")

    def _figure(self, run: TrainedRun, test: SceneSet, dets: list[dict], score_thr: float = SHOW_SCORE) -> str:
        """The first test scenes with their detections scoring at least ``score_thr``, side by side."""
        from PIL import Image
        os.makedirs(run.path("plots"), exist_ok=True)
        tiles = []
        for i in range(min(FIGURE_SCENES, len(test))):
            det = dict(dets[i])
            if "masks" in det:                   # RLEs (detect_batches): back to (n, H, W)
                det["masks"] = torch.from_numpy(np.stack([rle_decode(r) for r in det["masks"]])
                                                if len(det["masks"]) else np.zeros((0, *test.images.shape[-2:])))
            keep = det["scores"] >= score_thr
            path = run.path("plots", f".scene{i}.png")
            draw_detections(test.images[i].float() / 255, select_detections(det, keep),
                            list(run.classes), path, min_side=256)
            tiles.append(Image.open(path).convert("RGB"))
            os.remove(path)
        out = run.path("plots", "detections.png")
        if tiles:
            w, h = tiles[0].size
            sheet = Image.new("RGB", (w * len(tiles) + 4 * (len(tiles) - 1), h), (255, 255, 255))
            for k, tile in enumerate(tiles):
                sheet.paste(tile, (k * (w + 4), 0))
            sheet.save(out)
        return out

    def predict(self, run: TrainedRun, paths: list[str], topk: int = 1, score_thr: float = SHOW_SCORE) -> list[dict]:
        """The boxes of each image file (in its own pixels) scoring at least ``score_thr``."""
        out = []
        for p in paths:
            img = torch.from_numpy(load_image(p, run.info.in_chans))
            det = self.detect(run, img.float() / 255)
            keep = det["scores"] >= score_thr
            det = select_detections(det, keep)
            objs = [{"class": run.classes[int(lab)], "index": int(lab), "score": float(s), "box": b}
                    for b, s, lab in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist())]
            line = "; ".join(f"{o['class']} {o['score']:.3f} box {' '.join(f'{v:.1f}' for v in o['box'])}"
                             for o in objs)
            out.append({"path": p, "detections": objs, "line": line or f"no object scores >= {score_thr}"})
        return out

    def detect(self, run: TrainedRun, image: Tensor) -> dict[str, Tensor]:
        """Detections of one image ``(C, H, W)`` in ``[0, 1]`` of any size (what ``vislab detect``
        draws): resized to the run's scene size, detected, boxes (and mask probabilities,
        bilinearly) mapped back to the image's pixels."""
        h, w = image.shape[-2:]
        size = run.info.image_size
        x = F.interpolate(image[None].float().to(run.device), size=size, mode="bilinear", align_corners=False,
                          antialias=True)
        det = detect_batches(run.model, run.norm.normalize(x), 1)[0]
        scale = torch.tensor([w / size[1], h / size[0], w / size[1], h / size[0]])
        det["boxes"] = det["boxes"] * scale
        if "masks" in det:
            det["masks"] = F.interpolate(det["masks"][:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        return det

    def headline(self, ev: dict) -> list[tuple[str, str]]:
        c = ev["coco"]
        out = [("AP", f"{c['AP']:.3f}"), ("AP50", f"{c['AP50']:.3f}"), ("AP75", f"{c['AP75']:.3f}")]
        if "coco_segm" in ev:
            out.append(("mask AP", f"{ev['coco_segm']['AP']:.3f}"))
        return out + [("test scenes", f"{ev['num_images']}")]

    def report_sections(self, run: TrainedRun, ev: dict) -> list[Section]:
        def number(v):
            return f"{v:.3f}" if v is not None and not math.isnan(v) and v >= 0 else "-"
        if "coco_segm" in ev:
            rows = [[k, number(v), number(ev["coco_segm"][k])] for k, v in ev["coco"].items()]
            per = [[c, f"{v['AP']:.3f}", f"{v['AP50']:.3f}", number(ev["per_category_segm"][c]["AP"]),
                    number(ev["per_category_segm"][c]["AP50"])] for c, v in ev["per_category"].items() if v["AP"] >= 0]
            sections = [Section("coco", "COCO box and mask evaluation", H.table(["metric", "boxes", "masks"], rows)),
                        Section("per_category", "AP per category",
                                H.table(["category", "AP", "AP50", "mask AP", "mask AP50"], per))]
        else:
            rows = [[k, number(v)] for k, v in ev["coco"].items()]
            per = [[c, f"{v['AP']:.3f}", f"{v['AP50']:.3f}"] for c, v in ev["per_category"].items() if v["AP"] >= 0]
            sections = [Section("coco", "COCO box evaluation", H.table(["metric", "value"], rows)),
                        Section("per_category", "AP per category", H.table(["category", "AP", "AP50"], per))]
        figure = run.path("plots", "detections.png")
        if os.path.exists(figure):
            sections.append(Section("detections", f"Detections on test scenes (score >= {SHOW_SCORE})",
                                    H.img(figure, "detections")))
        curves = run.path("plots", "pr_curves.png")
        if os.path.exists(curves):
            sections.append(Section("pr_curves", "Precision-recall per category at IoU 0.5 (COCO's 101 recall "
                                    "points, box AP50 is the area under each)", H.img(curves, "precision-recall curves")))
        sections.append(Section("scenes", "Test scenes", H.pre(json.dumps(ev["scenes"], indent=1))))
        return sections


TASK = register_task(DetectionTask())

__all__ = ["SCENE_DEFAULTS", "TASK", "DetectionTask", "detect_batches", "detector_step", "pack_targets",
           "scene_targets", "unpack_targets"]
