import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from vislab.detection.losses import (
    centernet_decode,
    centernet_targets,
    draw_gaussian,
    gaussian_radius,
    heatmap_focal_loss,
    sigmoid_focal_loss,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- sigmoid_focal_loss

@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha", [0.25, -1.0])
@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("soft", [False, True])
def test_sigmoid_focal_loss_matches_torchvision(reduction, alpha, gamma, soft):
    g = _gen(0)
    logits = (torch.randn(6, 7, generator=g, dtype=torch.float64) * 4).requires_grad_()
    if soft:
        targets = torch.rand(6, 7, generator=g, dtype=torch.float64)
    else:
        targets = (torch.rand(6, 7, generator=g) < 0.3).double()
    targets.requires_grad_()
    ours = sigmoid_focal_loss(logits, targets, alpha, gamma, reduction)
    theirs = tv_sigmoid_focal_loss(logits, targets, alpha, gamma, reduction)
    torch.testing.assert_close(ours, theirs)
    weights = torch.randn(ours.shape, generator=g, dtype=torch.float64)   # a non-uniform upstream grad
    grads = torch.autograd.grad((ours * weights).sum(), (logits, targets))
    tv_grads = torch.autograd.grad((theirs * weights).sum(), (logits, targets))
    for a, b in zip(grads, tv_grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_sigmoid_focal_loss_without_focus_is_bce(reduction):
    g = _gen(1)
    logits = torch.randn(50, generator=g, dtype=torch.float64) * 5
    targets = torch.rand(50, generator=g, dtype=torch.float64)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0, reduction=reduction),
                               F.binary_cross_entropy_with_logits(logits, targets, reduction=reduction))


def test_sigmoid_focal_loss_bad_reduction():
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(torch.zeros(3), torch.zeros(3), reduction="batchmean")


# ---------------------------------------------------------------- heatmap_focal_loss

def _naive_heatmap_focal_loss(logits, target, alpha, beta):
    """Eq. 1 of "Objects as Points" transcribed element by element."""
    p = torch.sigmoid(logits)
    total, num_pos = 0.0, 0
    for pi, yi in zip(p.flatten().tolist(), target.flatten().tolist()):
        if yi == 1:
            total += (1 - pi) ** alpha * math.log(pi)
            num_pos += 1
        else:
            total += (1 - yi) ** beta * pi ** alpha * math.log(1 - pi)
    return -total / max(1, num_pos)


def _random_heatmap(shape, num_pos, seed):
    g = _gen(seed)
    target = torch.rand(shape, generator=g, dtype=torch.float64) * 0.99
    flat = target.view(-1)
    flat[torch.randperm(flat.numel(), generator=g)[:num_pos]] = 1.0
    return target


@pytest.mark.parametrize("num_pos", [0, 1, 5])
@pytest.mark.parametrize("alpha,beta", [(2.0, 4.0), (1.5, 3.0)])
def test_heatmap_focal_loss_matches_the_paper(num_pos, alpha, beta):
    target = _random_heatmap((2, 3, 5, 6), num_pos, seed=num_pos)
    logits = torch.randn(target.shape, generator=_gen(10), dtype=torch.float64) * 3
    ours = heatmap_focal_loss(logits, target, alpha, beta)
    assert ours.ndim == 0
    assert ours.item() == pytest.approx(_naive_heatmap_focal_loss(logits, target, alpha, beta), rel=1e-12)


def test_heatmap_focal_loss_gradient_matches_autograd_of_the_formula():
    target = _random_heatmap((1, 2, 6, 6), 3, seed=3)
    logits = (torch.randn(target.shape, generator=_gen(4), dtype=torch.float64) * 3).requires_grad_()
    p = torch.sigmoid(logits)
    pos = target == 1
    naive = -torch.where(pos, (1 - p) ** 2 * torch.log(p),
                         (1 - target) ** 4 * p ** 2 * torch.log(1 - p)).sum() / pos.sum()
    (expected,) = torch.autograd.grad(naive, logits)
    (got,) = torch.autograd.grad(heatmap_focal_loss(logits, target), logits)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("sign", [1.0, -1.0])   # confidently right, confidently wrong
def test_heatmap_focal_loss_finite_for_huge_logits(sign):
    target = _random_heatmap((1, 2, 6, 6), 3, seed=5).float()
    logits = torch.where(target == 1, 1e4, -1e4) * sign
    logits.requires_grad_()
    loss = heatmap_focal_loss(logits, target)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    if sign > 0:
        assert loss.item() == 0.0
    else:
        assert loss.item() > 1e3   # log(1 - p) ~ -1e4 at each wrong position, not clamped to log(eps)


