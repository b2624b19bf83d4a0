import pytest
import torch
import torchvision.ops as tvo

from tests.detection.synthetic import random_boxes
from vislab.detection import boxes as B


@pytest.mark.parametrize("in_fmt", ["xyxy", "xywh", "cxcywh"])
@pytest.mark.parametrize("out_fmt", ["xyxy", "xywh", "cxcywh"])
def test_box_convert_matches_torchvision(in_fmt, out_fmt):
    b = random_boxes(50, 2)
    torch.testing.assert_close(B.box_convert(b, in_fmt, out_fmt), tvo.box_convert(b, in_fmt, out_fmt))
    torch.testing.assert_close(B.box_convert(B.box_convert(b, "xyxy", out_fmt), out_fmt, "xyxy"), b)


def test_box_convert_rejects_unknown_format():
    with pytest.raises(ValueError, match="xyxy"):
        B.box_convert(random_boxes(4, 0), "xyxy", "yxyx")


def test_area_matches_torchvision():
    b = random_boxes(50, 3)
    torch.testing.assert_close(B.box_area(b), tvo.box_area(b))


@pytest.mark.parametrize("ours, theirs", [
    (B.box_iou, tvo.box_iou),
    (B.generalized_box_iou, tvo.generalized_box_iou),
    (B.distance_box_iou, tvo.distance_box_iou),
    (B.complete_box_iou, tvo.complete_box_iou),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_iou_family_matches_torchvision(ours, theirs, seed):
    b1, b2 = random_boxes(40, seed), random_boxes(30, seed + 10)
    got, want = ours(b1, b2), theirs(b1, b2)
    finite = torch.isfinite(want)
    # torchvision gives NaN only for 0/0: two flat boxes, or (CIoU's atan(w/h)) a point box
    flat1, flat2 = B.box_area(b1) == 0, B.box_area(b2) == 0
    point1, point2 = (b1[:, 2:] == b1[:, :2]).all(1), (b2[:, 2:] == b2[:, :2]).all(1)
    assert not (~finite & ~(flat1[:, None] & flat2) & ~point1[:, None] & ~point2).any()
    torch.testing.assert_close(got[finite], want[finite])
    assert torch.isfinite(got).all()              # where torchvision divides 0 by 0, we give a number


def test_degenerate_pairs_are_zero_not_nan():
    point = torch.tensor([[5.0, 5.0, 5.0, 5.0]])
    line = torch.tensor([[0.0, 5.0, 10.0, 5.0]])
    assert torch.isnan(tvo.box_iou(point, point)).all()       # torchvision: 0 / 0
    assert B.box_iou(point, point).item() == 0.0               # pycocotools' convention
    assert B.generalized_box_iou(point, point).item() == 0.0
    assert B.box_iou(line, line).item() == 0.0
    # a flat box against a real one: IoU 0, GIoU = -(enclosing - union) / enclosing, by hand
    box = torch.tensor([[0.0, 0.0, 10.0, 4.0]])
    assert B.generalized_box_iou(line, box).item() == pytest.approx(-(50 - 40) / 50)


def test_identical_boxes_have_iou_one():
    b = random_boxes(20, 4)
    b = b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]
    for fn in (B.box_iou, B.generalized_box_iou, B.distance_box_iou, B.complete_box_iou):
        torch.testing.assert_close(fn(b, b).diagonal(), torch.ones(len(b), dtype=b.dtype))


def test_ciou_gradient_matches_torchvision():
    # the paper holds alpha constant for the gradient; torchvision does too
    b1 = random_boxes(12, 5)[12 // 4 + 8:].clone()
    b1 = torch.cat([b1, torch.tensor([[1.0, 2.0, 30.0, 20.0]], dtype=b1.dtype)])
    b2 = torch.tensor([[0.0, 0.0, 20.0, 25.0], [10.0, 5.0, 40.0, 15.0]], dtype=b1.dtype)
    x1, x2 = b1.clone().requires_grad_(), b1.clone().requires_grad_()
    B.complete_box_iou(x1, b2).sum().backward()
    tvo.complete_box_iou(x2, b2).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad)


def test_integer_boxes_give_float():
    b = torch.tensor([[0, 0, 2, 2], [1, 1, 3, 3]])
    iou = B.box_iou(b, b)
    assert iou.is_floating_point()
    assert iou[0, 1].item() == pytest.approx(1 / 7)


def test_clip_and_remove_small_match_torchvision():
    b = random_boxes(60, 6) * 1.5 - 20
    torch.testing.assert_close(B.clip_boxes_to_image(b, (70, 90)), tvo.clip_boxes_to_image(b, (70, 90)))
    for min_size in (0.0, 1.0, 10.0):
        assert torch.equal(B.remove_small_boxes(b, min_size), tvo.remove_small_boxes(b, min_size))


def test_shape_errors():
    # BoxError is the ValueError of vislab's style and the RuntimeError torchvision's NMS raises
    for err in (B.BoxError, ValueError, RuntimeError):
        with pytest.raises(err, match=r"boxes1 must have shape \(\.\.\., N, 4\)"):
            B.box_iou(torch.zeros(3, 5), torch.zeros(2, 4))
    with pytest.raises(B.BoxError, match=r"\(\.\.\., 4\)"):
        B.box_area(torch.zeros(4, 3))
    with pytest.raises(B.BoxError, match=r"\(N, 4\)"):
        B.remove_small_boxes(torch.zeros(2, 3, 4), 1.0)
    with pytest.raises(B.BoxError):
        B.box_convert(torch.zeros(3, 5), "xyxy", "cxcywh")


@pytest.mark.parametrize("fn", [B.box_iou, B.generalized_box_iou, B.distance_box_iou, B.complete_box_iou])
def test_gradients_stay_finite_on_degenerate_boxes(fn):
    # the 0 / 0 that gives 0 must not come back as NaN in the gradient
    b1, b2 = random_boxes(16, 8), random_boxes(12, 9)
    x = b1.clone().requires_grad_()
    fn(x, b2).sum().backward()
    assert torch.isfinite(x.grad).all()
