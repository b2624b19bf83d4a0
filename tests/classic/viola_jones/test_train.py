"""Cascade training: the stages meet their targets, bootstrapping mines what the cascade accepts,
and OpenCV runs the exported cascade identically."""

import json

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from torchvision.ops import box_iou

from vislab.classic.viola_jones import data, train
from vislab.classic.viola_jones.cascade import Cascade, evaluate_windows
from vislab.classic.viola_jones.data import (
    TEST_SEED_START,
    TRAIN_SAMPLES,
    face_windows,
    generated_image,
    lfw_faces,
    make_scenes,
)
from vislab.classic.viola_jones.detect import (
    clip_rects,
    scan_opencv,
    scan_opencv_windows,
)
from vislab.classic.viola_jones.opencv_xml import load_opencv_cascade
from vislab.classic.viola_jones.train import (
    CASCADE_FILE,
    NegativeMiner,
    TrainConfig,
    _hit_boxes,
    _max_iou,
    _stage_threshold,
    format_stage,
    train_cascade,
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
    # the false-positive rate per window, measured on fresh images, falls stage after stage
    assert 0 < rows[1]["window_false_positive_rate"] < rows[0]["window_false_positive_rate"] < 1
    assert all(row["windows_measured"] > 10_000 for row in rows)
    faces = face_windows(lfw_faces("test"), 4, np.random.default_rng(0), [generated_image(TEST_SEED_START)])
    assert (evaluate_windows(cascade, faces)[0] == cascade.n_stages).mean() >= 0.8
    summary = json.loads((tiny_run / "train.json").read_text())
    assert [s["window_false_positive_rate"] for s in summary["stages"]] == \
        [row["window_false_positive_rate"] for row in rows]
    assert summary["window_false_positive_rate"] == rows[-1]["window_false_positive_rate"]
    assert "FP/window" in format_stage(rows[0]) and f"{rows[0]['window_false_positive_rate']:.1e}" in \
        format_stage(rows[0])


def test_opencv_runs_the_exported_cascade_identically(tiny_run):
    ours = Cascade.load(tiny_run / "checkpoints" / "cascade.npz")
    clf = cv2.CascadeClassifier(str(tiny_run / "checkpoints" / "cascade.xml"))
    img = make_scenes(1, seed=5)[0].image
    got, _ = clip_rects(scan_opencv(ours, img, 1.2).accepted(), img.shape[::-1])   # OpenCV clips its output
    want = np.asarray(clf.detectMultiScale(img, 1.2, 0)).reshape(-1, 4)
    want = np.c_[want[:, :2], want[:, :2] + want[:, 2:]]
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, want.tolist()))
    assert len(got) > 0


def test_mined_negatives_are_windows_the_cascade_accepts(tiny_run):
    cascade = Cascade.load(tiny_run / "checkpoints" / "cascade.npz")
    images = [generated_image(s) for s in (100, 101)]
    miner = NegativeMiner(images, np.zeros((0, 24, 24), np.uint8), 24, 1.2, per_image=30)
    count = miner.refill(cascade, 1000, np.random.default_rng(0))
    hits = [scan_opencv_windows(cascade, img, 1.2) for img in images]
    # the images ran out; the rate is what the detector's own scan of them accepts
    assert miner.exhausted and count.images == 2
    assert (count.accepted, count.windows) == (sum(len(h.grid) for h in hits), sum(h.textured for h in hits))
    assert 0 < count.rate < 1 and len(miner) == 60
    assert (evaluate_windows(cascade, miner.windows)[0] == cascade.n_stages).all()
    # each kept window stands for its share of the windows accepted in its image
    assert miner.weights.sum() == pytest.approx(count.accepted)
    # a deeper cascade keeps only what it accepts too
    deeper = load_opencv_cascade("frontalface_default").truncated(3)
    before = len(miner)
    miner.keep_accepted(deeper)
    assert len(miner) < before and (evaluate_windows(deeper, miner.windows)[0] == 3).all()


def test_harvest_keeps_every_accepted_window_once():
    cascade = load_opencv_cascade("frontalface_default").truncated(4)
    img = generated_image(7)
    miner = NegativeMiner([], np.zeros((0, 24, 24), np.uint8), 24, 1.2, per_image=1)
    hits = scan_opencv_windows(cascade, img, 1.2)
    distinct = np.unique(hits.patches(np.arange(len(hits.grid)), (24, 24)).reshape(len(hits.grid), -1), axis=0)
    assert miner.harvest(cascade, [img], 1.2) == len(distinct) > 0
    assert miner.harvest(cascade, [img.copy()], 1.2) == 0          # nothing twice
    assert (miner.weights == 1).all()


