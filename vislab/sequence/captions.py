"""Captions of generated scenes (:mod:`vislab.detection.scenes`), written from their annotations.

Every caption of a scene states the same content, every item with what it is, how large and
where, and the captions of a scene differ only in phrasing and in the order of the items.  Each
is then a fair reference for the others, and BLEU against them rewards describing the scene: a
caption written without looking at the image (the commonest item in the commonest place, "there
are two items") matches few of a scene's n-grams.  The content comes only from the labels and boxes:

* nouns from the class names (Fashion-MNIST's ``T-shirt/top`` -> "t-shirt", ``Trouser`` ->
  "pair of trousers", ``Ankle boot`` -> "ankle boot"; digits "zero".."nine"), with plurals;
* sizes from a box's area relative to the image: "small" when the side of the square of that
  area is under ``SMALL_SIDE`` of the image's (``sqrt(w h / (W H))``), "large" over
  ``LARGE_SIDE``, no word in between;
* positions from the box centre, in thirds of the image: "in the top left", "at the top",
  "on the left", "in the centre"..., or in short "at top left", "at top", "at left", "at centre"...

Every item is named with its size word and its position; items of one class at one position with
one size word are counted, "two small sneakers at the top", others listed one by one.  The
phrasings, in four kinds:

1. the list, the items in every order: "a large coat in the centre and a bag on the left";
2. single items counted, "one large coat in the centre and one bag on the left"; the first item
   "with" the others, "a bag on the left with a large coat in the centre";
3. the positions in short, "a large coat at centre and a bag at left", with "a" or "one";
4. "the large coat is in the centre and the bag is on the left" (when each item or counted group
   is all of its class: "the bag" means the scene has one bag); the positions first, "on the left
   a bag and in the centre a large coat"; "there is a bag on the left and a large coat in the
   centre".

A scene takes its captions from the first kinds while they give enough distinct ones: three items
make six lists, a single item needs all four kinds.  The later kinds put words common to every
image side by side ("there is a large", "is in the centre") in n-grams that name no item, which a
caption written blind would match; kept for scenes that need them, they stay rare.

A caption has at most ``MAX_TOKENS`` tokens.  A scene's content is the fullest whose list fits,
the same in all its captions (a phrasing that runs over is left out for that scene); when the
list does not fit, in this order: the size words go; the positions take their short forms; the
single items of one class are counted with all their positions, "two pairs of trousers at top left
and at bottom".  Any scene of one to three Fashion-MNIST items or digits fits so.  A scene that
still does not (more than three items, long class names) is summarised: every class counted, "two
sneakers and a bag", with the positions of at most ``MAX_PLACED`` classes whose items share one
position (the classes of the largest items first, as many as fit, size words where they fit),
after them the classes without one; at last, if not even the counts fit, only the number of
items ("nine items").

The items' tints are not in the annotations (scenes draw them at random, light and unsaturated),
so captions name no colour.  Captions are lowercase words separated by single spaces, without
punctuation (tokens are ``caption.split()``), over a vocabulary of under 100 words for
Fashion-MNIST.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vislab.errors import UserError
from vislab.io import atomic_write_text

__all__ = ["LARGE_SIDE", "MAX_TOKENS", "SMALL_SIDE", "caption_analogies", "caption_word_groups", "load_captions", "noun_forms", "scene_captions",
           "write_captions"]

SMALL_SIDE = 0.2        # about the 17th percentile of Fashion-MNIST scene boxes (128 px, scale 1-2.5)
LARGE_SIDE = 0.35       # about the 75th
MAX_TOKENS = 20
MAX_PLACED = 3          # classes given a position in the summary of a scene too long to list
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
# (row, column) thirds of the image -> phrase, and its short form for captions that need the room
_POSITIONS = {
    ("top", "left"): "in the top left", ("top", "centre"): "at the top",
    ("top", "right"): "in the top right", ("middle", "left"): "on the left",
    ("middle", "centre"): "in the centre", ("middle", "right"): "on the right",
    ("bottom", "left"): "in the bottom left", ("bottom", "centre"): "at the bottom",
    ("bottom", "right"): "in the bottom right",
}
_SHORT_POSITIONS = {
    ("top", "left"): "at top left", ("top", "centre"): "at top", ("top", "right"): "at top right",
    ("middle", "left"): "at left", ("middle", "centre"): "at centre", ("middle", "right"): "at right",
    ("bottom", "left"): "at bottom left", ("bottom", "centre"): "at bottom",
    ("bottom", "right"): "at bottom right",
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
    label: int
    size: str                  # "small", "large" or ""
    zone: tuple[str, str]      # (row, column), a key of _POSITIONS
    area: float                # box area, pixels


@dataclass(frozen=True)
class _Group:
    """Items of one class said together: one item, several at one position ("two sneakers at the
    top"), single items at several positions (``zones``, one per item), or, in a summary, the
    class without a position (no ``zones``)."""
    noun: str
    plural: str
    count: int
    size: str
    zones: tuple[tuple[str, str], ...]
    whole: bool                # all the items of its class

    def np(self, definite: bool = False, one: bool = False) -> str:
        """``a small bag`` (``one small bag``), ``two bags``, ``the bag``, ``the two bags``."""
        words = self.noun if self.count == 1 else self.plural
        words = f"{self.size} {words}" if self.size else words
        if self.count > 1 or one:
            words = f"{_number(self.count)} {words}"
        return f"the {words}" if definite else words if self.count > 1 or one else f"{_article(words)} {words}"

    def pp(self, short: bool) -> str:
        return " and ".join((_SHORT_POSITIONS if short else _POSITIONS)[z] for z in self.zones)


@dataclass(frozen=True)
class _Content:
    groups: tuple[_Group, ...]     # placed groups first, the largest item first
    short: bool                    # short position phrases


def _items(target: Mapping, image_size: tuple[int, int], class_names: Sequence[str]) -> list[_Item]:
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
    items = []
    for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):
        area = (x2 - x1) * (y2 - y1)
        side = (area / (H * W)) ** 0.5
        size = "small" if side < SMALL_SIDE else "large" if side > LARGE_SIDE else ""
        u, v = (x1 + x2) / 2 / W, (y1 + y2) / 2 / H
        row = "top" if v < 1 / 3 else "bottom" if v > 2 / 3 else "middle"
        col = "left" if u < 1 / 3 else "right" if u > 2 / 3 else "centre"
        items.append(_Item(label, size, (row, col), area))
    return sorted(items, key=lambda it: -it.area)           # stable: the largest item first


# ---------------------------------------------------------------------------- contents

def _listing(items: list[_Item], names: Sequence[str], sizes: bool, by_class: bool) -> tuple[_Group, ...]:
    """Every item with its position: items of a class at one position with one size word counted
    together; with ``by_class``, the remaining single items of a class too, with their positions."""
    per_class = Counter(it.label for it in items)
    keys: dict[tuple, list[_Item]] = {}
    for it in items:
        keys.setdefault((it.label, it.zone, it.size if sizes else ""), []).append(it)
    groups = [(label, len(members), size, (zone,)) for (label, zone, size), members in keys.items()]
    if by_class:
        singles: dict[int, list[tuple]] = {}
        for g in groups:
            if g[1] == 1 and not g[2]:
                singles.setdefault(g[0], []).append(g)
        merged = []
        for g in groups:
            same = singles.get(g[0], [])
            if len(same) < 2 or g not in same:
                merged.append(g)
            elif g is same[0]:
                merged.append((g[0], len(same), "", tuple(s[3][0] for s in same)))
        groups = merged
    return tuple(_Group(*noun_forms(names[label]), count, size, zones, count == per_class[label])
                 for label, count, size, zones in groups)


def _summary(items: list[_Item], names: Sequence[str], sizes: bool, placed: int) -> tuple[_Group, ...]:
    """Every class counted; the first ``placed`` classes whose items share one position, with it."""
    members: dict[int, list[_Item]] = {}
    for it in items:
        members.setdefault(it.label, []).append(it)
    out, unplaced = [], []
    for label, group in members.items():                       # the class of the largest item first
        size = group[0].size if sizes and len({it.size for it in group}) == 1 else ""
        zones = {it.zone for it in group}
        if len(zones) == 1 and len(out) < placed:
            out.append(_Group(*noun_forms(names[label]), len(group), size, (group[0].zone,), True))
        else:
            unplaced.append(_Group(*noun_forms(names[label]), len(group), size, (), True))
    return tuple(out + unplaced)


def _contents(items: list[_Item], names: Sequence[str]):
    """The contents a scene's captions may state, the fullest first."""
    for sizes, short, by_class in ((True, False, False), (False, False, False), (False, True, False),
                                   (False, True, True)):
        yield _Content(_listing(items, names, sizes, by_class), short)
    for placed in range(MAX_PLACED, -1, -1):
        for sizes, short in ((True, False), (False, False), (False, True)):
            yield _Content(_summary(items, names, sizes, placed), short)


# ---------------------------------------------------------------------------- phrasings
# Each takes the groups in the order to say them and whether the content's positions are short,
# and gives a caption, or None where the phrasing does not apply.

def _be(g: _Group) -> str:
    return "is" if g.count == 1 else "are"


def _chunk(g: _Group, short: bool, one: bool = False) -> str:
    return f"{g.np(one=one)} {g.pp(short)}" if g.zones else g.np(one=one)


def _list(groups: Sequence[_Group], short: bool, one: bool = False) -> str:
    """ "a large coat in the centre and a bag on the left"; a summary's unplaced classes last."""
    return " and ".join(_chunk(g, short, one) for g in groups)


def _ones(groups: Sequence[_Group], short: bool) -> str:
    """ "one large coat in the centre and one bag on the left"."""
    return _list(groups, short, one=True)


def _with(groups: Sequence[_Group], short: bool) -> str | None:
    """ "a bag on the left with a large coat in the centre"."""
    if len(groups) < 2 or not groups[0].zones:
        return None
    return f"{_chunk(groups[0], short)} with {_list(groups[1:], short)}"


def _short(groups: Sequence[_Group], short: bool) -> str | None:
    """ "a large coat at centre and a bag at left" (where the content's positions are not short already)."""
    return None if short else _list(groups, True)


def _ones_short(groups: Sequence[_Group], short: bool) -> str | None:
    return None if short else _list(groups, True, one=True)


def _definite(groups: Sequence[_Group], short: bool) -> str | None:
    """ "the bag is on the left and the two sneakers are at the top" (each group all of its class)."""
    if not all(g.whole and g.zones for g in groups):
        return None
    return " and ".join(f"{g.np(definite=True)} {_be(g)} {g.pp(short)}" for g in groups)


def _front(groups: Sequence[_Group], short: bool) -> str | None:
    """ "on the left a bag and in the centre a large coat" (every group at one position)."""
    if any(len(g.zones) != 1 for g in groups):
        return None
    return " and ".join(f"{g.pp(short)} {g.np()}" for g in groups)


def _there(groups: Sequence[_Group], short: bool) -> str:
    """ "there is a bag on the left and a large coat in the centre"."""
    return f"there {_be(groups[0])} {_list(groups, short)}"


_Style = Callable[[Sequence[_Group], bool], str | None]
# the kinds of the module docstring, taken in turn until a scene has its captions
_KINDS: tuple[tuple[_Style, ...], ...] = ((_list,), (_ones, _with), (_short, _ones_short), (_definite, _front, _there))


def _fits(caption: str | None) -> bool:
    return caption is not None and len(caption.split()) <= MAX_TOKENS


def _orders(content: _Content, rng: np.random.Generator, n: int) -> list[tuple[int, ...]]:
    """Orders to say the groups in, shuffled; placed groups before unplaced ones."""
    m = len(content.groups)
    placed = sum(1 for g in content.groups if g.zones)
    if m <= 4:
        orders = [p for p in itertools.permutations(range(m))
                  if all(content.groups[i].zones for i in p[:placed])]
        return [orders[i] for i in rng.permutation(len(orders))]
    return [tuple(rng.permutation(placed).tolist()) + tuple((placed + rng.permutation(m - placed)).tolist())
            for _ in range(4 * n)]


def scene_captions(target: Mapping, image_size: tuple[int, int], class_names: Sequence[str],
                   rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` captions of one scene from its annotations: ``target['boxes']`` ``(N, 4)`` as
    ``(x1, y1, x2, y2)`` pixels and ``target['labels']`` ``(N,)`` indexing ``class_names``
    (tensors, arrays or lists); ``image_size`` is ``(H, W)``.

    All state the same content (module docstring), the fullest that fits ``MAX_TOKENS``.  The
    kinds of phrasing are taken in turn, the first first; within a kind its phrasings take turns
    in an order drawn from ``rng``, each with an order of the items drawn from ``rng`` too; the
    captions come back in an order drawn from ``rng``.  So they are a function of the annotations
    and the generator's state.  They are distinct while the scene allows; one with too few
    phrasings that fit repeats its captions in turn to make ``n``.
    """
    if n < 1:
        raise ValueError(f"n={n}: ask for at least one caption")
    items = _items(target, image_size, class_names)
    if not items:
        return [_EMPTY[i % len(_EMPTY)] for i in range(n)]
    content = next((c for c in _contents(items, class_names) if _fits(_list(c.groups, c.short))), None)
    if content is None:                                       # not even the classes' counts fit
        total = f"{_number(len(items))} item{'s' if len(items) > 1 else ''}"
        return [("", f"there {'are' if len(items) > 1 else 'is'} ")[i % 2] + total for i in range(n)]
    captions: list[str] = []
    for kind in _KINDS:
        per_style = []
        for k in rng.permutation(len(kind)):
            found: list[str] = []
            for order in _orders(content, rng, n):
                caption = kind[k]([content.groups[i] for i in order], content.short)
                if _fits(caption) and caption not in found and caption not in captions:
                    found.append(caption)
            per_style.append(found)
        for caption in itertools.chain.from_iterable(itertools.zip_longest(*per_style)):  # the styles in turn
            if caption is not None and caption not in captions:
                captions.append(caption)
                if len(captions) == n:
                    break
        if len(captions) == n:
            break
    captions = [captions[i % len(captions)] for i in range(n)]    # _list fits, so never empty
    return [captions[i] for i in rng.permutation(n)]


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


# ------------------------------------------------------------------ the vocabulary, for word2vec
def _head_nouns(class_names: Sequence[str]) -> list[tuple[str, str]]:
    """Each class's noun as one word, singular and plural: the word in which the two forms
    differ ("pair" / "pairs" of trousers, "boot" / "boots" of the ankle boot)."""
    heads = []
    for name in class_names:
        one, many = noun_forms(name)
        diff = [(a, b) for a, b in zip(one.split(), many.split()) if a != b]
        if len(diff) == 1 and len(one.split()) == len(many.split()):
            heads.append(diff[0])
    return heads


def caption_word_groups(class_names: Sequence[str]) -> dict[str, list[str]]:
    """The caption vocabulary's kinds of word: ``position`` (left, right, top, bottom, centre),
    ``size`` (small, large), ``count`` (one, two, three), ``noun`` (one of each class) and
    ``plural`` (several), for checking that word vectors put each word nearest its own kind."""
    heads = _head_nouns(class_names)
    return {"position": ["left", "right", "top", "bottom", "centre"], "size": ["small", "large"],
            "count": ["one", "two", "three"], "noun": [a for a, _ in heads], "plural": [b for _, b in heads]}


def caption_analogies(class_names: Sequence[str]) -> dict[str, list[tuple[str, str, str, str]]]:
    """Analogy questions ``a : b :: c : d`` the captions can answer, by kind: ``opposite``
    positions (left : right :: top : bottom, every direction: 8 questions) and ``plural`` (bag :
    bags :: coat : coats, every ordered pair of classes with a one-word noun)."""
    opposites = [("left", "right"), ("top", "bottom")]
    pos = [(a, b, c, d) for (p, q) in itertools.permutations(opposites, 2)
           for a, b in (p, p[::-1]) for c, d in (q, q[::-1])]
    heads = _head_nouns(class_names)
    plural = [(a, b, c, d) for (a, b), (c, d) in itertools.permutations(heads, 2)]
    return {"opposite": pos, "plural": plural}
