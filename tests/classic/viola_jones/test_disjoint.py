"""The test scenes of ``vj eval`` share nothing with training: faces, samples, generated images."""

import numpy as np

from vislab.classic.viola_jones import data
from vislab.classic.viola_jones.data import (
    TEST_SAMPLES,
    TRAIN_SAMPLES,
    lfw_faces,
    lfw_nonfaces,
    sample_image,
    sample_views,
)


def _normalised(patches: np.ndarray) -> np.ndarray:
    x = patches.reshape(len(patches), -1).astype(np.float64)
    x -= x.mean(1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


def test_test_faces_are_not_training_faces_nor_near_copies():
    """Every test face differs from every training, validation and non-face crop, mirrored or not:
    no identical pixels, and a correlation far from a copy's (the closest pair is about 0.8)."""
    test = lfw_faces("test")
    train = np.concatenate([lfw_faces("train"), lfw_faces("val"), lfw_nonfaces()])
    assert not {f.tobytes() for f in test} & {f.tobytes() for f in train}
    t = _normalised(test.astype(np.float64))
    for other in (train, train[:, :, ::-1]):
        assert (t @ _normalised(other.astype(np.float64)).T).max() < 0.9


def _record_make_scene(monkeypatch):
    """Patch make_scene and generated_image to record the backgrounds, faces and seeds they are
    given (and to make nothing, so that the whole training stream takes seconds)."""
    seen = {"faces": [], "seeds": [], "backgrounds": []}

    def recording_scene(rng, background, faces, *args, **kwargs):
        seen["faces"].append(np.asarray(faces))
        seen["backgrounds"].append(background.tobytes())
        return data.Scene(background, np.zeros((0, 4), np.int64))

    def recording_generated(seed, size=(320, 240)):
        seen["seeds"].append(seed)
        return np.array([[seed]], np.int64)        # stands for the image of this seed

    monkeypatch.setattr(data, "make_scene", recording_scene)
    monkeypatch.setattr(data, "generated_image", recording_generated)
    return seen


def test_training_and_test_scenes_use_disjoint_faces_and_backgrounds(monkeypatch):
    seen = _record_make_scene(monkeypatch)
    data.make_scenes(60, seed=0)                                   # what `vj eval` scores
    test = {k: list(v) for k, v in seen.items()}
    for v in seen.values():
        v.clear()
    stream = data.training_negatives(data.TEST_SEED_START, lfw_faces("train"), seed=0)
    n = sum(1 for _ in stream)                                     # every item bootstrapping may scan
    assert n == 2 * 8 * len(TRAIN_SAMPLES) + data.TEST_SEED_START
    # generated backgrounds: training seeds all below TEST_SEED_START, test seeds from it on
    assert max(seen["seeds"]) < data.TEST_SEED_START <= min(test["seeds"])
    # faces pasted in training scenes are training faces; test scenes get test faces only
    test_faces = {f.tobytes() for f in lfw_faces("test")}
    assert all(f.tobytes() in test_faces for faces in test["faces"] for f in faces)
    assert not any(f.tobytes() in test_faces for faces in seen["faces"] for f in faces)
    # no background image of a test scene is a background of a training scene
    assert not set(test["backgrounds"]) & set(seen["backgrounds"])


def test_training_samples_are_not_test_samples():
    """Disjoint names, and no view of a training sample has the pixels of a test sample."""
    assert not set(TRAIN_SAMPLES) & set(TEST_SAMPLES)
    test = {sample_image(n).tobytes() for n in TEST_SAMPLES}
    views = sample_views()
    assert len(views) == 8 * len(TRAIN_SAMPLES)
    assert not {v.tobytes() for v in views} & test
