"""vislab.sequence.captions: on hand-made scenes the captions are listed by hand; on generated and
random scenes a parser written here reads each caption back into claims (items with counts, sizes
and positions) and checks them against the boxes, and that every caption of a scene states the same
content; a caption that ignores the image scores a low BLEU against the captions of the captioning
recipe's scenes; and ``vislab data make-scenes --captions`` writes them for every split."""

import collections
import itertools
import json
import re

import numpy as np
import pytest

from vislab.detection.scenes import SceneConfig, load_scenes, make_scenes
from vislab.errors import UserError
from vislab.metrics.text import corpus_bleu
from vislab.sequence.captions import (
    LARGE_SIDE,
    MAX_TOKENS,
    SMALL_SIDE,
    load_captions,
    noun_forms,
    scene_captions,
)

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
BAG, COAT, SNEAKER, TROUSER, ANKLE_BOOT, DRESS = 8, 4, 7, 1, 9, 3
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
           "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}
FASHION_WORDS = {
    "t-shirt", "t-shirts", "pair", "pairs", "of", "trousers", "pullover", "pullovers", "dress", "dresses",
    "coat", "coats", "sandal", "sandals", "shirt", "shirts", "sneaker", "sneakers", "bag", "bags", "ankle",
    "boot", "boots", *NUMBERS, "the", "is", "are", "there", "and", "with", "item", "items", "small", "large",
    "in", "at", "on", "top", "bottom", "left", "right", "centre",
    "empty", "scene", "no", "nothing", "but", "background", "picture",               # the empty scene's
}
POSITIONS = {  # (row, column) in thirds
    "in the top left": (0, 0), "at the top": (0, 1), "in the top right": (0, 2),
    "on the left": (1, 0), "in the centre": (1, 1), "on the right": (1, 2),
    "in the bottom left": (2, 0), "at the bottom": (2, 1), "in the bottom right": (2, 2),
}
SHORT = {"at top left": (0, 0), "at top": (0, 1), "at top right": (0, 2), "at left": (1, 0), "at centre": (1, 1),
         "at right": (1, 2), "at bottom left": (2, 0), "at bottom": (2, 1), "at bottom right": (2, 2)}
EMPTY = {"an empty scene", "there are no items", "a picture of an empty background",
         "nothing but the background", "no items in the picture"}
# the captioning recipe's scenes (vislab.tasks.captioning.SCENE_DEFAULTS)
RECIPE = SceneConfig(image_size=(64, 64), objects=(1, 3), scale=(1.0, 2.0), max_truncation=0.2, max_occlusion=0.3)


def all_captions(target, size, names=FASHION, seeds=range(60), n=5):
    out = set()
    for s in seeds:
        out.update(scene_captions(target, size, names, np.random.default_rng(s), n))
    return out


def orders(*chunks, joint=" and "):
    return {joint.join(p) for p in itertools.permutations(chunks)}


# ----------------------------------------------------------------------------- by hand

def test_every_caption_of_a_bag_and_a_coat_listed_by_hand():
    # 120x120, thirds at 40 and 80.  Bag: centre (20, 60) "on the left", side sqrt(900/14400) = 0.25
    # (no size word).  Coat: centre (92.5, 62.5) "on the right", side 0.375 (large).  Two orders of
    # the list, then "one" and "with" in both orders make the five.
    target = {"boxes": [[5, 45, 35, 75], [70, 40, 115, 85]], "labels": [BAG, COAT]}
    lists = orders("a bag on the left", "a large coat on the right")
    expected = {*lists, *orders("one bag on the left", "one large coat on the right"),
                "a bag on the left with a large coat on the right", "a large coat on the right with a bag on the left"}
    assert all_captions(target, (120, 120)) == expected
    for seed in range(10):
        caps = scene_captions(target, (120, 120), FASHION, np.random.default_rng(seed))
        assert len(set(caps)) == 5 and lists <= set(caps)


def test_three_items_are_listed_in_every_order_and_sizes_go_first_when_too_long():
    # Sneakers centred (20, 15) and (101, 18): top left and top right, sides 0.17 and 0.18 (small).
    # The bag centred (60, 90): at the bottom, side 0.33 (no word).  With the size words the list
    # is 21 tokens, so they go: 19.
    target = {"boxes": [[10, 5, 30, 25], [90, 8, 112, 28], [40, 70, 80, 110]], "labels": [SNEAKER, SNEAKER, BAG]}
    expected = orders("a sneaker in the top left", "a sneaker in the top right", "a bag at the bottom")
    assert all_captions(target, (120, 120)) == expected
    assert len(set(scene_captions(target, (120, 120), FASHION, np.random.default_rng(0)))) == 5
    # both sneakers at the top left: counted, and the sizes fit
    target["boxes"][1] = [12, 8, 34, 28]
    assert all_captions(target, (120, 120), seeds=range(5)) >= orders("two small sneakers in the top left",
                                                                     "a bag at the bottom")


