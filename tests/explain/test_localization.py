"""Weakly supervised localisation: generated canvases, boxes from maps against OpenCV's connected
components, IoU against torchvision, and a network whose CAM is the image itself."""

import cv2
import numpy as np
import torch
import torchvision

from tests.explain.nets import IdentityFeatures
from vislab.explain.localization import box_from_map, localize, place_on_canvas


def test_items_and_boxes_on_the_canvas():
    rng = np.random.default_rng(0)
    items = (rng.random((20, 1, 6, 5)) * 255).astype(np.uint8) * (rng.random((20, 1, 6, 5)) < 0.5)
    items[0] = 0
    canvases, boxes = place_on_canvas(items, 15, seed=3)
    for item, canvas, box in zip(items, canvases, boxes):
        ys, xs = np.nonzero(canvas[0])
        if item.any():
            assert tuple(box) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            x1, y1 = int(box[0]) - np.nonzero(item[0])[1].min(), int(box[1]) - np.nonzero(item[0])[0].min()
            assert np.array_equal(canvas[:, y1:y1 + 6, x1:x1 + 5], item)
        else:
            assert box[2] - box[0] == 5 and box[3] - box[1] == 6      # an empty item: its frame


def test_box_of_the_largest_region_matches_opencv():
    rng = np.random.default_rng(0)
    for _ in range(20):
        heat = cv2.GaussianBlur(rng.random((24, 30)).astype(np.float32), (0, 0), 2.0) - 0.45
        mask = (heat >= 0.2 * heat.max()).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        x, y, w, h, _ = stats[1 + np.argmax(stats[1:, cv2.CC_STAT_AREA])]
        assert box_from_map(torch.from_numpy(heat)).tolist() == [x, y, x + w, y + h]
    assert box_from_map(-torch.ones(4, 5)).tolist() == [0, 0, 5, 4]       # nothing positive


def test_a_network_whose_cam_is_the_image_localises_exactly():
    """Features = the image, one class weight 1: CAM = the image, so the box of a uniform
    rectangle is its own box (IoU 1) and IoUs agree with torchvision's."""
    rng = np.random.default_rng(0)
    items = np.zeros((12, 1, 8, 8), np.uint8)
    for it in items:
        y, x, h, w = rng.integers(0, 4, 4)
        it[0, y:y + h + 3, x:x + w + 3] = 200
    canvases, boxes = place_on_canvas(items, 20, seed=1)
    net = IdentityFeatures(torch.tensor([[1.0], [-1.0]]), torch.zeros(2))
    x = torch.from_numpy(canvases).float() / 255
    res = localize(net, x, torch.from_numpy(boxes), torch.zeros(12, dtype=torch.long), "cam", batch_size=5)
    assert torch.allclose(res.iou, torch.ones(12))
    assert res.correct.all()
    s = res.summary()
    assert s["mean_iou"] == 1.0 and s["gt_known_loc"] == 1.0 and s["top1_loc"] == 1.0
    bw, bh = (boxes[:, 2] - boxes[:, 0]).mean(), (boxes[:, 3] - boxes[:, 1]).mean()
    centred = torch.tensor([[(20 - bw) / 2, (20 - bh) / 2, (20 + bw) / 2, (20 + bh) / 2]])
    assert torch.allclose(res.baseline_iou, torchvision.ops.box_iou(centred, torch.from_numpy(boxes))[0])
    # class 1's CAM is minus the image: nothing positive, the box is the whole canvas
    res = localize(net, x, torch.from_numpy(boxes), torch.ones(12, dtype=torch.long), "gradcam")
    assert (res.boxes == torch.tensor([0.0, 0.0, 20.0, 20.0])).all()
    assert torch.allclose(res.iou, torchvision.ops.box_iou(res.boxes[:1], torch.from_numpy(boxes))[0])
    assert not res.correct.any()
