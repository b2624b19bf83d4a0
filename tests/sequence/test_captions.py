"""vislab.sequence.captions: on hand-made scenes every caption the generator can write is listed by
hand; on generated and random scenes a parser written here reads each caption back into claims
(counts, sizes, positions, relations) and checks them against the boxes; and
``vislab data make-scenes --captions`` writes them for every split."""

import itertools
import json
import re

import numpy as np
import pytest

from vislab.detection.scenes import SceneConfig, load_scenes, make_scenes
from vislab.errors import UserError
from vislab.sequence.captions import (
    LARGE_SIDE,
    LARGER_RATIO,
    MAX_TOKENS,
    SMALL_SIDE,
    load_captions,
    noun_forms,
    scene_captions,
)

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
BAG, COAT, SNEAKER = 8, 4, 7
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
           "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}
FASHION_WORDS = {
    "t-shirt", "t-shirts", "pair", "pairs", "of", "trousers", "pullover", "pullovers", "dress", "dresses",
    "coat", "coats", "sandal", "sandals", "shirt", "shirts", "sneaker", "sneakers", "bag", "bags", "ankle",
    "boot", "boots", *NUMBERS, "the", "is", "are", "there", "picture", "and", "item", "items", "small",
    "large", "larger", "smaller", "than", "in", "at", "on", "to", "top", "bottom", "left", "right",
    "centre", "corner", "above", "below", "empty", "scene", "no", "nothing", "but", "background",
}
POSITIONS = {  # (row, column) in thirds
    "in the top left corner": (0, 0), "at the top": (0, 1), "in the top right corner": (0, 2),
    "on the left": (1, 0), "in the centre": (1, 1), "on the right": (1, 2),
    "in the bottom left corner": (2, 0), "at the bottom": (2, 1), "in the bottom right corner": (2, 2),
}
EMPTY = {"an empty scene", "there are no items", "a picture of an empty background",
         "nothing but the background", "no items in the picture"}


def all_captions(target, size, names=FASHION, seeds=range(60), n=5):
    out = set()
    for s in seeds:
        out.update(scene_captions(target, size, names, np.random.default_rng(s), n))
    return out


# ----------------------------------------------------------------------------- by hand

def test_every_caption_of_a_bag_and_a_coat_listed_by_hand():
    # 120x120, thirds at 40 and 80.  Bag: centre (20, 60) "on the left", side sqrt(900/14400) = 0.25
    # (no size word).  Coat: centre (92.5, 62.5) "on the right", side 0.375 (large), box area
    # 2025 >= 2 * 900 (larger).  The bag's centre 20 <= the coat's left edge 70 and its right edge
    # 35 <= the coat's centre 92.5: left of.  Neither is above the other.
    target = {"boxes": [[5, 45, 35, 75], [70, 40, 115, 85]], "labels": [BAG, COAT]}
    leads = ("", "there is ", "a picture of ")
    expected = {
        *(lead + "a bag and a coat" for lead in leads),
        "two items", "there are two items", "a picture of two items",
        "the bag is on the left", "the large coat is on the right",
        *(lead + "a bag on the left" for lead in leads),
        *(lead + "a large coat on the right" for lead in leads),
        *(lead + "a large coat on the right and a bag on the left" for lead in leads),
        "the bag is to the left of the coat", "the coat is to the right of the bag",
        "the coat is larger than the bag", "the bag is smaller than the coat",
    }
    assert all_captions(target, (120, 120)) == expected


