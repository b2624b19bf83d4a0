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

**Stuff** (``SceneConfig.stuff = S > 0``, for panoptic segmentation): the canvas is cut into 2-4
Voronoi cells (as many as there are stuff classes at most), each filled with the texture of a
distinct stuff class (:data:`STUFF_CLASSES`, the first ``S``: a smooth "sky", "stripes",
"dots", "checker", "grass", "bricks"), each with its own hue, period and
orientation drawn per scene.  ``SceneSet.stuff_maps`` holds the stuff class of every pixel no
object covers.  Panoptic category ids run things ``0..K-1`` (the source's classes) then stuff
``K..K+S-1``; a thing's instance id is its index in the instance map (``1..n``), stuff has
instance id 0 (:meth:`SceneSet.panoptic_maps`).  ``S = 0`` draws exactly the scenes it always
drew (the same random stream).
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
STUFF_CLASSES = ("sky", "stripes", "dots", "checker", "grass", "bricks")
NO_STUFF = 255                     # stuff map value under objects


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
        stuff: the number of stuff classes (0: the usual textured canvas; up to
            ``len(STUFF_CLASSES)``): the background becomes regions of distinct textures.
    """
    source: str = "fashion_mnist"
    image_size: tuple[int, int] = (128, 128)
    objects: tuple[int, int] = (2, 6)
    scale: tuple[float, float] = (1.0, 2.5)
    max_truncation: float = 0.4
    max_occlusion: float = 0.5
    stuff: int = 0

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
        if not 0 <= self.stuff <= len(STUFF_CLASSES):
            raise UserError(f"stuff classes {self.stuff}: choose 0 (none) to {len(STUFF_CLASSES)} "
                            f"({', '.join(STUFF_CLASSES)})")


class SceneSet(Dataset):
    """One split of scenes in memory.

    ``images`` ``(N, 3, H, W)`` uint8 (an eighth of the memory of floats); ``instance_maps``
    ``(N, H, W)`` uint8, 0 for background and ``j + 1`` where object ``j`` is visible;
    ``alpha`` ``(N, H, W)`` uint8 (generated scenes only), the opacity of the owning object's
    pixel (0 on background): a faint item pixel hardly shows on the canvas;
    ``targets[i]``: ``boxes`` ``(n, 4)`` float32, ``labels`` int64, ``area`` (visible pixels)
    and ``source_index`` (the item's index in the source split it came from).  Scenes with
    stuff also have ``stuff_maps`` ``(N, H, W)`` uint8, the stuff class (``0..S-1``) of every
    pixel no object covers and :data:`NO_STUFF` under the objects, and the names
    ``stuff_categories``.

    Indexing gives ``(image, target)``: the image as float ``(3, H, W)`` in ``[0, 1]`` and the
    target with ``masks`` ``(n, H, W)`` bool added, ready for a detector.
    """

    def __init__(self, images: Tensor, instance_maps: Tensor, targets: list[dict[str, Tensor]],
                 categories: list[str], split: str, alpha: Tensor | None = None,
                 stuff_maps: Tensor | None = None, stuff_categories: list[str] | None = None) -> None:
        self.images, self.instance_maps, self.targets = images, instance_maps, targets
        self.categories, self.split, self.alpha = categories, split, alpha
        self.stuff_maps, self.stuff_categories = stuff_maps, list(stuff_categories or [])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        target = dict(self.targets[i])
        n = len(target["labels"])
        target["masks"] = self.instance_maps[i][None] == torch.arange(1, n + 1, dtype=torch.uint8)[:, None, None]
        return self.images[i].float() / 255, target

    def panoptic_maps(self) -> Tensor:
        """The panoptic ground truth ``(N, H, W, 2)`` int64: (category, instance id), things
        ``0..K-1`` with their instance-map index ``1..n``, stuff ``K + s`` with instance 0."""
        if self.stuff_maps is None:
            raise UserError("these scenes have no stuff; generate them with stuff classes "
                            "(data.kwargs.stuff, or make-scenes --stuff N)")
        out = torch.zeros((*self.instance_maps.shape, 2), dtype=torch.int64)
        out[..., 0] = self.stuff_maps.long() + len(self.categories)
        for i, t in enumerate(self.targets):
            lut = torch.cat([torch.zeros(1, dtype=torch.int64), t["labels"]])
            inst = self.instance_maps[i].long()
            things = inst > 0
            out[i, ..., 0][things] = lut[inst[things]]
            out[i, ..., 1] = inst
        return out


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


def _stuff_texture(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    """A canvas ``(h, w, 3)`` in ``[0, 1]`` of one stuff class: its pattern at a period,
    phase and orientation drawn here, in two tones of its hue (jittered), kept dark so items
    stand out.  Periods are 4-12 px: recognisable at the 1/4 scale of a 64x64 scene."""
    hues = {"sky": (0.12, 0.22, 0.45), "stripes": (0.42, 0.14, 0.12), "dots": (0.32, 0.10, 0.38),
            "checker": (0.38, 0.34, 0.08), "grass": (0.08, 0.36, 0.10), "bricks": (0.40, 0.22, 0.06)}
    colour = np.clip(np.asarray(hues[kind], np.float32) + rng.uniform(-0.06, 0.06, 3), 0, 1).astype(np.float32)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "sky":                      # smooth: a vertical gradient and a low-frequency field
        k = int(rng.integers(2, 4))
        low = rng.uniform(0.7, 1.0, (k, k)).astype(np.float32)
        field = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), np.float32)
        level = field * (1 - rng.uniform(0.2, 0.5) * y / h)
    elif kind == "stripes":                # a square grating, any angle
        theta, period = rng.uniform(0, np.pi), rng.uniform(4, 7)
        u = x * np.cos(theta) + y * np.sin(theta) + rng.uniform(0, period)
        level = np.where((u % period) < period / 2, 1.0, 0.35)
    elif kind == "dots":                   # a lattice of round dots on a dim ground
        period = rng.uniform(5, 7)
        dy, dx = (y + rng.uniform(0, period)) % period - period / 2, (x + rng.uniform(0, period)) % period - period / 2
        level = np.where(dy ** 2 + dx ** 2 <= rng.uniform(1.2, 2.0) ** 2, 1.0, 0.3)
    elif kind == "checker":                # axis-aligned squares
        size = rng.uniform(3, 5)
        level = np.where(((np.floor((y + rng.uniform(0, size)) / size) + np.floor((x + rng.uniform(0, size)) / size))
                          % 2) == 0, 1.0, 0.35)
    elif kind == "grass":                  # vertical blades: column noise smeared along y
        blades = rng.uniform(0, 1, (h + 8, w)).astype(np.float32)
        level = 0.3 + 0.7 * np.mean([blades[d:d + h] for d in range(8)], axis=0) ** 0.5
        level = (level - level.min()) / max(float(np.ptp(level)), 1e-6) * 0.7 + 0.3
    elif kind == "bricks":                 # courses of bricks, every other one shifted half a brick
        course, length = rng.uniform(4, 6), rng.uniform(8, 12)
        row = np.floor((y + rng.uniform(0, course)) / course)
        u = (x + rng.uniform(0, length) + (row % 2) * length / 2) % length
        v = (y % course)
        level = np.where((u < 1.2) | (v < 1.0), 0.3, 1.0)
    else:
        raise ValueError(f"unknown stuff texture {kind!r}")
    tex = level[..., None] * colour + rng.normal(0, 0.015, (h, w, 3))
    return np.clip(tex, 0, 1).astype(np.float32)


def _stuff_background(rng: np.random.Generator, h: int, w: int, num_stuff: int) -> tuple[np.ndarray, np.ndarray]:
    """The canvas ``(h, w, 3)`` and its stuff map ``(h, w)`` uint8: 2-4 Voronoi cells (at most
    ``num_stuff``) of random seeds, each the texture of a distinct stuff class."""
    regions = min(int(rng.integers(2, 5)), num_stuff)
    classes = rng.choice(num_stuff, regions, replace=False)
    seeds = rng.uniform(0, 1, (regions, 2)) * (h, w)
    y, x = np.mgrid[0:h, 0:w]
    cell = np.argmin((y[None] - seeds[:, 0, None, None]) ** 2 + (x[None] - seeds[:, 1, None, None]) ** 2, axis=0)
    stuff = classes[cell].astype(np.uint8)
    canvas = np.zeros((h, w, 3), np.float32)
    for c in classes:
        region = stuff == c
        canvas[region] = _stuff_texture(rng, STUFF_CLASSES[c], h, w)[region]
    return canvas, stuff


def render_scene(rng: np.random.Generator, items: np.ndarray, config: SceneConfig,
                 alpha_out: np.ndarray | None = None, stuff_out: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """One scene: the image ``(H, W, 3)`` uint8, the instance map ``(H, W)`` uint8 and, per
    object in paint order, the index of its item in ``items``.  Placements that would break the
    truncation or occlusion limits are redrawn (up to 20 times, then the object is left out).
    ``alpha_out`` ``(H, W)`` uint8, when given, receives each owned pixel's opacity;
    ``stuff_out`` (scenes with stuff) the stuff class of each pixel, :data:`NO_STUFF` under objects."""
    H, W = config.image_size
    if config.stuff:
        canvas, stuff = _stuff_background(rng, H, W, config.stuff)
    else:
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
    if config.stuff and stuff_out is not None:
        stuff_out[...] = np.where(owner > 0, NO_STUFF, stuff)
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
    stuff = torch.zeros((num_images, H, W), dtype=torch.uint8) if config.stuff else None
    targets = []
    for i in range(num_images):
        rng = np.random.default_rng([seed, SPLITS.index(split), i])
        image, owner, chosen = render_scene(rng, items, config, alpha[i].numpy(),
                                            None if stuff is None else stuff[i].numpy())
        n = len(chosen)
        images[i] = torch.from_numpy(image).permute(2, 0, 1)
        maps[i] = torch.from_numpy(owner)
        targets.append({
            "boxes": torch.from_numpy(boxes_from_instance_map(owner, n)),
            "labels": torch.as_tensor(labels[chosen], dtype=torch.int64).reshape(-1),
            "area": torch.as_tensor(np.bincount(owner.ravel(), minlength=n + 1)[1:], dtype=torch.float32),
            "source_index": torch.as_tensor(source_index[chosen], dtype=torch.int64).reshape(-1),
        })
    return SceneSet(images, maps, targets, classes, split, alpha, stuff, list(STUFF_CLASSES[:config.stuff]))


# --------------------------------------------------------------------------- on disk

def write_scenes(scenes: SceneSet, out_dir: str, config: SceneConfig | None = None, seed: int | None = None) -> str:
    """Write a split under ``out_dir``: ``SPLIT/images/NNNNNN.png``, ``SPLIT/masks/NNNNNN.png``
    (the instance maps) and ``SPLIT.json`` (COCO, with RLE masks, ``file_name`` relative to
    ``out_dir``, each image's ``mask_file`` and each annotation's ``source_index``); scenes with
    stuff also their panoptic ground truth (:func:`write_panoptic`).  The JSON is written last,
    so its presence means the split is complete.  Returns its path."""
    split = scenes.split
    if scenes.stuff_maps is not None:
        write_panoptic(scenes, out_dir)
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


def _segment_ids(scenes: SceneSet, i: int) -> tuple[np.ndarray, list[dict]]:
    """Scene ``i``'s COCO panoptic segment ids ``(H, W)`` (object ``j`` -> ``j + 1``, stuff
    class ``s`` -> ``256 (s + 1)``: things in the red channel, stuff in the green) and its
    ``segments_info``; COCO category ids are vislab's panoptic categories + 1."""
    inst = scenes.instance_maps[i].numpy().astype(np.int64)
    stuff = scenes.stuff_maps[i].numpy().astype(np.int64)
    ids = np.where(inst > 0, inst, 256 * (stuff + 1))
    k = len(scenes.categories)
    segments = []
    things = [(j + 1, c) for j, c in enumerate(scenes.targets[i]["labels"].tolist())]
    stuffs = [(256 * (c + 1), k + c) for c in np.unique(stuff[inst == 0]).tolist()]
    for sid, cat in things + stuffs:
        ys, xs = np.nonzero(ids == sid)
        if len(ys):
            x0, y0 = int(xs.min()), int(ys.min())
            segments.append({"id": sid, "category_id": cat + 1, "iscrowd": 0, "area": len(ys),
                             "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]})
    return ids, segments


def write_panoptic(scenes: SceneSet, out_dir: str) -> str:
    """The panoptic ground truth of a split with stuff, in COCO's panoptic format:
    ``SPLIT/panoptic/NNNNNN.png`` (RGB, segment id ``R + 256 G + 256^2 B``, 0 unlabelled) and
    ``SPLIT_panoptic.json`` (``images``, ``annotations`` with each image's ``file_name`` and
    ``segments_info``, ``categories`` with ``isthing``: things first, ids from 1).  Returns the
    JSON's path."""
    split = scenes.split
    os.makedirs(os.path.join(out_dir, split, "panoptic"), exist_ok=True)
    H, W = scenes.images.shape[-2:]
    images, anns = [], []
    for i in range(len(scenes)):
        name = f"{i:06d}.png"
        ids, segments = _segment_ids(scenes, i)
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 256 ** 2], -1).astype(np.uint8)
        Image.fromarray(rgb).save(os.path.join(out_dir, split, "panoptic", name))
        images.append({"id": i + 1, "file_name": f"{split}/images/{name}", "width": W, "height": H})
        anns.append({"image_id": i + 1, "file_name": f"{split}/panoptic/{name}", "segments_info": segments})
    cats = ([{"id": c + 1, "name": n, "supercategory": "thing", "isthing": 1} for c, n in enumerate(scenes.categories)]
            + [{"id": len(scenes.categories) + s + 1, "name": n, "supercategory": "stuff", "isthing": 0}
               for s, n in enumerate(scenes.stuff_categories)])
    path = os.path.join(out_dir, f"{split}_panoptic.json")
    atomic_write_text(path, json.dumps({"info": {"description": f"vislab scenes with stuff, split {split}"},
                                        "images": images, "annotations": anns, "categories": cats}))
    return path


def _read_panoptic(out_dir: str, split: str, categories: list[str], shape: tuple[int, int, int]
                   ) -> tuple[Tensor, list[str]]:
    """The stuff maps ``(N, H, W)`` and stuff class names of a split's panoptic files."""
    path = os.path.join(out_dir, f"{split}_panoptic.json")
    with open(path) as f:
        pan = json.load(f)
    stuff_names = [c["name"] for c in sorted(pan["categories"], key=lambda c: c["id"]) if not c["isthing"]]
    k = len(categories)
    maps = np.full(shape, NO_STUFF, np.uint8)
    for i, ann in enumerate(sorted(pan["annotations"], key=lambda a: a["image_id"])):
        try:
            rgb = np.asarray(Image.open(os.path.join(out_dir, ann["file_name"])).convert("RGB")).astype(np.int64)
        except OSError as e:
            raise UserError(f"cannot read a panoptic PNG of {path} ({e}); the scene folder is incomplete") from None
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]
        for seg in ann["segments_info"]:
            if seg["category_id"] > k:
                maps[i][ids == seg["id"]] = seg["category_id"] - 1 - k
    return torch.from_numpy(maps), stuff_names


def _config_dict(config: SceneConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.__dict__.items()}


def load_scenes(out_dir: str, split: str) -> SceneSet:
    """Read back a split written by :func:`write_scenes` (with its stuff maps when it has
    panoptic files)."""
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
    stuff_maps, stuff_names = None, None
    if os.path.exists(os.path.join(out_dir, f"{split}_panoptic.json")):
        stuff_maps, stuff_names = _read_panoptic(out_dir, split, ds.categories, (len(maps), *maps[0].shape))
    return SceneSet(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                    torch.from_numpy(np.stack(maps)), targets, ds.categories, split,
                    stuff_maps=stuff_maps, stuff_categories=stuff_names)


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
