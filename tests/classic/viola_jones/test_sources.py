"""Named cascades and images, where `vj detect` draws, and detection over named images."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from vislab.classic.viola_jones.opencv_xml import (
    load_opencv_cascade,
    opencv_cascade_dir,
    save_opencv_cascade,
)
from vislab.classic.viola_jones.sources import (
    check_image,
    detect_images,
    load_any_cascade,
    picture_paths,
    read_gray,
)
from vislab.classic.viola_jones.train import CASCADE_FILE
from vislab.errors import UserError


@pytest.fixture(scope="module")
def alt():
    return load_opencv_cascade("frontalface_alt")


def _same(a, b):
    assert a.window == b.window
    for name in ("node_feature", "node_threshold", "node_left", "node_right", "leaves", "stage_sizes",
                 "stage_thresholds"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_load_any_cascade_reads_every_kind(tmp_path, alt):
    alt.save(tmp_path / "alt.npz")
    save_opencv_cascade(alt, tmp_path / "alt.xml")
    run = tmp_path / "run"
    alt.save(run / CASCADE_FILE)
    shipped = str(opencv_cascade_dir() / "haarcascade_frontalface_alt.xml")
    for spec in ("frontalface_alt", shipped, tmp_path / "alt.npz", str(tmp_path / "alt.xml"), str(run)):
        _same(load_any_cascade(spec), alt)
    with pytest.raises(UserError, match="has no checkpoints/cascade.npz"):
        load_any_cascade(tmp_path)
    with pytest.raises(UserError, match="neither a file nor one of OpenCV's cascades"):
        load_any_cascade("no_such_cascade")


def test_read_gray_is_opencvs_grey(tmp_path):
    rgb = data.astronaut()
    Image.fromarray(rgb).save(tmp_path / "astro.png")
    want = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(read_gray(str(tmp_path / "astro.png")), want)
    np.testing.assert_array_equal(read_gray("astronaut"), want)
    assert read_gray("camera").shape == data.camera().shape


@pytest.mark.parametrize("spec, message", [
    ("frontalface_default", "is a cascade, not an image; pass it as --cascade frontalface_default"),
    ("{tmp}", "is a folder, not an image"),
    ("{tmp}/broken.png", "cannot decode image"),
    ("{tmp}/missing.png", "neither a file nor a scikit-image sample"),
    ("download_all", "neither a file nor a scikit-image sample"),   # a scikit-image function, not a sample
])
def test_check_image_names_the_mistake(tmp_path, spec, message):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=message):
        check_image(spec.format(tmp=tmp_path))


def test_picture_paths(tmp_path):
    folder = tmp_path / "folder.png"          # a folder may have any name
    folder.mkdir()
    (tmp_path / "file.png").write_bytes(b"x")
    assert picture_paths(["a.png", "b"], None) == [None, None]
    assert picture_paths(["a.png"], tmp_path / "new.png") == [tmp_path / "new.png"]
    assert picture_paths(["a.png"], tmp_path / "file.png") == [tmp_path / "file.png"]
    assert picture_paths(["x/a.png"], folder) == [folder / "a_vj.png"]
    assert picture_paths(["a.png", "astronaut"], tmp_path / "new") == [tmp_path / "new/a_vj.png",
                                                                        tmp_path / "new/astronaut_vj.png"]
    for images, out, message in ((["a.png", "b.png"], "file.png", "is a file, but 2 images need a folder"),
                                 (["a.png", "b.png"], "new.png", "names an image file"),
                                 (["a.png"], "new", "the picture is a PNG"),
                                 (["a.png"], "file.png/new.png", "is a file, so the folder"),
                                 (["x/a.png", "y/a.png"], "new", "would both be drawn into"),
                                 (["file.png"], "file.png", "would overwrite the input image")):
        images = [str(tmp_path / i) for i in images]
        with pytest.raises(UserError, match=message):
            picture_paths(images, tmp_path / out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.png", "folder.png"]   # nothing made


def test_detect_images_gives_opencvs_boxes(tmp_path):
    face = np.ascontiguousarray(data.astronaut()[30:230, 140:320])
    Image.fromarray(face).save(tmp_path / "face.png")
    results = detect_images(["astronaut", str(tmp_path / "face.png")], "frontalface_default", tmp_path / "pictures",
                            min_neighbors=3)
    assert not (tmp_path / "pictures").exists()    # nothing is done before the first result is asked for
    results = list(results)
    assert len(results) == 2
    clf = cv2.CascadeClassifier(str(opencv_cascade_dir() / "haarcascade_frontalface_default.xml"))
    for r, rgb, stem in zip(results, (data.astronaut(), face), ("astronaut", "face")):
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        want = np.asarray(clf.detectMultiScale(gray, 1.1, 3)).reshape(-1, 4)
        assert len(want) > 0
        assert sorted(r.row()["boxes"]) == sorted(np.c_[want[:, :2], want[:, :2] + want[:, 2:]].tolist())
        assert r.picture == tmp_path / "pictures" / f"{stem}_vj.png"
        assert Image.open(r.picture).size == gray.shape[::-1]


def test_detect_images_checks_everything_first(tmp_path):
    out = tmp_path / "pictures"
    for kwargs, message in (({"images": ["astronaut", "nope"]}, "neither a file"),
                            ({"images": ["astronaut"], "cascade": "nope"}, "neither a file nor one of OpenCV's"),
                            ({"images": ["astronaut"], "scale_factor": 0.9}, "above 1"),
                            ({"images": ["astronaut"], "mode": "fast"}, "mode 'fast'"),
                            ({"images": []}, "no image given")):
        with pytest.raises(UserError, match=message):
            detect_images(out=out, **kwargs)
    assert not out.exists() and list(Path(tmp_path).iterdir()) == []
