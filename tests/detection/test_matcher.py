import pytest
import torch
from torchvision.models.detection._utils import Matcher as TvMatcher

from tests.detection.synthetic import random_boxes
from vislab.detection.boxes import box_iou
from vislab.detection.matcher import Matcher


@pytest.mark.parametrize("low_quality", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_matcher_matches_torchvision_on_boxes(low_quality, seed):
    gt = random_boxes(12, seed)
    gt = gt[(gt[:, 2] > gt[:, 0]) & (gt[:, 3] > gt[:, 1])]
    anchors = random_boxes(300, seed + 100)
    q = box_iou(gt, anchors)
    assert (q.max(dim=1).values > 0).all()         # every gt overlaps something: same rule as torchvision
    assert torch.equal(Matcher(0.7, 0.3, low_quality)(q), TvMatcher(0.7, 0.3, low_quality)(q))


@pytest.mark.parametrize("low_quality", [False, True])
def test_matcher_ties(low_quality):
    g = torch.Generator().manual_seed(0)
    q = torch.tensor([0.1, 0.3, 0.5, 0.7])[torch.randint(0, 4, (6, 50), generator=g)]
    assert torch.equal(Matcher(0.5, 0.3, low_quality)(q), TvMatcher(0.5, 0.3, low_quality)(q))


def test_low_quality_by_hand_and_zero_overlap():
    # gt 0 is best matched by pred 1 (0.4) and pred 2 ties at 0.4; gt 1 overlaps nothing
    q = torch.tensor([[0.1, 0.4, 0.4, 0.0],
                      [0.0, 0.0, 0.0, 0.0]])
    m = Matcher(0.5, 0.3, allow_low_quality_matches=True)(q)
    assert m.tolist() == [-1, 0, 0, -1]
    # torchvision marks every prediction as a "best match" of the gt that overlaps nothing
    assert TvMatcher(0.5, 0.3, True)(q).tolist() == [0, 0, 0, 0]


def test_empty_ground_truth_is_background():
    m = Matcher(0.5, 0.4)(torch.zeros(0, 7))
    assert m.tolist() == [Matcher.BELOW_LOW_THRESHOLD] * 7


def test_matched_targets_by_hand():
    from vislab.detection.matcher import matched_targets
    targets = [{"labels": torch.tensor([4, 7]), "boxes": torch.tensor([[0.0, 0, 5, 5], [10, 10, 20, 20]])},
               {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    matched = torch.tensor([[1, -1, 0], [-1, -2, -1]])
    labels, boxes = matched_targets(targets, matched)
    assert labels[0].tolist() == [7, 4, 4] and labels[1].tolist() == [0, 0, 0]
    assert boxes[0, 0].tolist() == [10, 10, 20, 20] and boxes[0, 2].tolist() == [0, 0, 5, 5]
    assert boxes.shape == (2, 3, 4) and boxes.dtype == torch.float32 and not boxes[1].any()