def test_long_scenes_shorten_positions_count_classes_then_summarise():
    H = W = 120
    # two small pairs of trousers and an ankle boot in three corners: 26 tokens listed in full,
    # 23 with short positions, 18 with the pairs counted at their two positions
    target = {"boxes": [[0, 0, 10, 10], [100, 0, 110, 10], [0, 100, 10, 110]], "labels": [TROUSER, TROUSER, ANKLE_BOOT]}
    got = all_captions(target, (H, W))
    assert "two pairs of trousers at top left and at top right and an ankle boot at bottom left" in got
    assert "an ankle boot at bottom left with two pairs of trousers at top left and at top right" in got
    assert all("at top left and at top right" in c and "small" not in c for c in got)
    # and a dress in the centre and a coat in the bottom right: the classes counted, the first
    # two with their positions (the dress has the largest box)
    target = {"boxes": target["boxes"] + [[50, 50, 70, 70], [100, 100, 119, 119]],
              "labels": target["labels"] + [DRESS, COAT]}
    got = all_captions(target, (H, W), seeds=range(10))
    assert "a dress at centre and a coat at bottom right and two pairs of trousers and an ankle boot" in got
    assert all(c.count(" at ") == 2 for c in got)
    # nine digits of nine classes: not even the counts fit
    digits = [str(i) for i in range(10)]
    nine = {"boxes": [[i, i, i + 5, i + 5] for i in range(9)], "labels": list(range(9))}
    assert all_captions(nine, (H, W), digits, seeds=range(3)) == {"nine items", "there are nine items"}


def test_an_empty_scene_and_a_lone_item():
    empty = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}
    assert set(scene_captions(empty, (64, 64), FASHION, np.random.default_rng(0))) == EMPTY
    lone = {"boxes": [[0, 0, 60, 60]], "labels": [ANKLE_BOOT]}                 # top left, large
    boot = "large ankle boot"
    assert all_captions(lone, (100, 100)) == {
        f"a {boot} in the top left", f"one {boot} in the top left", f"a {boot} at top left",
        f"one {boot} at top left", f"the {boot} is in the top left", f"in the top left a {boot}",
        f"there is a {boot} in the top left"}
    caps = scene_captions(lone, (100, 100), FASHION, np.random.default_rng(3), n=5)
    assert len(set(caps)) == 5                                         # enough to say about one item


def test_nouns_and_articles():
    assert noun_forms("T-shirt/top") == ("t-shirt", "t-shirts")
    assert noun_forms("Trouser") == ("pair of trousers", "pairs of trousers")
    assert noun_forms("Ankle boot") == ("ankle boot", "ankle boots")
    assert noun_forms("8") == ("eight", "eights") and noun_forms("box") == ("box", "boxes")
    digits = [str(i) for i in range(10)]
    target = {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30], [40, 0, 50, 10]], "labels": [8, 8, 1]}
    assert all_captions(target, (50, 50), digits) == orders("an eight in the top left", "an eight in the centre",
                                                            "a one in the top right")
    target["boxes"][1] = [2, 2, 12, 12]
    assert "two eights in the top left and a one in the top right" in all_captions(target, (50, 50), digits)


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


def _matching(items, slots, fits):
    """Whether every item can be given a slot of its own that ``fits`` it (len(items) == len(slots))."""
    owner = {}

    def place(i, seen):
        for s in range(len(slots)):
            if s not in seen and fits(items[i], slots[s]):
                seen.add(s)
                if s not in owner or place(owner[s], seen):
                    owner[s] = i
                    return True
        return False
    return len(items) == len(slots) and all(place(i, set()) for i in range(len(items)))


