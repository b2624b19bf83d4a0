import math

import pytest
import torch
import torchvision.ops as tvo

from tests.detection.synthetic import random_boxes
from vislab.detection.boxes import box_iou
from vislab.detection.nms import batched_nms, nms, soft_nms


def _scores(n: int, seed: int, levels: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, generator=g, dtype=torch.float64)
    return (s * levels).floor() / levels if levels else s    # few levels -> many ties


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.9])
def test_nms_matches_torchvision(seed, threshold):
    b = random_boxes(120, seed)
    s = _scores(120, seed, levels=6 if seed % 2 else None)
    assert torch.equal(nms(b, s, threshold), tvo.nms(b, s, threshold))


@pytest.mark.parametrize("seed", range(3))
def test_batched_nms_matches_torchvision(seed):
    b = random_boxes(150, seed) - 30          # negative coordinates too
    s = _scores(150, seed, levels=5)
    idxs = torch.randint(0, 4, (150,), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(batched_nms(b, s, idxs, 0.5), tvo.batched_nms(b, s, idxs, 0.5))


def test_nms_empty():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5).numel() == 0


def test_soft_nms_by_hand():
    # IoU(A, B) = 50 / 100 = 0.5; C is disjoint from both
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep, new = soft_nms(boxes, scores, "linear", iou_threshold=0.3)
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(new, torch.tensor([0.9, 0.7, 0.8 * (1 - 0.5)]))
    keep, new = soft_nms(boxes, scores, "gaussian", sigma=0.5)
    assert keep.tolist() == [0, 2, 1]
    torch.testing.assert_close(new, torch.tensor([0.9, 0.7, 0.8 * math.exp(-0.25 / 0.5)]))
    # below the linear threshold nothing decays; a decayed score under score_threshold is dropped
    keep, new = soft_nms(boxes, scores, "linear", iou_threshold=0.6)
    assert keep.tolist() == [0, 1, 2] and torch.equal(new, scores)
    keep, _ = soft_nms(boxes, scores, "linear", iou_threshold=0.3, score_threshold=0.5)
    assert keep.tolist() == [0, 2]


def _soft_nms_paper(boxes, scores, method, nt, sigma, thresh):
    """Algorithm 1 of Bodla et al. (2017), line by line, on Python lists."""
    iou = box_iou(boxes, boxes).tolist()
    B = list(range(len(scores)))
    S = scores.tolist()
    D, DS = [], []
    while B:
        m = max(B, key=lambda i: (S[i], -i))
        B.remove(m)
        D.append(m)
        DS.append(S[m])
        for i in B:
            if method == "linear":
                S[i] = S[i] * (1 - iou[m][i]) if iou[m][i] >= nt else S[i]
            else:
                S[i] = S[i] * math.exp(-iou[m][i] ** 2 / sigma)
        B = [i for i in B if S[i] >= thresh]
    return D, DS


@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("seed", range(3))
def test_soft_nms_matches_the_papers_algorithm(method, seed):
    b, s = random_boxes(60, seed), _scores(60, seed)
    keep, new = soft_nms(b, s, method, iou_threshold=0.3, sigma=0.5, score_threshold=0.01)
    d, ds = _soft_nms_paper(b, s, method, 0.3, 0.5, 0.01)
    assert keep.tolist() == d
    torch.testing.assert_close(new, torch.tensor(ds, dtype=s.dtype))


def test_gaussian_soft_nms_tends_to_hard_nms():
    # as sigma -> 0 every overlapping box is zeroed: hard NMS at IoU threshold 0
    b, s = random_boxes(80, 7), _scores(80, 7) + 0.1
    keep, _ = soft_nms(b, s, "gaussian", sigma=1e-12, score_threshold=1e-6)
    assert torch.equal(keep, tvo.nms(b, s, 0.0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_soft_nms_in_half_precision(dtype):
    # IoUs in float32, as for nms: the same boxes kept as from the float32 corners, the decayed
    # scores returned in the scores' dtype
    b = (random_boxes(40, 3) * 10).to(dtype)          # corners up to ~1,200
    s = _scores(40, 3).to(dtype)
    keep, new = soft_nms(b, s, "gaussian", sigma=0.5, score_threshold=0.01)
    keep32, new32 = soft_nms(b.float(), s.float(), "gaussian", sigma=0.5, score_threshold=0.01)
    assert torch.equal(keep, keep32)
    assert new.dtype == dtype
    torch.testing.assert_close(new, new32.to(dtype))