def test_draw_follows_the_weights():
    miner = NegativeMiner([], np.stack([np.full((24, 24), v, np.uint8) for v in (0, 1)]), 24, 1.2, per_image=1)
    miner.weights = np.array([1.0, 9.0])
    rng = np.random.default_rng(0)
    drawn = [int(miner.draw(1, rng)[0, 0, 0]) for _ in range(2000)]
    assert np.mean(drawn) == pytest.approx(0.9, abs=0.03)
    assert sorted(int(w[0, 0]) for w in miner.draw(5, rng)) == [0, 1]      # at most what there is


def test_hit_boxes_are_the_detectors_rects():
    """The boxes bootstrapping compares with face boxes are the detector's own windows."""
    cascade = load_opencv_cascade("frontalface_default").truncated(2)
    img = make_scenes(1, seed=3)[0].image
    hits = scan_opencv_windows(cascade, img, 1.2)
    got = _hit_boxes(hits, img.shape, 24, 1.2)
    rects = scan_opencv(cascade, img, 1.2).rects
    want = np.c_[rects[:, :2], rects[:, :2] + rects[:, 2:]].astype(np.float64)
    assert len(got) == len(want) > 100
    # each box is one of OpenCV's, which rounds the corners vislab keeps exact
    dist, _ = cKDTree(want).query(got, p=np.inf)
    assert dist.max() <= 1.0


def test_max_iou_is_torchvisions():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (50, 2))
    boxes = np.c_[xy, xy + rng.uniform(5, 40, (50, 2))]
    faces = boxes[:3] + rng.uniform(-5, 5, (3, 4))
    want = box_iou(torch.from_numpy(boxes), torch.from_numpy(faces)).max(1).values.numpy()
    np.testing.assert_allclose(_max_iou(boxes, faces), want, rtol=1e-12)


def test_no_mined_window_covers_a_face():
    """On a flat background only the windows around the face are textured; an empty cascade
    accepts them all, and every one bootstrapping keeps overlaps the face box less than 0.4."""
    face = lfw_faces("train")[0]
    scene = data.make_scene(np.random.default_rng(1), np.full((240, 320), 128, np.uint8), face[None],
                            n_faces=(1, 1), face_size=(60, 60))
    empty = Cascade.from_stumps((24, 24), load_opencv_cascade("frontalface_default").features, [])
    miner = NegativeMiner([scene], np.zeros((0, 24, 24), np.uint8), 24, 1.2, per_image=10 ** 6)
    count = miner.refill(empty, 10 ** 6, np.random.default_rng(0))
    hits = scan_opencv_windows(empty, scene.image, 1.2)
    iou = _max_iou(_hit_boxes(hits, scene.image.shape, 24, 1.2), scene.boxes)
    assert 0 < count.accepted == (iou < train.NEGATIVE_MAX_IOU).sum() < len(iou)
    assert count.windows == hits.textured == len(iou)
    # the windows kept are those: none is a window that covers the face well
    covering = hits.patches(np.flatnonzero(iou >= train.NEGATIVE_MAX_IOU), (24, 24))
    assert not {w.tobytes() for w in covering} & {w.tobytes() for w in miner.windows}


def test_training_reads_no_test_data(monkeypatch):
    """A short training run with every image source recorded: training and validation faces,
    training samples and generated images of training seeds only."""
    seeds, names, splits = [], [], []

    def recorder(log, fn):
        def wrapped(arg, *args, **kwargs):
            log.append(arg)
            return fn(arg, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(data, "generated_image", recorder(seeds, data.generated_image))
    monkeypatch.setattr(data, "sample_image", recorder(names, data.sample_image))
    monkeypatch.setattr(train, "lfw_faces", recorder(splits, data.lfw_faces))
    cfg = TrainConfig(max_stages=1, features=300, positives_per_face=1, validation_per_face=2, negatives=20,
                      validation_negatives=10, generated_negatives=6, measure_images=2)
    result = train_cascade(cfg)
    assert result.cascade.n_stages == 1
    assert seeds and max(seeds) < TEST_SEED_START
    assert names and set(names) <= set(TRAIN_SAMPLES)
    assert set(splits) == {"train", "val"}


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


def test_vj_train_defaults_are_the_configs():
    """`vislab vj train` with no option trains what TrainConfig() describes (the README's cascade)."""
    from vislab.cli import build_parser

    args = build_parser().parse_args(["vj", "train", "--run-dir", "x"])
    cfg = TrainConfig()
    given = {"max_stages": args.stages, "detection_rate": args.detection_rate,
             "false_positive_rate": args.false_positive_rate,
             "target_false_positive_rate": args.target_false_positive_rate, "max_weak": args.max_weak,
             "positives_per_face": args.positives_per_face, "validation_per_face": args.validation_per_face,
             "scene_positives": not args.crop_positives, "negatives": args.negatives,
             "validation_negatives": args.validation_negatives, "features": args.features,
             "generated_negatives": args.generated_negatives, "scan_windows": args.scan_windows,
             "harvest_rate": args.harvest_rate, "measure_images": args.measure_images, "seed": args.seed}
    assert given == {k: getattr(cfg, k) for k in given}