def check_caption(caption, boxes, labels, H, W, names):
    """Parse one caption into claims and assert each against the annotations: every item of the
    scene is stated once, with its class, and its size word and position where the caption gives
    them.  Returns the kind of caption and its claims, ``(label, size, zone)`` per item (``None``
    for what it does not say), sorted."""
    sg = {noun_forms(n)[0]: k for k, n in enumerate(names)}
    pl = {noun_forms(n)[1]: k for k, n in enumerate(names)}
    nouns = "|".join(re.escape(w) for w in sorted([*sg, *pl], key=len, reverse=True))
    pos = "|".join(sorted([*POSITIONS, *SHORT], key=len, reverse=True))
    dets = "|".join(NUMBERS)
    words = caption.split()
    assert caption == caption.lower() and " ".join(words) == caption and len(words) <= MAX_TOKENS, caption
    assert re.fullmatch(r"[a-z\- ]+", caption), caption
    for art, word in itertools.pairwise(words):                       # a/an agreement
        if art in ("a", "an"):
            assert (art == "an") == (word[0] in "aeiou" and word != "one"), caption
    labels = list(labels)
    counts = collections.Counter(labels)
    if not labels:
        assert caption in EMPTY, caption
        return "empty", []
    assert caption not in EMPTY, caption
    if m := re.fullmatch(r"(there (?:is|are) )?(\w+) items?", caption):
        assert NUMBERS[m[2]] == len(labels) > 3, caption
        assert (m[1] or "there are").split()[1] == ("is" if len(labels) == 1 else "are"), caption
        return "total", [(k, None, None) for k in sorted(labels)]

    groups = []                                                       # [label, count, size, zones]

    def group(det, size, noun, zone, definite=False, verb=None):
        k = sg[noun] if noun in sg else pl[noun]
        count = NUMBERS[det] if det else 1
        assert (noun in pl) == (count > 1), caption                   # number agreement
        assert verb is None or verb == ("is" if count == 1 else "are"), caption
        if definite:
            assert counts[k] == count, caption                        # "the X": all the Xs
        groups.append([k, count, size or "", [POSITIONS.get(zone) or SHORT[zone]] if zone else []])

    lead = re.match(r"there (is|are) ", caption)
    body = caption[lead.end():] if lead else caption
    first, _, rest = body.partition(" with ")
    for chunk in first.split(" and ") + (rest.split(" and ") if rest else []):
        if m := re.fullmatch(rf"({dets}) (?:(small|large) )?({nouns})(?: ({pos}))?", chunk):
            group(m[1], m[2], m[3], m[4])
        elif m := re.fullmatch(rf"the (?:({dets}) )?(?:(small|large) )?({nouns}) (is|are) ({pos})", chunk):
            assert m[1] not in ("a", "an", "one"), caption
            group(m[1], m[2], m[3], m[5], definite=True, verb=m[4])
        elif m := re.fullmatch(rf"({pos}) ({dets}) (?:(small|large) )?({nouns})", chunk):
            group(m[2], m[3], m[4], m[1])
        elif chunk in POSITIONS or chunk in SHORT:                    # another place of the same items
            assert groups and groups[-1][3] and not groups[-1][2], caption
            groups[-1][3].append(POSITIONS.get(chunk) or SHORT[chunk])
        else:
            raise AssertionError(f"cannot read {chunk!r} in {caption!r}")
    if lead:
        assert (lead[1] == "is") == (groups[0][1] == 1), caption
    if rest:
        assert groups[0][3], caption                                  # "X at P with ..."
    assert sum(g[1] for g in groups) == len(labels), caption          # every item, once
    for k in counts:
        assert sum(g[1] for g in groups if g[0] == k) == counts[k], caption
    listing = all(g[3] for g in groups)
    sized = any(g[2] for g in groups)
    claims = []
    for k, count, size, zones in groups:
        size = size if size or (sized and listing) else None           # a listing with sizes names every size
        if len(zones) > 1:
            assert len(zones) == count == len(set(zones)) and size is None, caption
            claims += [(k, size, z) for z in zones]
        else:
            claims += [(k, size, zones[0] if zones else None)] * count
    items = [(k, _size(b, H, W), _zone(b, H, W)) for k, b in zip(labels, boxes)]
    assert _matching(items, claims, lambda it, c: it[0] == c[0] and c[1] in (None, it[1]) and c[2] in (None, it[2])), caption
    return ("listing" if listing else "summary"), sorted(claims, key=str)


def mentions_every_item(caption, boxes, labels, H, W, names):
    """Each item's noun, and its position in either form, are in the caption."""
    rows, cols = {v: k for k, v in POSITIONS.items()}, {v: k for k, v in SHORT.items()}
    for k, b in zip(labels, boxes):
        z = _zone(b, H, W)
        if not re.search(rf"\b({'|'.join(map(re.escape, noun_forms(names[k])))})\b", caption):
            return False
        if not re.search(rf"\b({rows[z]}|{cols[z]})\b(?! left| right)", caption):
            return False
    return True


