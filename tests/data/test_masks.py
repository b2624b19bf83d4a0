"""Image + mask folders, joint augmentation and the VOC palette."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from vislab.data.masks import VOC_CLASSES, augment_pairs, colorize, overlay, palette, read_mask, read_mask_folder
from vislab.errors import UserError


def _palette_png(mask: np.ndarray, path: str) -> None:
    im = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    im.putpalette(palette().ravel().tolist())
    im.save(path)


def test_palette_matches_pascal_voc_colours():
    # The colours of VOC's SegmentationClass PNGs (devkit's labelcolormap): background black,
    # aeroplane (128,0,0), bicycle (0,128,0), bird (128,128,0), boat (0,0,128), person (192,128,128).
    p = palette()
    assert p[0].tolist() == [0, 0, 0] and p[1].tolist() == [128, 0, 0] and p[2].tolist() == [0, 128, 0]
    assert p[3].tolist() == [128, 128, 0] and p[4].tolist() == [0, 0, 128] and p[15].tolist() == [192, 128, 128]
    assert p[255].tolist() == [255, 255, 255] and len({tuple(c) for c in p[:21]}) == 21


def test_read_mask_takes_palette_indices_not_colours(tmp_path):
    mask = np.array([[0, 1, 2], [15, 255, 3]], np.uint8)
    _palette_png(mask, tmp_path / "m.png")
    assert np.array_equal(read_mask(str(tmp_path / "m.png")), mask)
    Image.fromarray(colorize(mask)).save(tmp_path / "rgb.png")
    with pytest.raises(UserError, match="palette"):
        read_mask(str(tmp_path / "rgb.png"))


def _folder(root, split, n, size=(12, 16), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(root / split / "images", exist_ok=True)
    os.makedirs(root / split / "masks", exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / split / "images" / f"{i}.png")
        m = rng.integers(0, classes, size, dtype=np.uint8)
        m[0, 0] = 255
        Image.fromarray(m).save(root / split / "masks" / f"{i}.png")


def test_read_mask_folder_layout_and_resize(tmp_path):
    _folder(tmp_path, "train", 3)
    (tmp_path / "classes.txt").write_text("bg\nred\nblue\n")
    x, y, classes = read_mask_folder(str(tmp_path), "train")
    assert x.shape == (3, 3, 12, 16) and y.shape == (3, 12, 16) and classes == ["bg", "red", "blue"]
    assert y[0, 0, 0] == 255 and set(np.unique(y)) <= {0, 1, 2, 255}
    x2, y2, _ = read_mask_folder(str(tmp_path), "train", size=(24, 32))
    # nearest-neighbour resize: each mask pixel becomes a 2x2 block, no value invented
    assert np.array_equal(y2[:, ::2, ::2], y) and set(np.unique(y2)) <= set(np.unique(y))
    assert x2.shape == (3, 3, 24, 32)
    with pytest.raises(UserError, match="no test images"):
        read_mask_folder(str(tmp_path), "test")


def test_read_voc_layout(tmp_path):
    os.makedirs(tmp_path / "JPEGImages")
    os.makedirs(tmp_path / "SegmentationClass")
    os.makedirs(tmp_path / "ImageSets" / "Segmentation")
    for name in ("2007_000001", "2007_000002"):
        Image.fromarray(np.full((10, 8, 3), 100, np.uint8)).save(tmp_path / "JPEGImages" / f"{name}.jpg")
        _palette_png(np.full((10, 8), 15, np.uint8), tmp_path / "SegmentationClass" / f"{name}.png")
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n2007_000002\n")
    x, y, classes = read_mask_folder(str(tmp_path), "train")
    assert x.shape == (2, 3, 10, 8) and (y == 15).all() and classes == list(VOC_CLASSES)
    assert classes[15] == "person"


def test_mask_size_mismatch_is_one_clear_error(tmp_path):
    _folder(tmp_path, "train", 1)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "train" / "masks" / "0.png")
    with pytest.raises(UserError, match="must match its image"):
        read_mask_folder(str(tmp_path), "train")


def _pair(b=4, h=10, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 5, (b, h, w), generator=g)
    x = torch.stack([y.float(), -y.float(), torch.rand(b, h, w, generator=g)], 1)   # channel 0 encodes the mask
    return x, y


def test_flip_moves_the_mask_with_its_image():
    x, y = _pair()
    xa, ya = augment_pairs(x, y, torch.Generator().manual_seed(1), flip=True)
    assert torch.equal(xa[:, 0].long(), ya)
    flipped = [bool(torch.equal(ya[i], y[i].flip(1))) and not torch.equal(y[i], y[i].flip(1)) for i in range(4)]
    assert any(flipped) and not all(flipped)      # some pairs mirrored, some not (p = 1/2, seeded)


def test_rescale_uses_nearest_for_masks_and_ignores_what_it_brings_in():
    x, y = _pair(b=3, h=16, w=16)
    for seed in range(4):
        xa, ya = augment_pairs(x, y, torch.Generator().manual_seed(seed), flip=False, scale=(0.5, 1.5),
                               fill=-9.0, ignore_index=255)
        assert xa.shape == x.shape and ya.shape == y.shape
        assert set(ya.unique().tolist()) <= set(range(5)) | {255}        # nearest: no class invented
        inside = ya != 255
        assert (xa[:, 0][~inside] == -9.0).all() and (xa[:, 0][inside] != -9.0).all()
    # image and mask are scaled by the same factor: on a blocky map, scaled x2, they agree
    # wherever bilinear interpolation does not mix two blocks (all but block borders)
    y = torch.randint(0, 5, (2, 4, 4), generator=torch.Generator().manual_seed(0)).repeat_interleave(4, 1).repeat_interleave(4, 2)
    x = y[:, None].float().repeat(1, 3, 1, 1)
    xa, ya = augment_pairs(x, y, torch.Generator().manual_seed(0), flip=False, scale=(2.0, 2.0))
    same = torch.round(xa[:, 0]).long() == ya
    assert same.float().mean() > 0.6 and same[(xa[:, 0] == torch.round(xa[:, 0]))].all()
    # bilinear on the same mask would invent values between classes: the reason for nearest
    blurred = torch.nn.functional.interpolate(y[:, None].float(), scale_factor=1.37, mode="bilinear")
    assert not torch.equal(blurred, blurred.round())


def test_random_crops_are_windows_of_the_pair():
    x, y = _pair(b=2, h=20, w=20)
    xa, ya = augment_pairs(x, y, torch.Generator().manual_seed(3), flip=False, crop=8)
    assert xa.shape == (2, 3, 8, 8) and ya.shape == (2, 8, 8)
    for i in range(2):
        hits = [(t, l) for t in range(13) for l in range(13) if torch.equal(y[i, t:t + 8, l:l + 8], ya[i])]
        assert hits and torch.equal(x[i, :, hits[0][0]:hits[0][0] + 8, hits[0][1]:hits[0][1] + 8], xa[i])


def test_overlay_leaves_background_alone():
    img = np.full((4, 4, 3), 50, np.uint8)
    mask = np.zeros((4, 4), np.uint8)
    mask[1:3, 1:3] = 1
    out = overlay(img, mask, alpha=0.5)
    assert (out[mask == 0] == 50).all()
    assert out[1, 1].tolist() == [89, 25, 25]        # (50 + 128) / 2 = 89, (50 + 0) / 2 = 25
