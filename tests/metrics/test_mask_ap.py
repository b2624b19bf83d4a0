"""COCO run-length encoding and mask AP (``iou_type='segm'``) against pycocotools: its
``mask.encode/decode/area/iou`` and ``COCOeval(iouType='segm')`` on random masks."""

import contextlib
import copy
import io

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from vislab.errors import UserError
from vislab.metrics import detection as D
from vislab.metrics import masks as M

H, W = 37, 45          # odd sizes: runs cross columns, the packed bits end inside a byte


def random_masks(rng: np.random.Generator, n: int, h: int = H, w: int = W) -> np.ndarray:
    """Blobs and awkward masks: empty, full, the first pixel set, single pixels, noise."""
    out = np.zeros((n, h, w), np.uint8)
    for k in range(n):
        kind = rng.integers(0, 8)
        if kind == 0:
            continue
        if kind == 1:
            out[k] = 1
        elif kind == 2:
            out[k, 0, 0] = out[k, -1, -1] = 1
        elif kind == 3:
            out[k] = rng.random((h, w)) < 0.5
        else:
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            y1, x1 = rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)
            out[k, y0:y1, x0:x1] = 1
            out[k] &= rng.random((h, w)) < 0.9
    return out


def test_rle_encode_decode_area_equal_pycocotools():
    rng = np.random.default_rng(0)
    masks = random_masks(rng, 40)
    ref = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    for m, r in zip(masks, ref):
        ours = M.rle_encode(m)
        assert ours["size"] == r["size"] and ours["counts"] == r["counts"].decode()
        np.testing.assert_array_equal(M.rle_decode(ours), m)
        np.testing.assert_array_equal(M.rle_decode(r), m)               # pycocotools' bytes too
        assert M.rle_area(ours) == int(mask_utils.area(r)) == int(m.sum())
        counts = M.rle_counts(m)                                         # the uncompressed form
        uncompressed = {"size": [H, W], "counts": counts.tolist()}
        assert mask_utils.frPyObjects(uncompressed, H, W)["counts"] == r["counts"]
        np.testing.assert_array_equal(M.rle_decode(uncompressed), m)
    # long runs: counts of many 5-bit groups, and differences to the count two before < 0
    big = np.zeros((300, 400), np.uint8)
    big[5:290, 7:300] = 1
    big[100:110, 150:160] = 0
    r = mask_utils.encode(np.asfortranarray(big))
    assert M.rle_encode(big)["counts"] == r["counts"].decode()
    np.testing.assert_array_equal(M.string_to_counts(r["counts"]), M.rle_counts(big))
    with pytest.raises(ValueError, match="adding up"):
        M.rle_decode({"size": [2, 2], "counts": [1, 2]})


def test_mask_iou_equals_pycocotools_with_crowd_regions():
    rng = np.random.default_rng(1)
    dt = [M.rle_encode(m) for m in random_masks(rng, 9)]
    gt = [M.rle_encode(m) for m in random_masks(rng, 7)]
    crowd = [bool(c) for c in rng.random(7) < 0.4]
    ref = mask_utils.iou([dict(r, counts=r["counts"].encode()) for r in dt],
                         [dict(r, counts=r["counts"].encode()) for r in gt], [int(c) for c in crowd])
    np.testing.assert_array_equal(M.mask_iou(dt, gt, crowd), ref)


def random_segm_coco(seed: int, n_images: int = 10, n_cats: int = 4) -> tuple[dict, list]:
    """Ground truth with RLE masks (crowd regions uncompressed, as COCO stores them), an image
    without ground truth, a category without ground truth, annotated areas; results (masks
    only, compressed) that perturb the ground truth, confuse classes, fall on images without
    ground truth, and tie in score."""
    rng = np.random.default_rng(seed)
    image_ids = [int(i) for i in rng.permutation(500)[:n_images] + 1]
    cat_ids = [int(c) for c in rng.permutation(30)[:n_cats] + 1]
    images = [{"id": i, "width": W, "height": H} for i in image_ids]
    anns, results = [], []
    for n, img in enumerate(image_ids):
        if n == 0:
            continue                                       # no ground truth here
        for m in random_masks(rng, int(rng.integers(1, 6))):
            if not m.any():
                continue
            crowd = bool(rng.random() < 0.15)
            rle = {"size": [H, W], "counts": M.rle_counts(m).tolist()} if crowd else M.rle_encode(m)
            ys, xs = np.nonzero(m)
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": int(rng.choice(cat_ids[:-1])),
                         "segmentation": rle, "iscrowd": int(crowd),
                         "area": float(m.sum()) * float(rng.choice([1.0, 40.0, rng.uniform(0.5, 60)])),
                         "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                                  float(ys.max() - ys.min() + 1)]})
            for _ in range(int(rng.integers(0, 4))):
                d = np.roll(m, tuple(rng.integers(-2, 3, 2)), axis=(0, 1)) & (rng.random((H, W)) < 0.95)
                cat = anns[-1]["category_id"] if rng.random() < 0.85 else int(rng.choice(cat_ids))
                results.append({"image_id": img, "category_id": cat, "segmentation": M.rle_encode(d)})
    for img in image_ids:                                  # false positives, some on the empty image
        for m in random_masks(rng, int(rng.integers(0, 4))):
            results.append({"image_id": img, "category_id": int(rng.choice(cat_ids)), "segmentation": M.rle_encode(m)})
    for r in results:
        r["score"] = float(rng.choice([0.3, 0.6])) if rng.random() < 0.3 else float(rng.random())
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"cat{c}"} for c in cat_ids]}
    return gt, [results[i] for i in rng.permutation(len(results))]


