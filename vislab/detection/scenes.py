"""Generated detection scenes: small grayscale items (Fashion-MNIST, digits...) pasted on
textured canvases, with exact boxes, labels and per-object masks.

Each scene draws its items at random positions and scales; an item may run off the border
(truncation) and later items cover earlier ones (occlusion), within limits that keep every
object recognisable.  An object is the item's nonzero pixels; its box is the tight box
``(x1, y1, x2 + 1, y2 + 1)`` of the pixels that stay *visible*, its mask those pixels.

Splits never share a source image: test scenes use the source's test split, train and val
scenes two disjoint parts of its training split (a fixed partition, the same for every seed).
Scene ``i`` of a split depends only on ``(seed, split, i)``, so asking for more scenes keeps
the first ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from vislab.data.datasets import get_dataset_info, load_split
from vislab.detection.formats import (
    DetectionSet,
    ImageAnnotations,
    dataset_to_coco,
    read_coco,
)
from vislab.errors import UserError
from vislab.io import atomic_write_text

SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.1                 # of the source's training split, for val scenes


@dataclass(frozen=True)
class SceneConfig:
    """How scenes look.

    Args:
        source: a registered grayscale data set (``fashion_mnist``, ``mnist``, ``digits``...).
        image_size: canvas ``(height, width)``.
        objects: the number of objects per scene, drawn uniformly in ``[min, max]``.
        scale: item size relative to its source size, drawn uniformly in ``[min, max]``.
        max_truncation: largest fraction of an item's pixels that may fall off the canvas.
        max_occlusion: largest fraction of an object's pixels that later items may cover.
    """
    source: str = "fashion_mnist"
    image_size: tuple[int, int] = (128, 128)
    objects: tuple[int, int] = (2, 6)
    scale: tuple[float, float] = (1.0, 2.5)
    max_truncation: float = 0.4
    max_occlusion: float = 0.5

    def __post_init__(self) -> None:
        (h, w), (lo, hi), (s0, s1) = self.image_size, self.objects, self.scale
        if h < 8 or w < 8:
            raise UserError(f"image size {h}x{w} is too small; use at least 8x8 pixels")
        if not 0 <= lo <= hi <= 255:
            raise UserError(f"objects per scene {lo}..{hi}: need 0 <= min <= max <= 255")
        if not 0 < s0 <= s1:
            raise UserError(f"item scale {s0}..{s1}: need 0 < min <= max")
        if not (0 <= self.max_truncation < 1 and 0 <= self.max_occlusion < 1):
            raise UserError("max_truncation and max_occlusion are fractions in [0, 1)")


class SceneSet(Dataset):
    """One split of scenes in memory.

    ``images`` ``(N, 3, H, W)`` uint8 (an eighth of the memory of floats); ``instance_maps``
    ``(N, H, W)`` uint8, 0 for background and ``j + 1`` where object ``j`` is visible;
    ``alpha`` ``(N, H, W)`` uint8 (generated scenes only), the opacity of the owning object's
    pixel (0 on background): a faint item pixel hardly shows on the canvas;
    ``targets[i]``: ``boxes`` ``(n, 4)`` float32, ``labels`` int64, ``area`` (visible pixels)
    and ``source_index`` (the item's index in the source split it came from).

    Indexing gives ``(image, target)``: the image as float ``(3, H, W)`` in ``[0, 1]`` and the
    target with ``masks`` ``(n, H, W)`` bool added, ready for a detector.
    """

    def __init__(self, images: Tensor, instance_maps: Tensor, targets: list[dict[str, Tensor]],
                 categories: list[str], split: str, alpha: Tensor | None = None) -> None:
        self.images, self.instance_maps, self.targets = images, instance_maps, targets
        self.categories, self.split, self.alpha = categories, split, alpha

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        target = dict(self.targets[i])
        n = len(target["labels"])
        target["masks"] = self.instance_maps[i][None] == torch.arange(1, n + 1, dtype=torch.uint8)[:, None, None]
        return self.images[i].float() / 255, target


# --------------------------------------------------------------------------- sources

def _source_items(source: str, split: str, data_dir: str | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The pool of a split: images ``(n, h, w)`` uint8, labels, their indices in the source
    split, and the class names."""
    info = get_dataset_info(source)
    if info.in_chans != 1 or not info.classes:
        raise UserError(f"scenes need a grayscale data set whose items stand out from a black "
                        f"background (fashion_mnist, mnist, digits...), not {source!r}")
    data = load_split(source, "test" if split == "test" else "train", root=data_dir)
    index = np.arange(len(data.labels))
    if split != "test":
        perm = np.random.default_rng(0).permutation(len(index))
        n_val = int(round(VAL_FRACTION * len(index)))
        index = np.sort(perm[:n_val] if split == "val" else perm[n_val:])
    return data.images[index, 0], data.labels[index], index, list(data.classes)


# --------------------------------------------------------------------------- rendering

def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured canvas ``(h, w, 3)`` in ``[0, 1]``: a smooth colour field, a grating or plaid
    at a random frequency and angle, and pixel noise; kept dark so items stand out."""
    k = int(rng.integers(2, 6))
    low = rng.integers(0, 102, (k, k, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), np.float32) / 255
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    texture = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 3))):              # one grating, or two crossed: a plaid
        theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.03, 0.3), rng.uniform(0, 2 * np.pi)
        texture += np.sin(2 * np.pi * freq * (x * np.cos(theta) + y * np.sin(theta)) + phase)
    tint = rng.uniform(0.3, 1.0, 3).astype(np.float32)
    bg = field + rng.uniform(0.03, 0.12) * texture[..., None] * tint + rng.normal(0, 0.02, (h, w, 3))
    return np.clip(bg, 0, 1).astype(np.float32)


def _resize(item: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.asarray(Image.fromarray(item).resize((w, h), Image.BILINEAR))


def render_scene(rng: np.random.Generator, items: np.ndarray, config: SceneConfig,
                 alpha_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """One scene: the image ``(H, W, 3)`` uint8, the instance map ``(H, W)`` uint8 and, per
    object in paint order, the index of its item in ``items``.  Placements that would break the
    truncation or occlusion limits are redrawn (up to 20 times, then the object is left out).
    ``alpha_out`` ``(H, W)`` uint8, when given, receives each owned pixel's opacity."""
    H, W = config.image_size
    canvas = _background(rng, H, W)
    owner = np.zeros((H, W), np.int32)                     # 0 or 1 + object index
    opacity = alpha_out if alpha_out is not None else np.zeros((H, W), np.uint8)
    totals: list[int] = []                                 # pixels of each object when placed
    chosen: list[int] = []
    for _ in range(int(rng.integers(config.objects[0], config.objects[1] + 1))):
        for _attempt in range(20):
            idx = int(rng.integers(len(items)))
            s = rng.uniform(*config.scale)
            h0, w0 = items[idx].shape
            h, w = max(int(round(h0 * s)), 2), max(int(round(w0 * s)), 2)
            patch = _resize(items[idx], h, w)
            total = int((patch > 0).sum())
            if total < 8:
                continue
            t = config.max_truncation
            y0 = int(rng.integers(-int(t * h), max(H - int((1 - t) * h), -int(t * h)) + 1))
            x0 = int(rng.integers(-int(t * w), max(W - int((1 - t) * w), -int(t * w)) + 1))
            ys, xs = slice(max(y0, 0), min(y0 + h, H)), slice(max(x0, 0), min(x0 + w, W))
            crop = patch[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
            if crop.size == 0 or (crop > 0).sum() < (1 - t) * total:
                continue
            covered = np.bincount(owner[ys, xs][crop > 0], minlength=len(chosen) + 1)[1:]
            visible = np.bincount(owner.ravel(), minlength=len(chosen) + 1)[1:]
            if any(v - c < (1 - config.max_occlusion) * tot
                   for v, c, tot in zip(visible, covered, totals)):
                continue
            alpha = (crop.astype(np.float32) / 255)[..., None]
            colour = rng.uniform(0.55, 1.0, 3).astype(np.float32)
            canvas[ys, xs] = canvas[ys, xs] * (1 - alpha) + colour * alpha
            owner[ys, xs][crop > 0] = len(chosen) + 1
            opacity[ys, xs][crop > 0] = crop[crop > 0]
            totals.append(total)
            chosen.append(idx)
            break
    image = np.round(canvas * 255).astype(np.uint8)
    return image, owner.astype(np.uint8), chosen


def resolve_scene_options(kwargs: Mapping, defaults: Mapping, what: str, **fixed) -> tuple[SceneConfig, dict]:
    """A task's ``data.kwargs`` -> the scene configuration and every option (counts, seed...)
    with ``defaults`` filled in; an unknown key is a :class:`UserError` naming ``what`` (the
    task) and the known keys.  ``fixed`` sets configuration fields the task does not let vary
    (localisation: one object per scene)."""
    unknown = set(kwargs) - set(defaults)
    if unknown:
        raise UserError(f"unknown data.kwargs {sorted(unknown)} for {what} scenes; known: {', '.join(defaults)}")
    opts = {**defaults, **kwargs}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in opts.items()
              if k in SceneConfig.__dataclass_fields__ and k not in fixed}
    if isinstance(fields.get("image_size"), int):
        fields["image_size"] = (fields["image_size"],) * 2
    return SceneConfig(**fields, **fixed), opts


def task_scenes(data, task: str, config: SceneConfig, opts: Mapping,
                val_indices=None) -> tuple[SceneSet, SceneSet]:
    """The training and validation scenes of a task that generates its images (``data``: the
    run's ``data`` section; ``data.limit_train`` keeps the first training scenes), with the
    one-line refusals of another data set and of ``--folds`` (the scenes have their own val split)."""
    if data.name != "scenes":
        raise UserError(f"the {task} task generates its images: set data.name: scenes (not "
                        f"{data.name!r}) and the scene options in data.kwargs")
    if val_indices is not None:
        raise UserError(f"cross-validation (--folds) is not available for {task}; it has its own val scenes")
    n_train = min(opts["train"], data.limit_train or opts["train"])
    return (make_scenes("train", n_train, config, opts["seed"], data.root),
            make_scenes("val", opts["val"], config, opts["seed"], data.root))


def semantic_maps(scenes: SceneSet, min_alpha: float = 0.0, void: int = 255) -> Tensor:
    """Class maps ``(N, H, W)`` uint8 of the scenes: 0 for background, ``label + 1`` where an
    object of that label is visible (instances of one class merge: semantic segmentation).

    With ``min_alpha > 0`` (generated scenes, which know each pixel's opacity), object pixels
    fainter than that are ``void``: an item's near-black pixels hardly change the canvas, so
    nobody could say whether they belong to the item or to the background (Pascal VOC marks its
    ambiguous object borders void, 255, for the same reason)."""
    out = torch.zeros_like(scenes.instance_maps)
    for i, t in enumerate(scenes.targets):
        lut = torch.cat([torch.zeros(1, dtype=torch.uint8), (t["labels"] + 1).to(torch.uint8)])
        out[i] = lut[scenes.instance_maps[i].long()]
    if min_alpha > 0 and scenes.alpha is not None:
        faint = (scenes.instance_maps > 0) & (scenes.alpha < round(255 * min_alpha))
        out[faint] = void
    return out


def boxes_from_instance_map(instance_map: np.ndarray, n: int) -> np.ndarray:
    """Tight boxes ``(n, 4)`` of the pixels of objects ``1..n``: ``(x_min, y_min, x_max + 1,
    y_max + 1)``, so a single pixel at ``(x, y)`` has the box ``(x, y, x + 1, y + 1)``."""
    boxes = np.zeros((n, 4), np.float32)
    for j in range(n):
        ys, xs = np.nonzero(instance_map == j + 1)
        boxes[j] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return boxes


def make_scenes(split: str, num_images: int, config: SceneConfig = SceneConfig(), seed: int = 0,
                data_dir: str | None = None) -> SceneSet:
    """Generate ``num_images`` scenes of ``split`` ('train', 'val' or 'test') in memory."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if num_images < 0:
        raise UserError(f"the number of scenes must be >= 0, got {num_images}")
    items, labels, source_index, classes = _source_items(config.source, split, data_dir)
    H, W = config.image_size
    images = torch.zeros((num_images, 3, H, W), dtype=torch.uint8)
    maps = torch.zeros((num_images, H, W), dtype=torch.uint8)
    alpha = torch.zeros((num_images, H, W), dtype=torch.uint8)
    targets = []
    for i in range(num_images):
        rng = np.random.default_rng([seed, SPLITS.index(split), i])
        image, owner, chosen = render_scene(rng, items, config, alpha[i].numpy())
        n = len(chosen)
        images[i] = torch.from_numpy(image).permute(2, 0, 1)
        maps[i] = torch.from_numpy(owner)
        targets.append({
            "boxes": torch.from_numpy(boxes_from_instance_map(owner, n)),
            "labels": torch.as_tensor(labels[chosen], dtype=torch.int64).reshape(-1),
            "area": torch.as_tensor(np.bincount(owner.ravel(), minlength=n + 1)[1:], dtype=torch.float32),
            "source_index": torch.as_tensor(source_index[chosen], dtype=torch.int64).reshape(-1),
        })
    return SceneSet(images, maps, targets, classes, split, alpha)


# --------------------------------------------------------------------------- on disk

def write_scenes(scenes: SceneSet, out_dir: str, config: SceneConfig | None = None, seed: int | None = None) -> str:
    """Write a split under ``out_dir``: ``SPLIT/images/NNNNNN.png``, ``SPLIT/masks/NNNNNN.png``
    (the instance maps) and ``SPLIT.json`` (COCO, with RLE masks, ``file_name`` relative to
    ``out_dir``, each image's ``mask_file`` and each annotation's ``source_index``).  The JSON
    is written last, so its presence means the split is complete.  Returns its path."""
    split = scenes.split
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(out_dir, split, sub), exist_ok=True)
    H, W = scenes.images.shape[-2:]
    records = []
    for i in range(len(scenes)):
        name = f"{i:06d}.png"
        Image.fromarray(scenes.images[i].permute(1, 2, 0).numpy()).save(os.path.join(out_dir, split, "images", name))
        Image.fromarray(scenes.instance_maps[i].numpy()).save(os.path.join(out_dir, split, "masks", name))
        _, target = scenes[i]
        records.append(ImageAnnotations(f"{split}/images/{name}", W, H, target["boxes"], target["labels"],
                                        area=target["area"], masks=target["masks"], image_id=i + 1))
    coco = dataset_to_coco(DetectionSet(scenes.categories, records))
    for i, im in enumerate(coco["images"]):
        im["mask_file"] = f"{split}/masks/{i:06d}.png"
    sources = torch.cat([t["source_index"] for t in scenes.targets]).tolist() if scenes.targets else []
    for ann, src in zip(coco["annotations"], sources):
        ann["source_index"] = src
    coco["info"] = {"description": f"vislab scenes, split {split}", "split": split,
                    "seed": seed, "config": None if config is None else _config_dict(config)}
    path = os.path.join(out_dir, f"{split}.json")
    atomic_write_text(path, json.dumps(coco))
    return path


def _config_dict(config: SceneConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.__dict__.items()}


def load_scenes(out_dir: str, split: str) -> SceneSet:
    """Read back a split written by :func:`write_scenes`."""
    path = os.path.join(out_dir, f"{split}.json")
    ds = read_coco(path)
    with open(path) as f:
        raw = json.load(f)
    mask_files = {im["id"]: im.get("mask_file") for im in raw["images"]}
    sources: dict = {}
    for a in raw["annotations"]:
        sources.setdefault(a["image_id"], []).append(a.get("source_index", -1))
    images, maps, targets = [], [], []
    for rec in ds.images:
        if mask_files[rec.image_id] is None:
            raise UserError(f"{path} has no 'mask_file' for image {rec.file_name}; it was not "
                            "written by `vislab data make-scenes`")
        try:
            images.append(np.asarray(Image.open(os.path.join(out_dir, rec.file_name)).convert("RGB")))
            maps.append(np.asarray(Image.open(os.path.join(out_dir, mask_files[rec.image_id]))))
        except OSError as e:
            raise UserError(f"cannot read an image of {path} ({e}); the scene folder is incomplete") from None
        targets.append({"boxes": rec.boxes, "labels": rec.labels, "area": rec.area,
                        "source_index": torch.as_tensor(sources.get(rec.image_id, []), dtype=torch.int64)})
    return SceneSet(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                    torch.from_numpy(np.stack(maps)), targets, ds.categories, split)


def make_scene_dataset(out_dir: str, counts: Mapping[str, int], config: SceneConfig = SceneConfig(),
                       seed: int = 0, data_dir: str | None = None) -> dict[str, str]:
    """Generate and write every split of ``counts`` (e.g. ``{'train': 1000, 'val': 200,
    'test': 200}``) into a new or empty ``out_dir``; returns the COCO file of each split."""
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise UserError(f"{out_dir} is not empty; choose a new folder or empty it")
    if any(n < 0 for n in counts.values()):
        raise UserError(f"scene counts must be >= 0, got {dict(counts)}")
    return {split: write_scenes(make_scenes(split, n, config, seed, data_dir), out_dir, config, seed)
            for split, n in counts.items() if n > 0}
