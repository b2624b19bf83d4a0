"""Random COCO ground truth / results and pycocotools as the reference evaluator."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np


def random_coco(seed: int, n_images: int = 12, n_cats: int = 4, crowded: bool = False) -> tuple[dict, list]:
    """Ground truth with every awkward case: empty images, an image of crowd regions only,
    annotated areas that differ from box areas, exact duplicate boxes (IoU ties), all three size
    ranges; results with score ties, wrong labels, a category never predicted, images with
    detections but no ground truth, and (``crowded``) more than 100 detections per image."""
    rng = np.random.default_rng(seed)
    image_ids = [int(i) for i in rng.permutation(1000)[:n_images] + 1]
    cat_ids = [int(c) for c in rng.permutation(50)[:n_cats] + 1]
    images = [{"id": i, "width": 400, "height": 400, "file_name": f"{i}.png"} for i in image_ids]
    categories = [{"id": c, "name": f"cat{c}"} for c in cat_ids]
    anns = []

    def box() -> list[float]:
        side = rng.choice([rng.uniform(2, 32), rng.uniform(32, 96), rng.uniform(96, 250)])
        w, h = side * rng.uniform(0.5, 1.5), side * rng.uniform(0.5, 1.5)
        x, y = rng.uniform(0, 400 - w), rng.uniform(0, 400 - h)
        b = [x, y, w, h]
        return [float(round(v)) for v in b] if rng.random() < 0.3 else [float(v) for v in b]

    for n, img in enumerate(image_ids):
        if n == 0:
            continue                                        # an image without ground truth
        count = int(rng.integers(1, 9))
        for _ in range(count):
            b = box()
            anns.append({"image_id": img, "category_id": int(rng.choice(cat_ids)), "bbox": b,
                         "area": b[2] * b[3] * float(rng.choice([1.0, rng.uniform(0.5, 1.0)])),
                         "iscrowd": int(n == 1 or rng.random() < 0.1)})   # image 1: crowds only
            if rng.random() < 0.15:
                anns.append(dict(anns[-1], bbox=list(b), iscrowd=0))     # a duplicate box
    # an exact IoU tie: D overlaps A and B equally (90 / 110); pycocotools gives D the later
    # one (B), so that E, lower and exactly on A, still matches A at every threshold
    tie_img, tie_cat = image_ids[3], cat_ids[0]
    for x in (0.0, 2.0):
        anns.append({"image_id": tie_img, "category_id": tie_cat, "bbox": [300 + x, 300, 10, 10],
                     "area": 100.0, "iscrowd": 0})
    for k, a in enumerate(anns):
        a["id"] = k + 1
    never = cat_ids[-1]                                     # a category nobody predicts
    results = []
    for a in anns:
        for _ in range(int(rng.integers(0, 4))):
            x, y, w, h = a["bbox"]
            j = rng.normal(0, 0.12, 4) * [w, h, w, h]
            cat = a["category_id"] if rng.random() < 0.85 else int(rng.choice(cat_ids))
            results.append({"image_id": a["image_id"], "category_id": cat,
                            "bbox": [x + j[0], y + j[1], max(w + j[2], 0.5), max(h + j[3], 0.5)]})
    for img in image_ids:
        for _ in range(int(rng.integers(0, 6))):
            results.append({"image_id": img, "category_id": int(rng.choice(cat_ids)), "bbox": box()})
    for _ in range(130 if crowded else 0):                  # past the 100-per-image cut
        results.append({"image_id": image_ids[2], "category_id": cat_ids[0], "bbox": box()})
    for r in results:
        r["score"] = float(rng.choice([0.25, 0.5, 0.75])) if rng.random() < 0.4 else float(rng.random())
        if r["category_id"] == never:
            r["category_id"] = cat_ids[0]
    results += [{"image_id": tie_img, "category_id": tie_cat, "bbox": [301.0, 300, 10, 10], "score": 0.99},
                {"image_id": tie_img, "category_id": tie_cat, "bbox": [300.0, 300, 10, 10], "score": 0.98}]
    results = [results[i] for i in rng.permutation(len(results))]
    return {"images": images, "annotations": anns, "categories": categories}, results


def pycocotools_eval(gt: dict, results: list, params=None):
    """pycocotools' COCOeval after evaluate + accumulate + summarize, prints silenced."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        dt = coco.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco, dt, "bbox")
        if params:
            for k, v in params.items():
                setattr(ev.params, k, v)
        ev.evaluate()
        ev.accumulate()
        if not params:
            ev.summarize()
    return ev
