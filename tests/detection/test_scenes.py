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
