"""The panoptic task: every pixel of a generated scene with stuff gets a category and, for things,
an instance (Kirillov et al. 2019) -- ``vislab train panoptic_fpn``, ``vislab evaluate RUN`` (COCO
box and mask AP as the detection task, plus PQ / SQ / RQ overall, over things and over stuff,
and per category), ``vislab detect RUN IMAGE``.

The scenes are the detection task's with ``data.kwargs.stuff`` stuff classes (default 3): the
background is regions of distinct textures (:mod:`vislab.detection.scenes`).  Panoptic
categories are the things ``0..K-1`` then the stuff ``K..K+S-1``.  The targets travel packed as
the detection task's (:func:`~vislab.tasks.detection.pack_targets`) with the stuff map as map 1,
so each unpacked target has ``semantic`` (the stuff class, 255 under objects) beside its boxes
and masks.  The model is a detector of the registry that takes ``num_stuff`` and returns a
``panoptic`` map per image (``panoptic_fpn``).

The run records the scene options as the detection task does (``info.extra["scenes"]``, which
every detection tool reads) and the number of stuff classes apart (``info.extra["stuff"]``).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.config import Config
from vislab.data.info import DataInfo, Normalization
from vislab.detection.scenes import (
    STUFF_CLASSES,
    SceneSet,
    make_scenes,
    resolve_scene_options,
    task_scenes,
)
from vislab.errors import UserError
from vislab.io import atomic_write_bytes
from vislab.metrics.detection import evaluate_detections
from vislab.metrics.segmentation import PanopticMeter, format_panoptic
from vislab.models.registry import default_kwargs
from vislab.report import html as H
from vislab.tasks.base import DataBundle, Section, create_kind_model, register_task
from vislab.tasks.detection import (
    FIGURE_SCENES,
    SCENE_DEFAULTS,
    SHOW_SCORE,
    DetectionTask,
    detect_batches,
    pack_targets,
    unpack_targets,
)
from vislab.tasks.trained import TrainedRun

PANOPTIC_DEFAULTS = {**SCENE_DEFAULTS, "stuff": 3}


def scene_options(kwargs: dict):
    """``data.kwargs`` -> the scene configuration (with stuff) and the other options."""
    config, opts = resolve_scene_options(kwargs, PANOPTIC_DEFAULTS, "panoptic")
    if config.stuff < 1:
        raise UserError(f"the panoptic task needs stuff classes: set data.kwargs.stuff to 1..{len(STUFF_CLASSES)}")
    return config, opts


def _run_scene_options(run: TrainedRun):
    return scene_options({**run.info.extra["scenes"], "stuff": run.info.extra["stuff"]})


def panoptic_targets(targets: list[dict[str, Tensor]], num_things: int) -> Tensor:
    """Ground-truth panoptic maps ``(N, H, W, 2)`` int64 of unpacked targets (``labels``,
    ``masks``, ``semantic``): object ``j`` is ``(label_j, j + 1)``, a stuff pixel
    ``(K + s, 0)``."""
    out = []
    for t in targets:
        sem = t["semantic"].long()
        pan = torch.stack([sem + num_things, torch.zeros_like(sem)], -1)
        for j, (m, label) in enumerate(zip(t["masks"].bool(), t["labels"].tolist())):
            pan[m] = torch.tensor([label, j + 1])
        out.append(pan)
    return torch.stack(out)


def panoptic_colours(pan: Tensor, num_things: int, seed: int = 0) -> np.ndarray:
    """An RGB picture ``(H, W, 3)`` uint8 of a panoptic map: a colour per segment (stuff in muted
    tones of its class, each thing instance a bright random colour), void black."""
    rng = np.random.default_rng(seed)
    out = np.zeros((*pan.shape[:2], 3), np.uint8)
    cat, inst = pan[..., 0].numpy(), pan[..., 1].numpy()
    for c, i in sorted({(int(a), int(b)) for a, b in zip(cat.ravel(), inst.ravel())}):
        if c < 0:
            continue
        if c >= num_things:
            colour = np.random.default_rng(1000 + c).integers(40, 130, 3)
        else:
            colour = rng.integers(110, 256, 3)
        out[(cat == c) & (inst == i)] = colour
    return out


class PanopticTask(DetectionTask):
    name = "panoptic"
    monitor = "val_pq"

    def build_data(self, cfg: Config, device: torch.device, val_indices: np.ndarray | None = None) -> DataBundle:
        """Train and val scenes with stuff; targets packed with the instance map and the stuff map."""
        config, opts = scene_options(cfg.data.kwargs)
        train, val = task_scenes(cfg.data, "panoptic", config, opts, val_indices)
        x = train.images.float() / 255
        norm = Normalization(tuple(x.mean((0, 2, 3)).tolist()),
                             tuple(max(s, 1e-6) for s in x.std((0, 2, 3)).tolist()))
        scenes = {k: v for k, v in opts.items() if k != "stuff"}
        info = DataInfo("scenes", tuple(train.categories), 3, tuple(config.image_size), norm,
                        {"scenes": scenes, "stuff": config.stuff, "stuff_classes": train.stuff_categories})
        n_obj = sum(len(t["labels"]) for t in train.targets)
        notes = [(f"{len(train)} training scenes with {n_obj} objects and {config.stuff} stuff classes "
                  f"({', '.join(train.stuff_categories)}), {len(val)} validation scenes")]
        return DataBundle(norm.from_uint8(train.images, device),
                          pack_targets(train.targets, [train.instance_maps, train.stuff_maps]).to(device),
                          norm.from_uint8(val.images, device),
                          pack_targets(val.targets, [val.instance_maps, val.stuff_maps]).to(device), info, notes)

    def build_model(self, cfg: Config, info: DataInfo) -> nn.Module:
        """A registry detector that segments stuff too (``num_stuff``: ``panoptic_fpn``)."""
        if "num_stuff" not in default_kwargs(cfg.model.name):
            raise UserError(f"{cfg.model.name!r} does not segment stuff; the panoptic task trains panoptic_fpn")
        return create_kind_model(cfg, "detection", self.name, info.num_classes, info.in_chans,
                                 num_stuff=int(info.extra["stuff"]))

    def validate(self, model: nn.Module, loader, amp_dtype=None) -> dict[str, float]:
        """COCO box AP / AP50 and PQ / SQ / RQ on the validation scenes."""
        dets = detect_batches(model, loader.images, loader.batch_size, amp_dtype, masks="none")
        targets = unpack_targets(loader.labels.cpu(), loader.images.shape[-2:])
        k = model.num_classes
        coco = evaluate_detections(dets, targets, [str(c) for c in range(k)]).as_dict()
        meter = PanopticMeter(range(k), range(k, k + model.num_stuff))
        meter.update(torch.stack([d["panoptic"] for d in dets]), panoptic_targets(targets, k))
        pq = meter.compute()
        return {"val_ap": coco["AP"], "val_ap50": coco["AP50"], "val_pq": pq["pq"], "val_sq": pq["sq"],
                "val_rq": pq["rq"]}

    # ------------------------------------------------------------------ evaluation
    def evaluate_scenes(self, run: TrainedRun, num_scenes: int | None = None) -> tuple[dict, dict, list]:
        """The detection task's report (box and mask AP) plus ``panoptic``: PQ / SQ / RQ
        overall (``pq``...), over things (``pq_things``...) and stuff (``pq_stuff``...), and
        ``per_class`` by name (``None`` where a category occurs on neither side); and a figure
        of the panoptic maps beside the ground truth."""
        test, dets = self._test_detections(run, num_scenes)
        report, gt, results = self.score_scenes(run, test, dets)
        k, s = len(run.classes), int(run.info.extra["stuff"])
        names = [*run.classes, *run.info.extra["stuff_classes"]]
        meter = PanopticMeter(range(k), range(k, k + s))
        truth = test.panoptic_maps()
        for i in range(0, len(test), 100):
            meter.update(torch.stack([d["panoptic"] for d in dets[i:i + 100]]), truth[i:i + 100])
        pq = meter.compute()
        summary = format_panoptic(pq, dict(enumerate(names)))
        per = {names[c]: {m: _json(v) for m, v in vals.items()} for c, vals in pq["per_class"].items()}
        report["panoptic"] = {**{m: _json(v) for m, v in pq.items() if m != "per_class"}, "per_class": per}
        report["scenes"] = {**report["scenes"], "stuff": s}
        report["plots"].append(os.path.basename(self._panoptic_figure(run, test, dets)))
        report["summary"] += f"\npanoptic quality (%):\n{summary}"
        return report, gt, results

    def _test_detections(self, run: TrainedRun, num_scenes: int | None) -> tuple[SceneSet, list[dict]]:
        config, opts = _run_scene_options(run)
        test = make_scenes("test", num_scenes or opts["test"], config, opts["seed"], run.config.data.root)
        x = run.norm.from_uint8(test.images, run.device)
        return test, detect_batches(run.model, x, run.config.train.eval_batch_size, masks="rle")

    def _figure(self, run: TrainedRun, test: SceneSet, dets: list[dict], score_thr: float = SHOW_SCORE) -> str:
        """The detection task's figure (boxes and masks) of the instances."""
        inst = [{k: v for k, v in d.items() if k not in ("panoptic", "semantic")} for d in dets]
        return super()._figure(run, test, inst, score_thr)

    def _panoptic_figure(self, run: TrainedRun, test: SceneSet, dets: list[dict]) -> str:
        """The first test scenes: image, ground-truth and predicted panoptic maps, in columns."""
        from PIL import Image
        k = len(run.classes)
        truth = test.panoptic_maps()
        n = min(FIGURE_SCENES, len(test))
        rows = [np.concatenate([test.images[i].permute(1, 2, 0).numpy(), panoptic_colours(truth[i], k),
                                panoptic_colours(dets[i]["panoptic"], k)], 1) for i in range(n)]
        sheet = np.concatenate(rows, 0) if rows else np.zeros((1, 1, 3), np.uint8)
        zoom = 3
        path = run.path("plots", "panoptic.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(sheet).resize((sheet.shape[1] * zoom, sheet.shape[0] * zoom), Image.NEAREST).save(path)
        return path

    # ------------------------------------------------------------------ one image
    def panoptic(self, run: TrainedRun, image: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """The detections of one image ``(C, H, W)`` in ``[0, 1]`` (as :meth:`detect`) and its
        panoptic map ``(H, W, 2)`` (nearest-neighbour back to the image's size)."""
        det = super().detect(run, image)
        pan = det.pop("panoptic")
        det.pop("semantic", None)
        h, w = image.shape[-2:]
        pan = F.interpolate(pan.permute(2, 0, 1)[None].float(), size=(h, w), mode="nearest")[0]
        return det, pan.permute(1, 2, 0).long()

    def detect(self, run: TrainedRun, image: Tensor) -> dict[str, Tensor]:
        """The instance detections of one image (what ``vislab detect`` draws as boxes and masks)."""
        return self.panoptic(run, image)[0]

    def draw_panoptic(self, run: TrainedRun, image: Tensor, path: str) -> str:
        """The image and its panoptic map side by side (a colour per segment; void black), as a PNG."""
        import io

        from PIL import Image
        _, pan = self.panoptic(run, image)
        rgb = (image.float().expand(3, -1, -1).permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        sheet = np.concatenate([rgb, panoptic_colours(pan, len(run.classes))], 1)
        zoom = max(1, math.ceil(480 / max(sheet.shape[:2])))
        buf = io.BytesIO()
        Image.fromarray(sheet).resize((sheet.shape[1] * zoom, sheet.shape[0] * zoom), Image.NEAREST).save(buf, "PNG")
        atomic_write_bytes(path, buf.getvalue())
        return path

    def headline(self, ev: dict) -> list[tuple[str, str]]:
        p = ev["panoptic"]
        return [("PQ", _f(p["pq"])), ("PQ things", _f(p["pq_things"])), ("PQ stuff", _f(p["pq_stuff"])),
                *super().headline(ev)]

    def report_sections(self, run: TrainedRun, ev: dict) -> list[Section]:
        p = ev["panoptic"]
        rows = [[label, _f(p["pq" + s]), _f(p["sq" + s]), _f(p["rq" + s]), str(p["n" + s])]
                for label, s in (("all", ""), ("things", "_things"), ("stuff", "_stuff"))]
        per = [[name, _f(v["pq"]), _f(v["sq"]), _f(v["rq"]), str(v["tp"]), str(v["fp"]), str(v["fn"])]
               for name, v in p["per_class"].items()]
        sections = [Section("panoptic", "Panoptic quality", H.table(["", "PQ", "SQ", "RQ", "categories"], rows)),
                    Section("panoptic_per_class", "PQ per category",
                            H.table(["category", "PQ", "SQ", "RQ", "TP", "FP", "FN"], per))]
        figure = run.path("plots", "panoptic.png")
        if os.path.exists(figure):
            sections.append(Section("panoptic_maps", "Test scenes: image, ground truth, prediction",
                                    H.img(figure, "panoptic maps")))
        return sections + super().report_sections(run, ev)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _json(v: float) -> float | None:
    """NaN (a category on neither side, a mean over none) as JSON's null."""
    return None if isinstance(v, float) and math.isnan(v) else v


TASK = register_task(PanopticTask())

__all__ = ["PANOPTIC_DEFAULTS", "TASK", "PanopticTask", "panoptic_colours", "panoptic_targets", "scene_options"]