# ---------------------------------------------------------------- gaussian_radius

def _shifted_boxes(h: float, w: float, r: float) -> torch.Tensor:
    """The three corner shifts of CornerNet's rule, applied to the box (0, 0, w, h)."""
    return torch.tensor([[r, r, w + r, h + r],          # both corners move the same way
                         [r, r, w - r, h - r],          # both inwards
                         [-r, -r, w + r, h + r]],       # both outwards
                        dtype=torch.float64)


@pytest.mark.parametrize("h,w", [(100, 100), (40, 120), (10, 30), (300, 50), (7.5, 8.25)])
@pytest.mark.parametrize("min_overlap", [0.7, 0.5, 0.9])
def test_gaussian_radius_keeps_min_overlap(h, w, min_overlap):
    r = gaussian_radius(h, w, min_overlap)
    assert isinstance(r, float) and r > 0
    gt = torch.tensor([[0.0, 0.0, w, h]], dtype=torch.float64)
    ious = box_iou(_shifted_boxes(h, w, r), gt)[:, 0]
    assert ious.min().item() == pytest.approx(min_overlap, abs=1e-9)   # the binding case is tight
    assert box_iou(_shifted_boxes(h, w, r + 1), gt)[:, 0].min().item() < min_overlap


def test_gaussian_radius_square_by_hand():
    # for a square of side s the inward shift binds: (s - 2r)^2 = o s^2, r = s (1 - sqrt(o)) / 2
    for s in (4.0, 20.0, 100.0):
        assert gaussian_radius(s, s, 0.7) == pytest.approx(s * (1 - math.sqrt(0.7)) / 2, rel=1e-12)
    assert gaussian_radius(0.0, 0.0) == 0.0
    assert gaussian_radius(5.0, 5.0, 1.0) == 0.0


def test_gaussian_radius_tensor_matches_scalar():
    hs = torch.tensor([100.0, 40.0, 10.0, 300.0, 0.0, 3.0], dtype=torch.float64)
    ws = torch.tensor([100.0, 120.0, 30.0, 50.0, 0.0, 0.5], dtype=torch.float64)
    radii = gaussian_radius(hs, ws)
    assert radii.shape == (6,) and radii.dtype == torch.float64
    expected = [gaussian_radius(h, w) for h, w in zip(hs.tolist(), ws.tolist())]
    torch.testing.assert_close(radii, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(gaussian_radius(hs.float(), ws.float()), radii.float())
    assert gaussian_radius(torch.tensor([8, 9]), torch.tensor([8, 9])).dtype == torch.float32


def test_gaussian_radius_bad_input():
    with pytest.raises(ValueError, match="min_overlap"):
        gaussian_radius(10.0, 10.0, 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        gaussian_radius(torch.tensor([-1.0]), torch.tensor([3.0]))


# ---------------------------------------------------------------- draw_gaussian

def test_draw_gaussian_values_by_hand():
    heatmap = torch.zeros(15, 17, dtype=torch.float64)
    out = draw_gaussian(heatmap, (7, 5), 3)
    assert out is heatmap
    sigma = 7 / 6
    assert heatmap[5, 7] == 1.0 and heatmap.max() == 1.0
    window = heatmap[2:9, 4:11]
    torch.testing.assert_close(window, window.flip(0), rtol=0, atol=0)
    torch.testing.assert_close(window, window.flip(1), rtol=0, atol=0)
    torch.testing.assert_close(window, window.T, rtol=0, atol=0)
    for dx, dy in [(1, 0), (2, 1), (3, 3), (-3, 2)]:
        expected = math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
        assert heatmap[5 + dy, 7 + dx].item() == pytest.approx(expected, rel=1e-12)
    outside = torch.ones_like(heatmap, dtype=torch.bool)
    outside[2:9, 4:11] = False
    assert (heatmap[outside] == 0).all()


def test_draw_gaussian_radius_zero_is_one_pixel():
    heatmap = draw_gaussian(torch.zeros(4, 4), (1, 2), 0)
    expected = torch.zeros(4, 4)
    expected[2, 1] = 1
    assert torch.equal(heatmap, expected)


@pytest.mark.parametrize("corner", ["top_left", "bottom_right"])
def test_draw_gaussian_at_the_border(corner):
    height, width, radius = 9, 12, 3
    x, y = (0, 0) if corner == "top_left" else (width - 1, height - 1)
    heatmap = draw_gaussian(torch.zeros(height, width, dtype=torch.float64), (x, y), radius)
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                            torch.arange(width, dtype=torch.float64), indexing="ij")
    inside = ((xx - x).abs() <= radius) & ((yy - y).abs() <= radius)
    expected = torch.where(inside, torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * (7 / 6) ** 2)), 0)
    torch.testing.assert_close(heatmap, expected)
    assert heatmap[y, x] == 1.0 and inside.sum() == 16      # a quarter of the 7 x 7 window


