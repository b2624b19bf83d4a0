import math

import pytest
import torch
from torchmetrics.detection import PanopticQuality

from vislab.errors import UserError
from vislab.metrics.segmentation import PanopticMeter, format_panoptic, panoptic_quality

# torchmetrics' documented example: PQ 0.5463, SQ 0.6111, RQ 0.6667; per class PQ 0.5185, 0, 0.6667, 1
PREDS = torch.tensor([[[[6, 0], [0, 0], [6, 0], [6, 0]],
                       [[0, 0], [0, 0], [6, 0], [0, 1]],
                       [[0, 0], [0, 0], [6, 0], [0, 1]],
                       [[0, 0], [7, 0], [6, 0], [1, 0]],
                       [[0, 0], [7, 0], [7, 0], [7, 0]]]])
TARGET = torch.tensor([[[[6, 0], [0, 1], [6, 0], [0, 1]],
                        [[0, 1], [0, 1], [6, 0], [0, 1]],
                        [[0, 1], [0, 1], [6, 0], [1, 0]],
                        [[0, 1], [7, 0], [1, 0], [1, 0]],
                        [[0, 1], [7, 0], [7, 0], [7, 0]]]])


def test_the_documented_torchmetrics_example():
    r = panoptic_quality(PREDS, TARGET, things={0, 1}, stuffs={6, 7})
    assert (round(r["pq"], 4), round(r["sq"], 4), round(r["rq"], 4)) == (0.5463, 0.6111, 0.6667)
    assert [round(r["per_class"][c]["pq"], 4) for c in (0, 1, 6, 7)] == [0.5185, 0.0, 0.6667, 1.0]
    # by hand: things (0.5185 + 0) / 2, stuff (0.6667 + 1) / 2
    assert r["pq_things"] == pytest.approx((14 / 27 + 0) / 2) and r["pq_stuff"] == pytest.approx((2 / 3 + 1) / 2)
    assert (r["per_class"][0]["tp"], r["per_class"][0]["fp"], r["per_class"][1]["fn"]) == (1, 1, 1)
    assert "things" in format_panoptic(r, {0: "person"})