def test_counts_relations_and_sizes_of_two_sneakers_and_a_bag():
    # Sneakers centred (20, 15) and (101, 18): top left and top right corners, sides 0.17 and
    # 0.18 (small).  The bag centred (60, 90): at the bottom, side 0.33 (no word), 4x a sneaker's box.
    target = {"boxes": [[10, 5, 30, 25], [90, 8, 112, 28], [40, 70, 80, 110]], "labels": [SNEAKER, SNEAKER, BAG]}
    got = all_captions(target, (120, 120))
    must = {"two sneakers and a bag", "there are two sneakers and a bag", "three items", "the bag is at the bottom", "a sneaker is above the bag", "the bag is below a sneaker",
            "a sneaker is to the left of the bag", "the bag is to the left of a sneaker",
            "the bag is to the right of a sneaker", "the bag is larger than a sneaker",
            "a sneaker is smaller than the bag"}
    assert must <= got
    for place in ("a small sneaker in the top left corner", "a small sneaker in the top right corner"):
        assert any(place in c for c in got), place
    # the bag is not above anything, a sneaker is not "the sneaker", nor larger than the bag
    assert not any(("the sneaker" in c or "the bag is above" in c or "sneaker is larger" in c
                    or "two bags" in c or "large" in c.replace("larger", "")) for c in got)


def test_an_empty_scene_and_a_lone_item():
    empty = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}
    assert set(scene_captions(empty, (64, 64), FASHION, np.random.default_rng(0))) == EMPTY
    lone = {"boxes": [[0, 0, 60, 60]], "labels": [9]}                 # top left corner, large
    got = all_captions(lone, (100, 100))
    assert "the large ankle boot is in the top left corner" in got and "an ankle boot" in got
    assert "one item" in got and "there is one item" in got
    caps = scene_captions(lone, (100, 100), FASHION, np.random.default_rng(3), n=5)
    assert len(set(caps)) == 5                                         # enough to say about one item


def test_nouns_and_articles():
    assert noun_forms("T-shirt/top") == ("t-shirt", "t-shirts")
    assert noun_forms("Trouser") == ("pair of trousers", "pairs of trousers")
    assert noun_forms("Ankle boot") == ("ankle boot", "ankle boots")
    assert noun_forms("8") == ("eight", "eights") and noun_forms("box") == ("box", "boxes")
    digits = [str(i) for i in range(10)]
    got = all_captions({"boxes": [[0, 0, 10, 10], [20, 20, 30, 30], [40, 0, 50, 10]], "labels": [8, 8, 1]},
                       (50, 50), digits)
    assert "two eights and a one" in got and "an eight is to the left of the one" in got


def test_bad_input_is_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="labels"):
        scene_captions({"boxes": [[0, 0, 5, 5]], "labels": [10]}, (32, 32), FASHION, rng)
    with pytest.raises(ValueError, match="1 boxes but 2 labels"):
        scene_captions({"boxes": [[0, 0, 5, 5]], "labels": [1, 2]}, (32, 32), FASHION, rng)
    with pytest.raises(ValueError, match="no area"):
        scene_captions({"boxes": [[5, 0, 5, 5]], "labels": [1]}, (32, 32), FASHION, rng)
    with pytest.raises(ValueError, match="at least one"):
        scene_captions({"boxes": [[0, 0, 5, 5]], "labels": [1]}, (32, 32), FASHION, rng, n=0)


# ----------------------------------------------------------------------------- a parser, for any scene

def _zone(box, H, W):
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return min(int(3 * cy / H), 2), min(int(3 * cx / W), 2)


def _size(box, H, W):
    side = np.sqrt((box[2] - box[0]) * (box[3] - box[1]) / (H * W))
    return "small" if side < SMALL_SIDE else "large" if side > LARGE_SIDE else ""


def _area(b):
    return (b[2] - b[0]) * (b[3] - b[1])


RELATIONS = {
    "to the left of": lambda a, b: (a[0] + a[2]) / 2 <= b[0] and a[2] <= (b[0] + b[2]) / 2,
    "to the right of": lambda a, b: (b[0] + b[2]) / 2 <= a[0] and b[2] <= (a[0] + a[2]) / 2,
    "above": lambda a, b: (a[1] + a[3]) / 2 <= b[1] and a[3] <= (b[1] + b[3]) / 2,
    "below": lambda a, b: (b[1] + b[3]) / 2 <= a[1] and b[3] <= (a[1] + a[3]) / 2,
    "larger than": lambda a, b: _area(a) >= LARGER_RATIO * _area(b),
    "smaller than": lambda a, b: _area(b) >= LARGER_RATIO * _area(a),
}


