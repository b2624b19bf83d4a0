"""Cascade training: the stages meet their targets, and OpenCV runs the exported cascade identically."""

import json

import cv2
import numpy as np
import pytest

from vislab.classic.viola_jones.cascade import Cascade, evaluate_windows
from vislab.classic.viola_jones.data import generated_image, lfw_faces, make_scenes
from vislab.classic.viola_jones.detect import (
    clip_rects,
    resize_linear_exact,
    scan_opencv,
)
from vislab.classic.viola_jones.train import (
    CASCADE_FILE,
    NegativeSampler,
    TrainConfig,
    _stage_threshold,
    train_into_run,
)
from vislab.errors import UserError


def test_stages_meet_their_targets(tiny_run):
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    cascade = Cascade.load(tiny_run / "checkpoints" / "cascade.npz")
    assert len(rows) == cascade.n_stages == 2
    for row, size in zip(rows, cascade.stage_sizes):
        assert row["n_features"] == size
        assert row["false_positive_rate"] <= 0.5 or size == 200
        assert row["detection_rate"] >= 0.9
    assert rows[1]["negatives_accepted"] < 1    # stage 1 trained on negatives stage 0 let through
    faces = np.stack([resize_linear_exact(f, (24, 24)) for f in lfw_faces("test")])
    assert (evaluate_windows(cascade, faces)[0] == cascade.n_stages).mean() >= 0.8


def test_opencv_runs_the_exported_cascade_identically(tiny_run):
    ours = Cascade.load(tiny_run / "checkpoints" / "cascade.npz")
    clf = cv2.CascadeClassifier(str(tiny_run / "checkpoints" / "cascade.xml"))
    img = make_scenes(1, seed=5)[0].image
    got, _ = clip_rects(scan_opencv(ours, img, 1.2).accepted(), img.shape[::-1])   # OpenCV clips its output
    want = np.asarray(clf.detectMultiScale(img, 1.2, 0)).reshape(-1, 4)
    want = np.c_[want[:, :2], want[:, :2] + want[:, 2:]]
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, want.tolist()))
    assert len(got) > 0


def test_sampler_returns_windows_the_cascade_accepts(tiny_run):
    cascade = Cascade.load(tiny_run / "checkpoints" / "cascade.npz")
    nonfaces = np.zeros((0, 24, 24), np.uint8)
    sampler = NegativeSampler([generated_image(s) for s in range(2)], nonfaces, 24, 1.2)
    windows, rate = sampler.sample(cascade, 50, np.random.default_rng(0))
    assert 0 < len(windows) <= 50 and 0 < rate < 1
    assert (evaluate_windows(cascade, windows)[0] == cascade.n_stages).all()


def test_stage_threshold_keeps_the_fraction_d():
    scores = np.arange(200, dtype=np.float64)
    assert _stage_threshold(scores, 0.99) == 2           # 2 of 200 may fail
    assert _stage_threshold(scores, 1.0) == 0


@pytest.mark.parametrize("bad", [{"detection_rate": 1.5}, {"false_positive_rate": 1}, {"shapes": ("blob",)},
                                 {"negatives": 0}])
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad).validate()


def test_a_run_with_a_cascade_is_kept_unless_overwrite(tiny_run):
    before = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*")}
    with pytest.raises(UserError, match="already holds a cascade"):
        train_into_run(tiny_run, TrainConfig(max_stages=1), overwrite=False)
    assert {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*")} == before
    assert (tiny_run / CASCADE_FILE).is_file()
