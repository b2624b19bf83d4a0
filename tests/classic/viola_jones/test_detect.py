"""Detection against OpenCV: resize, grey conversion, grouping, raw windows and final boxes."""

import cv2
import numpy as np
import pytest
from skimage import data

from vislab.classic.viola_jones.data import make_scenes
from vislab.classic.viola_jones.detect import (
    clip_rects,
    detect,
    group_rectangles,
    opencv_scales,
    resize_linear_exact,
    rgb_to_gray,
    scale_features,
    scan_opencv,
    scan_paper,
)
from vislab.classic.viola_jones.haar import haar_features
from vislab.classic.viola_jones.opencv_xml import (
    load_opencv_cascade,
    opencv_cascade_dir,
)

cv2.setNumThreads(1)


@pytest.fixture(scope="module")
def astronaut():
    return rgb_to_gray(data.astronaut())


def _opencv(name):
    return cv2.CascadeClassifier(str(opencv_cascade_dir() / f"haarcascade_{name}.xml"))


def _rects(a):
    return sorted(map(tuple, np.asarray(a, np.int64).reshape(-1, 4).tolist()))


def _clipped(rects, img):
    """Raw windows as cv2.detectMultiScale returns them: cut to the image (x, y, w, h)."""
    xyxy, _ = clip_rects(np.asarray(rects, np.int64).reshape(-1, 4), img.shape[::-1])
    return _rects(np.c_[xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]])


def _iou_xywh(a, b):
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_resize_is_opencvs_linear_exact():
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = rng.integers(2, 200, 2)
        img = rng.integers(0, 256, (h, w), dtype=np.uint8)
        s = rng.uniform(1.0, 5.0)
        size = (max(1, round(w / s)), max(1, round(h / s)))
        np.testing.assert_array_equal(resize_linear_exact(img, size),
                                      cv2.resize(img, size, interpolation=cv2.INTER_LINEAR_EXACT))


def test_gray_is_opencvs(astronaut):
    np.testing.assert_array_equal(astronaut, cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY))


@pytest.mark.parametrize("clusters, per_cluster", [(6, 9), (150, 12)])   # every pair tested; k-d trees
def test_group_rectangles_is_opencvs(clusters, per_cluster):
    rng = np.random.default_rng(1)
    for trial in range(30 if clusters < 10 else 3):
        n = rng.integers(1, clusters) if clusters < 10 else clusters
        centres = rng.integers(0, 300 if clusters < 10 else 1500, (n, 2))
        rects = []
        for cx, cy in centres:
            size = rng.integers(20, 120)
            for _ in range(rng.integers(1, per_cluster)):
                s = size + rng.integers(-6, 7)
                rects.append([cx + rng.integers(-8, 9), cy + rng.integers(-8, 9), s, s])
        rects = np.array(rects)
        assert clusters < 10 or len(rects) > 800
        for k in (0, 1, 2, 3, 5):
            got, weights = group_rectangles(rects, k)
            want, want_w = cv2.groupRectangles(rects.tolist(), k, 0.2)
            if k == 0:
                want, want_w = rects, np.ones(len(rects))
            assert _rects(got) == _rects(want)
            assert sorted(weights.tolist()) == sorted(np.asarray(want_w).reshape(-1).tolist())


def test_scales_are_opencvs(astronaut):
    # OpenCV visits scales while the window fits; min/max size filter them
    scales = opencv_scales((512, 512), (24, 24), 1.1)
    fits = [k for k in range(60) if round(24 * 1.1 ** k) <= 512]
    assert len(scales) == len(fits) == 33 and scales[0] == 1
    np.testing.assert_allclose(scales, [np.float32(1.1 ** k) for k in fits], rtol=1e-6)
    assert opencv_scales((20, 512), (24, 24), 1.1) == []


