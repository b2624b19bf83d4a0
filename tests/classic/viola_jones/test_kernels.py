"""The compiled detector (numba kernels) against the numpy reference and OpenCV, window for window."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from skimage import data

from vislab.classic.viola_jones import kernels
from vislab.classic.viola_jones.cascade import Cascade
from vislab.classic.viola_jones.detect import (
    _linear_taps,
    detect,
    rgb_to_gray,
    scan_opencv,
)
from vislab.classic.viola_jones.haar import haar_features
from vislab.classic.viola_jones.opencv_xml import (
    load_opencv_cascade,
    resolve_cascade_path,
)

cv2.setNumThreads(1)
ASTRONAUT = rgb_to_gray(data.astronaut())


def _random_images(seed: int, n: int = 2) -> list[np.ndarray]:
    """Crops of the astronaut, rescaled, with noise; a smooth random texture; a view of the astronaut."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        h, w = rng.integers(40, 220, 2)
        y, x = rng.integers(0, 512 - h), rng.integers(0, 512 - w)
        size = (int(w * rng.uniform(0.6, 1.6)), int(h * rng.uniform(0.6, 1.6)))
        img = cv2.resize(ASTRONAUT[y:y + h, x:x + w], size, interpolation=cv2.INTER_LINEAR)
        images.append(np.clip(img + rng.normal(0, rng.uniform(0, 30), img.shape), 0, 255).astype(np.uint8))
    smooth = cv2.GaussianBlur(rng.normal(0, 1, (150, 190)), (0, 0), 3)
    images.append(((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8))
    images.append(ASTRONAUT[20:260, 120:330])                           # a view, not contiguous
    return images


def _random_stump_cascade(seed: int) -> Cascade:
    """A vislab-style cascade (features of the generated pool, integer weights) that lets many windows through."""
    rng = np.random.default_rng(seed)
    pool = haar_features((24, 24))
    stages = [([(int(rng.integers(len(pool))), float(rng.normal(0, 0.02)), -1.0, 1.0) for _ in range(5)], -1.0)
              for _ in range(4)]
    return Cascade.from_stumps((24, 24), pool, stages)


def _windows(c):
    return sorted(zip(map(tuple, c.rects.tolist()), c.scores.tolist(), c.passed.tolist()))


CASCADES = ["frontalface_default",          # stumps
            "frontalface_alt2",             # depth-2 trees
            "eye_tree_eyeglasses",          # tilted features, 3-node trees
            "smile",                        # tilted features, a 36x18 window
            "upperbody",                    # tilted features, 22x18
            "license_plate_rus_16stages"]   # the old XML layout, 64x16


@pytest.mark.parametrize("name", CASCADES + ["vislab"])
def test_compiled_windows_equal_numpy_reference(name):
    """Every window that reaches the last stage, with its sum, for the full cascade and for its
    first stages (which let many windows through), on random images."""
    cascade = _random_stump_cascade(0) if name == "vislab" else load_opencv_cascade(name)
    seen = 0
    for k, img in enumerate(_random_images(CASCADES.index(name) + 1 if name in CASCADES else 0)):
        scale_factor = (1.1, 1.3)[k % 2]
        for n_stages in sorted({1, 3, cascade.n_stages}):
            c = cascade.truncated(n_stages)
            got = scan_opencv(c, img, scale_factor, last_stage=True)
            want = scan_opencv(c, img, scale_factor, last_stage=True, engine="numpy")
            assert _windows(got) == _windows(want)
            seen += len(want.rects)
        got, want = (detect(cascade, img, "opencv", scale_factor, 1, engine=e) for e in ("compiled", "numpy"))
        assert sorted(map(tuple, got.boxes.tolist())) == sorted(map(tuple, want.boxes.tolist()))
    assert seen > 100, "a comparison needs windows"


def test_compiled_boxes_equal_opencv_on_default_threads():
    """The astronaut, noisy and rescaled, with numba and OpenCV both on every core."""
    path = resolve_cascade_path("frontalface_default")
    cascade, clf = load_opencv_cascade(path), cv2.CascadeClassifier(str(path))
    noisy = np.clip(ASTRONAUT + np.random.default_rng(0).normal(0, 20, ASTRONAUT.shape), 0, 255).astype(np.uint8)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(os.cpu_count() or 1)
    try:
        for img in (noisy, cv2.resize(ASTRONAUT, (700, 700)), ASTRONAUT[:, ::-1]):
            want = np.asarray(clf.detectMultiScale(img, 1.1, 3)).reshape(-1, 4)
            got = detect(cascade, img)
            assert len(want) > 0
            assert sorted(map(tuple, got.boxes.tolist())) == sorted(map(tuple, np.c_[want[:, :2], want[:, :2] + want[:, 2:]].tolist()))
    finally:
        cv2.setNumThreads(threads)


@pytest.mark.parametrize("shape", [(1, 1), (24, 24), (31, 57), (80, 45)])
def test_pyramid_is_opencvs_resize_and_tables(shape):
    """The kernel's resized images and tables: cv2.resize (INTER_LINEAR_EXACT), cv2.integral3."""
    rng = np.random.default_rng(shape[0])
    gray = rng.integers(0, 256, shape, dtype=np.uint8)
    h, w = shape
    sizes = np.array([(w, h), (max(1, w * 2 // 3), max(1, h * 2 // 3)), (w * 3 // 2 + 1, h + 5)], np.int64)
    rows = sizes[:, 1] + 1
    row0 = np.r_[0, np.cumsum(rows)[:-1]]
    stride = int(sizes[:, 0].max() + 1)
    table = np.zeros((2 * rows.sum(), stride), np.int32)
    sq_table = np.zeros((rows.sum(), stride), np.int32)
    image_start = np.r_[0, np.cumsum(sizes[:, 0] * sizes[:, 1])]
    images = np.zeros(image_start[-1], np.uint8)
    kernels.build_pyramid(gray, sizes, row0, _linear_taps(w, sizes[:, 0]), np.r_[0, np.cumsum(sizes[:, 0])],
                          _linear_taps(h, sizes[:, 1]), np.r_[0, np.cumsum(sizes[:, 1])], table, sq_table,
                          int(rows.sum()), images, image_start)
    for k, (sw, sh) in enumerate(sizes):
        img = images[image_start[k]:image_start[k + 1]].reshape(sh, sw)
        np.testing.assert_array_equal(img, cv2.resize(gray, (int(sw), int(sh)), interpolation=cv2.INTER_LINEAR_EXACT))
        s, q, t = cv2.integral3(img, sdepth=cv2.CV_32S, sqdepth=cv2.CV_64F)
        r = slice(row0[k], row0[k] + sh + 1)
        np.testing.assert_array_equal(table[r, :sw + 1], s)
        np.testing.assert_array_equal(sq_table[r, :sw + 1], q.astype(np.int64).astype(np.int32))
        np.testing.assert_array_equal(table[rows.sum() + row0[k]:rows.sum() + row0[k] + sh + 1, :sw + 1], t)


def test_edge_cases_and_bad_engine():
    cascade = load_opencv_cascade("frontalface_default")
    for img in (np.zeros((10, 10), np.uint8), np.zeros((24, 24), np.uint8), ASTRONAUT[:24, :100]):
        got, want = (scan_opencv(cascade, img, last_stage=True, engine=e) for e in ("compiled", "numpy"))
        assert _windows(got) == _windows(want)
    assert len(detect(cascade, np.zeros((10, 10), np.uint8))) == 0
    lo, hi = (60, 60), (150, 150)
    got, want = (scan_opencv(cascade, ASTRONAUT, 1.1, lo, hi, engine=e) for e in ("compiled", "numpy"))
    assert sorted(map(tuple, got.rects.tolist())) == sorted(map(tuple, want.rects.tolist()))
    with pytest.raises(ValueError, match="engine"):
        detect(cascade, ASTRONAUT, engine="fast")
    feats = haar_features((24, 24)).subset(np.arange(3))
    feats.rects[1, 1, 0] = 24                                              # its second rectangle: x 24 to 25
    with pytest.raises(ValueError, match="feature 1 .* outside its 24x24 window"):
        detect(Cascade.from_stumps((24, 24), feats, [([(0, 0.0, -1.0, 1.0), (1, 0.0, -1.0, 1.0)], 0.0)]), ASTRONAUT)


_FRESH = """
import json
from skimage import data
from vislab.classic.viola_jones import load_opencv_cascade, rgb_to_gray
from vislab.classic.viola_jones.detect import detect
print(json.dumps(detect(load_opencv_cascade("frontalface_default"), rgb_to_gray(data.astronaut())).boxes.tolist()))
"""


@pytest.mark.slow
def test_fresh_processes_compile_then_load_the_cache(tmp_path):
    """A process with an empty numba cache compiles the kernels and caches them; the next loads them."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", _FRESH], env=env, capture_output=True, text=True, check=True)
            for _ in range(2)]
    assert list(tmp_path.rglob("*.nbi")), "numba wrote no cache"
    want = cv2.CascadeClassifier(str(resolve_cascade_path("frontalface_default"))).detectMultiScale(ASTRONAUT, 1.1, 3)
    want = [[x, y, x + w, y + h] for x, y, w, h in np.asarray(want).tolist()]
    assert [json.loads(r.stdout) for r in runs] == [want, want]


@pytest.mark.parametrize("engine", ["compiled", "numpy"])
def test_one_stage_cascade_windows_match_opencv(engine, tmp_path):
    """A single stage is the first and the last: windows skipped after a first-stage failure are
    never classified, with ``last_stage=True`` too."""
    from vislab.classic.viola_jones.detect import clip_rects
    from vislab.classic.viola_jones.opencv_xml import save_opencv_cascade

    cascade = load_opencv_cascade("frontalface_default").truncated(1)
    save_opencv_cascade(cascade, tmp_path / "one.xml")
    img = np.ascontiguousarray(ASTRONAUT[100:300, 100:300])
    want = np.asarray(cv2.CascadeClassifier(str(tmp_path / "one.xml")).detectMultiScale(img, 1.1, 0)).reshape(-1, 4)
    for last_stage in (False, True):
        xyxy, _ = clip_rects(scan_opencv(cascade, img, 1.1, last_stage=last_stage, engine=engine).accepted(),
                             img.shape[::-1])
        assert sorted(map(tuple, np.c_[xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]].tolist())) == \
            sorted(map(tuple, want.tolist()))
