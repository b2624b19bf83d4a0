import numpy as np
import pytest
import torch

from tests.metrics.coco_oracle import pycocotools_eval, random_coco
from vislab.errors import UserError
from vislab.metrics import detection as D


def coco_evaluate(gt: dict, results: list) -> D.CocoEvaluation:
    """The metric on the box tables of a COCO dict and results list, written out here: images
    and categories by sorted id (pycocotools' order), boxes ``[x, y, w, h]`` as in the dicts."""
    image = {i: n for n, i in enumerate(sorted(im["id"] for im in gt["images"]))}
    cats = sorted(c["id"] for c in gt["categories"])
    cat = {c: k for k, c in enumerate(cats)}
    anns = gt["annotations"]
    truth = D.BoxTable(np.array([image[a["image_id"]] for a in anns], np.int64),
                       np.array([cat[a["category_id"]] for a in anns], np.int64),
                       np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4),
                       np.array([a["area"] for a in anns], np.float64),
                       iscrowd=np.array([a["iscrowd"] for a in anns], bool))
    boxes = np.array([r["bbox"] for r in results], np.float64).reshape(-1, 4)
    dets = D.BoxTable(np.array([image[r["image_id"]] for r in results], np.int64),
                      np.array([cat[r["category_id"]] for r in results], np.int64),
                      boxes, boxes[:, 2] * boxes[:, 3], score=np.array([r["score"] for r in results], np.float64))
    precision, recall = D.evaluate_tables(truth, dets, len(image), len(cats))
    return D.CocoEvaluation(precision, recall, [f"cat{c}" for c in cats])


@pytest.mark.parametrize("seed", range(30))
def test_coco_matches_pycocotools(seed):
    gt, results = random_coco(seed, crowded=seed % 10 == 0)
    ref = pycocotools_eval(gt, results)
    ours = coco_evaluate(gt, results)
    np.testing.assert_allclose(ours.stats, ref.stats, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.precision, ref.eval["precision"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.recall, ref.eval["recall"], rtol=0, atol=1e-9)


def test_coco_many_images_and_categories():
    gt, results = random_coco(100, n_images=60, n_cats=12, crowded=True)
    np.testing.assert_allclose(coco_evaluate(gt, results).stats,
                               pycocotools_eval(gt, results).stats, rtol=0, atol=1e-9)


def test_coco_perfect_and_empty_predictions():
    gt, _ = random_coco(3)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "score": 1.0} for a in gt["annotations"] if not a["iscrowd"]]
    ours = coco_evaluate(gt, perfect)
    np.testing.assert_allclose(ours.stats, pycocotools_eval(gt, perfect).stats, rtol=0, atol=1e-9)
    none = coco_evaluate(gt, [])       # pycocotools cannot load an empty list: 0 where gt exists
    assert set(none.stats.tolist()) <= {0.0, -1.0} and none.stats[0] == 0.0


def test_tensor_api_equals_table_api():
    gt, results = random_coco(7)
    ours = coco_evaluate(gt, results)
    ids = sorted(im["id"] for im in gt["images"])
    cats = sorted(c["id"] for c in gt["categories"])

    def xyxy(b):
        return [b[0], b[1], b[0] + b[2], b[1] + b[3]]
    targets, preds = [], []
    for i in ids:
        a = [x for x in gt["annotations"] if x["image_id"] == i]
        r = [x for x in results if x["image_id"] == i]
        targets.append({"boxes": torch.tensor([xyxy(x["bbox"]) for x in a], dtype=torch.float64).reshape(-1, 4),
                        "labels": torch.tensor([cats.index(x["category_id"]) for x in a], dtype=torch.int64),
                        "iscrowd": torch.tensor([x["iscrowd"] for x in a], dtype=torch.bool),
                        "area": torch.tensor([x["area"] for x in a], dtype=torch.float64)})
        preds.append({"boxes": torch.tensor([xyxy(x["bbox"]) for x in r], dtype=torch.float64).reshape(-1, 4),
                      "labels": torch.tensor([cats.index(x["category_id"]) for x in r], dtype=torch.int64),
                      "scores": torch.tensor([x["score"] for x in r], dtype=torch.float64)})
    got = D.evaluate_detections(preds, targets, [f"cat{c}" for c in cats])
    np.testing.assert_allclose(got.stats, ours.stats, rtol=0, atol=1e-9)
    assert list(got.per_category()) == [f"cat{c}" for c in cats]


def test_bad_labels_are_user_errors():
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([2])}
    pred = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0]), "scores": torch.tensor([0.9])}
    with pytest.raises(UserError, match="0..1"):
        D.evaluate_detections([pred], [target], ["a", "b"])
    with pytest.raises(UserError, match="category list"):
        D.voc_evaluate([pred], [target], ["a"])


def test_voc_ap_by_hand():
    # TP FP TP FP TP with 3 objects
    rec = np.array([1, 1, 2, 2, 3]) / 3
    prec = np.array([1, 1 / 2, 2 / 3, 2 / 4, 3 / 5])
    assert D.voc_ap(rec, prec) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert D.voc_ap(rec, prec, use_07_metric=True) == pytest.approx((4 * 1 + 3 * 2 / 3 + 4 * 0.6) / 11)


