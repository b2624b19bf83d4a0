"""vislab.metrics.segmentation against the FCN formulas written out with loops, values computed
by hand, torchmetrics and scikit-learn."""

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from vislab.errors import UserError
from vislab.metrics.segmentation import (
    SegmentationMeter,
    class_frequencies,
    class_weights,
    confusion_matrix,
    format_scores,
    scores_from_confusion,
    segmentation_scores,
)

IGNORE = 255
FOUR = ("pixel_acc", "mean_acc", "miou", "fwiou")


def fcn_reference(pred: np.ndarray, target: np.ndarray, k: int, ignore: int | None) -> dict:
    """Long et al. 2015, Sec. 5, term by term: n_ij by a loop over the pixels, then the sums."""
    n = np.zeros((k, k))
    for y in range(target.shape[0]):
        for x in range(target.shape[1]):
            if target[y, x] != ignore:
                n[target[y, x], pred[y, x]] += 1
    t = [sum(n[i, j] for j in range(k)) for i in range(k)]
    col = [sum(n[j, i] for j in range(k)) for i in range(k)]
    total = sum(t)
    iou = [n[i, i] / (t[i] + col[i] - n[i, i]) if t[i] + col[i] - n[i, i] > 0 else math.nan for i in range(k)]
    with_gt = [i for i in range(k) if t[i] > 0]
    defined = [i for i in range(k) if not math.isnan(iou[i])]
    return {
        "pixel_acc": sum(n[i, i] for i in range(k)) / total,
        "mean_acc": sum(n[i, i] / t[i] for i in with_gt) / len(with_gt),
        "miou": sum(iou[i] for i in defined) / len(defined),
        "fwiou": sum(t[i] * iou[i] for i in with_gt) / total,
        "iou": iou,
    }


def random_maps(seed: int, shape: tuple[int, ...], used: int, pred_used: int | None = None,
                ignore_frac: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target): target in classes 0..used-1 with ``ignore_frac`` of IGNORE pixels; pred in
    0..pred_used-1, equal to the target on about half the pixels."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, used, shape, generator=g)
    pred = torch.randint(0, pred_used or used, shape, generator=g)
    pred = torch.where(torch.rand(shape, generator=g) < 0.5, target, pred)
    target[torch.rand(shape, generator=g) < ignore_frac] = IGNORE
    return pred, target


def assert_same(a: list[float], b: list[float]) -> None:
    np.testing.assert_allclose(np.array(a, dtype=float), np.array(b, dtype=float), rtol=1e-12, atol=0)


def assert_same_scores(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, float) or key in ("iou", "acc", "freq"):
            assert_same(value, b[key])
        else:
            assert value == b[key], key


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("used,pred_used", [(6, 6), (4, 4), (4, 5), (3, 6)])
def test_matches_fcn_formulas(seed, used, pred_used):
    """num_classes=6: classes >= max(used, pred_used) are absent from both; used < pred_used gives
    classes that are predicted but absent from the ground truth (IoU 0, weight 0)."""
    pred, target = random_maps(seed, (13, 17), used, pred_used)
    got = segmentation_scores(pred, target, 6, ignore_index=IGNORE)
    ref = fcn_reference(pred.numpy(), target.numpy(), 6, IGNORE)
    for key in FOUR:
        assert got[key] == pytest.approx(ref[key], rel=1e-12), key
    assert_same(got["iou"], ref["iou"])                       # NaN at the same places
    assert got["absent_classes"] == list(range(max(used, pred_used), 6))
    assert got["num_pixels"] == int((target != IGNORE).sum())


