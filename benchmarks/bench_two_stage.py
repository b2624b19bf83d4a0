"""Two-stage detectors on generated scenes -- R-CNN, Fast R-CNN, Faster R-CNN, Faster R-CNN + FPN,
Mask R-CNN -- and torchvision's ``FasterRCNN`` and ``MaskRCNN`` on the same backbone, in one table;
Panoptic FPN on the scenes with stuff, with PQ / SQ / RQ.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_two_stage             # the table (about 2.5 hours on one thread)
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_two_stage --reuse     # keep the rows done
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_two_stage --models rcnn fast_rcnn
    .venv/bin/python -m benchmarks.bench_two_stage --quick                       # smoke run: seconds per model
    .venv/bin/python -m benchmarks.bench_two_stage --device cuda                 # on a GPU
    .venv/bin/python -m benchmarks.bench_detectors --two-stage runs/bench_two_stage/rows.json --reuse
                                                        # every detector, one- and two-stage, one table and plot

The machinery is :mod:`benchmarks.bench_detectors`' (the same row: each named recipe trained by
the one engine on its own generated scenes, scored by ``vislab evaluate`` -- COCO box AP on the
1,000 test scenes, mask AP where the model predicts masks -- parameters, MACs, training seconds
and images/s, inference ms per image at batch 1 with everything the model does included:
selective search for R-CNN and Fast R-CNN, the RPN for the others).  The rows are the named
recipes ``rcnn``, ``fast_rcnn``, ``faster_rcnn``, ``faster_rcnn_fpn``, ``mask_rcnn`` (the same
64x64 scenes, half-width ResNet-18 backbone and optimiser as the one-stage recipes; each recipe
says its epochs) and ``panoptic_fpn`` (the scenes with stuff).  torchvision rows:
``tv-faster-rcnn`` and ``tv-mask-rcnn`` are torchvision's ``FasterRCNN`` / ``MaskRCNN`` classes
built on the same backbone and FPN (``tv_faster_rcnn`` / ``tv_mask_rcnn`` in
:mod:`vislab.detection.tv_detection`) and trained by the same engine with the recipe they copy
(``faster_rcnn_fpn`` / ``mask_rcnn``).  Every row is saved as ``OUT/NAME.json`` when measured and
all of them as ``OUT/rows.json`` (what ``bench_detectors --two-stage`` reads); the figures of
detections and masks on test scenes are copied to ``docs/images/two_stage_NAME.png`` on a full run.

The notes' story, checked in the printed goals: R-CNN slowest by far at inference; Faster R-CNN
faster than Fast R-CNN with the proposals included; FPN best on small objects; vislab's Faster
R-CNN + FPN within one AP point of torchvision's and at least its training images/s; its AP50 at
least 0.80.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import torch

from benchmarks import bench_detectors as bd
from benchmarks.common import measured_sgemm_gflops
from vislab.io import atomic_write_text

VISLAB = ("rcnn", "fast_rcnn", "faster_rcnn", "faster_rcnn_fpn", "mask_rcnn")
TORCHVISION = {"tv-faster-rcnn": ("faster_rcnn_fpn", "tv_faster_rcnn"), "tv-mask-rcnn": ("mask_rcnn", "tv_mask_rcnn")}
PAIRS = {"faster_rcnn_fpn": "tv-faster-rcnn", "mask_rcnn": "tv-mask-rcnn"}   # timed side by side
PANOPTIC = ("panoptic_fpn",)
ALL = (*VISLAB, *TORCHVISION, *PANOPTIC)
FIGURES = ("faster_rcnn_fpn", "mask_rcnn", "panoptic_fpn")


def goals(rows: list[dict], speed: dict[str, dict[str, float]]) -> None:
    """The issue's goals and the notes' story, each with the figures that decide it; the training
    images/s of vislab against torchvision from the alternating rounds (``speed``) when measured."""
    by = {r["name"]: r for r in rows}
    if "rcnn" in by:
        others = [r for r in rows if r["name"] != "rcnn" and r.get("infer_ms")]
        if others:
            fastest = min(others, key=lambda r: r["infer_ms"])
            print(f"R-CNN slowest by far: {by['rcnn']['infer_ms']:.1f} ms per image, "
                  f"{by['rcnn']['infer_ms'] / fastest['infer_ms']:.1f}x {fastest['name']}'s {fastest['infer_ms']:.1f}")
    if "fast_rcnn" in by and "faster_rcnn" in by:
        a, b = by["faster_rcnn"], by["fast_rcnn"]
        print(f"Faster R-CNN vs Fast R-CNN at inference, proposals included: {a['infer_ms']:.1f} vs "
              f"{b['infer_ms']:.1f} ms per image ({b['infer_ms'] / a['infer_ms']:.1f}x faster)")
    small = [r for r in rows if r["name"] in VISLAB and r.get("APs") is not None]
    if small:
        best = max(small, key=lambda r: r["APs"])
        print("AP small: " + ", ".join(f"{r['name']} {r['APs']:.3f}" for r in small) + f" (best: {best['name']})")
    if "faster_rcnn_fpn" in by:
        a = by["faster_rcnn_fpn"]
        if "tv-faster-rcnn" in by:
            print(bd.versus(a, by["tv-faster-rcnn"], speed))
        print(f"goal faster_rcnn_fpn AP50 >= 0.80: {a['AP50']:.3f} (found whatever the class, AP50any: "
              f"{bd._f(a.get('AP50_any'), '.3f')})")
    if "mask_rcnn" in by and "tv-mask-rcnn" in by:
        a, b = by["mask_rcnn"], by["tv-mask-rcnn"]
        print(f"mask_rcnn vs torchvision's MaskRCNN: box AP {a['AP']:.3f} vs {b['AP']:.3f}, mask AP "
              f"{bd._f(a.get('mask_AP'), '.3f')} vs {bd._f(b.get('mask_AP'), '.3f')}")


def print_panoptic(rows: list[dict]) -> None:
    for r in rows:
        if r.get("pq") is None:
            continue
        print(f"{r['name']}: PQ {r['pq']:.3f}  SQ {r['sq']:.3f}  RQ {r['rq']:.3f}  "
              f"(things PQ {bd._f(r.get('pq_things'), '.3f')}, stuff PQ {bd._f(r.get('pq_stuff'), '.3f')}); "
              f"box AP {r['AP']:.3f}, mask AP {bd._f(r.get('mask_AP'), '.3f')}, {r['train_s']:.0f} s of training, "
              f"{r['infer_ms']:.1f} ms per image")


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    args, models = bd.parse_args(__doc__.splitlines()[0], ALL, "runs/bench_two_stage", argv)
    base = bd.budget_overrides(args)
    os.makedirs(args.out, exist_ok=True)
    sgemm = measured_sgemm_gflops(best_of=5)
    print(f"sgemm: {sgemm:.0f} GFLOP/s fp32 (2048x2048, {torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"device {args.device}", flush=True)
    infer_scenes = 8 if args.quick else bd.INFER_SCENES
    plan_rows = bd.plan(models, base, args.quick, TORCHVISION)
    rows = bd.collect(plan_rows, base, args.out, args.reuse, args.device, infer_scenes)
    boxes = [r for r in rows if r["name"] not in PANOPTIC]
    print()
    bd.print_table(boxes, sgemm)
    pairs = {ours: {ours: plan_rows[ours], theirs: plan_rows[theirs]} for ours, theirs in PAIRS.items()
             if ours in plan_rows and theirs in plan_rows}
    speed = bd.interleaved_speed(pairs, args.device, steps=2 if args.quick else 8, rounds=2 if args.quick else 3,
                                 infer_scenes=4 if args.quick else 20)
    bd.print_speed(speed, pairs, sgemm)
    goals(boxes, speed)
    print_panoptic(rows)
    if boxes:
        atomic_write_text(os.path.join(args.out, "rows.json"), json.dumps(boxes, indent=1))
    if args.images_dir and not args.quick:
        for r in rows:
            figure = os.path.join(r["run_dir"], "plots", "detections.png")
            if r["name"] in FIGURES and os.path.exists(figure):
                os.makedirs(args.images_dir, exist_ok=True)
                shutil.copyfile(figure, os.path.join(args.images_dir, f"two_stage_{r['name']}.png"))
    return {"detectors": boxes, "panoptic": [r for r in rows if r["name"] in PANOPTIC], "speed": speed}


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f}s")
