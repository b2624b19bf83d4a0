"""``vislab vj train|detect|eval`` end to end."""

import json

import cv2
import numpy as np
import pytest
from skimage import data

from vislab.cli import main

from .conftest import TINY


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_detect_gives_opencvs_boxes(capsys, tmp_path):
    png = tmp_path / "astro.png"
    code, out, _ = _run(capsys, "vj", "detect", "astronaut", "--cascade", "frontalface_default", "--out", str(png))
    assert code == 0
    boxes = json.loads(out)["boxes"]
    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    want = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml") \
        .detectMultiScale(gray, 1.1, 3)
    assert boxes == [[x, y, x + w, y + h] for x, y, w, h in np.asarray(want).tolist()]
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("argv, message", [
    (["vj", "detect", "astronaut", "--cascade", "nope"], "neither a file nor one of OpenCV's cascades"),
    (["vj", "detect", "/no/such.png"], "neither a file nor a scikit-image sample"),
    (["vj", "eval", "--run-dir", "/no/such/run"], "no checkpoints/cascade.npz"),
])
def test_mistakes_are_one_line(capsys, argv, message):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_train_refuses_to_overwrite(capsys, tiny_run):
    code, _, err = _run(capsys, "vj", "train", "--run-dir", str(tiny_run), *TINY)
    assert code == 2 and "--fresh" in err


def test_eval_writes_table_and_plots(capsys, tiny_run):
    code, out, _ = _run(capsys, "vj", "eval", "--run-dir", str(tiny_run), "--scenes", "1", "--scale-factor", "1.3",
                        "--roc-points", "3")
    assert code == 0
    report = json.loads((tiny_run / "eval.json").read_text())
    names = [row["detector"] for row in report["table"]]
    assert names == ["vislab cascade, vislab detector", "vislab cascade, OpenCV detector",
                     "OpenCV frontalface_default, vislab detector", "OpenCV frontalface_default, OpenCV detector"]
    ours, ours_cv, theirs, theirs_cv = report["table"]
    for a, b in ((ours, ours_cv), (theirs, theirs_cv)):     # same cascade, same detections
        assert (a["precision"], a["recall"], a["AP50"], a["detections"]) == \
            (b["precision"], b["recall"], b["AP50"], b["detections"])
    for name in ("vj_roc.png", "vj_astronaut_vislab.png", "vj_scene_opencv.png"):
        assert (tiny_run / "plots" / name).stat().st_size > 1000
    assert "AP50" in out
    code, out, _ = _run(capsys, "vj", "detect", "astronaut", "--cascade", str(tiny_run), "--mode", "paper")
    assert code == 0 and "boxes" in json.loads(out)
