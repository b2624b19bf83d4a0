"""The semantic segmentation task: a class for every pixel (the notes' "SEGMENTAZIONE" and
"Semantic segmentation").

Data: generated scenes (``data.name: scenes``; background plus one class per item class, from
the instance masks the scenes already carry) or a folder of images and PNG masks
(``data.name: masks``, ``data.root``; :mod:`vislab.data.masks`).  Models: the registry's
segmentation kind (``fcn32s``, ``fcn16s``, ``fcn8s``, ``unet``, ``deeplabv3``, ``deeplabv3plus``,
``seg_pixel``).  Training samples (``segment.train_mode``): whole images, random crops, or the
per-pixel baseline's patches (one patch per sampled pixel, labelled with its centre's class,
the notes' patch-wise training).  Metrics: pixel accuracy, mean accuracy, per-class IoU, mIoU
and frequency-weighted IoU from one confusion matrix over the whole set
(:mod:`vislab.metrics.segmentation`); ``best.pt`` is picked by validation mIoU.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from vislab.config import Config
from vislab.data.info import DataInfo, Normalization
from vislab.data.masks import (
    augment_pairs,
    colorize,
    has_split,
    overlay,
    palette,
    read_mask_folder,
)
from vislab.detection.scenes import (
    SceneConfig,
    make_scenes,
    resolve_scene_options,
    semantic_maps,
)
from vislab.errors import UserError
from vislab.io import atomic_write_bytes, atomic_write_text, read_image
from vislab.metrics.segmentation import (
    SegmentationMeter,
    class_frequencies,
    class_weights,
    format_scores,
    segmentation_scores,
)
from vislab.models.pixel import extract_patches, pad_for_patches
from vislab.report import html as H
from vislab.report.plots import plot_bars, plot_confusion, plot_image_rows
from vislab.tasks.base import (
    DataBundle,
    Section,
    create_kind_model,
    inference,
    register_task,
)
from vislab.tasks.trained import TrainedRun

SCENE_DEFAULTS = {"source": "fashion_mnist", "image_size": 128, "objects": [2, 5], "scale": [1.0, 2.5],
                  "max_truncation": 0.4, "max_occlusion": 0.5, "min_alpha": 0.25,
                  "train": 4000, "val": 200, "test": 500, "seed": 0}
CHUNK = 32                    # images per forward pass when predicting a whole set
SHOWN = 4                     # best and worst test images in the report


# --------------------------------------------------------------------------- data

def scene_options(kwargs: dict) -> tuple[SceneConfig, dict]:
    """``data.kwargs`` -> the scene configuration and the other options (counts, seed, min_alpha)."""
    return resolve_scene_options(kwargs, SCENE_DEFAULTS, "segmentation")


def _scenes(split: str, n: int, opts: dict, config: SceneConfig, root: str | None,
            void: int) -> tuple[Tensor, Tensor, list[str]]:
    """Scenes and their class maps; item pixels fainter than ``min_alpha`` are ``void``."""
    scenes = make_scenes(split, n, config, opts["seed"], root)
    return scenes.images, semantic_maps(scenes, opts["min_alpha"], void), ["background", *scenes.categories]


def load_split_pairs(cfg: Config, split: str, n: int | None = None) -> tuple[Tensor, Tensor, list[str]]:
    """uint8 images ``(N, 3, H, W)``, uint8 class maps ``(N, H, W)`` and class names of a split
    (``train``, ``val`` or ``test``) of the configured data."""
    if cfg.data.name == "scenes":
        config, opts = scene_options(cfg.data.kwargs)
        return _scenes(split, opts[split] if n is None else n, opts, config, cfg.data.root, cfg.segment.ignore_index)
    if cfg.data.name == "masks":
        if not cfg.data.root:
            raise UserError("data.name=masks reads a folder: set data.root=PATH (SPLIT/images + SPLIT/masks, "
                            "or a Pascal VOC folder)")
        unknown = set(cfg.data.kwargs) - {"image_size"}
        if unknown:
            raise UserError(f"unknown data.kwargs {sorted(unknown)} for a mask folder (the recipe's are for "
                            "generated scenes): replace them, e.g. --set 'data.kwargs={image_size: 256}' or {}")
        size = cfg.data.kwargs.get("image_size")
        size = (size, size) if isinstance(size, int) else (tuple(size) if size else None)
        x, y, classes = read_mask_folder(cfg.data.root, split, size)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        return (x[:n], y[:n], classes) if n is not None else (x, y, classes)
    raise UserError(f"the segmentation task reads data.name=scenes (generated) or masks (a folder of images "
                    f"and PNG masks), not {cfg.data.name!r}")


def _test_split(cfg: Config) -> str:
    """A mask folder without a test split is evaluated on its val split (Pascal VOC's custom)."""
    if cfg.data.name == "masks" and not has_split(cfg.data.root, "test"):
        return "val"
    return "test"


def _check_classes(y: Tensor, num_classes: int, ignore_index: int, what: str) -> None:
    bad = y[(y != ignore_index) & (y >= num_classes)]
    if len(bad):
        raise UserError(f"{what} masks hold class {int(bad.max())} but there are only {num_classes} classes; "
                        f"list every class in classes.txt, or mark such pixels {ignore_index} (segment.ignore_index)")


class SegmentationLoader:
    """Training batches of one epoch: whole images, random crops, or patches around sampled
    pixels (each labelled with its centre's class), with image and mask augmented together."""

    def __init__(self, cfg: Config, data: DataBundle, gen: torch.Generator) -> None:
        self.x, self.y, self.gen, self.seg = data.train_x, data.train_y, gen, cfg.segment
        self.mode = cfg.segment.train_mode
        self.fill = data.info.norm.black
        n = len(self.y)
        per = cfg.segment.patches_per_image if self.mode == "patches" else 1
        self.samples = n * per
        self.batch_size = min(cfg.train.batch_size, self.samples)
        self.patch = int(cfg.model.kwargs.get("patch", 0))
        if self.mode == "patches":     # zeros beyond the border, as the dense form pads
            self.x_padded = pad_for_patches(self.x, self.patch)

    def __len__(self) -> int:
        return max(self.samples // self.batch_size, 1)

    def __iter__(self):
        if self.mode == "patches":
            yield from self._patches()
            return
        order = torch.randperm(len(self.y), generator=self.gen, device=self.gen.device).to(self.y.device)
        crop = self.seg.crop if self.mode == "crops" else None
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield augment_pairs(self.x[idx], self.y[idx].long(), self.gen, self.seg.flip, tuple(self.seg.scale),
                                crop, self.fill, self.seg.ignore_index)

    def _patches(self):
        """Pixels drawn uniformly over the training images (ignored pixels redrawn as ignored
        samples that the loss skips); each batch's patches cut from the padded images."""
        n, _, h, w = self.x.shape
        dev = self.y.device
        r = torch.rand((len(self), self.batch_size, 3), generator=self.gen, device=self.gen.device).to(dev)
        for i in range(len(self)):
            c = (r[i] * torch.tensor([n, h, w], device=dev)).long()
            c = torch.minimum(c, torch.tensor([n - 1, h - 1, w - 1], device=dev))
            p = extract_patches(self.x_padded, c, self.patch, padded=True)
            if self.seg.flip:
                m = torch.rand(len(p), generator=self.gen, device=self.gen.device).to(dev) < 0.5
                p = torch.where(m[:, None, None, None], p.flip(3), p)
            yield p.contiguous(), self.y[c[:, 0], c[:, 1], c[:, 2]].long()


def predict_maps(model: nn.Module, x: Tensor, chunk: int = CHUNK, amp_dtype: torch.dtype | None = None,
                 flip: bool = False) -> Tensor:
    """Logits ``(N, K, H, W)`` (float32, CPU) of a set of normalised images, ``chunk`` at a
    time, in eval mode (train mode restored); ``flip`` averages with the mirror image's."""
    outs = []
    with inference(model, amp_dtype):
        for i in range(0, len(x), chunk):
            xb = x[i:i + chunk]
            out = model(xb).float()
            if flip:
                out = (out + model(xb.flip(3)).float().flip(3)) / 2
            outs.append(out.cpu())
    return torch.cat(outs)


@torch.no_grad()
def predict_labels(run: TrainedRun, images: Tensor, flip: bool = False, chunk: int = CHUNK) -> Tensor:
    """Class maps ``(N, H, W)`` (int64, CPU) of uint8 images ``(N, C, H, W)``, normalised and
    predicted ``chunk`` at a time (only the labels are kept: a set's logits would not fit)."""
    return torch.cat([predict_maps(run.model, run.norm.from_uint8(images[i:i + chunk], run.device), chunk,
                                   flip=flip).argmax(1) for i in range(0, len(images), chunk)])


# --------------------------------------------------------------------------- the task

class SegmentationTask:
    name = "segmentation"
    augment = False          # image-only augmentations would move the image without its mask
    monitor = "val_miou"

    def build_data(self, cfg: Config, device: torch.device, val_indices: np.ndarray | None = None) -> DataBundle:
        """Training and validation images (normalised with the training images' statistics) and
        their class maps (uint8, on the device)."""
        if val_indices is not None:
            raise UserError("cross-validation (--folds) is for classification recipes; segmentation has its own val split")
        limit = cfg.data.limit_train
        notes = []
        if cfg.data.name == "masks":
            tx, ty, classes = load_split_pairs(cfg, "train")
            if has_split(cfg.data.root, "val") and _test_split(cfg) == "test":
                vx, vy, _ = load_split_pairs(cfg, "val")
            else:        # carve the validation images from the training ones
                n_val = int(round(cfg.data.val_size * len(ty))) if cfg.data.val_size < 1 else int(cfg.data.val_size)
                n_val = min(max(n_val, 1), len(ty) // 5 or 1) if len(ty) > 1 else 0
                perm = torch.from_numpy(np.random.default_rng(cfg.seed).permutation(len(ty)))
                vx, vy, tx, ty = tx[perm[:n_val]], ty[perm[:n_val]], tx[perm[n_val:]], ty[perm[n_val:]]
                notes.append(f"validation: {n_val} of the training images (no separate val split in {cfg.data.root})")
            tx, ty = (tx[:limit], ty[:limit]) if limit else (tx, ty)
            extra = {"masks": {"root": os.path.abspath(cfg.data.root), **cfg.data.kwargs}}
        else:
            config, opts = scene_options(cfg.data.kwargs)
            tx, ty, classes = load_split_pairs(cfg, "train", min(opts["train"], limit or opts["train"]))
            vx, vy, _ = load_split_pairs(cfg, "val")
            extra = {"scenes": opts}
        ii = cfg.segment.ignore_index
        for y, what in ((ty, "training"), (vy, "validation")):
            _check_classes(y, len(classes), ii, what)
        x = tx.float() / 255
        norm = Normalization(tuple(x.mean((0, 2, 3)).tolist()), tuple(max(s, 1e-6) for s in x.std((0, 2, 3)).tolist()))
        freq = class_frequencies(ty, len(classes), ii)
        weights = class_weights(freq, cfg.segment.class_weight)
        extra.update(ignore_index=ii, class_weights=[float(w) for w in weights],
                     class_freq=[float(f) for f in freq])
        info = DataInfo(cfg.data.name, tuple(classes), 3, tuple(tx.shape[-2:]), norm, extra)
        if cfg.segment.class_weight != "none":
            notes.append(f"class weights ({cfg.segment.class_weight} frequency): "
                         + ", ".join(f"{c} {w:.2f}" for c, w in zip(classes, weights)))
        return DataBundle(norm.from_uint8(tx, device), ty.to(device), norm.from_uint8(vx, device), vy.to(device),
                          info, notes)

    def train_loader(self, cfg: Config, data: DataBundle, gen: torch.Generator) -> SegmentationLoader:
        return SegmentationLoader(cfg, data, gen)

    def build_model(self, cfg: Config, info: DataInfo) -> nn.Module:
        """A segmentation model of the registry; ``model.kwargs`` completed with every default."""
        name = cfg.model.name
        model = create_kind_model(cfg, "segmentation", self.name, info.num_classes, info.in_chans)
        if cfg.segment.train_mode == "patches":
            if not hasattr(model, "patch_mode"):
                raise UserError(f"segment.train_mode=patches trains a patch classifier (seg_pixel), not {name}; "
                                "use train_mode=image or crops")
            model.patch_mode = True
        model.class_weights = torch.tensor(info.extra.get("class_weights", [1.0] * info.num_classes))
        model.ignore_index = int(info.extra.get("ignore_index", cfg.segment.ignore_index))
        return model

    def loss(self, cfg: Config, model: nn.Module):
        """Cross-entropy over the pixels (or patch centres), ``segment.ignore_index`` skipped,
        weighted per class when ``segment.class_weight`` asks."""
        weight = model.class_weights if cfg.segment.class_weight != "none" else None
        ii = cfg.segment.ignore_index

        def loss(out: Tensor, y: Tensor) -> Tensor:
            w = None if weight is None else weight.to(out.device, out.dtype)
            return F.cross_entropy(out, y, weight=w, ignore_index=ii, label_smoothing=cfg.train.label_smoothing)
        return loss

    def correct(self, out: Tensor, y: Tensor) -> None:
        return None

    def validate(self, model: nn.Module, loader, amp_dtype=None) -> dict[str, float]:
        """Validation loss and the set-level scores (one confusion matrix over every pixel)."""
        meter = SegmentationMeter(len(model.class_weights), model.ignore_index)
        total, count = 0.0, 0
        for x, y in loader:
            logits = predict_maps(model, x, amp_dtype=amp_dtype)
            y = y.long().cpu()
            keep = y != meter.ignore_index
            total += float(F.cross_entropy(logits, y, ignore_index=meter.ignore_index, reduction="sum"))
            count += int(keep.sum())
            meter.update(logits.argmax(1), y)
        s = meter.compute()
        return {"val_loss": total / max(count, 1), "val_miou": s["miou"], "val_pixel_acc": s["pixel_acc"],
                "val_mean_acc": s["mean_acc"]}

    def evaluate(self, run: TrainedRun, tta: bool = False) -> dict:
        """The test split (scenes: ``test`` scenes; a mask folder: ``test``, else ``val``):
        ``eval.json`` with the four scores and per-class IoU, ``plots/confusion.png``,
        ``plots/iou.png`` and ``plots/best_worst.png``."""
        cfg = run.config
        split = _test_split(cfg)
        images, target, _ = load_split_pairs(cfg, split)
        classes = list(run.classes)
        ii = run.info.extra.get("ignore_index", cfg.segment.ignore_index)
        _check_classes(target, len(classes), ii, split)
        pred, y = predict_labels(run, images, tta), target.long()
        meter = SegmentationMeter(len(classes), ii)
        meter.update(pred, y)
        s = meter.compute()
        per_image = [segmentation_scores(pred[i], y[i], len(classes), ii)["miou"] for i in range(len(y))]
        order = [i for i in np.argsort(np.nan_to_num(per_image, nan=-1.0)) if per_image[i] == per_image[i]]
        report = {
            "task": self.name, "run_dir": run.run_dir, "model": cfg.model.name, "dataset": cfg.data.name,
            "split": split, "tta": tta, "num_images": len(y), "num_pixels": s["num_pixels"],
            "pixel_acc": s["pixel_acc"], "mean_acc": s["mean_acc"], "miou": s["miou"], "fwiou": s["fwiou"],
            "iou": dict(zip(classes, s["iou"])), "acc": dict(zip(classes, s["acc"])),
            "absent_classes": [classes[c] for c in s["absent_classes"]],
            "confusion": meter.confusion.tolist(), "ignore_index": ii,
            "best_images": [int(i) for i in order[::-1][:SHOWN]], "worst_images": [int(i) for i in order[:SHOWN]],
            "per_image_miou": [None if v != v else float(v) for v in per_image],
            "plots": ["confusion.png", "iou.png", "best_worst.png"],
        }
        if "scenes" in run.info.extra:
            report["scenes"] = run.info.extra["scenes"]
        report["summary"] = (f"{cfg.model.name} on {len(y)} {split} images of {cfg.data.name}"
                             f"{' (flip TTA)' if tta else ''}:\n" + format_scores(s, classes))
        atomic_write_text(run.path("eval.json"), json.dumps(report, indent=1))
        plot_confusion(meter.confusion.numpy(), classes, run.path("plots", "confusion.png"))
        plot_bars(report["iou"], run.path("plots", "iou.png"), f"IoU per class (mIoU {s['miou']:.3f})", "IoU")
        shown = report["best_images"] + report["worst_images"]
        rows = [[images[i].permute(1, 2, 0).numpy(), colorize(y[i].numpy()), colorize(pred[i].numpy())] for i in shown]
        titles = [[f"{'best' if k < len(report['best_images']) else 'worst'}: image {i}", "ground truth",
                   f"prediction (mIoU {per_image[i]:.3f})"] for k, i in enumerate(shown)]
        plot_image_rows(rows, titles, run.path("plots", "best_worst.png"))
        return report

    def predict(self, run: TrainedRun, paths: list[str], topk: int = 1) -> list[dict]:
        """The class map of each image at the file's own size (the network is fully
        convolutional), written as ``RUN/predictions/NAME.mask.png`` (a palette PNG: its values
        are the classes, its colours the VOC palette) and ``NAME.overlay.png``."""
        out_dir = run.path("predictions")
        os.makedirs(out_dir, exist_ok=True)
        results = []
        for p in paths:
            img = read_image(p, "RGB")
            mask = predict_labels(run, torch.from_numpy(img).permute(2, 0, 1)[None])[0].numpy().astype(np.uint8)
            stem = os.path.splitext(os.path.basename(p))[0]
            mask_path, over_path = (os.path.join(out_dir, f"{stem}.{k}.png") for k in ("mask", "overlay"))
            _write_png(_palette_png(mask), mask_path)
            _write_png(Image.fromarray(overlay(img, mask)), over_path)
            counts = np.bincount(mask.ravel(), minlength=run.info.num_classes)
            top = [(run.classes[c], counts[c] / mask.size) for c in np.argsort(-counts)[:max(topk, 3)] if counts[c]]
            results.append({"path": p, "mask": mask_path, "overlay": over_path,
                            "fractions": {c: float(f) for c, f in top},
                            "line": ", ".join(f"{c} {f * 100:.1f}%" for c, f in top) + f"  -> {mask_path}, {over_path}"})
        return results

    def headline(self, ev: dict) -> list[tuple[str, str]]:
        return [("mIoU", f"{ev['miou']:.3f}"), ("pixel accuracy", f"{ev['pixel_acc'] * 100:.2f}%"),
                ("mean accuracy", f"{ev['mean_acc'] * 100:.2f}%"), ("frequency-weighted IoU", f"{ev['fwiou']:.3f}"),
                (f"{ev['split']} images", f"{ev['num_images']}")]

    def report_sections(self, run: TrainedRun, ev: dict) -> list[Section]:
        rows = [[c, _pct(ev["iou"][c]), _pct(ev["acc"][c])] for c in ev["iou"]]
        absent = ev.get("absent_classes") or []
        note = (H.note("left out of the means (absent from prediction and ground truth): " + ", ".join(absent))
                if absent else "")
        return [
            Section("metrics", "Per-class IoU and accuracy",
                    H.row([H.table(["class", "IoU", "accuracy"], rows) + note,
                           H.img(run.path("plots", "iou.png"), "IoU per class")])),
            Section("examples", f"Best and worst {ev['split']} images (image, ground truth, prediction)",
                    H.img(run.path("plots", "best_worst.png"), "best and worst predictions")),
            Section("confusion", "Pixel confusion matrix", H.img(run.path("plots", "confusion.png"), "confusion")),
        ]


def _pct(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


def _palette_png(mask: np.ndarray) -> Image.Image:
    im = Image.frombytes("P", (mask.shape[1], mask.shape[0]), np.ascontiguousarray(mask).tobytes())
    im.putpalette(palette().ravel().tolist())
    return im


def _write_png(im: Image.Image, path: str) -> None:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


TASK = register_task(SegmentationTask())

__all__ = ["SCENE_DEFAULTS", "SegmentationLoader", "SegmentationTask", "TASK", "load_split_pairs",
           "predict_labels", "predict_maps", "scene_options"]
