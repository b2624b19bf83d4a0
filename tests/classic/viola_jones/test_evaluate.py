"""Evaluation: precision/recall/AP on a hand-made case, and OpenCV vs vislab on the same cascade."""

import numpy as np
import pytest

from vislab.classic.viola_jones.data import Scene, make_scenes
from vislab.classic.viola_jones.evaluate import compare, precision_recall_ap
from vislab.classic.viola_jones.opencv_xml import load_opencv_cascade, resolve_cascade_path


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
