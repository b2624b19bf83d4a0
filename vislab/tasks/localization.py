"""The localisation task: one object per image, its class and its box (the notes' multi-task
loss), on generated scenes.  The model, loss and metrics live in
:mod:`vislab.detection.localization`; this module plugs them into the engine and the run
directory: ``vislab train localization``, ``vislab evaluate RUN``, ``vislab predict RUN IMAGE``.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.config import Config
from vislab.data.formats import load_image
from vislab.data.info import DataInfo, Normalization
from vislab.detection.detect import coco_files
from vislab.detection.localization import (
    HEAD_KWARGS,
    Localizer,
    decode_boxes,
    detections,
    localisation_metrics,
    predict,
    scene_options,
    scene_tensors,
)
from vislab.detection.scenes import make_scenes, task_scenes
from vislab.io import atomic_write_text
from vislab.metrics.classification import classification_report
from vislab.metrics.detection import evaluate_detections
from vislab.report import html as H
from vislab.tasks.base import DataBundle, Section, register_task, shuffled_batches
from vislab.tasks.classification import build_classifier
from vislab.tasks.trained import TrainedRun


class LocalizationTask:
    name = "localization"
    augment = False          # a crop or flip would move the box without its target
    monitor = "val_top1"

    def build_data(self, cfg: Config, device: torch.device, val_indices: np.ndarray | None = None) -> DataBundle:
        """Train and val scenes (one object each) as normalised tensors with ``(N, 5)`` targets
        (label, then the box as fractions of the image)."""
        config, opts = scene_options(cfg.data.kwargs)
        train, val = task_scenes(cfg.data, "localization", config, opts, val_indices)
        (tx, ty, _), (vx, vy, _) = scene_tensors(train), scene_tensors(val)
        x = tx.float() / 255
        norm = Normalization(tuple(x.mean((0, 2, 3)).tolist()),
                             tuple(max(s, 1e-6) for s in x.std((0, 2, 3)).tolist()))
        info = DataInfo("scenes", tuple(train.categories), 3, tuple(config.image_size), norm, {"scenes": opts})
        return DataBundle(norm.from_uint8(tx, device), ty.to(device), norm.from_uint8(vx, device), vy.to(device), info)

    def train_loader(self, cfg: Config, data: DataBundle, gen: torch.Generator):
        return shuffled_batches(cfg, data, gen, self.augment)

    def build_model(self, cfg: Config, info: DataInfo) -> Localizer:
        """The backbone ``model.name`` (sized as for classification) with a box head; the keys of
        ``model.kwargs`` named in ``HEAD_KWARGS`` go to the localiser, the rest to the backbone."""
        kw = dict(cfg.model.kwargs)
        head = {k: kw.pop(k, v) for k, v in HEAD_KWARGS.items()}
        plain = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, kwargs=kw))
        backbone = build_classifier(plain, info)
        cfg.model.kwargs = {**plain.model.kwargs, **head}      # fully resolved, as classification does
        return Localizer(backbone, info.in_chans, info.image_size, **head)

    def loss(self, cfg: Config, model: Localizer):
        """The localiser's own multi-task loss, with ``train.label_smoothing`` on the class term."""
        return lambda out, y: model.loss(out, y, cfg.train.label_smoothing)

    def correct(self, out: tuple[Tensor, Tensor], y: Tensor) -> Tensor:
        return (out[0].argmax(1) == y[:, 0].long()).sum()

    def validate(self, model: nn.Module, loader, amp_dtype=None) -> dict[str, float]:
        batches = list(loader)
        logits, boxes = predict(model, (x for x, _ in batches), amp_dtype)
        target = torch.cat([y.cpu() for _, y in batches])
        m = localisation_metrics(logits, boxes, target)
        return {"val_loss": float(F.cross_entropy(logits, target[:, 0].long())), "val_top1": m["top1"],
                "val_miou": m["miou"], "val_loc_acc": m["loc_acc"]}

    def evaluate(self, run: TrainedRun, tta: bool = False, num_scenes: int | None = None) -> dict:
        """Accuracy, mean IoU, localisation accuracy, the class head's classification report and
        COCO's twelve numbers on generated test scenes; writes ``eval.json``, and
        ``eval_gt.json`` / ``eval_detections.json`` for ``vislab eval-detections``."""
        report, gt, results = self.evaluate_scenes(run, num_scenes, tta)
        atomic_write_text(run.path("eval_gt.json"), json.dumps(gt))
        atomic_write_text(run.path("eval_detections.json"), json.dumps(results))
        atomic_write_text(run.path("eval.json"), json.dumps(report, indent=1))
        return report

    def evaluate_scenes(self, run: TrainedRun, num_scenes: int | None = None,
                        tta: bool = False) -> tuple[dict, dict, list]:
        """The report, the ground truth as COCO and the detections as COCO results."""
        config, opts = scene_options(run.info.extra["scenes"])
        test = make_scenes("test", num_scenes or opts["test"], config, opts["seed"], run.config.data.root)
        images, target, keep = scene_tensors(test)
        x = run.norm.from_uint8(images, run.device)
        bs = run.config.train.eval_batch_size
        logits, boxes = predict(run.model, (x[i:i + bs] for i in range(0, len(x), bs)), flip=tta)
        dets = detections(logits, boxes, run.info.image_size)
        gts = [test.targets[i] for i in keep]
        classes = list(run.classes)
        ev = evaluate_detections(dets, gts, classes)
        report = classification_report(logits, target[:, 0].long(), classes)
        report.update(localisation_metrics(logits, boxes, target))
        report.update(task=self.name, run_dir=run.run_dir, tta=tta, dataset="scenes", model=run.config.model.name,
                      scenes=opts, coco=ev.as_dict(), per_category=ev.per_category())
        report["summary"] = (f"{report['num_samples']} test scenes: accuracy {report['top1']:.4f}, mean IoU "
                             f"{report['miou']:.4f}, localisation accuracy (class and IoU >= 0.5) "
                             f"{report['loc_acc']:.4f}\n{ev.summary()}")
        gt, results = coco_files(gts, dets, classes, run.info.image_size)
        return report, gt, results

    def predict(self, run: TrainedRun, paths: list[str], topk: int = 1) -> list[dict]:
        """The class and box of the one object of each image (the box in the file's pixels)."""
        out = []
        for p in paths:
            img = load_image(p, run.info.in_chans)
            x = F.interpolate(torch.from_numpy(img)[None].float().div(255), size=run.info.image_size,
                              mode="bilinear", align_corners=False, antialias=True)
            logits, boxes = predict(run.model, [run.norm.normalize(x.to(run.device))])
            probs = torch.softmax(logits, 1)[0]
            box = decode_boxes(boxes, tuple(img.shape[-2:]))[0].tolist()
            top = probs.topk(min(topk, len(probs)))
            preds = [{"class": run.classes[int(i)], "index": int(i), "prob": float(v)}
                     for v, i in zip(top.values, top.indices)]
            out.append({"path": p, "predictions": preds, "box": box,
                        "line": "  ".join(f"{q['class']} {q['prob']:.3f}" for q in preds)
                                + "  box " + " ".join(f"{v:.1f}" for v in box)})
        return out

    def headline(self, ev: dict) -> list[tuple[str, str]]:
        return [("accuracy", f"{ev['top1'] * 100:.2f}%"), ("mean IoU", f"{ev['miou']:.3f}"),
                ("localisation accuracy", f"{ev['loc_acc'] * 100:.2f}%"),
                ("AP50", f"{ev['coco']['AP50']:.3f}"), ("test scenes", f"{ev['num_samples']}")]

    def report_sections(self, run: TrainedRun, ev: dict) -> list[Section]:
        coco = ev["coco"]
        rows = [[k, f"{v:.3f}" if v is not None and v == v else "-"] for k, v in coco.items()
                if isinstance(v, (int, float))]
        return [Section("coco", "COCO box evaluation (one box per scene)", H.table(["metric", "value"], rows)),
                Section("scenes", "Test scenes", H.pre(json.dumps(ev["scenes"], indent=1)))]


TASK = register_task(LocalizationTask())

__all__ = ["LocalizationTask", "TASK"]
