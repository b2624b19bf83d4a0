"""Captions of generated scenes (:mod:`vislab.detection.scenes`), written from their annotations.

Each caption is a true statement about *what is where*, derived only from the labels and boxes:

* nouns from the class names (Fashion-MNIST's ``T-shirt/top`` -> "t-shirt", ``Trouser`` ->
  "pair of trousers", ``Ankle boot`` -> "ankle boot"; digits "zero".."nine"), with plurals;
* sizes from a box's area relative to the image: "small" when the side of the square of that
  area is under ``SMALL_SIDE`` of the image's (``sqrt(w h / (W H))``), "large" over
  ``LARGE_SIDE``, no word in between;
* positions from the box centre, in thirds of the image: "in the top left corner", "at the top",
  "on the left", "in the centre"...;
* relations between two items of different classes: A is "to the left of" B when A's centre is
  left of B's box and B's centre right of A's (the same for "above" and "below"); A is "larger
  than" B when A's box area is at least ``LARGER_RATIO`` times B's;
* counts: "two sneakers and a bag" lists every item of the scene; "there are four items".

"the bag" means the scene has one bag, "a bag" at least one.  The items' tints are not in the
annotations (scenes draw them at random, light and unsaturated), so captions name no colour.

Captions are lowercase words separated by single spaces, without punctuation (tokens are
``caption.split()``), at most ``MAX_TOKENS`` tokens, over a vocabulary of under 100 words for
Fashion-MNIST, so that BLEU of a captioning model against them means something.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vislab.errors import UserError
from vislab.io import atomic_write_text

__all__ = ["LARGER_RATIO", "LARGE_SIDE", "MAX_TOKENS", "SMALL_SIDE", "load_captions", "noun_forms",
           "scene_captions", "write_captions"]

SMALL_SIDE = 0.2        # about the 17th percentile of Fashion-MNIST scene boxes (128 px, scale 1-2.5)
LARGE_SIDE = 0.35       # about the 75th
LARGER_RATIO = 2.0      # box areas, for "larger than" / "smaller than"
MAX_TOKENS = 20
CAPTIONS_FILE = "captions.json"

_FASHION_NOUNS = {
    "T-shirt/top": ("t-shirt", "t-shirts"), "Trouser": ("pair of trousers", "pairs of trousers"),
    "Pullover": ("pullover", "pullovers"), "Dress": ("dress", "dresses"), "Coat": ("coat", "coats"),
    "Sandal": ("sandal", "sandals"), "Shirt": ("shirt", "shirts"), "Sneaker": ("sneaker", "sneakers"),
    "Bag": ("bag", "bags"), "Ankle boot": ("ankle boot", "ankle boots"),
}
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
            "eleven", "twelve")
_DIGIT_PLURALS = ("zeros", "ones", "twos", "threes", "fours", "fives", "sixes", "sevens", "eights", "nines")
# (row, column) thirds of the image -> phrase
_POSITIONS = {
    ("top", "left"): "in the top left corner", ("top", "centre"): "at the top",
    ("top", "right"): "in the top right corner", ("middle", "left"): "on the left",
    ("middle", "centre"): "in the centre", ("middle", "right"): "on the right",
    ("bottom", "left"): "in the bottom left corner", ("bottom", "centre"): "at the bottom",
    ("bottom", "right"): "in the bottom right corner",
}
_EMPTY = ("an empty scene", "there are no items", "a picture of an empty background",
          "nothing but the background", "no items in the picture")


def noun_forms(class_name: str) -> tuple[str, str]:
    """A class name as a noun, ``(singular, plural)``: Fashion-MNIST's names and digits by
    table, any other name lowercased with an English plural ``-s`` or ``-es``."""
    if class_name in _FASHION_NOUNS:
        return _FASHION_NOUNS[class_name]
    if class_name.isdigit() and len(class_name) == 1:
        return _NUMBERS[int(class_name)], _DIGIT_PLURALS[int(class_name)]
    word = class_name.lower()
    return word, word + ("es" if word.endswith(("s", "x", "z", "ch", "sh")) else "s")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" and not word.startswith(("one", "uni", "eu")) else "a"


def _number(n: int) -> str:
    return _NUMBERS[n] if n < len(_NUMBERS) else str(n)


@dataclass(frozen=True)
class _Item:
    noun: str
    size: str                  # "small", "large" or ""
    position: str
    box: tuple[float, float, float, float]
    area: float                # box area, pixels
    unique: bool               # the only item of its class in the scene

    def phrase(self, definite: bool = False, size: bool = False) -> str:
        """``the bag`` (its class is unique), ``a small bag``..."""
        words = f"{self.size} {self.noun}" if size and self.size else self.noun
        return f"the {words}" if definite and self.unique else f"{_article(words)} {words}"


@dataclass(frozen=True)
class _Scene:
    items: list[_Item]
    counts: list[tuple[int, str, str]]      # (count, singular, plural), most frequent first


def _scene(target: Mapping, image_size: tuple[int, int], class_names: Sequence[str]) -> _Scene:
    boxes = np.asarray(target["boxes"], dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(target["labels"], dtype=np.int64).reshape(-1)
    H, W = image_size
    if H <= 0 or W <= 0:
        raise ValueError(f"image_size {tuple(image_size)}: need a positive (height, width)")
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels; give one label per box")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f"labels {sorted(set(labels.tolist()))} do not all index the {len(class_names)} class names")
    if len(boxes) and ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
        raise ValueError("a box has no area; boxes are (x1, y1, x2, y2) with x2 > x1 and y2 > y1")
    per_class = Counter(labels.tolist())
    items = []
    for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
        area = (x2 - x1) * (y2 - y1)
        side = (area / (H * W)) ** 0.5
        size = "small" if side < SMALL_SIDE else "large" if side > LARGE_SIDE else ""
        u, v = (x1 + x2) / 2 / W, (y1 + y2) / 2 / H
        row = "top" if v < 1 / 3 else "bottom" if v > 2 / 3 else "middle"
        col = "left" if u < 1 / 3 else "right" if u > 2 / 3 else "centre"
        items.append(_Item(noun_forms(class_names[label])[0], size, _POSITIONS[row, col],
                           (x1, y1, x2, y2), area, per_class[label] == 1))
    counts = [(c, *noun_forms(class_names[label])) for label, c in per_class.most_common()]
    return _Scene(items, counts)


def _left_of(a: _Item, b: _Item) -> bool:
    return (a.box[0] + a.box[2]) / 2 <= b.box[0] and a.box[2] <= (b.box[0] + b.box[2]) / 2


def _above(a: _Item, b: _Item) -> bool:
    return (a.box[1] + a.box[3]) / 2 <= b.box[1] and a.box[3] <= (b.box[1] + b.box[3]) / 2


def _lead(rng: np.random.Generator, plural: bool) -> str:
    """An optional opening: nothing, "there is/are" or "a picture of"."""
    return ("", "there are " if plural else "there is ", "a picture of ")[int(rng.integers(3))]


# ---------------------------------------------------------------------------- templates
# Each takes the scene and the generator and gives a caption, or None where it has nothing true to say.

def _inventory(scene: _Scene, rng: np.random.Generator) -> str:
    """Every item, counted: "there are two sneakers and a bag"."""
    parts = [f"{_article(sg)} {sg}" if c == 1 else f"{_number(c)} {pl}" for c, sg, pl in scene.counts]
    return _lead(rng, scene.counts[0][0] > 1) + " and ".join(parts)


def _total(scene: _Scene, rng: np.random.Generator) -> str:
    n = len(scene.items)
    return _lead(rng, n > 1) + f"{_number(n)} item{'s' if n > 1 else ''}"


def _positions(scene: _Scene, rng: np.random.Generator) -> str:
    """One to three items with their sizes and places: "a large coat in the centre and a bag on the left"."""
    k = int(rng.integers(1, min(3, len(scene.items)) + 1))
    chosen = sorted(rng.choice(len(scene.items), k, replace=False).tolist(), key=lambda i: -scene.items[i].area)
    items = [scene.items[i] for i in chosen]
    if k == 1 and rng.random() < 0.5:
        return f"{items[0].phrase(definite=True, size=True)} is {items[0].position}"
    return _lead(rng, False) + " and ".join(f"{it.phrase(size=True)} {it.position}" for it in items)


def _pairs(scene: _Scene, holds: Callable[[_Item, _Item], bool]) -> list[tuple[_Item, _Item]]:
    return [(a, b) for a in scene.items for b in scene.items if a.noun != b.noun and holds(a, b)]


def _relation(scene: _Scene, rng: np.random.Generator) -> str | None:
    """ "the bag is to the left of the coat", or "the coat is below a sneaker"."""
    found = [(a, b, "to the left of", "to the right of") for a, b in _pairs(scene, _left_of)]
    found += [(a, b, "above", "below") for a, b in _pairs(scene, _above)]
    if not found:
        return None
    a, b, forward, backward = found[int(rng.integers(len(found)))]
    if rng.random() < 0.5:
        a, b, forward = b, a, backward
    return f"{a.phrase(definite=True)} is {forward} {b.phrase(definite=True)}"


def _comparison(scene: _Scene, rng: np.random.Generator) -> str | None:
    """ "the coat is larger than the bag"."""
    found = _pairs(scene, lambda a, b: a.area >= LARGER_RATIO * b.area)
    if not found:
        return None
    a, b = found[int(rng.integers(len(found)))]
    word = "larger"
    if rng.random() < 0.5:
        a, b, word = b, a, "smaller"
    return f"{a.phrase(definite=True)} is {word} than {b.phrase(definite=True)}"


_TEMPLATES = (_inventory, _total, _positions, _relation, _comparison)


def scene_captions(target: Mapping, image_size: tuple[int, int], class_names: Sequence[str],
                   rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` captions of one scene from its annotations: ``target['boxes']`` ``(N, 4)`` as
    ``(x1, y1, x2, y2)`` pixels and ``target['labels']`` ``(N,)`` indexing ``class_names``
    (tensors, arrays or lists); ``image_size`` is ``(H, W)``.

    The templates take turns in an order drawn from ``rng`` (an inventory with counts, the
    number of items, items with sizes and positions, a relation, a size comparison), each
    phrasing drawn from ``rng`` too, so the captions are a function of the annotations and the
    generator's state.  They are distinct while the scene allows; a scene with too little to
    say (one item, nothing) repeats its captions in turn to make ``n``.
    """
    if n < 1:
        raise ValueError(f"n={n}: ask for at least one caption")
    scene = _scene(target, image_size, class_names)
    if not scene.items:
        return [_EMPTY[i % len(_EMPTY)] for i in range(n)]
    order = [_TEMPLATES[i] for i in rng.permutation(len(_TEMPLATES))]
    captions: list[str] = []
    for attempt in range(20 * n):
        caption = order[attempt % len(order)](scene, rng)
        if caption is not None and caption not in captions and len(caption.split()) <= MAX_TOKENS:
            captions.append(caption)
            if len(captions) == n:
                break
    return [captions[i % len(captions)] for i in range(n)]     # _total always fits, so never empty