@pytest.mark.parametrize("engine", ["compiled", "numpy"])
def test_raw_windows_and_last_stage_sums_match_opencv(astronaut, engine):
    cascade = load_opencv_cascade("frontalface_default")
    clf = _opencv("frontalface_default")
    cands = scan_opencv(cascade, astronaut, 1.1, last_stage=True, engine=engine)
    rects, _, sums = clf.detectMultiScale3(astronaut, 1.1, 0, outputRejectLevels=True)
    assert len(rects) > 0
    assert _clipped(cands.accepted(), astronaut) == _rects(rects)   # every window, skip rule included
    xyxy, keep = clip_rects(cands.rects[cands.passed], astronaut.shape[::-1])
    xywh = np.c_[xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]]
    ours = {tuple(r): s for r, s in zip(xywh.tolist(), cands.scores[cands.passed][keep])}
    for r, s in zip(np.asarray(rects).tolist(), np.asarray(sums).reshape(-1)):
        assert ours[tuple(r)] == pytest.approx(s, abs=1e-6)
    assert (~cands.passed).any()   # windows that failed only the last stage are kept for ROC curves


@pytest.mark.parametrize("name, image, size", [
    ("frontalface_default", "astronaut", None),
    ("frontalface_alt2", "scene", None),              # depth-2 trees
    ("eye_tree_eyeglasses", "face", None),             # tilted features, 3-node trees
    ("smile", "astronaut", (200, 200)),                # tilted features
])
@pytest.mark.parametrize("engine", ["compiled", "numpy"])
def test_boxes_match_opencv(name, image, size, astronaut, engine):
    images = {"astronaut": astronaut, "face": astronaut[30:230, 140:320],   # her face with some margin
              "scene": make_scenes(1, seed=3)[0].image}
    img = np.ascontiguousarray(images[image])
    if size:
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    cascade = load_opencv_cascade(name)
    clf = _opencv(name)
    for scale_factor, k in ((1.1, 3), (1.2, 1)):
        got = detect(cascade, img, "opencv", scale_factor, k, engine=engine)
        want = np.asarray(clf.detectMultiScale(img, scale_factor, k)).reshape(-1, 4)
        assert len(want) > 0, "a comparison needs boxes: OpenCV found none"
        assert len(got) == len(want)
        xywh = np.c_[got.boxes[:, :2], got.boxes[:, 2:] - got.boxes[:, :2]]
        for w in want:   # the criterion; in fact the boxes are identical
            assert max(_iou_xywh(w, g) for g in xywh) >= 0.9
        assert _rects(xywh) == _rects(want)


def test_min_and_max_size_match_opencv(astronaut):
    cascade = load_opencv_cascade("frontalface_default")
    clf = _opencv("frontalface_default")
    for lo, hi in (((60, 60), (150, 150)), ((100, 100), (100, 100))):   # a range of scales; one scale
        got = scan_opencv(cascade, astronaut, 1.1, lo, hi).accepted()
        want = clf.detectMultiScale(astronaut, 1.1, 0, minSize=lo, maxSize=hi)
        assert len(want) > 0
        assert _clipped(got, astronaut) == _rects(want)


def test_paper_mode_finds_the_astronaut(astronaut):
    cascade = load_opencv_cascade("frontalface_default")
    want = _opencv("frontalface_default").detectMultiScale(astronaut, 1.1, 3)
    got = detect(cascade, astronaut, "paper", 1.25, 3)
    assert len(got) == 1 and len(want) == 1
    box = got.boxes[0]
    assert _iou_xywh(want[0], [box[0], box[1], box[2] - box[0], box[3] - box[1]]) > 0.6
    assert len(scan_paper(cascade, astronaut, 1.25, 1.5).rects) > 3


def test_scaled_features_keep_zero_sum():
    feats = haar_features((24, 24)).subset(np.arange(0, 162_336, 997))
    for s in (1.0, 1.37, 2.9):
        scaled = scale_features(feats, s)
        area = scaled.rects[..., 2] * scaled.rects[..., 3]
        np.testing.assert_allclose((scaled.weights * area).sum(1), 0, atol=1e-3)
        assert scaled.fits((round(24 * s), round(24 * s))).all()
    np.testing.assert_array_equal(scale_features(feats, 1.0).rects, feats.rects)


def test_bad_input_is_refused():
    cascade = load_opencv_cascade("frontalface_default")
    with pytest.raises(ValueError, match="uint8"):
        detect(cascade, np.zeros((50, 50), np.float32))
    with pytest.raises(ValueError, match="mode"):
        detect(cascade, np.zeros((50, 50), np.uint8), mode="fast")
    assert len(detect(cascade, np.zeros((10, 10), np.uint8))) == 0   # smaller than the window