def _random_panoptic(gen: torch.Generator, cats: list[int], b: int = 3, h: int = 12, w: int = 15) -> torch.Tensor:
    """Blocky maps (3x3 cells): random categories from ``cats`` and instance ids 0-2."""
    c = torch.tensor(cats)[torch.randint(0, len(cats), (b, h // 3, w // 3), generator=gen)]
    i = torch.randint(0, 3, (b, h // 3, w // 3), generator=gen)
    return torch.stack([c, i], -1).repeat_interleave(3, 1).repeat_interleave(3, 2)


@pytest.mark.parametrize("seed", range(12))
def test_random_maps_match_torchmetrics(seed):
    # things 0 2 5 8 and stuff 3 4 9; class 8 and 9 never occur (absent from both sides: left out
    # of the means, NaN per class here, 0 in torchmetrics); 11 in the target and -1 in the
    # prediction are void; stuff instance ids vary and must be ignored
    gen = torch.Generator().manual_seed(seed)
    things, stuffs = [0, 2, 5, 8], [3, 4, 9]
    target = _random_panoptic(gen, [0, 2, 5, 3, 4, 11], h=12 + 3 * (seed % 3))
    if seed % 2:                                   # coarser instances: larger segments
        target[..., 1] = target[..., 1] // 2
    # the prediction: the target with a share of its pixels redrawn, some of them void (-1)
    b, h, w = target.shape[:3]
    noise = _random_panoptic(gen, [0, 2, 5, 3, 4, -1], h=h)
    cells = torch.rand(b, h // 3, w // 3, generator=gen) < 0.2 + 0.1 * (seed % 3)
    redraw = cells.repeat_interleave(3, 1).repeat_interleave(3, 2) | (torch.rand(b, h, w, generator=gen) < 0.1)
    pred = torch.where(redraw[..., None], noise, target)
    pred[..., 0][pred[..., 0] == 11] = -1
    ref = PanopticQuality(things, stuffs, allow_unknown_preds_category=True, return_sq_and_rq=True)(pred, target)
    per = PanopticQuality(things, stuffs, allow_unknown_preds_category=True, return_sq_and_rq=True,
                          return_per_class=True)(pred, target)
    r = panoptic_quality(pred, target, things, stuffs, void=-1, excuse_pred_void=True)
    torch.testing.assert_close(torch.tensor([r["pq"], r["sq"], r["rq"]], dtype=torch.float64), ref,
                               atol=1e-6, rtol=0)
    mine = torch.tensor([[r["per_class"][c][k] for k in ("pq", "sq", "rq")] for c in things + stuffs],
                        dtype=torch.float64)
    assert mine[[3, 6]].isnan().all() and r["n"] == 5 and r["n_things"] == 3 and r["n_stuff"] == 2
    torch.testing.assert_close(mine.nan_to_num(0.0), per.reshape(-1, 3).double(), atol=1e-6, rtol=0)
    # things and stuff apart: the same metric restricted to those categories' means
    per_pq = per.reshape(-1, 3)[:, 0].double()
    assert r["pq_things"] == pytest.approx(float(per_pq[:3].mean()), abs=1e-6)
    assert r["pq_stuff"] == pytest.approx(float(per_pq[4:6].mean()), abs=1e-6)
    counts = [sum(v[k] for v in r["per_class"].values()) for k in ("tp", "fp", "fn")]
    assert min(counts) > 0                         # matches and both kinds of error occur
    # without predicted void the paper's rules (the default) are torchmetrics' too
    pred[..., 0][pred[..., 0] == -1] = 3
    ref = PanopticQuality(things, stuffs, return_sq_and_rq=True)(pred, target)
    r = panoptic_quality(pred, target, things, stuffs)
    torch.testing.assert_close(torch.tensor([r["pq"], r["sq"], r["rq"]], dtype=torch.float64), ref,
                               atol=1e-6, rtol=0)


def test_batches_accumulate_like_one_call_and_void_rules():
    gen = torch.Generator().manual_seed(7)
    pred, target = _random_panoptic(gen, [0, 1, 2, -1], b=4), _random_panoptic(gen, [0, 1, 2, 9], b=4)
    meter = PanopticMeter([0, 1], [2])
    meter.update(pred[:2], target[:2])
    meter.update(pred[2:], target[2:])
    assert meter.compute() == panoptic_quality(pred, target, [0, 1], [2])
    # ground-truth void leaves the union (the paper's rule and torchmetrics'); predicted void
    # pixels stay in the ground truth's area by the paper, leave it in torchmetrics
    t = torch.zeros(1, 4, 4, 2, dtype=torch.int64)
    t[..., 0] = 9                                   # void ground truth ...
    t[0, :, :2, 0], t[0, :, :2, 1] = 0, 1           # ... but the left half: thing 0, instance 1
    p = torch.full_like(t, 0)
    p[..., 0] = -1
    p[0, :, 1:, 0], p[0, :, 1:, 1] = 0, 5           # thing 0 on columns 1-3: 4 of 12 pixels on the object
    ref = PanopticQuality([0], [2], allow_unknown_preds_category=True, return_sq_and_rq=True)(p, t)
    # torchmetrics: IoU = 4 / (12 - 8 void + 8 - 4 predicted void - 4) = 1
    tm = panoptic_quality(p, t, [0], [2], excuse_pred_void=True)
    assert tm["per_class"][0] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0}
    assert ref.tolist() == [1.0, 1.0, 1.0]
    # the paper: IoU = 4 / (12 - 8 void + 8 - 4) = 0.5, not a match: one FN, and the prediction,
    # two thirds on ground-truth void, no FP
    paper = panoptic_quality(p, t, [0], [2])
    assert paper["per_class"][0] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 1}
    # a ground truth left wholly void: a false negative by the paper, nothing in torchmetrics
    p[..., 0] = -1
    assert panoptic_quality(p, t, [0], [2])["per_class"][0]["fn"] == 1
    assert math.isnan(panoptic_quality(p, t, [0], [2], excuse_pred_void=True)["pq"])
    assert math.isnan(paper["pq_stuff"]) and paper["n_stuff"] == 0


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="both things and stuff"):
        PanopticMeter([0, 1], [1])
    with pytest.raises(UserError, match="category"):
        panoptic_quality(PREDS.clone().fill_(3), TARGET, [0, 1], [6, 7])
    with pytest.raises(UserError, match="shape"):
        panoptic_quality(PREDS[..., :1], TARGET[..., :1], [0, 1], [6, 7])
