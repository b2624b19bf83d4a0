"""Evaluation: precision/recall/AP on a hand-made case, OpenCV vs vislab on the same cascade, and a run."""

import json

import cv2
import numpy as np
import pytest

from vislab.classic.viola_jones.data import Scene, make_scenes
from vislab.classic.viola_jones.evaluate import (
    compare,
    evaluate_run,
    precision_recall_ap,
)
from vislab.classic.viola_jones.opencv_xml import (
    load_opencv_cascade,
    resolve_cascade_path,
    save_opencv_cascade,
)
from vislab.classic.viola_jones.train import CASCADE_FILE, XML_FILE
from vislab.errors import UserError


def test_precision_recall_ap_by_hand():
    img = np.zeros((100, 100), np.uint8)
    scenes = [Scene(img, np.array([[10, 10, 40, 40], [60, 60, 90, 90]])), Scene(img, np.array([[0, 0, 30, 30]]))]
    boxes = [np.array([[11, 11, 41, 41], [50, 0, 70, 20]]), np.array([[1, 1, 30, 31]])]
    scores = [np.array([5.0, 9.0]), np.array([3.0])]
    precision, recall, ap, tp, fp = precision_recall_ap(boxes, scores, scenes)
    # by score: FP (9), TP (5), TP (3); 3 faces -> precision 2/3, recall 2/3
    assert (tp, fp) == (2, 1)
    assert precision == pytest.approx(2 / 3) and recall == pytest.approx(2 / 3)
    # VOC AP: recall 1/3 at precision 1/2, 2/3 at 2/3 -> envelope 2/3 over [0, 2/3]
    assert ap == pytest.approx(2 / 3 * 2 / 3)


def test_vislab_and_opencv_agree_on_opencvs_cascade():
    scenes = make_scenes(3, seed=1)
    cascade = load_opencv_cascade("frontalface_alt")
    reports = compare(cascade, None, resolve_cascade_path("frontalface_alt"), cascade, scenes, 1.2, 2)
    ours, theirs = reports[-2], reports[-1]
    assert (ours.precision, ours.recall, ours.ap50, ours.detections) == \
        (theirs.precision, theirs.recall, theirs.ap50, theirs.detections)
    assert theirs.recall > 0.5
    # ROC: same points wherever OpenCV reports the windows (thresholds at or above the cascade's)
    reachable = [k for k, fp in enumerate(theirs.roc_false_positives) if fp >= 0]
    assert reachable and len(reachable) < len(ours.roc_thresholds)
    for k in reachable:
        assert ours.roc_detection_rate[k] == theirs.roc_detection_rate[k]
        assert ours.roc_false_positives[k] == theirs.roc_false_positives[k]
    # lowering the last threshold below the cascade's own finds at least as many faces
    own = ours.roc_thresholds.index(float(cascade.stage_thresholds[-1]))
    assert ours.roc_detection_rate[0] >= ours.roc_detection_rate[own] == ours.recall


def test_evaluate_run_writes_the_table_and_pictures(tmp_path):
    """A run holding OpenCV's alt cascade cut to 12 stages: its table rows are OpenCV's own detector's."""
    run = tmp_path / "run"
    cascade = load_opencv_cascade("frontalface_alt").truncated(12)
    cascade.save(run / CASCADE_FILE)
    save_opencv_cascade(cascade, run / XML_FILE)
    result = evaluate_run(run, scenes=2, seed=1, opencv_cascade="frontalface_alt", scale_factor=1.2,
                          min_neighbors=2, roc_points=3)
    assert json.loads((run / "eval.json").read_text()) == result.payload
    ours, ours_cv, theirs, theirs_cv = result.payload["table"]
    assert ours_cv["detector"] == "vislab cascade, OpenCV detector"
    scenes = make_scenes(2, seed=1)
    clf = cv2.CascadeClassifier(str(run / XML_FILE))
    assert ours["detections"] == sum(len(clf.detectMultiScale(s.image, 1.2, 2)) for s in scenes) > 0
    for a, b in ((ours, ours_cv), (theirs, theirs_cv)):
        assert (a["precision"], a["recall"], a["AP50"], a["detections"]) == \
            (b["precision"], b["recall"], b["AP50"], b["detections"])
    assert result.payload["faces"] == sum(len(s.boxes) for s in scenes)
    assert sorted(p.name for p in result.plots) == sorted(
        ["vj_roc.png"] + [f"vj_{what}_{who}.png" for what in ("astronaut", "scene") for who in ("vislab", "opencv")])
    assert all(p.stat().st_size > 1000 and p.parent == run / "plots" for p in result.plots)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "has no checkpoints/cascade.npz"),
    ({"scenes": 0}, "at least 1"),
    ({"scale_factor": 1.0}, "above 1"),
])
def test_evaluate_run_refuses_mistakes_before_writing(tmp_path, kwargs, message):
    run = tmp_path / "run"
    if kwargs:
        load_opencv_cascade("frontalface_alt").truncated(2).save(run / CASCADE_FILE)
    with pytest.raises(UserError, match=message):
        evaluate_run(run, **kwargs)
    assert sorted(p.name for p in tmp_path.rglob("*")) == (["cascade.npz", "checkpoints", "run"] if kwargs else [])