def _t(boxes, labels, **kw):
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
           "labels": torch.tensor(labels, dtype=torch.int64)}
    return out | {k: torch.tensor(v) for k, v in kw.items()}


def test_voc_duplicates_difficult_and_best_match_rule():
    # gt 0 regular, gt 1 difficult; det on gt 0 (TP), again on gt 0 (duplicate: FP), on the
    # difficult one (ignored), on nothing (FP): recall 1 at precision 1 -> AP 1
    target = _t([[0, 0, 10, 10], [50, 50, 60, 60]], [0, 0], iscrowd=[False, True])
    pred = _t([[0, 0, 10, 10], [0, 0, 10, 10.5], [50, 50, 60, 60], [80, 80, 90, 90]], [0] * 4,
              scores=[0.9, 0.8, 0.7, 0.6])
    ev = D.voc_evaluate([pred], [target])
    assert ev.ap.tolist() == [1.0]
    rec, prec = ev.curves["0"]
    np.testing.assert_allclose(rec, [1, 1, 1])
    np.testing.assert_allclose(prec, [1, 1 / 2, 1 / 3])
    # VOC compares a detection only with its best-overlapping object, even when that one is
    # taken and another would do (COCO would match it to gt B)
    target = _t([[0, 0, 10, 10], [0, 0, 10, 9]], [0, 0])
    pred = _t([[0, 0, 10, 10], [0, 0, 10, 9.5]], [0, 0], scores=[0.9, 0.8])
    assert D.voc_evaluate([pred], [target]).ap.tolist() == [0.5]
    assert D.evaluate_detections([pred], [target]).as_dict()["AP50"] == pytest.approx(1.0)


def test_voc07_equals_pycocotools_with_eleven_recall_points():
    # with well-separated objects the two matching rules agree, and VOC2007's 11-point AP is
    # pycocotools' interpolated precision read at recall 0, 0.1, ..., 1
    rng = np.random.default_rng(0)
    gt = {"images": [{"id": i + 1} for i in range(10)], "categories": [{"id": 1}, {"id": 2}],
          "annotations": []}
    results, targets, preds = [], [], []
    for i in range(10):
        cells = rng.permutation(16)[:5]
        boxes, labels, pboxes, plabels, scores = [], [], [], [], []
        for c in cells:
            x, y = (c % 4) * 100 + 10, (c // 4) * 100 + 10
            w, h = rng.uniform(30, 60, 2)
            lab = int(rng.integers(0, 2))
            boxes.append([x, y, x + w, y + h])
            labels.append(lab)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1,
                                      "category_id": lab + 1, "bbox": [x, y, w, h], "area": w * h,
                                      "iscrowd": 0})
            for _ in range(int(rng.integers(0, 3))):
                j = rng.normal(0, 6, 4)
                pb = [x + j[0], y + j[1], x + w + j[2], y + h + j[3]]
                s = float(rng.random())
                pboxes.append(pb)
                plabels.append(lab)
                scores.append(s)
                results.append({"image_id": i + 1, "category_id": lab + 1, "score": s,
                                "bbox": [pb[0], pb[1], pb[2] - pb[0], pb[3] - pb[1]]})
        targets.append(_t(boxes, labels))
        preds.append(_t(pboxes, plabels, scores=scores))
    ev = pycocotools_eval(gt, results, {"iouThrs": np.array([0.5]), "recThrs": np.linspace(0, 1, 11),
                                        "maxDets": [1000], "areaRng": [[0, 1e10]], "areaRngLbl": ["all"]})
    ref = ev.eval["precision"][0, :, :, 0, 0].mean(axis=0)
    voc = D.voc_evaluate(preds, targets, use_07_metric=True)
    np.testing.assert_allclose(voc.ap, ref, atol=1e-12)
    assert voc.mean_ap == pytest.approx(ref.mean())


def test_pr_curves_are_pycocotools_precision():
    gt, results = random_coco(2)
    ev = coco_evaluate(gt, results)
    ref = pycocotools_eval(gt, results).eval["precision"]
    curves = ev.pr_curves(0.75)
    with_gt = sorted({a["category_id"] for a in gt["annotations"] if not a["iscrowd"]})
    assert list(curves) == [f"cat{c}" for c in with_gt] and len(curves) >= 2
    cats = sorted(c["id"] for c in gt["categories"])
    for c in with_gt:
        rec, prec = curves[f"cat{c}"]
        np.testing.assert_array_equal(rec, np.linspace(0, 1, 101))
        np.testing.assert_allclose(prec, ref[5, :, cats.index(c), 0, 2], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="iou"):
        ev.pr_curves(0.52)


def test_pairs_in_small_blocks_give_the_same_result(monkeypatch):
    gt, results = random_coco(11, crowded=True)
    whole = coco_evaluate(gt, results)
    monkeypatch.setattr(D, "_PAIR_CHUNK", 7)     # the IoU blocks that bound memory on big sets
    np.testing.assert_array_equal(coco_evaluate(gt, results).precision, whole.precision)
    np.testing.assert_allclose(coco_evaluate(gt, results).stats, pycocotools_eval(gt, results).stats,
                               rtol=0, atol=1e-9)
