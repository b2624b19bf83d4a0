import gzip
import json

import numpy as np
import pytest
import torch
import torchvision.ops as tvo

from vislab.data.datasets import load_split
from vislab.detection.scenes import SceneConfig, load_scenes, make_scenes, write_scenes
from vislab.errors import UserError

DIGITS = SceneConfig(source="digits", image_size=(48, 64), objects=(2, 5), scale=(1.5, 3.0))


def test_deterministic_and_prefix_stable():
    a = make_scenes("train", 6, DIGITS, seed=3)
    b = make_scenes("train", 3, DIGITS, seed=3)
    c = make_scenes("train", 3, DIGITS, seed=4)
    assert torch.equal(a.images[:3], b.images) and torch.equal(a.instance_maps[:3], b.instance_maps)
    for x, y in zip(a.targets, b.targets):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(a.images[:3], c.images)


def test_boxes_are_tight_boxes_of_visible_pixels():
    scenes = make_scenes("val", 30, DIGITS, seed=0)
    truncated = overlapping = 0
    for i in range(len(scenes)):
        image, t = scenes[i]
        assert image.shape == (3, 48, 64) and image.dtype == torch.float32 and image.max() <= 1
        masks = t["masks"]
        assert masks.sum(0).max() <= 1                       # an instance map: one owner per pixel
        if len(masks):
            # torchvision gives (x_min, y_min, x_max, y_max) of the pixel indices
            torch.testing.assert_close(t["boxes"], tvo.masks_to_boxes(masks) + torch.tensor([0, 0, 1, 1.0]))
            torch.testing.assert_close(t["area"], masks.flatten(1).sum(1).float())
            b = t["boxes"]
            truncated += int(((b[:, 0] == 0) | (b[:, 1] == 0) | (b[:, 2] == 64) | (b[:, 3] == 48)).sum())
            overlapping += int((tvo.box_iou(b, b).fill_diagonal_(0) > 0).any(1).sum())
    assert truncated > 5 and overlapping > 5


def test_labels_come_from_the_source_and_splits_do_not_share_items():
    train = load_split("digits", "train")
    seen = {}
    for split in ("train", "val", "test"):
        s = make_scenes(split, 25, DIGITS, seed=1)
        src = torch.cat([t["source_index"] for t in s.targets]).numpy()
        labels = torch.cat([t["labels"] for t in s.targets]).numpy()
        ref = load_split("digits", "test" if split == "test" else "train").labels
        assert np.array_equal(labels, ref[src])
        seen[split] = set(src.tolist())
    assert not seen["train"] & seen["val"]                  # both from the training file, disjoint
    assert len(seen["test"]) > 20 and max(seen["test"]) < 400 < len(train.labels)


def test_fashion_mnist_labels_match_the_raw_files():
    s = make_scenes("test", 4, SceneConfig(image_size=(96, 96)), seed=0)
    with gzip.open("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz") as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=8)
    for t in s.targets:
        assert np.array_equal(t["labels"].numpy(), raw[t["source_index"].numpy()])
    assert s.categories[0] == "T-shirt/top"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")     # inside pycocotools, numpy 2
def test_written_scenes_read_back_and_match_pycocotools(tmp_path):
    from pycocotools import mask as mask_utils
    s = make_scenes("test", 5, DIGITS, seed=2)
    path = write_scenes(s, str(tmp_path), DIGITS, seed=2)
    back = load_scenes(str(tmp_path), "test")
    assert torch.equal(back.images, s.images) and torch.equal(back.instance_maps, s.instance_maps)
    for x, y in zip(s.targets, back.targets):
        assert all(torch.equal(x[k], y[k]) for k in x)
    coco = json.load(open(path))
    assert coco["info"]["config"]["source"] == "digits"
    for a in coco["annotations"]:
        rle = mask_utils.frPyObjects(a["segmentation"], 48, 64)
        np.testing.assert_allclose(mask_utils.toBbox(rle), a["bbox"])     # tight box, by pycocotools
        assert mask_utils.area(rle) == a["area"]
    assert (tmp_path / "test" / "images" / "000004.png").exists()


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="grayscale"):
        make_scenes("train", 1, SceneConfig(source="cifar10"))
    with pytest.raises(UserError, match="split"):
        make_scenes("dev", 1, DIGITS)
    with pytest.raises(UserError, match="objects"):
        SceneConfig(objects=(5, 2))


# --------------------------------------------------------------------------- stuff (panoptic scenes)

STUFF = SceneConfig(source="digits", image_size=(48, 64), objects=(1, 3), scale=(1.5, 3.0), stuff=4)


