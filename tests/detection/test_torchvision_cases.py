"""The cases of torchvision's own box-op tests (NMS, batched NMS, area, the IoU family, format
conversion), written for vislab: each compares vislab's function with torchvision's on the same
input, or with values worked out by hand or by a scalar formula written out here.

Left out on purpose: rotated boxes and quantized tensors (vislab has neither), TorchScript, and
the NaN that torchvision returns for 0 / 0 (vislab returns 0; see test_boxes.py)."""

import itertools
import math

import pytest
import torch
import torchvision.ops as tvo
from torchvision.ops import boxes as tv_boxes

from tests.detection.synthetic import random_boxes
from vislab.detection import boxes as B
from vislab.detection.boxes import BoxError
from vislab.detection.nms import batched_nms, nms

IOU_FAMILY = {
    "iou": (B.box_iou, tvo.box_iou),
    "giou": (B.generalized_box_iou, tvo.generalized_box_iou),
    "diou": (B.distance_box_iou, tvo.distance_box_iou),
    "ciou": (B.complete_box_iou, tvo.complete_box_iou),
}
HALF = (torch.float16, torch.bfloat16)
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INTS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
# how far torchvision's IoU of half-precision boxes ~1,000 pixels wide strays from the exact IoU
# of the same corners, which vislab returns
_HALF_ATOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2}


def _wide_boxes(n: int, seed: int) -> torch.Tensor:
    """``n`` large, heavily overlapping boxes with corners up to ~1,250: their areas (~600,000)
    overflow float16 (max 65,504), and bfloat16 rounds their corners to multiples of 2 to 8."""
    g = torch.Generator().manual_seed(seed)
    xy = 250 + 60 * torch.rand(n, 2, generator=g)
    wh = 850 + 60 * torch.rand(n, 2, generator=g)
    return torch.cat((xy, xy + wh), dim=1)


def _upcast(b: torch.Tensor) -> torch.Tensor:
    return b.float() if b.dtype in HALF else b


