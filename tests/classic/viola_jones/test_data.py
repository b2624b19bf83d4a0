"""Data: face splits, augmentation against OpenCV's resize, generated images and scenes."""

import cv2
import numpy as np
import pytest
from skimage import data

from vislab.classic.viola_jones.data import (
    SAMPLE_NAMES,
    augment_faces,
    generated_image,
    lfw_faces,
    lfw_nonfaces,
    make_scene,
    make_scenes,
    negative_images,
    sample_image,
)


def test_face_splits_are_disjoint_and_complete():
    faces = lfw_faces("all")
    parts = [lfw_faces(s) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [70, 15, 15]
    rows = {f.tobytes() for p in parts for f in p}
    assert len(rows) == 100 == len({f.tobytes() for f in faces})
    assert lfw_nonfaces().shape == (100, 25, 25)


def test_augmentation_without_jitter_is_a_bilinear_resize():
    faces = lfw_faces("train")[:5]
    out = augment_faces(faces, 1, np.random.default_rng(0), 24, max_shift=0, scale_jitter=0, flip=False)
    want = np.stack([cv2.resize(f, (24, 24), interpolation=cv2.INTER_LINEAR) for f in faces])
    assert np.abs(out.astype(int) - want).max() <= 1          # same sampling grid, rounding aside


def test_augmentation_flips_and_jitters():
    faces = lfw_faces("train")[:3]
    rng = np.random.default_rng(1)
    out = augment_faces(faces, 40, rng, 24, max_shift=0, scale_jitter=0, flip=True)
    plain = augment_faces(faces, 1, rng, 24, max_shift=0, scale_jitter=0, flip=False)
    flipped = [any(np.array_equal(o, p[:, ::-1]) for p in plain) for o in out]
    assert 0 < sum(flipped) < len(out)
    jittered = augment_faces(faces, 10, rng, 24, max_shift=1.0, scale_jitter=0.1)
    assert jittered.shape == (30, 24, 24) and jittered.dtype == np.uint8
    assert len({j.tobytes() for j in jittered}) == 30


def test_generated_images_repeat_with_their_seed():
    a, b = generated_image(5), generated_image(5)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (240, 320) and a.std() > 10
    assert not np.array_equal(a, generated_image(6))
    assert len(negative_images("test", generated=2)) == 6


def test_scenes_hold_the_faces_at_their_boxes():
    faces = lfw_faces("test")
    rng = np.random.default_rng(2)
    bg = np.full((300, 400), 128, np.uint8)
    for _ in range(5):
        scene = make_scene(rng, bg, faces)
        assert 1 <= len(scene.boxes) <= 3
        for x1, y1, x2, y2 in scene.boxes:
            assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240 and x2 - x1 == y2 - y1 >= 36
            inner = scene.image[y1 + (y2 - y1) // 4:y2 - (y2 - y1) // 4, x1 + (x2 - x1) // 4:x2 - (x2 - x1) // 4]
            assert inner.std() > 5                          # a face, not the flat background
        mask = np.zeros(scene.image.shape, bool)
        for x1, y1, x2, y2 in scene.boxes:
            assert not mask[y1:y2, x1:x2].any()             # faces never overlap
            mask[y1:y2, x1:x2] = True
        assert np.all(scene.image[~mask] == 128)
    first = make_scenes(2, seed=7)
    np.testing.assert_array_equal(first[1].image, make_scenes(2, seed=7)[1].image)


def test_sample_images_are_opencvs_grey():
    np.testing.assert_array_equal(sample_image("astronaut"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY))
    np.testing.assert_array_equal(sample_image("camera"), data.camera())
    np.testing.assert_array_equal(sample_image("motorcycle"),
                                  cv2.cvtColor(data.stereo_motorcycle()[0], cv2.COLOR_RGB2GRAY))
    assert all(sample_image(n).ndim == 2 and sample_image(n).dtype == np.uint8 for n in SAMPLE_NAMES)
    with pytest.raises(ValueError, match="astronaut"):
        sample_image("download_all")          # a scikit-image function, not an image
