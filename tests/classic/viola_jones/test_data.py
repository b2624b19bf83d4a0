"""Data: face splits, augmentation against OpenCV's resize, generated images and scenes."""

import cv2
import numpy as np
import pytest
from skimage import data

from vislab.classic.viola_jones.data import (
    SAMPLE_NAMES,
    TEST_SEED_START,
    TRAIN_SAMPLES,
    Scene,
    augment_faces,
    dihedral,
    face_windows,
    generated_image,
    lfw_faces,
    lfw_nonfaces,
    make_scene,
    make_scenes,
    negative_images,
    sample_image,
    training_negatives,
)
from vislab.classic.viola_jones.opencv_xml import resolve_cascade_path


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


def test_face_windows_resample_the_pasted_face_as_the_pyramid_does():
    """Without jitter, on a flat background, a face window is the face pasted with OpenCV's
    bilinear resize and soft edges, then the canvas shrunk with cv2's INTER_LINEAR_EXACT (the
    detector's pyramid) and cut where the face lies."""
    face, s = lfw_faces("train")[3], 60
    got = face_windows(face[None], 6, np.random.default_rng(0), [np.full((300, 300), 90, np.uint8)], 24,
                       face_size=(s, s), max_shift=0, scale_jitter=0)
    ramp = np.clip((np.minimum(np.arange(s), np.arange(s)[::-1]) + 0.5) / (0.12 * s), 0, 1)
    alpha = np.minimum(ramp[:, None], ramp[None, :])
    wants = []
    for f in (face, face[:, ::-1]):
        canvas = np.full((2 * s, 2 * s), 90.0)
        patch = cv2.resize(f.astype(np.float64), (s, s), interpolation=cv2.INTER_LINEAR)
        canvas[s // 2:s // 2 + s, s // 2:s // 2 + s] = alpha * patch + (1 - alpha) * 90
        canvas = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        small = cv2.resize(canvas, (48, 48), interpolation=cv2.INTER_LINEAR_EXACT)
        wants.append(small[12:36, 12:36])
    for g in got:
        assert any(np.array_equal(g, w) for w in wants)
    assert {g.tobytes() for g in got} == {w.tobytes() for w in wants}     # mirrored half of the time


def test_face_windows_jitter_and_differ_from_the_crops():
    faces = lfw_faces("train")[:4]
    out = face_windows(faces, 5, np.random.default_rng(1), negative_images("train", generated=2))
    assert out.shape == (20, 24, 24) and out.dtype == np.uint8
    assert len({o.tobytes() for o in out}) == 20


def test_generated_textures_hold_no_face_for_opencv():
    """OpenCV's frontal-face cascade finds most faces pasted in training scenes, and next to nothing
    in the generated textures alone (its own false positives: about one image in twenty)."""
    clf = cv2.CascadeClassifier(str(resolve_cascade_path("frontalface_default")))
    textures = [generated_image(s, (480, 360)) for s in range(20)]
    assert sum(len(clf.detectMultiScale(t, 1.1, 3)) for t in textures) <= 2
    rng = np.random.default_rng(0)
    scenes = [make_scene(rng, t, lfw_faces("train")) for t in textures[:10]]
    found = 0
    for scene in scenes:
        rects = np.asarray(clf.detectMultiScale(scene.image, 1.1, 3)).reshape(-1, 4)
        centres = rects[:, :2] + rects[:, 2:] / 2
        for x1, y1, x2, y2 in scene.boxes:
            found += bool(((centres >= (x1, y1)) & (centres <= (x2, y2))).all(1).any())
    assert found >= 0.7 * sum(len(s.boxes) for s in scenes)      # OpenCV finds 15 of these 19


def test_training_stream_holds_views_scenes_and_training_seeds():
    items = list(training_negatives(6, lfw_faces("train")[:5], seed=3))
    scenes = [i for i in items if isinstance(i, Scene)]
    views = [i for i in items if not isinstance(i, Scene)]
    assert len(views) == 8 * len(TRAIN_SAMPLES) and len(scenes) == 8 * len(TRAIN_SAMPLES) + 6
    assert {v.tobytes() for v in views} == {dihedral(sample_image(n), k).tobytes()
                                            for n in TRAIN_SAMPLES for k in range(8)}
    assert all(1 <= len(s.boxes) <= 3 and s.image.shape == (240, 320) for s in scenes)
    again = list(training_negatives(6, lfw_faces("train")[:5], seed=3))
    assert all(np.array_equal(a.image if isinstance(a, Scene) else a, b.image if isinstance(b, Scene) else b)
               for a, b in zip(items, again))
    with pytest.raises(ValueError, match="test"):
        next(training_negatives(TEST_SEED_START + 1, lfw_faces("train")))


def test_dihedral_gives_eight_views():
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    views = [dihedral(img, k) for k in range(8)]
    assert len({(v.shape, v.tobytes()) for v in views}) == 8
    np.testing.assert_array_equal(views[0], img)
    np.testing.assert_array_equal(views[4], img[:, ::-1])
    np.testing.assert_array_equal(views[1], np.rot90(img))