def test_draw_gaussian_outside_writes_nothing():
    heatmap = draw_gaussian(torch.zeros(6, 6), (-5, 2), 2)
    assert torch.equal(heatmap, torch.zeros(6, 6))


def test_draw_gaussian_overlap_keeps_the_max():
    a = draw_gaussian(torch.zeros(20, 20), (6, 8), 4)
    b = draw_gaussian(torch.zeros(20, 20), (9, 10), 3)
    both = draw_gaussian(draw_gaussian(torch.zeros(20, 20), (6, 8), 4), (9, 10), 3)
    assert torch.equal(both, torch.maximum(a, b))
    reversed_order = draw_gaussian(draw_gaussian(torch.zeros(20, 20), (9, 10), 3), (6, 8), 4)
    assert torch.equal(reversed_order, both)


# ---------------------------------------------------------------- centernet_targets / decode

def _dense_outputs(targets, labels, output_size, logit=12.0):
    """"Perfect" head outputs for one image: a strong peak per centre (distinct heights, so the
    top-k order is known), strong background elsewhere, sizes and offsets at the centres."""
    height, width = output_size
    heatmap = targets["heatmap"]
    logits = torch.full_like(heatmap, -logit)
    size = torch.zeros(2, height * width, dtype=heatmap.dtype)
    offset = torch.zeros(2, height * width, dtype=heatmap.dtype)
    idx = targets["index"]
    for i in range(len(idx)):
        logits[labels[i], idx[i] // width, idx[i] % width] = logit - i
        size[:, idx[i]] = targets["size"][i]
        offset[:, idx[i]] = targets["offset"][i]
    return logits[None], size.view(1, 2, height, width), offset.view(1, 2, height, width)


def test_centernet_round_trip():
    stride, output_size = 4, (24, 32)                   # input 96 x 128
    boxes = torch.tensor([[10.0, 12.0, 40.0, 50.0],
                          [60.3, 20.7, 100.1, 90.2],
                          [3.0, 70.0, 20.0, 80.0],
                          [120.0, 88.0, 128.0, 96.0],   # centre (124, 92): last column and row
                          [50.0, 40.0, 52.5, 41.0]])
    labels = torch.tensor([0, 2, 1, 2, 0])
    targets = centernet_targets(boxes, labels, 3, output_size, stride)
    assert targets["heatmap"].shape == (3, 24, 32)
    assert targets["mask"].all()
    assert targets["index"][3].item() == 23 * 32 + 31
    # an independent computation of the size, cell and offset targets
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 / stride
    torch.testing.assert_close(targets["size"], (boxes[:, 2:] - boxes[:, :2]) / stride)
    torch.testing.assert_close(targets["offset"], centre - centre.floor())
    assert torch.equal(targets["index"], (centre[:, 1].long() * 32 + centre[:, 0].long()))
    heat = targets["heatmap"].view(3, -1)
    assert (heat[labels, targets["index"]] == 1).all() and (heat == 1).sum() == len(boxes)

    logits, size, offset = _dense_outputs(targets, labels, output_size)
    (det,) = centernet_decode(logits, size, offset, stride, k=7)
    assert det["boxes"].shape == (7, 4) and det["scores"].shape == (7,) and det["labels"].shape == (7,)
    torch.testing.assert_close(det["boxes"][:5], boxes, rtol=0, atol=1e-4)
    assert torch.equal(det["labels"][:5], labels)
    torch.testing.assert_close(det["scores"][:5], torch.sigmoid(12.0 - torch.arange(5.0)))
    assert (det["scores"][5:] < 1e-4).all()             # the rest is background


def test_centernet_targets_gaussian_by_hand():
    # a 160 x 160 box at stride 4 is 40 x 40 cells: radius floor(20 (1 - sqrt(0.7))) = 3, sigma 7/6
    boxes = torch.tensor([[100.0, 60.0, 260.0, 220.0]], dtype=torch.float64)
    targets = centernet_targets(boxes, torch.tensor([1]), 2, (64, 64), 4)
    heatmap = targets["heatmap"]
    assert heatmap.dtype == torch.float64 and (heatmap[0] == 0).all()
    cx, cy = 45, 35                                     # centre (180, 140) / 4
    yy, xx = torch.meshgrid(torch.arange(64.0, dtype=torch.float64),
                            torch.arange(64.0, dtype=torch.float64), indexing="ij")
    d2 = (xx - cx) ** 2 + (yy - cy) ** 2
    inside = ((xx - cx).abs() <= 3) & ((yy - cy).abs() <= 3)
    expected = torch.where(inside, torch.exp(-d2 / (2 * (7 / 6) ** 2)), 0)
    torch.testing.assert_close(heatmap[1], expected)


def test_centernet_targets_centre_off_grid():
    # centre x = 64.0 at stride 4 is cell 16 of a 16-wide grid: masked out, nothing drawn
    boxes = torch.tensor([[60.0, 0.0, 68.0, 8.0], [0.0, 0.0, 8.0, 8.0]])
    targets = centernet_targets(boxes, torch.tensor([0, 0]), 1, (16, 16), 4)
    assert targets["mask"].tolist() == [False, True]
    assert targets["index"][0] == 0
    assert targets["heatmap"][0, :, 13:].sum() == 0 and targets["heatmap"][0, 1, 1] == 1


def test_centernet_targets_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        centernet_targets(torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([3]), 3, (8, 8), 4)


def _brute_force_peaks(scores):
    """Positions (c, y, x) whose score no 3x3 neighbour in the same class exceeds."""
    c_, h_, w_ = scores.shape
    peaks = {}
    for c in range(c_):
        for y in range(h_):
            for x in range(w_):
                window = scores[c, max(0, y - 1):y + 2, max(0, x - 1):x + 2]
                if scores[c, y, x] >= window.max():
                    peaks[(c, y, x)] = scores[c, y, x].item()
    return peaks


def test_centernet_decode_peak_rule():
    logits = torch.full((1, 2, 12, 12), -10.0)
    logits[0, 0, 5, 5] = 3.0          # a peak
    logits[0, 0, 5, 6] = 2.0          # its right neighbour: not a peak
    logits[0, 0, 6, 6] = 2.5          # its diagonal neighbour: not a peak
    logits[0, 0, 5, 8] = 1.0          # two cells away from the first: a lone peak
    logits[0, 1, 5, 6] = 0.5          # same place, other class: a peak
    zeros = torch.zeros(1, 2, 12, 12)
    (det,) = centernet_decode(logits, zeros, zeros, stride=1, k=4)
    torch.testing.assert_close(det["scores"], torch.sigmoid(torch.tensor([3.0, 1.0, 0.5, -10.0])))
    assert det["labels"][:3].tolist() == [0, 0, 1]
    centres = det["boxes"][:3, :2].tolist()          # zero sizes and offsets: box = cell corner
    assert centres == [[5.0, 5.0], [8.0, 5.0], [6.0, 5.0]]


def test_centernet_decode_matches_brute_force_peaks():
    logits = torch.randn(2, 3, 7, 9, generator=_gen(7), dtype=torch.float64)
    size = torch.rand(2, 2, 7, 9, generator=_gen(8), dtype=torch.float64) * 5
    offset = torch.rand(2, 2, 7, 9, generator=_gen(9), dtype=torch.float64)
    dets = centernet_decode(logits, size, offset, stride=8, k=10)
    for b, det in enumerate(dets):
        peaks = _brute_force_peaks(torch.sigmoid(logits[b]))
        best = sorted(peaks.items(), key=lambda kv: -kv[1])[:10]
        torch.testing.assert_close(det["scores"], torch.tensor([s for _, s in best], dtype=torch.float64))
        for (c, y, x), box, label in zip([p for p, _ in best], det["boxes"], det["labels"]):
            assert label == c
            cx, cy = x + offset[b, 0, y, x], y + offset[b, 1, y, x]
            w, h = size[b, 0, y, x], size[b, 1, y, x]
            expected = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)) * 8
            torch.testing.assert_close(box, expected)


def test_centernet_decode_k_larger_than_grid():
    logits = torch.randn(1, 1, 2, 2, generator=_gen(11))
    zeros = torch.zeros(1, 2, 2, 2)
    (det,) = centernet_decode(logits, zeros, zeros, stride=4, k=100)
    assert det["boxes"].shape == (4, 4)