def _boxes_500(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    b = torch.rand(500, 4, generator=g) * 100
    b[:, 2:] += b[:, :2]
    return b


# ----------------------------------------------------------------------------- box_convert


@pytest.mark.parametrize("fmt", ["xyxy", "xywh", "cxcywh"])
def test_convert_to_same_format_is_a_copy(fmt):
    b = torch.tensor([[0.0, 0, 50, 40], [0, 0, 0, 0], [12, 14, 30, 35]])
    out = B.box_convert(b, fmt, fmt)
    assert torch.equal(out, b) and out.data_ptr() != b.data_ptr()


def test_convert_by_hand():
    # corners (10, 20)-(30, 60): size 20 x 40, centre (20, 40); a point box stays a point
    xyxy = torch.tensor([[10.0, 20, 30, 60], [0, 0, 0, 0], [5, 5, 6, 8]])
    xywh = torch.tensor([[10.0, 20, 20, 40], [0, 0, 0, 0], [5, 5, 1, 3]])
    cxcywh = torch.tensor([[20.0, 40, 20, 40], [0, 0, 0, 0], [5.5, 6.5, 1, 3]])
    forms = {"xyxy": xyxy, "xywh": xywh, "cxcywh": cxcywh}
    for (fa, a), (fb, b) in itertools.product(forms.items(), repeat=2):
        assert torch.equal(B.box_convert(a, fa, fb), b), (fa, fb)


@pytest.mark.parametrize("dtype", FLOATS + INTS, ids=str)
@pytest.mark.parametrize("in_fmt, out_fmt", list(itertools.permutations(["xyxy", "xywh", "cxcywh"], 2)))
def test_convert_round_trip_and_dtype(in_fmt, out_fmt, dtype):
    g = torch.Generator().manual_seed(0)
    b = torch.randint(0, 40, (3, 7, 4), generator=g).to(dtype)     # leading batch dimension too
    if in_fmt == "xyxy":
        b[..., 2:] += b[..., :2]
    out = B.box_convert(b, in_fmt, out_fmt)
    want = tvo.box_convert(b, in_fmt, out_fmt)
    assert out.dtype == want.dtype and out.shape == want.shape
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    # sums stay below 127 (int8) and halves of integers that small are exact in every dtype
    back = B.box_convert(out, out_fmt, in_fmt)
    torch.testing.assert_close(back, b.to(back.dtype), rtol=0, atol=0)


@pytest.mark.parametrize("bad", ["xwyh", "cxwyh", "xywhr", "cxcywhr", "xyxyxyxy"])
def test_convert_rejects_other_formats(bad):
    b = torch.tensor([[0.0, 0, 10, 10]])
    for args in ((bad, "xyxy"), ("xyxy", bad)):
        with pytest.raises(ValueError, match="xyxy, xywh, cxcywh"):
            B.box_convert(b, *args)


# ----------------------------------------------------------------------------- box_area


@pytest.mark.parametrize("dtype", INTS, ids=str)
def test_area_of_integer_boxes(dtype):
    b = torch.tensor([[0, 0, 100, 100], [0, 0, 0, 0], [3, 4, 10, 8]], dtype=dtype)
    area = B.box_area(b)
    want = tvo.box_area(b)
    assert area.dtype == want.dtype            # int32 for 8/16-bit boxes, else their own dtype
    assert area.tolist() == [10000, 0, 28] == want.tolist()


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_area_of_wide_boxes(dtype):
    b = _wide_boxes(20, 0).to(dtype)
    area = B.box_area(b)
    want = tvo.box_area(b)
    assert area.dtype == want.dtype == (torch.float32 if dtype in HALF else dtype)
    assert torch.isfinite(area).all()          # not inf: float16 stops at 65,504
    torch.testing.assert_close(area, want, rtol=0, atol=0)
    exact = B.box_area(b.double())             # the same (rounded) corners, in float64
    torch.testing.assert_close(area.double(), exact, rtol=1e-6, atol=0)


def test_area_by_hand_in_half_precision():
    b = torch.tensor([[0, 0, 1200, 900], [10.5, 2.25, 13, 6.25]], dtype=torch.float16)
    assert B.box_area(b).tolist() == [1_080_000.0, 2.5 * 4]


def test_area_with_leading_dimensions():
    b = random_boxes(24, 1).reshape(2, 3, 4, 4)
    area = B.box_area(b)
    assert area.shape == (2, 3, 4)
    torch.testing.assert_close(area, tvo.box_area(b))
    torch.testing.assert_close(area.flatten(), B.box_area(b.reshape(-1, 4)))


# ----------------------------------------------------------------------------- the IoU family


def _scalar_family(p: list[float], q: list[float], eps: float = 1e-7) -> dict[str, float]:
    """IoU, GIoU, DIoU and CIoU of two boxes with positive sides, from the papers' definitions."""
    (x1, y1, x2, y2), (u1, v1, u2, v2) = p, q
    inter = max(0.0, min(x2, u2) - max(x1, u1)) * max(0.0, min(y2, v2) - max(y1, v1))
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter
    iou = inter / union
    cw, ch = max(x2, u2) - min(x1, u1), max(y2, v2) - min(y1, v1)
    giou = iou - (cw * ch - union) / (cw * ch)
    rho2 = ((x1 + x2) / 2 - (u1 + u2) / 2) ** 2 + ((y1 + y2) / 2 - (v1 + v2) / 2) ** 2
    diou = iou - rho2 / (cw ** 2 + ch ** 2 + eps)
    v = 4 / math.pi ** 2 * (math.atan((x2 - x1) / (y2 - y1)) - math.atan((u2 - u1) / (v2 - v1))) ** 2
    ciou = diou - v / (1 - iou + v + eps) * v
    return {"iou": iou, "giou": giou, "diou": diou, "ciou": ciou}


def test_iou_family_by_hand():
    a, b, c = [0, 0, 40, 40], [20, 0, 60, 40], [100, 100, 140, 120]
    # a, b: overlap 20 x 40 = 800 of 2400; enclosing 60 x 40 = 2400; centres 20 apart, the
    # enclosing diagonal squared 60**2 + 40**2 = 5200; equal aspect ratios: CIoU = DIoU
    # a, c: disjoint, union 1600 + 800 = 2400, enclosing 140 x 120 = 16800
    boxes1, boxes2 = torch.tensor([a], dtype=torch.float64), torch.tensor([b, c], dtype=torch.float64)
    # a, c: centres (20, 20) and (120, 110), diagonal squared 140**2 + 120**2 = 34000; aspect
    # ratios 1 and 2, so v = 4 / pi**2 * (atan 2 - pi / 4)**2 and alpha = v / (1 + v) at IoU 0
    v = 4 / math.pi ** 2 * (math.atan(2) - math.pi / 4) ** 2
    want = {"iou": [1 / 3, 0], "giou": [1 / 3, -14400 / 16800],
            "diou": [1 / 3 - 400 / 5200, -18100 / 34000],
            "ciou": [1 / 3 - 400 / 5200, -18100 / 34000 - v * v / (1 + v)]}
    for name, (ours, _) in IOU_FAMILY.items():
        assert ours(boxes1, boxes2)[0].tolist() == pytest.approx(want[name], abs=1e-6), name


@pytest.mark.parametrize("name", IOU_FAMILY)
def test_iou_family_matches_the_scalar_formulas(name):
    ours, _ = IOU_FAMILY[name]
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(9, 2, generator=g, dtype=torch.float64) * 50
    boxes = torch.cat((xy, xy + 1 + torch.rand(9, 2, generator=g, dtype=torch.float64) * 40), 1)
    b1, b2 = boxes[:4], boxes[4:]
    got = ours(b1, b2)
    want = torch.tensor([[_scalar_family(p, q)[name] for q in b2.tolist()] for p in b1.tolist()],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want)
    # the pairwise matrix is the pairs one at a time
    pairs = torch.stack([torch.stack([ours(p[None], q[None])[0, 0] for q in b2]) for p in b1])
    torch.testing.assert_close(got, pairs)


@pytest.mark.parametrize("dtype", (torch.int16, torch.int32, torch.int64), ids=str)
@pytest.mark.parametrize("name", IOU_FAMILY)
def test_iou_family_on_integer_boxes(name, dtype):
    ours, theirs = IOU_FAMILY[name]
    b1 = torch.tensor([[0, 0, 40, 40], [20, 0, 60, 40], [10, 10, 15, 30]], dtype=dtype)
    b2 = torch.tensor([[0, 0, 40, 40], [100, 100, 140, 120], [5, 12, 18, 25]], dtype=dtype)
    got, want = ours(b1, b2), theirs(b1, b2)
    assert got.dtype == want.dtype == torch.float32
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got, ours(b1.double(), b2.double()).float())


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("name", IOU_FAMILY)
def test_iou_family_on_wide_boxes(name, dtype):
    ours, theirs = IOU_FAMILY[name]
    b1, b2 = _wide_boxes(6, 1).to(dtype), _wide_boxes(5, 2).to(dtype)
    got, want = ours(b1, b2), theirs(b1, b2)
    assert got.dtype == want.dtype == (torch.float32 if dtype in HALF else dtype)
    assert torch.isfinite(got).all() and (got > 0.5).all()   # not 0, NaN or inf: they overlap
    # vislab upcasts the corners before any arithmetic; torchvision's IoU and GIoU subtract them
    # in half precision first, a second rounding (bfloat16 spaces numbers near 1,000 by 8)
    torch.testing.assert_close(got, want, rtol=0, atol=_HALF_ATOL.get(dtype, 1e-6))
    # exactly the float32 result on the same (rounded) corners
    torch.testing.assert_close(got, ours(_upcast(b1), _upcast(b2)), rtol=0, atol=0)


