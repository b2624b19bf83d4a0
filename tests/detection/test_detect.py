"""Runs as detectors: reading images, drawing detections (colours from matplotlib's tab10),
and the COCO files of a detection set (checked by hand and by pycocotools)."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.metrics.coco_oracle import pycocotools_eval
from vislab.detection.detect import coco_files, draw_detections, read_image
from vislab.errors import UserError
from vislab.metrics.detection import evaluate_detections


def test_read_image(tmp_path):
    arr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    Image.fromarray(arr).save(tmp_path / "a.png")
    Image.fromarray(arr[..., 0]).save(tmp_path / "gray.png")
    torch.testing.assert_close(read_image(str(tmp_path / "a.png")), torch.from_numpy(arr).permute(2, 0, 1) / 255.0)
    assert read_image(str(tmp_path / "gray.png")).shape == (3, 2, 3)
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(UserError, match="cannot decode"):
        read_image(str(tmp_path / "bad.png"))


def test_draw_detections(tmp_path):
    from matplotlib import colormaps
    image = torch.zeros(3, 40, 60)
    det = {"boxes": torch.tensor([[10., 20., 30., 35.]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([3])}
    draw_detections(image, det, ["a", "b", "c", "d"], str(tmp_path / "d.png"), min_side=120)
    out = np.asarray(Image.open(tmp_path / "d.png").convert("RGB"))
    assert out.shape == (80, 120, 3)                                 # enlarged 2x
    colour = [round(255 * c) for c in colormaps["tab10"](3)[:3]]
    assert out[60, 20].tolist() == out[40, 30].tolist() == colour    # left and top edges, 2x
    assert out[5, 5].tolist() == [0, 0, 0]


def test_coco_files():
    targets = [{"boxes": torch.tensor([[1., 2., 11., 22.]]), "labels": torch.tensor([1]), "area": torch.tensor([150.])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    dets = [{"boxes": torch.tensor([[1., 2., 11., 20.], [0., 0., 5., 5.]]), "scores": torch.tensor([0.9, 0.4]),
             "labels": torch.tensor([1, 0])},
            {"boxes": torch.tensor([[3., 3., 9., 9.]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([1])}]
    gt, results = coco_files(targets, dets, ["cat", "dog"], (30, 40))
    assert gt["images"][0] == {"id": 1, "file_name": "000000.png", "width": 40, "height": 30}
    assert gt["annotations"][0]["bbox"] == [1, 2, 10, 20] and gt["annotations"][0]["area"] == 150
    assert results[0] == {"image_id": 1, "category_id": 2, "bbox": [1.0, 2.0, 10.0, 18.0], "score": pytest.approx(0.9)}
    assert [r["image_id"] for r in results] == [1, 1, 2]
    np.testing.assert_allclose(evaluate_detections(dets, targets, ["cat", "dog"]).stats,
                               pycocotools_eval(gt, results).stats, atol=1e-9)