def check_caption(caption, boxes, labels, H, W, names):
    """Parse one caption into claims and assert each against the annotations."""
    sg = {noun_forms(n)[0]: k for k, n in enumerate(names)}
    pl = {noun_forms(n)[1]: k for k, n in enumerate(names)}
    nouns = "|".join(re.escape(w) for w in sorted([*sg, *pl], key=len, reverse=True))
    pos = "|".join(POSITIONS)
    words = caption.split()
    assert caption == caption.lower() and " ".join(words) == caption and len(words) <= MAX_TOKENS, caption
    assert re.fullmatch(r"[a-z\- ]+", caption), caption
    for art, word in itertools.pairwise(words):                       # a/an agreement
        if art in ("a", "an"):
            assert (art == "an") == (word[0] in "aeiou" and word != "one"), caption
    labels = list(labels)
    counts = {k: labels.count(k) for k in set(labels)}

    def label_of(noun, det):
        k = sg[noun] if noun in sg else pl[noun]
        assert (noun in pl) == (NUMBERS.get(det, 1) > 1), caption      # number agreement
        if det == "the":
            assert counts.get(k) == 1, caption                        # "the X": the only X
        return k

    if not labels:
        assert caption in EMPTY, caption
        return "empty"
    assert caption not in EMPTY, caption
    if m := re.fullmatch(rf"(the|an?) (?:(small|large) )?({nouns}) is ({pos})", caption):
        parts = [(m[1], m[2], m[3], m[4])]
    elif m := re.fullmatch(rf"(the|an?) ({nouns}) is ({'|'.join(RELATIONS)}) (the|an?) ({nouns})", caption):
        a, b = label_of(m[2], m[1]), label_of(m[5], m[4])
        assert a != b and any(RELATIONS[m[3]](boxes[i], boxes[j]) for i in range(len(labels))
                              for j in range(len(labels)) if labels[i] == a and labels[j] == b), caption
        return "relation"
    else:
        lead = re.match(r"(there is |there are |a picture of )?", caption)[0]
        body = caption[len(lead):]
        if m := re.fullmatch(r"(\w+) items?", body):
            assert NUMBERS[m[1]] == len(labels), caption
            assert lead.strip() != "there is" or len(labels) == 1, caption
            return "total"
        chunks = body.split(" and ")
        counted = [re.fullmatch(rf"(\w+) ({nouns})", c) for c in chunks]
        if all(counted):                                               # every class, counted
            got = {label_of(m[2], m[1]): NUMBERS[m[1]] for m in counted}
            assert got == counts and len(got) == len(chunks), caption
            assert lead.strip() != "there is" or NUMBERS[counted[0][1]] == 1, caption
            assert lead.strip() != "there are" or NUMBERS[counted[0][1]] > 1, caption
            return "inventory"
        parts = [re.fullmatch(rf"(an?) (?:(small|large) )?({nouns}) ({pos})", c) for c in chunks]
        assert all(parts) and lead.strip() != "there are", caption
        parts = [(m[1], m[2], m[3], m[4]) for m in parts]
    claims = [(label_of(noun, det), size or None, POSITIONS[p]) for det, size, noun, p in parts]

    def fits(claim, i):
        k, size, zone = claim
        return labels[i] == k and _zone(boxes[i], H, W) == zone and (size is None or _size(boxes[i], H, W) == size)
    assert any(all(fits(c, i) for c, i in zip(claims, perm))
               for perm in itertools.permutations(range(len(labels)), len(claims))), caption
    return "positions"


@pytest.fixture(scope="module")
def fashion_scenes():
    return make_scenes("test", 150, SceneConfig(objects=(0, 6)), seed=1)