@pytest.mark.parametrize("name", IOU_FAMILY)
def test_iou_family_under_cpu_autocast(name):
    ours, theirs = IOU_FAMILY[name]
    b1, b2 = _wide_boxes(6, 3), _wide_boxes(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = ours(b1.bfloat16(), b2.bfloat16()), theirs(b1.bfloat16(), b2.bfloat16())
        full = ours(b1, b2)
    assert got.dtype == want.dtype == full.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=_HALF_ATOL[torch.bfloat16])
    torch.testing.assert_close(got, ours(b1.bfloat16().float(), b2.bfloat16().float()), rtol=0, atol=0)
    torch.testing.assert_close(full, ours(b1, b2), rtol=0, atol=0)   # no lower precision inside


def _proper_boxes(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Random float64 boxes of ``shape`` with sides of at least 1 (no 0 / 0 anywhere)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(*shape[:-1], 2, generator=g, dtype=torch.float64) * 50
    return torch.cat((xy, xy + 1 + torch.rand(*shape[:-1], 2, generator=g, dtype=torch.float64) * 40), -1)


@pytest.mark.parametrize("name", IOU_FAMILY)
@pytest.mark.parametrize("shapes", [((3, 5, 4), (3, 6, 4)), ((2, 1, 5, 4), (3, 6, 4)),
                                    ((5, 4), (2, 6, 4)), ((2, 0, 4), (2, 3, 4))], ids=str)
def test_iou_family_with_leading_dimensions(name, shapes):
    ours, theirs = IOU_FAMILY[name]
    (s1, s2), seed = shapes, len(shapes[0])
    b1, b2 = _proper_boxes(s1, seed), _proper_boxes(s2, seed + 1)
    got, want = ours(b1, b2), theirs(b1, b2)
    lead = torch.broadcast_shapes(s1[:-2], s2[:-2])
    assert got.shape == want.shape == lead + (s1[-2], s2[-2])
    torch.testing.assert_close(got, want)
    # every leading index is the 2-D function on that slice
    x1, x2 = b1.expand(*lead, *s1[-2:]), b2.expand(*lead, *s2[-2:])
    for i in itertools.product(*map(range, lead)):
        torch.testing.assert_close(got[i], ours(x1[i], x2[i]))


def test_batched_iou_gradients_match_torchvision():
    b1 = (_wide_boxes(10, 7) / 10).double().reshape(2, 5, 4)
    b2 = (_wide_boxes(6, 8) / 10).double().reshape(2, 3, 4)
    for ours, theirs in IOU_FAMILY.values():
        x, y = b1.clone().requires_grad_(), b1.clone().requires_grad_()
        ours(x, b2).sum().backward()
        theirs(y, b2).sum().backward()
        torch.testing.assert_close(x.grad, y.grad)


@pytest.mark.parametrize("name", IOU_FAMILY)
def test_iou_family_empty(name):
    ours, theirs = IOU_FAMILY[name]
    b = random_boxes(3, 0)
    for e1, e2 in ((torch.zeros(0, 4), b.float()), (b.float(), torch.zeros(0, 4))):
        assert ours(e1, e2).shape == theirs(e1, e2).shape


@pytest.mark.parametrize("name", IOU_FAMILY)
def test_iou_family_rejects_malformed_boxes(name):
    ours, _ = IOU_FAMILY[name]
    good = torch.zeros(2, 4)
    for bad in (torch.zeros(4), torch.zeros(3, 5), torch.zeros(2, 3, 2)):
        with pytest.raises(BoxError, match=r"\(\.\.\., N, 4\)"):
            ours(bad, good)
        with pytest.raises(BoxError, match="boxes2"):
            ours(good, bad)
    with pytest.raises(BoxError, match="broadcast"):
        ours(torch.zeros(2, 5, 4), torch.zeros(3, 6, 4))


# ----------------------------------------------------------------------------- nms


def test_error_type_is_both_value_and_runtime_error():
    assert issubclass(BoxError, ValueError) and issubclass(BoxError, RuntimeError)


@pytest.mark.parametrize("boxes, scores", [
    (torch.rand(4), torch.rand(3)),          # boxes not 2-D
    (torch.rand(3, 5), torch.rand(3)),       # not 4 coordinates
    (torch.rand(3, 4), torch.rand(3, 2)),    # scores not 1-D
    (torch.rand(3, 4), torch.rand(4)),       # one score per box
    (torch.rand(0, 5), torch.rand(0)),
    (torch.rand(0, 4), torch.rand(3)),
], ids=["boxes-1d", "boxes-5", "scores-2d", "lengths", "empty-5", "empty-lengths"])
def test_nms_rejects_malformed_input_as_torchvision_does(boxes, scores):
    with pytest.raises(RuntimeError):
        tvo.nms(boxes, scores, 0.5)
    for err in (BoxError, RuntimeError, ValueError):
        with pytest.raises(err, match="must have shape"):
            nms(boxes, scores, 0.5)


def test_batched_nms_rejects_malformed_input():
    with pytest.raises(BoxError, match="idxs"):
        batched_nms(torch.rand(3, 4), torch.rand(3), torch.zeros(4, dtype=torch.int64), 0.5)
    with pytest.raises(RuntimeError, match="boxes"):
        batched_nms(torch.rand(3, 5), torch.rand(3), torch.zeros(3, dtype=torch.int64), 0.5)


def test_empty_inputs_give_empty_int64():
    empty = torch.empty((0,), dtype=torch.int64)
    for keep in (nms(torch.zeros(0, 4), torch.zeros(0), 0.5),
                 tvo.nms(torch.zeros(0, 4), torch.zeros(0), 0.5),
                 batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5),
                 batched_nms(empty, None, None, None),          # as torchvision: nothing else read
                 tvo.batched_nms(empty, None, None, None)):
        torch.testing.assert_close(keep, empty)