def test_no_stuff_draws_the_scenes_it_always_drew():
    # the digest of these scenes as the generator drew them before stuff existed (the one-stage
    # benchmark and every detection run depend on stuff=0 changing nothing)
    import hashlib
    s = make_scenes("train", 4, DIGITS, seed=3)
    digest = hashlib.sha256(s.images.numpy().tobytes() + s.instance_maps.numpy().tobytes()
                            + s.alpha.numpy().tobytes()).hexdigest()
    assert digest == "d82ce356054aa0d1ae3086c0afd32073efe6905b79ed0416ed22a4464aafe469"
    assert s.stuff_maps is None and [t["labels"].tolist() for t in s.targets][0] == [5, 9, 0, 9]


def test_stuff_covers_exactly_the_pixels_no_object_covers():
    from vislab.detection.scenes import NO_STUFF, STUFF_CLASSES
    a = make_scenes("val", 12, STUFF, seed=1)
    b = make_scenes("val", 6, STUFF, seed=1)
    assert torch.equal(a.images[:6], b.images) and torch.equal(a.stuff_maps[:6], b.stuff_maps)
    assert a.stuff_categories == list(STUFF_CLASSES[:4])
    objects = a.instance_maps > 0
    assert torch.equal(a.stuff_maps == NO_STUFF, objects)
    assert int(a.stuff_maps[~objects].max()) < 4
    regions = [len(torch.unique(m[m != NO_STUFF])) for m in a.stuff_maps]
    assert min(regions) >= 1 and max(regions) >= 3 and sum(r >= 2 for r in regions) >= 9
    pan = a.panoptic_maps()                                  # (N, H, W, 2): (category, instance)
    assert pan.shape == (12, 48, 64, 2)
    assert torch.equal(pan[..., 1], a.instance_maps.long())
    assert torch.equal(pan[..., 0][~objects], a.stuff_maps[~objects].long() + 10)      # stuff: K + s
    for i, t in enumerate(a.targets):
        for j, label in enumerate(t["labels"].tolist()):
            assert (pan[i, ..., 0][a.instance_maps[i] == j + 1] == label).all()
    # each class's texture differs: a class's mean colour is far from every other's
    x = a.images.permute(0, 2, 3, 1).reshape(-1, 3).float()
    means = torch.stack([x[(a.stuff_maps == c).flatten()].mean(0) for c in range(4)])
    assert torch.cdist(means, means).fill_diagonal_(1e9).min() > 15


def test_panoptic_ground_truth_is_written_in_coco_format_and_read_back(tmp_path):
    s = make_scenes("test", 4, STUFF, seed=2)
    write_scenes(s, str(tmp_path), STUFF, seed=2)
    pan = json.load(open(tmp_path / "test_panoptic.json"))
    cats = {c["id"]: c for c in pan["categories"]}
    assert [cats[k]["isthing"] for k in sorted(cats)] == [1] * 10 + [0] * 4
    assert cats[11]["name"] == "sky"
    from PIL import Image
    truth = s.panoptic_maps()
    for i, ann in enumerate(pan["annotations"]):
        rgb = np.asarray(Image.open(tmp_path / ann["file_name"])).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        assert (ids > 0).all()                               # every pixel is a thing or stuff
        seen = np.zeros(ids.shape, bool)
        for seg in ann["segments_info"]:
            m = ids == seg["id"]
            assert m.sum() == seg["area"] > 0
            assert (truth[i, ..., 0].numpy()[m] == seg["category_id"] - 1).all()
            seen |= m
        assert seen.all()
    back = load_scenes(str(tmp_path), "test")
    assert torch.equal(back.stuff_maps, s.stuff_maps) and back.stuff_categories == s.stuff_categories
    assert torch.equal(back.panoptic_maps(), truth)
    assert json.load(open(tmp_path / "test.json"))["info"]["config"]["stuff"] == 4


def test_make_scenes_stuff_from_the_command_line(tmp_path, run_cli):
    code, out, err = run_cli("data", "make-scenes", tmp_path / "s", "--source", "digits", "--train", "2", "--val", "0",
                             "--test", "0", "--size", "48", "--objects", "1", "2", "--stuff", "2")
    assert code == 0, err
    assert "panoptic ground truth, 2 stuff classes" in out
    back = load_scenes(str(tmp_path / "s"), "train")
    assert back.stuff_categories == ["sky", "stripes"] and int(back.stuff_maps[back.instance_maps == 0].max()) <= 1
    code, _, err = run_cli("data", "make-scenes", tmp_path / "t", "--stuff", "9")
    assert code == 2 and "stuff classes 9" in err


def test_bad_stuff_is_a_user_error():
    with pytest.raises(UserError, match="stuff classes 7"):
        SceneConfig(stuff=7)
    with pytest.raises(UserError, match="no stuff"):
        make_scenes("train", 1, DIGITS).panoptic_maps()