def test_captions_of_generated_scenes_are_true_short_and_varied(fashion_scenes):
    kinds, vocab = set(), set()
    for i, t in enumerate(fashion_scenes.targets):
        caps = scene_captions(t, (128, 128), FASHION, np.random.default_rng(i), n=5)
        assert len(caps) == 5
        if len(t["labels"]) >= 2:
            assert len(set(caps)) == 5
        for c in caps:
            kinds.add(check_caption(c, t["boxes"].tolist(), t["labels"].tolist(), 128, 128, FASHION))
            vocab.update(c.split())
    assert kinds == {"empty", "relation", "total", "inventory", "positions"}
    assert vocab <= FASHION_WORDS and len(FASHION_WORDS) < 100


def test_captions_of_random_boxes_are_true():
    rng = np.random.default_rng(0)
    digits = [str(i) for i in range(10)]
    for trial in range(300):
        H, W = int(rng.integers(20, 200)), int(rng.integers(20, 200))
        n = int(rng.integers(0, 8))
        xy = rng.uniform(0, 1, (n, 2, 2)) * [W, H]
        boxes = np.concatenate([xy.min(1), xy.max(1) + 1], 1).round(1)
        names = FASHION if trial % 2 else digits
        labels = rng.integers(0, 3 if trial % 3 else 10, n)
        for c in scene_captions({"boxes": boxes, "labels": labels}, (H, W), names, np.random.default_rng(trial), 6):
            check_caption(c, boxes.tolist(), labels.tolist(), H, W, names)


def test_deterministic_per_generator_state(fashion_scenes):
    t = fashion_scenes.targets
    first = [scene_captions(x, (128, 128), FASHION, np.random.default_rng([7, i])) for i, x in enumerate(t[:20])]
    again = [scene_captions(x, (128, 128), FASHION, np.random.default_rng([7, i])) for i, x in enumerate(t[:20])]
    other = [scene_captions(x, (128, 128), FASHION, np.random.default_rng([8, i])) for i, x in enumerate(t[:20])]
    assert first == again and first != other
    tensors = scene_captions(t[3], (128, 128), FASHION, np.random.default_rng(1))
    lists = scene_captions({k: v.tolist() for k, v in t[3].items()}, (128, 128), FASHION, np.random.default_rng(1))
    assert tensors == lists


# ----------------------------------------------------------------------------- make-scenes --captions

def test_make_scenes_writes_captions_for_every_split(tmp_path, run_cli):
    args = ["data", "make-scenes", "--train", "4", "--val", "2", "--test", "2", "--size", "64", "--seed", "3",
            "--captions", "--captions-per-image", "3"]
    code, out, err = run_cli(*args[:2], tmp_path / "a", *args[2:])
    assert code == 0, err
    assert "test : 3 captions per scene" in out
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        caps = load_captions(str(tmp_path / "a"), split)
        coco = json.loads((tmp_path / "a" / f"{split}.json").read_text())
        assert list(caps) == [im["file_name"] for im in coco["images"]] and len(caps) == count
        scenes = load_scenes(str(tmp_path / "a"), split)
        for (name, c), t in zip(caps.items(), scenes.targets):
            assert len(c) == 3 and (len(set(c)) == 3 or len(t["labels"]) < 2), (name, c)
            for caption in c:
                check_caption(caption, t["boxes"].tolist(), t["labels"].tolist(), 64, 64, FASHION)
    # the same seed, the same captions; without --captions, no captions file
    assert run_cli(*args[:2], tmp_path / "b", *args[2:])[0] == 0
    assert (tmp_path / "a/test/captions.json").read_bytes() == (tmp_path / "b/test/captions.json").read_bytes()
    assert run_cli(*args[:2], tmp_path / "c", *args[2:-3])[0] == 0
    assert not list((tmp_path / "c").rglob("captions.json"))
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["test", "test.json", "train", "train.json",
                                                                   "val", "val.json"]
    with pytest.raises(UserError, match="make-scenes OUT --captions"):
        load_captions(str(tmp_path / "c"), "val")


def test_make_scenes_refuses_zero_captions(tmp_path, run_cli):
    code, _, err = run_cli("data", "make-scenes", tmp_path / "d", "--train", "1", "--val", "0", "--test", "0",
                           "--captions", "--captions-per-image", "0")
    assert code == 2 and "--captions-per-image 0" in err and not (tmp_path / "d").exists()