def test_hand_computed():
    # Counted pixels (target, pred): (0,0) (0,1) (1,1) (1,1) (2,0); the last pixel is ignored.
    # n00=1 n01=1 n11=2 n20=1;  t = [2, 2, 1, 0], column sums = [2, 3, 0, 0]; class 3 absent.
    # pixel acc = (1 + 2 + 0) / 5 = 0.6
    # acc       = [1/2, 2/2, 0/1, nan] -> mean acc = (0.5 + 1 + 0) / 3 = 0.5
    # IoU       = [1/(2+2-1), 2/(2+3-2), 0/(1+0-0), nan] = [1/3, 2/3, 0, nan] -> mIoU = 1/3
    # FW-IoU    = (2 * 1/3 + 2 * 2/3 + 1 * 0) / 5 = 0.4
    target = torch.tensor([[0, 0, 1], [1, 2, IGNORE]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 2]])
    s = segmentation_scores(pred, target, 4, ignore_index=IGNORE)
    assert s["pixel_acc"] == pytest.approx(0.6)
    assert s["mean_acc"] == pytest.approx(0.5)
    assert s["miou"] == pytest.approx(1 / 3)
    assert s["fwiou"] == pytest.approx(0.4)
    assert_same(s["iou"], [1 / 3, 2 / 3, 0.0, math.nan])
    assert_same(s["acc"], [0.5, 1.0, 0.0, math.nan])
    assert_same(s["freq"], [0.4, 0.4, 0.2, 0.0])
    assert s["present"] == [True, True, True, False]
    assert s["absent_classes"] == [3]
    assert s["num_pixels"] == 5
    assert confusion_matrix(pred, target, 4, IGNORE).tolist() == [[1, 1, 0, 0], [0, 2, 0, 0],
                                                                   [1, 0, 0, 0], [0, 0, 0, 0]]


def test_no_pixels_gives_nan():
    s = scores_from_confusion(torch.zeros(3, 3, dtype=torch.int64))
    assert all(math.isnan(s[k]) for k in FOUR)
    assert s["absent_classes"] == [0, 1, 2] and s["num_pixels"] == 0


def torchmetrics_values(pred, target, k, ignore_index):
    kw = {"num_classes": k, "ignore_index": ignore_index}
    return {name: float(metric(**kw, average=avg)(pred, target)) if avg != "none"
            else metric(**kw, average=avg)(pred, target).double().tolist()
            for name, metric, avg in [("iou", MulticlassJaccardIndex, "none"),
                                      ("jaccard_macro", MulticlassJaccardIndex, "macro"),
                                      ("jaccard_weighted", MulticlassJaccardIndex, "weighted"),
                                      ("acc_macro", MulticlassAccuracy, "macro"),
                                      ("acc_micro", MulticlassAccuracy, "micro")]}


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("used,pred_used", [(5, 5), (3, 3), (3, 4)])
def test_against_torchmetrics(seed, used, pred_used):
    pred, target = random_maps(seed, (4, 16, 16), used, pred_used)
    s = segmentation_scores(pred, target, 5, ignore_index=IGNORE)
    tm = torchmetrics_values(pred, target, 5, IGNORE)
    present = np.array(s["present"])
    iou, acc = np.array(s["iou"]), np.array(s["acc"])
    # Per class: equal where defined; torchmetrics writes 0 (zero_division) where undefined.
    np.testing.assert_allclose(np.array(tm["iou"])[present], iou[present], rtol=1e-6)
    assert all(v == 0 for v in np.array(tm["iou"])[~present])
    assert tm["acc_micro"] == pytest.approx(s["pixel_acc"], rel=1e-6)
    assert tm["jaccard_weighted"] == pytest.approx(s["fwiou"], rel=1e-6)
    # Macro IoU drops the classes absent from both, as the nan-mean does.
    assert tm["jaccard_macro"] == pytest.approx(s["miou"], rel=1e-6)
    # Macro accuracy drops the classes absent from both, but a class predicted and absent from
    # the ground truth counts as 0 there; FCN's mean accuracy leaves it out.
    assert tm["acc_macro"] == pytest.approx(np.nan_to_num(acc)[present].mean(), rel=1e-6)
    if used == pred_used:
        assert tm["acc_macro"] == pytest.approx(s["mean_acc"], rel=1e-6)
    else:
        assert tm["acc_macro"] < s["mean_acc"] - 0.01


def test_torchmetrics_drops_ignore_index_class_inside_the_range():
    """ignore_index=3 with num_classes=5: torchmetrics' macro IoU leaves class 3 out even where it
    is predicted; vislab counts it with IoU 0."""
    pred, target = random_maps(0, (4, 16, 16), 5, ignore_frac=0.0)
    s = segmentation_scores(pred, target, 5, ignore_index=3)
    tm = torchmetrics_values(pred, target, 5, 3)
    assert s["iou"][3] == 0 and s["present"][3]
    assert tm["jaccard_macro"] == pytest.approx(np.mean([s["iou"][c] for c in (0, 1, 2, 4)]), rel=1e-6)
    assert s["miou"] == pytest.approx(np.mean(s["iou"]))
    assert tm["acc_micro"] == pytest.approx(s["pixel_acc"], rel=1e-6)


