"""``vislab vj train|detect|eval`` end to end."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image
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
    assert len(want) > 0
    assert boxes == [[x, y, x + w, y + h] for x, y, w, h in np.asarray(want).tolist()]
    assert png.stat().st_size > 1000


@pytest.fixture
def astronaut_png(tmp_path, monkeypatch):
    """A tmp folder holding only astronaut.png, as the working directory."""
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_issue_20_cascade_given_as_image_creates_nothing(capsys, astronaut_png):
    code, out, err = _run(capsys, "vj", "detect", "frontalface_default", "astronaut.png", "--out", "out.png")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "--cascade frontalface_default" in err     # names the problem and the fix
    assert _files(astronaut_png) == ["astronaut.png"]
    # the corrected command writes the picture
    code, out, err = _run(capsys, "vj", "detect", "astronaut.png", "--out", "out.png")
    assert code == 0 and err == ""
    assert (astronaut_png / "out.png").is_file() and json.loads(out)["boxes"]
    assert Image.open(astronaut_png / "out.png").size == (512, 512)


def test_out_names_an_existing_folder(capsys, astronaut_png):
    (astronaut_png / "out.png").mkdir()       # left by the bug of issue 20, or any folder
    (astronaut_png / "pictures").mkdir()
    assert _run(capsys, "vj", "detect", "astronaut.png", "--out", "out.png")[0] == 0
    assert _run(capsys, "vj", "detect", "astronaut.png", "camera", "--out", "pictures")[0] == 0
    assert _files(astronaut_png) == ["astronaut.png", "out.png", "out.png/astronaut_vj.png", "pictures",
                                     "pictures/astronaut_vj.png", "pictures/camera_vj.png"]


@pytest.mark.parametrize("argv, message", [
    (["astronaut.png", "camera", "--out", "existing.png"], "existing.png is a file, but 2 images need a folder"),
    (["astronaut.png", "camera", "--out", "new.png"], "new.png names an image file, but 2 images need a folder"),
    (["astronaut.png", "--out", "astronaut.png"], "would overwrite the input image"),
    (["astronaut.png", "--out", "existing.png/deeper/out.png"], "existing.png is a file"),
    (["astronaut.png", "--out", "out.jpg"], "the picture is a PNG"),
    (["astronaut.png", "nope.png", "--out", "pictures"], "'nope.png' is neither a file nor a scikit-image sample"),
    (["astronaut.png", ".", "--out", "pictures"], "is a folder, not an image"),
    (["astronaut.png", "--cascade", "astronaut.png", "--out", "pictures"], "is not an OpenCV Haar cascade"),
    (["astronaut.png", "--scale-factor", "1", "--out", "pictures"], "scale factor must be above 1"),
])
def test_detect_mistakes_create_nothing(capsys, astronaut_png, argv, message):
    (astronaut_png / "existing.png").write_bytes(b"keep")
    code, out, err = _run(capsys, "vj", "detect", *argv)
    assert code == 2 and out == "" and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _files(astronaut_png) == ["astronaut.png", "existing.png"]
    assert (astronaut_png / "existing.png").read_bytes() == b"keep"


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
        assert a["detections"] > 0
        assert (a["precision"], a["recall"], a["AP50"], a["detections"]) == \
            (b["precision"], b["recall"], b["AP50"], b["detections"])
    for name in ("vj_roc.png", "vj_astronaut_vislab.png", "vj_scene_opencv.png"):
        assert (tiny_run / "plots" / name).stat().st_size > 1000
    assert "AP50" in out
    code, out, _ = _run(capsys, "vj", "detect", "astronaut", "--cascade", str(tiny_run), "--mode", "paper")
    assert code == 0 and "boxes" in json.loads(out)