def pycocotools_segm(gt: dict, results: list):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def segm_tables(gt: dict, results: list) -> tuple[D.BoxTable, D.BoxTable, int, int]:
    """The tables of a COCO dict and results, written out here (images and categories by
    sorted id, as pycocotools orders them); detections' area is their mask's."""
    image = {i: n for n, i in enumerate(sorted(im["id"] for im in gt["images"]))}
    cat = {c: k for k, c in enumerate(sorted(c["id"] for c in gt["categories"]))}
    anns = gt["annotations"]
    truth = D.BoxTable(np.array([image[a["image_id"]] for a in anns], np.int64),
                       np.array([cat[a["category_id"]] for a in anns], np.int64), np.zeros((len(anns), 4)),
                       np.array([a["area"] for a in anns], np.float64),
                       iscrowd=np.array([a["iscrowd"] for a in anns], bool), masks=[a["segmentation"] for a in anns])
    masks = [r["segmentation"] for r in results]
    dets = D.BoxTable(np.array([image[r["image_id"]] for r in results], np.int64),
                      np.array([cat[r["category_id"]] for r in results], np.int64), np.zeros((len(results), 4)),
                      np.array([M.rle_area(m) for m in masks], np.float64),
                      score=np.array([r["score"] for r in results], np.float64), masks=masks)
    return truth, dets, len(image), len(cat)


@pytest.mark.parametrize("seed", range(6))
def test_mask_ap_matches_pycocotools(seed, monkeypatch):
    gt, results = random_segm_coco(seed)
    ref = pycocotools_segm(gt, results)
    if seed == 5:                                 # mask-IoU blocks of a few pairs: the same numbers
        monkeypatch.setattr(D, "_MASK_CHUNK_BYTES", 700)
    precision, recall = D.evaluate_tables(*segm_tables(gt, results), iou_type="segm")
    ev = D.CocoEvaluation(precision, recall, [])
    np.testing.assert_allclose(ev.stats, ref.stats, rtol=0, atol=1e-9)
    np.testing.assert_allclose(precision, ref.eval["precision"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(recall, ref.eval["recall"], rtol=0, atol=1e-9)
    assert (ev.stats[[3, 4]] >= 0).all()          # small and medium objects both present


def test_tensor_api_masks_equal_the_tables():
    gt, results = random_segm_coco(3)
    ids = sorted(im["id"] for im in gt["images"])
    cats = sorted(c["id"] for c in gt["categories"])
    targets, preds = [], []
    for i in ids:
        a = [x for x in gt["annotations"] if x["image_id"] == i]
        r = [x for x in results if x["image_id"] == i]
        targets.append({"boxes": torch.zeros(len(a), 4), "labels": torch.tensor([cats.index(x["category_id"]) for x in a]),
                        "iscrowd": torch.tensor([bool(x["iscrowd"]) for x in a]),
                        "area": torch.tensor([x["area"] for x in a], dtype=torch.float64),
                        "masks": torch.from_numpy(np.stack([M.rle_decode(x["segmentation"]) for x in a]
                                                           or [np.zeros((H, W), np.uint8)])[:len(a)])})
        probs = [M.rle_decode(x["segmentation"]) * 0.4 + 0.3 for x in r]   # >= 0.5 exactly on the mask
        preds.append({"boxes": torch.zeros(len(r), 4), "labels": torch.tensor([cats.index(x["category_id"]) for x in r]),
                      "scores": torch.tensor([x["score"] for x in r], dtype=torch.float64),
                      "masks": torch.tensor(np.array(probs).reshape(len(r), H, W), dtype=torch.float32)})
    got = D.evaluate_detections(preds, targets, [f"cat{c}" for c in cats], iou_type="segm")
    np.testing.assert_allclose(got.stats, pycocotools_segm(gt, results).stats, rtol=0, atol=1e-9)
    with pytest.raises(UserError, match="masks"):
        D.evaluate_detections([{k: v for k, v in p.items() if k != "masks"} for p in preds], targets,
                              iou_type="segm")
    with pytest.raises(UserError, match="iou_type"):
        D.evaluate_detections(preds, targets, iou_type="keypoints")


def test_eval_detections_cli_segm(run_cli, tmp_path):
    import json
    gt, results = random_segm_coco(4)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(results))
    code, out, err = run_cli("eval-detections", tmp_path / "gt.json", tmp_path / "pred.json", "--iou-type", "segm",
                             "--per-class", "--json", tmp_path / "out.json")
    assert code == 0, err
    report = json.loads((tmp_path / "out.json").read_text())
    ref = pycocotools_segm(gt, results).stats
    np.testing.assert_allclose([report["coco"][k] for k in D.STAT_NAMES], ref, rtol=0, atol=1e-9)
    assert report["iou_type"] == "segm" and "Average Precision" in out
    boxes_only = [{k: v for k, v in r.items() if k != "segmentation"} | {"bbox": [0, 0, 1, 1]} for r in results]
    (tmp_path / "boxes.json").write_text(json.dumps(boxes_only))
    code, _, err = run_cli("eval-detections", tmp_path / "gt.json", tmp_path / "boxes.json", "--iou-type", "segm")
    assert code == 2 and "no 'segmentation'" in err and len(err.strip().splitlines()) == 1