@pytest.fixture(scope="module")
def fashion_scenes():
    return make_scenes("test", 150, SceneConfig(objects=(0, 6)), seed=1)


@pytest.fixture(scope="module")
def recipe_scenes():
    return make_scenes("test", 200, RECIPE, seed=0)


def test_captions_of_generated_scenes_are_true_short_and_varied(fashion_scenes):
    kinds, vocab = set(), set()
    for i, t in enumerate(fashion_scenes.targets):
        caps = scene_captions(t, (128, 128), FASHION, np.random.default_rng(i), n=5)
        assert len(caps) == 5
        if 2 <= len(t["labels"]) <= 3:
            assert len(set(caps)) == 5
        for c in caps:
            kinds.add(check_caption(c, t["boxes"].tolist(), t["labels"].tolist(), 128, 128, FASHION)[0])
            vocab.update(c.split())
    assert kinds == {"empty", "listing", "summary"}
    assert vocab <= FASHION_WORDS and len(FASHION_WORDS) < 100


@pytest.mark.parametrize("which", ["fashion", "recipe"])
def test_every_caption_of_a_scene_states_every_item(which, fashion_scenes, recipe_scenes):
    scenes, (H, W) = (fashion_scenes, (128, 128)) if which == "fashion" else (recipe_scenes, RECIPE.image_size)
    for i, t in enumerate(scenes.targets):
        boxes, labels = t["boxes"].tolist(), t["labels"].tolist()
        caps = scene_captions(t, (H, W), FASHION, np.random.default_rng(i), n=5)
        claims = [check_caption(c, boxes, labels, H, W, FASHION)[1] for c in caps]
        assert all(c == claims[0] for c in claims), caps             # the same content, every caption
        if len(labels) <= 3:
            assert all(mentions_every_item(c, boxes, labels, H, W, FASHION) for c in caps), caps
            assert all(zone is not None for _, _, zone in claims[0]), caps
        if len(labels) <= 2 and any(_size(b, H, W) for b in boxes):   # size words fit: every item's is said
            assert all(size is not None for _, size, _ in claims[0]), caps


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
        caps = scene_captions({"boxes": boxes, "labels": labels}, (H, W), names, np.random.default_rng(trial), 6)
        claims = [check_caption(c, boxes.tolist(), labels.tolist(), H, W, names)[1] for c in caps]
        assert all(c == claims[0] for c in claims), caps
        if n <= 3:
            assert all(mentions_every_item(c, boxes.tolist(), labels.tolist(), H, W, names) for c in caps), caps


def test_a_caption_blind_to_the_image_scores_a_low_bleu(recipe_scenes):
    """The references of a scene agree with each other (BLEU-4 of one against the other four),
    while the best constant caption, among the most frequent ones of the training scenes, matches
    few of their 4-grams."""
    def captions(scenes, split):
        return [scene_captions(t, RECIPE.image_size, FASHION, np.random.default_rng([0, split, i, 0xCA]))
                for i, t in enumerate(scenes.targets)]
    train = captions(make_scenes("train", 1000, RECIPE, seed=0), 0)
    refs = [[c.split() for c in caps] for caps in captions(recipe_scenes, 2)]
    frequent = collections.Counter(c for caps in train for c in caps).most_common(50)
    constant = max(corpus_bleu([c.split()] * len(refs), refs) for c, _ in frequent)
    agreement = corpus_bleu([r[0] for r in refs], [r[1:] for r in refs])
    assert constant < 0.15 and agreement > 0.3, (constant, agreement)
    assert corpus_bleu([["there", "are", "two", "items"]] * len(refs), refs) == 0.0


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


def test_caption_word_groups_and_analogies_of_fashion_mnist():
    from vislab.sequence.captions import caption_analogies, caption_word_groups
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    groups = caption_word_groups(names)
    assert groups["noun"][:2] == ["t-shirt", "pair"] and groups["noun"][-1] == "boot"
    assert groups["plural"][:2] == ["t-shirts", "pairs"] and groups["plural"][-1] == "boots"
    qs = caption_analogies(names)
    assert ("left", "right", "top", "bottom") in qs["opposite"] and ("bottom", "top", "left", "right") in qs["opposite"]
    assert len(set(qs["opposite"])) == 8
    assert len(qs["plural"]) == 10 * 9 and ("bag", "bags", "coat", "coats") in qs["plural"]
    assert all(a != c for a, _, c, _ in qs["plural"])