def test_meter_accumulates_confusion_over_the_data_set():
    images = [random_maps(seed, (1, 5 + seed, 9), 4, 6) for seed in range(5)]
    meter = SegmentationMeter(6, ignore_index=IGNORE)
    for pred, target in images:
        meter.update(pred, target)
    whole = segmentation_scores(torch.cat([p.flatten() for p, _ in images]),
                                torch.cat([t.flatten() for _, t in images]), 6, IGNORE)
    assert_same_scores(meter.compute(), whole)
    assert meter.confusion.dtype == torch.int64 and meter.confusion.device.type == "cpu"
    meter.reset()
    assert int(meter.confusion.sum()) == 0


def test_meter_differs_from_mean_of_per_image_miou():
    # Image A: target 0 0 0 1, pred 0 0 0 0 -> IoU0 = 3/4, IoU1 = 0/1 -> mIoU 0.375
    # Image B: target 1 1 1 1, pred 1 1 1 1 -> IoU1 = 1, class 0 absent -> mIoU 1
    # Mean of the two: 0.6875.  Data set: n00 = 3, n10 = 1, n11 = 4
    # -> IoU0 = 3/(3+4-3) = 0.75, IoU1 = 4/(5+4-4) = 0.8 -> mIoU 0.775.
    a = (torch.tensor([[0, 0, 0, 0]]), torch.tensor([[0, 0, 0, 1]]))
    b = (torch.tensor([[1, 1, 1, 1]]), torch.tensor([[1, 1, 1, 1]]))
    meter = SegmentationMeter(2)
    per_image = []
    for pred, target in (a, b):
        meter.update(pred, target)
        per_image.append(segmentation_scores(pred, target, 2)["miou"])
    assert per_image == pytest.approx([0.375, 1.0])
    assert meter.compute()["miou"] == pytest.approx(0.775)
    assert np.mean(per_image) == pytest.approx(0.6875)


def test_logits_same_as_argmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 8, 10, generator=g)
    _, target = random_maps(1, (3, 8, 10), 5)
    from_logits = segmentation_scores(logits, target, 5, IGNORE)
    assert_same_scores(from_logits, segmentation_scores(logits.argmax(1), target, 5, IGNORE))
    probs = logits.softmax(1).requires_grad_()
    meter = SegmentationMeter(5, IGNORE)
    meter.update(probs, target)
    assert torch.equal(meter.confusion, confusion_matrix(logits.argmax(1), target, 5, IGNORE))


