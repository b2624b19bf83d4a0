"""COCO box evaluation: vislab against pycocotools on the same large generated set.

    .venv/bin/python -m benchmarks.bench_coco_eval            # 5,000 images, 80 categories, 100 dets each
    .venv/bin/python -m benchmarks.bench_coco_eval --quick    # 300 images

Both start from the same in-memory COCO dict and results list; pycocotools runs COCO index,
loadRes, evaluate, accumulate and summarize (prints silenced).  Prints both times, the ratio
and the largest difference between the twelve numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import time

import numpy as np


def make_set(num_images: int, num_categories: int, dets_per_image: int, seed: int = 0) -> tuple[dict, list]:
    """COCO-like ground truth (about 7 objects per image, all sizes, 1% crowd) and results:
    jittered copies of the objects (mostly the right category, scores in [0.3, 1]) padded with
    random boxes (scores in [0, 0.7]) to ``dets_per_image`` per image."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "width": 640, "height": 480, "file_name": f"{i + 1}.jpg"} for i in range(num_images)]
    categories = [{"id": c + 1, "name": f"class{c + 1}"} for c in range(num_categories)]
    anns, results = [], []
    for img in range(1, num_images + 1):
        n = int(rng.poisson(7))
        side = np.exp(rng.uniform(np.log(8), np.log(400), n))
        wh = np.stack((side * rng.uniform(0.6, 1.4, n), side * rng.uniform(0.6, 1.4, n)), 1).clip(2, [600, 440])
        xy = rng.uniform(0, 1, (n, 2)) * ([640, 480] - wh)
        cats = rng.integers(1, num_categories + 1, n)
        for b, c in zip(np.column_stack((xy, wh)), cats):
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": int(c), "bbox": b.tolist(),
                         "area": float(b[2] * b[3] * rng.uniform(0.5, 1.0)), "iscrowd": int(rng.random() < 0.01)})
        dets = []
        for b, c in zip(np.column_stack((xy, wh)), cats):
            for _ in range(int(rng.integers(1, 4))):
                j = rng.normal(0, 0.1, 4) * np.r_[b[2:], b[2:]]
                cat = int(c) if rng.random() < 0.8 else int(rng.integers(1, num_categories + 1))
                dets.append((cat, [b[0] + j[0], b[1] + j[1], max(b[2] + j[2], 1.0), max(b[3] + j[3], 1.0)],
                             rng.uniform(0.3, 1.0)))
        while len(dets) < dets_per_image:
            w, h = rng.uniform(4, 300, 2)
            cat = int(rng.choice(cats)) if n and rng.random() < 0.5 else int(rng.integers(1, num_categories + 1))
            dets.append((cat, [rng.uniform(0, 640 - w), rng.uniform(0, 480 - h), w, h], rng.uniform(0.0, 0.7)))
        for cat, box, score in dets[:dets_per_image]:
            results.append({"image_id": img, "category_id": cat, "bbox": [float(v) for v in box],
                            "score": float(score)})
    return {"images": images, "annotations": anns, "categories": categories}, results


def run_pycocotools(gt: dict, results: list) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="300 images: a smoke run of a few seconds")
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--categories", type=int, default=80)
    p.add_argument("--dets", type=int, default=100, help="detections per image")
    args = p.parse_args(argv)
    n_images = 300 if args.quick else args.images
    from vislab.detection.formats import coco_evaluate

    gt, results = make_set(n_images, args.categories, args.dets)
    print(f"{n_images} images, {args.categories} categories, {len(gt['annotations'])} objects, "
          f"{len(results)} detections")
    gt_ref, res_ref = copy.deepcopy(gt), copy.deepcopy(results)     # pycocotools edits its inputs

    t0 = time.perf_counter()
    ours = coco_evaluate(gt, results).stats
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = run_pycocotools(gt_ref, res_ref)
    t_ref = time.perf_counter() - t0

    print(f"vislab      {t_ours:8.2f} s")
    print(f"pycocotools {t_ref:8.2f} s")
    print(f"speed-up    {t_ref / t_ours:8.1f}x")
    print(f"largest difference of the 12 numbers: {np.abs(ours - ref).max():.2e}  (AP {ours[0]:.4f})")


if __name__ == "__main__":
    main()
