"""The cascade model: its file format, and window classification against OpenCV."""

import cv2
import numpy as np
import pytest
from skimage import data

from vislab.classic.viola_jones.cascade import Cascade, evaluate_windows
from vislab.classic.viola_jones.detect import resize_linear_exact
from vislab.classic.viola_jones.haar import haar_features
from vislab.classic.viola_jones.opencv_xml import (
    load_opencv_cascade,
    opencv_cascade_dir,
)
from vislab.errors import UserError


def test_save_load_round_trip_without_pickle(tmp_path):
    cascade = load_opencv_cascade("eye_tree_eyeglasses")     # trees and tilted features
    path = tmp_path / "c.npz"
    cascade.save(path)
    with np.load(path, allow_pickle=False) as z:             # plain arrays only
        assert "meta" in z.files
    again = Cascade.load(path)
    assert again.window == cascade.window
    for name in ("node_feature", "node_threshold", "node_left", "node_right", "leaves", "stage_sizes",
                 "stage_thresholds"):
        np.testing.assert_array_equal(getattr(again, name), getattr(cascade, name))
    np.testing.assert_array_equal(again.features.rects, cascade.features.rects)
    np.testing.assert_array_equal(again.features.tilted, cascade.features.tilted)


def test_bad_files_raise_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Cascade.load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a vislab cascade"):
        Cascade.load(junk)
    other = tmp_path / "other.npz"
    np.savez(other, meta=np.array('{"format": "something else"}'))
    with pytest.raises(UserError, match="not a vislab cascade"):
        Cascade.load(other)


def test_from_stumps_keeps_only_used_features():
    pool = haar_features((24, 24))
    cascade = Cascade.from_stumps((24, 24), pool, [([(500, 0.1, 1.0, 0.0), (7, -0.2, 0.0, 2.0)], 0.5),
                                                   ([(500, 0.3, 0.5, 0.0)], 0.2)])
    assert len(cascade.features) == 2 and cascade.n_stages == 2
    np.testing.assert_array_equal(cascade.features.rects, pool.rects[[7, 500]])
    np.testing.assert_array_equal(cascade.node_feature[:, 0], [1, 0, 1])


def test_window_classification_matches_opencv():
    """A window the size of the cascade's window is one scan position for OpenCV: it returns the
    window exactly when all stages pass."""
    name = "frontalface_default"
    cascade = load_opencv_cascade(name)
    clf = cv2.CascadeClassifier(str(opencv_cascade_dir() / f"haarcascade_{name}.xml"))
    crops = np.rint(data.lfw_subset() * 255).astype(np.uint8)
    windows = np.stack([resize_linear_exact(c, (24, 24)) for c in crops])
    passed, _ = evaluate_windows(cascade, windows)
    want = np.array([len(clf.detectMultiScale(w, 1.1, 0)) == 1 for w in windows])
    np.testing.assert_array_equal(passed == cascade.n_stages, want)
    assert want[:100].sum() > 10 and not want[100:].all()
