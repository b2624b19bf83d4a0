"""OpenCV's XML cascades: every shipped one reads; files that are not Haar cascades are refused."""

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage

from vislab.classic.viola_jones.opencv_xml import (
    load_opencv_cascade,
    opencv_cascade_dir,
    opencv_cascade_names,
    resolve_cascade_path,
    save_opencv_cascade,
)
from vislab.errors import UserError


@pytest.mark.parametrize("name", opencv_cascade_names())
def test_every_shipped_cascade_reads(name):
    path = opencv_cascade_dir() / name
    cascade = load_opencv_cascade(path)
    text = path.read_text()
    clf = cv2.CascadeClassifier(str(path))
    assert cascade.window == clf.getOriginalWindowSize()
    assert cascade.n_stages == len(re.findall(r"<(stageThreshold|stage_threshold)>", text))
    assert cascade.features.fits(cascade.window).all()
    nodes_new = sum(len(m.split()) // 4 for m in re.findall(r"<internalNodes>([^<]*)</internalNodes>", text))
    nodes_old = len(re.findall(r"<threshold>", text))
    # every node but a tree's root is some node's child
    n_nodes = len(cascade.node_feature) + (cascade.node_left > 0).sum() + (cascade.node_right > 0).sum()
    assert n_nodes == nodes_new + nodes_old


def test_names_resolve_to_shipped_files():
    assert resolve_cascade_path("frontalface_default").name == "haarcascade_frontalface_default.xml"
    assert resolve_cascade_path("haarcascade_eye.xml").name == "haarcascade_eye.xml"
    with pytest.raises(UserError, match="frontalface_default"):
        resolve_cascade_path("no_such_cascade")


def test_lbp_and_broken_files_are_refused(tmp_path):
    lbp = Path(skimage.data.lbp_frontal_face_cascade_filename())
    with pytest.raises(UserError, match="LBP"):
        load_opencv_cascade(lbp)
    bad = tmp_path / "bad.xml"
    bad.write_text("<opencv_storage><cascade><stageType>BOOST")
    with pytest.raises(UserError, match="not an OpenCV Haar cascade"):
        load_opencv_cascade(bad)


def test_written_xml_runs_in_opencv_like_the_original(tmp_path):
    """A cascade read by vislab, cut to 12 stages and written back, is read by OpenCV and detects
    what OpenCV detects with the original file cut the same way."""
    full = load_opencv_cascade("frontalface_alt2")
    out = tmp_path / "cut.xml"
    save_opencv_cascade(full.truncated(12), out)
    again = load_opencv_cascade(out)
    np.testing.assert_array_equal(again.node_threshold, full.truncated(12).node_threshold)
    np.testing.assert_array_equal(again.stage_thresholds, full.stage_thresholds[:12])
    img = cv2.resize(cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY), (200, 200))
    ours = cv2.CascadeClassifier(str(out)).detectMultiScale(img, 1.1, 0)
    # OpenCV's own file, cut as text (independent of vislab's reader and writer)
    ref_text = (opencv_cascade_dir() / "haarcascade_frontalface_alt2.xml").read_text()
    stages = ref_text.split("<stages>")[1].split("</stages>")[0]
    chunks = re.split(r"(?=\n    <_>\n      <maxWeakCount>)", stages)
    cut = ref_text.replace(stages, "".join(chunks[:13]) + "\n  ")
    cut = re.sub(r"<stageNum>\d+</stageNum>", "<stageNum>12</stageNum>", cut)
    ref = tmp_path / "ref.xml"
    ref.write_text(cut)
    want = cv2.CascadeClassifier(str(ref)).detectMultiScale(img, 1.1, 0)
    assert sorted(map(tuple, np.asarray(ours).tolist())) == sorted(map(tuple, np.asarray(want).tolist()))
    assert len(want) > 0