@pytest.mark.parametrize("iou", [0.2, 0.5, 0.8])
def test_nms_at_the_threshold_by_hand(iou):
    # [0, 0, a, 10] and [0, 0, b, 10] with b > a have IoU a / b: make one pair just above the
    # threshold (suppressed), one just below (kept), far apart from each other
    a = 10.0
    above, below = a / (iou + 1e-4), a / (iou - 1e-4)
    boxes = torch.tensor([[0, 0, a, 10], [0, 0, above, 10], [500, 0, 500 + a, 10], [500, 0, 500 + below, 10]],
                         dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6], dtype=torch.float64)
    assert nms(boxes, scores, iou).tolist() == [0, 2, 3] == tvo.nms(boxes, scores, iou).tolist()


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("iou", [0.2, 0.5, 0.8])
def test_nms_on_500_boxes_matches_torchvision(iou, seed):
    b = _boxes_500(seed)
    s = torch.rand(500, generator=torch.Generator().manual_seed(seed + 100))
    assert torch.equal(nms(b, s, iou), tvo.nms(b, s, iou))


def test_nms_ties_keep_the_lower_index():
    # identical boxes with equal scores: the first of each group is kept, the rest suppressed
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 4 + [[50.0, 50, 60, 60]] * 2)
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert nms(boxes, scores, 0.5).tolist() == [0, 4] == tvo.nms(boxes, scores, 0.5).tolist()
    scores[5] = 0.9
    assert nms(boxes, scores, 0.5).tolist() == [5, 0] == tvo.nms(boxes, scores, 0.5).tolist()


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_nms_in_half_precision_keeps_what_float32_keeps(dtype):
    # near-identical boxes ~1,200 pixels wide: in float16 their areas overflow
    b = torch.tensor([[285.35, 185.58, 1193.51, 851.46], [285.15, 188.74, 1192.50, 851.07],
                      [279.24, 197.98, 1189.47, 849.20]])
    s = torch.tensor([0.637, 0.757, 0.397])
    assert nms(b, s, 0.2).tolist() == [1] == nms(b.to(dtype), s.to(dtype), 0.2).tolist()


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_nms_in_half_precision_matches_torchvision_under_autocast(dtype):
    # torchvision's CPU kernel refuses half precision, except under autocast, where it runs in
    # float32: vislab computes in float32 with or without autocast
    b = _wide_boxes(300, 0).to(dtype)
    s = torch.rand(300, generator=torch.Generator().manual_seed(0)).to(dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = tvo.nms(b, s, 0.95)
        inside = nms(b, s, 0.95)
    assert want.dtype == torch.int64
    assert torch.equal(inside, want)
    assert torch.equal(nms(b, s, 0.95), want)
    assert 1 < len(want) < 300                  # the threshold splits these boxes


def test_float32_nms_under_autocast_is_float32_nms():
    b, s = _boxes_500(0), torch.rand(500, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = nms(b, s, 0.5), tvo.nms(b, s, 0.5)
    assert torch.equal(got, want) and torch.equal(got, nms(b, s, 0.5))


def test_nms_accepts_what_torchvision_cpu_refuses():
    # integer boxes, and scores of another dtype than the boxes: same result as float32 boxes
    b = (_boxes_500(4) * 3).round()
    s = torch.rand(500, generator=torch.Generator().manual_seed(4))
    want = tvo.nms(b, s, 0.5)
    assert torch.equal(nms(b.int(), s, 0.5), want)
    assert torch.equal(nms(b, s.double(), 0.5), want)


# ----------------------------------------------------------------------------- batched_nms


def _categorised(n: int, seed: int, categories: list[int]):
    g = torch.Generator().manual_seed(seed)
    boxes = torch.cat((torch.rand(n, 2, generator=g), torch.rand(n, 2, generator=g) + 10), dim=1)
    scores = torch.rand(n, generator=g)
    idxs = torch.tensor(categories)[torch.randint(0, len(categories), (n,), generator=g)]
    return boxes, scores, idxs


@pytest.mark.parametrize("seed", range(3))
def test_batched_nms_equals_both_torchvision_paths(seed):
    boxes, scores, idxs = _categorised(600, seed, [0, 1, 2, 3])
    keep = batched_nms(boxes, scores, idxs, 0.9)
    assert torch.equal(keep, tv_boxes._batched_nms_coordinate_trick(boxes, scores, idxs, 0.9))
    assert torch.equal(keep, tv_boxes._batched_nms_vanilla(boxes, scores, idxs, 0.9))


@pytest.mark.parametrize("categories", [[0, 7, 1000], [-3, 2], [5]], ids=str)
def test_batched_nms_with_category_gaps(categories):
    boxes, scores, idxs = _categorised(300, 1, categories)
    keep = batched_nms(boxes, scores, idxs, 0.9)
    assert torch.equal(keep, tv_boxes._batched_nms_vanilla(boxes, scores, idxs, 0.9))
    assert torch.equal(keep, batched_nms(boxes, scores, idxs.float(), 0.9))   # float ids too
    # by definition: each category's survivors are NMS on that category alone
    for c in categories:
        mine = torch.nonzero(idxs == c).flatten()
        assert torch.equal(keep[idxs[keep] == c], mine[nms(boxes[mine], scores[mine], 0.9)])


def test_batched_nms_on_a_large_input():
    # 1,500 boxes: past torchvision's 4,000-coordinate switch from the trick to per-class NMS
    boxes, scores, idxs = _categorised(1500, 2, list(range(8)))
    keep = batched_nms(boxes, scores, idxs, 0.9)
    assert torch.equal(keep, tvo.batched_nms(boxes, scores, idxs, 0.9))
    assert torch.equal(keep, tv_boxes._batched_nms_coordinate_trick(boxes, scores, idxs, 0.9))


def test_batched_nms_never_suppresses_across_categories():
    # two copies of one box: with one category the second goes, with two both stay
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8])
    assert batched_nms(boxes, scores, torch.tensor([0, 0]), 0.5).tolist() == [0]
    assert batched_nms(boxes, scores, torch.tensor([0, 1]), 0.5).tolist() == [0, 1]


def test_batched_nms_where_the_coordinate_trick_fails():
    # torchvision shifts category k by k * (max + 1): with coordinates below -1 the shifted
    # copies still overlap (IoU 81 / 119 here) and one category suppresses the other
    boxes = torch.tensor([[-10.0, -10, 0, 0], [-10, -10, 0, 0]])
    scores, idxs = torch.tensor([0.9, 0.8]), torch.tensor([0, 1])
    assert tv_boxes._batched_nms_coordinate_trick(boxes, scores, idxs, 0.5).tolist() == [0]
    assert batched_nms(boxes, scores, idxs, 0.5).tolist() == [0, 1]
    assert tv_boxes._batched_nms_vanilla(boxes, scores, idxs, 0.5).tolist() == [0, 1]