@pytest.mark.parametrize("seed", range(3))
def test_confusion_matches_sklearn(seed):
    pred, target = random_maps(seed, (2, 20, 30), 7)
    keep = target != IGNORE
    expected = skm.confusion_matrix(target[keep].numpy(), pred[keep].numpy(), labels=range(7))
    got = confusion_matrix(pred, target, 7, ignore_index=IGNORE)
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), expected)
    pred8, target8 = pred.to(torch.uint8), torch.where(keep, target, 0).to(torch.uint8)
    expected = skm.confusion_matrix(target8.flatten().numpy(), pred8.flatten().numpy(), labels=range(7))
    np.testing.assert_array_equal(confusion_matrix(pred8, target8, 7).numpy(), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_confusion_stays_on_cuda():
    pred, target = random_maps(0, (2, 64, 64), 6)
    got = confusion_matrix(pred.cuda(), target.cuda(), 6, IGNORE)
    assert got.is_cuda
    assert torch.equal(got.cpu(), confusion_matrix(pred, target, 6, IGNORE))


def test_out_of_range_classes_raise():
    target = torch.tensor([[0, 1], [7, 2]])
    pred = torch.zeros_like(target)
    with pytest.raises(ValueError, match=r"target holds class 7 but num_classes is 5"):
        confusion_matrix(pred, target, 5)
    with pytest.raises(ValueError, match=r"target holds class 255 .*ignore_index"):
        confusion_matrix(pred, torch.tensor([[0, 255]]), 5)
    with pytest.raises(ValueError, match=r"target holds class -1"):
        confusion_matrix(torch.tensor([0]), torch.tensor([-1]), 5, ignore_index=IGNORE)
    with pytest.raises(ValueError, match=r"pred holds class 5 but num_classes is 5"):
        confusion_matrix(torch.tensor([[0, 5]]), torch.tensor([[0, 1]]), 5)
    # A prediction at an ignored pixel is not counted, so not checked either.
    assert int(confusion_matrix(torch.tensor([0, 9]), torch.tensor([0, IGNORE]), 5, IGNORE).sum()) == 1
    with pytest.raises(UserError, match="shape"):
        confusion_matrix(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 5)
    with pytest.raises(UserError, match="scores for 4 classes"):
        confusion_matrix(torch.randn(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 5)


def test_class_frequencies():
    _, a = random_maps(0, (2, 9, 9), 4)
    _, b = random_maps(1, (11, 7), 3)
    counts = np.bincount(np.r_[a[a != IGNORE].numpy(), b[b != IGNORE].numpy()], minlength=5)
    got = class_frequencies([a, b], 5, ignore_index=IGNORE)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), counts / counts.sum(), rtol=1e-12)
    np.testing.assert_allclose(class_frequencies(a, 5, IGNORE).numpy(),
                               np.bincount(a[a != IGNORE].numpy(), minlength=5) / int((a != IGNORE).sum()))
    with pytest.raises(UserError, match="no labelled pixel"):
        class_frequencies(torch.full((2, 2), IGNORE), 5, IGNORE)


def test_class_weights_by_hand():
    freq = torch.tensor([0.5, 0.3, 0.2, 0.0])
    # inverse: 3 classes occur, w = 1 / (3 f) = [2/3, 10/9, 5/3, 0]; sum f w = 1/3 * 3 = 1
    inv = class_weights(freq, "inverse")
    assert inv.dtype == torch.float32
    np.testing.assert_allclose(inv.numpy(), [2 / 3, 10 / 9, 5 / 3, 0], rtol=1e-6)
    assert float((freq * inv).sum()) == pytest.approx(1.0)
    # median of [0.5, 0.3, 0.2] = 0.3: w = [0.3/0.5, 0.3/0.3, 0.3/0.2, 0] = [0.6, 1, 1.5, 0]
    np.testing.assert_allclose(class_weights(freq, "median").numpy(), [0.6, 1, 1.5, 0], rtol=1e-6)
    # even count: median of [0.4, 0.3, 0.2, 0.1] = 0.25 -> [0.625, 0.8333, 1.25, 2.5]
    np.testing.assert_allclose(class_weights([40, 30, 20, 10], "median").numpy(),
                               [0.625, 0.25 / 0.3, 1.25, 2.5], rtol=1e-6)
    # raw counts give the same weights as frequencies
    np.testing.assert_allclose(class_weights([50, 30, 20, 0], "inverse").numpy(), inv.numpy(), rtol=1e-6)
    assert class_weights(freq, "none").tolist() == [1, 1, 1, 1]
    with pytest.raises(UserError, match="unknown class weighting 'x': use none, inverse or median"):
        class_weights(freq, "x")
    with pytest.raises(UserError, match="non-negative"):
        class_weights([0.5, -0.1], "inverse")


def test_format_scores_names_absent_classes():
    target = torch.tensor([[0, 0, 1], [1, 2, IGNORE]])
    pred = torch.tensor([[0, 1, 1], [1, 0, 2]])
    names = ["road", "car", "sky", "cat", "dog"]
    text = format_scores(segmentation_scores(pred, target, 5, IGNORE), names)
    assert "mIoU 33.33" in text and "FW-IoU 40.00" in text and "pixel acc 60.00" in text
    assert "left out of the means (absent from prediction and ground truth): cat, dog" in text
    assert any(line.startswith("car") and "66.67" in line for line in text.splitlines())
    with pytest.raises(UserError, match="3 class names for 5 classes"):
        format_scores(segmentation_scores(pred, target, 5, IGNORE), names[:3])