# ---------------------------------------------------------------------------- on disk

def write_captions(out_dir: str, split: str, n: int = 5, seed: int = 0) -> str:
    """Caption a split written by :func:`vislab.detection.scenes.write_scenes`, from its COCO
    file ``out_dir/SPLIT.json``: ``n`` captions per image into ``out_dir/SPLIT/captions.json``
    (written atomically), a mapping of each image's COCO ``file_name`` (``SPLIT/images/NNNNNN.png``,
    relative to ``out_dir``) to its captions, in the file's image order.  Image ``i``'s captions
    depend only on ``(seed, split, i, n)``.  Returns the path written."""
    from vislab.detection.formats import read_coco
    from vislab.detection.scenes import SPLITS
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if n < 1:
        raise UserError(f"captions per image must be >= 1, got {n}")
    ds = read_coco(os.path.join(out_dir, f"{split}.json"))
    captions = {}
    for i, rec in enumerate(ds.images):
        rng = np.random.default_rng([seed, SPLITS.index(split), i, 0xCA])     # not the scene's stream
        captions[rec.file_name] = scene_captions({"boxes": rec.boxes, "labels": rec.labels},
                                                 (rec.height, rec.width), ds.categories, rng, n)
    path = os.path.join(out_dir, split, CAPTIONS_FILE)
    atomic_write_text(path, json.dumps(captions, indent=1))
    return path


def load_captions(out_dir: str, split: str) -> dict[str, list[str]]:
    """Read back ``out_dir/SPLIT/captions.json``: image ``file_name`` -> its captions."""
    path = os.path.join(out_dir, split, CAPTIONS_FILE)
    try:
        with open(path) as f:
            captions = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; write the scenes with `vislab data make-scenes OUT "
                        "--captions`") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); write the captions again") from None
    if not isinstance(captions, dict) or not all(
            isinstance(v, list) and v and all(isinstance(c, str) for c in v) for v in captions.values()):
        raise UserError(f"{path} is not a mapping of image file names to lists of captions")
    return captions
