"""Viola-Jones: detection time against OpenCV, and the time to train a 10-stage cascade.

    .venv/bin/python -m benchmarks.bench_viola_jones                     # detection + 10-stage training
    .venv/bin/python -m benchmarks.bench_viola_jones --run-dir runs/vj   # ... and keep the trained run
    .venv/bin/python -m benchmarks.bench_viola_jones --skip-train        # detection only
    .venv/bin/python -m benchmarks.bench_viola_jones --quick             # smoke run (small training)

Detection: OpenCV's ``haarcascade_frontalface_default.xml`` on the astronaut and on generated
640x480 scenes, scale factor 1.1, min neighbours 3; ``cv2.CascadeClassifier.detectMultiScale``
against vislab's OpenCV-compatible detector (same boxes, checked) and the paper's detector,
best of N runs.  vislab runs on one thread; OpenCV on one thread and on every core.  Training: a cascade of at least ten
stages on 24x24 windows with the full 162,336-feature pool; per stage, its features, d and f.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _best(fn, repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` runs, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def bench_detection(repeats: int, n_scenes: int) -> None:
    import cv2
    from skimage import data

    from vislab.classic.viola_jones.data import make_scenes
    from vislab.classic.viola_jones.detect import detect, rgb_to_gray
    from vislab.classic.viola_jones.opencv_xml import (
        load_opencv_cascade,
        resolve_cascade_path,
    )

    path = resolve_cascade_path("frontalface_default")
    ours, theirs = load_opencv_cascade(path), cv2.CascadeClassifier(str(path))
    images = [("astronaut 512x512", rgb_to_gray(data.astronaut()))]
    images += [(f"scene {k} 640x480", s.image) for k, s in enumerate(make_scenes(n_scenes, seed=11, size=(640, 480)))]
    cores = os.cpu_count() or 1
    print(f"detection, frontalface_default, scale 1.1, min neighbours 3, best of {repeats} (seconds)")
    print(f"{'image':20s} {'OpenCV threads':>14s} {'OpenCV':>8s} {'vislab':>8s} {'ratio':>6s} {'paper':>8s}  same boxes")
    totals = {}
    for threads in sorted({1, cores}):
        cv2.setNumThreads(threads)
        for name, img in images:
            t_cv, want = _best(lambda: theirs.detectMultiScale(img, 1.1, 3), repeats)
            t_vj, got = _best(lambda: detect(ours, img, "opencv", 1.1, 3), repeats)
            t_paper, _ = _best(lambda: detect(ours, img, "paper", 1.25, 3), repeats)
            want = np.asarray(want).reshape(-1, 4)
            same = sorted(map(tuple, np.c_[want[:, :2], want[:, :2] + want[:, 2:]].tolist())) == \
                sorted(map(tuple, got.boxes.tolist()))
            acc = totals.setdefault(threads, [0.0, 0.0, 0.0])
            acc[0] += t_cv
            acc[1] += t_vj
            acc[2] += t_paper
            print(f"{name:20s} {threads:14d} {t_cv:8.3f} {t_vj:8.3f} {t_vj / t_cv:6.2f} {t_paper:8.3f}  {same}")
    for threads, (t_cv, t_vj, t_paper) in totals.items():
        print(f"{'total':20s} {threads:14d} {t_cv:8.3f} {t_vj:8.3f} {t_vj / t_cv:6.2f} {t_paper:8.3f}"
              f"   <- vislab / OpenCV = {t_vj / t_cv:.2f} (goal: <= 2)")


def bench_training(quick: bool, run_dir: str | None) -> None:
    import tempfile

    from vislab.classic.viola_jones.train import TrainConfig, train_into_run

    cfg = TrainConfig(max_stages=10, target_false_positive_rate=1e-9)
    if quick:
        cfg = TrainConfig(max_stages=2, features=5000, positives_per_face=3, negatives=200,
                          validation_negatives=100, generated_negatives=4)
    print(f"\ntraining: {cfg.max_stages} stages, {cfg.window}x{cfg.window} windows, "
          f"{'all 162,336' if not cfg.features else cfg.features} features, d={cfg.detection_rate}, "
          f"f={cfg.false_positive_rate}, {cfg.negatives}+{cfg.validation_negatives} negatives per stage")
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        result = train_into_run(run_dir or tmp, cfg, verbose=True)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{'stage':>5s} {'features':>8s} {'d (val)':>8s} {'f (val)':>8s} {'neg. accepted':>13s} {'seconds':>8s}")
    for s in result.stages:
        print(f"{s.stage:5d} {s.n_features:8d} {s.detection_rate:8.3f} {s.false_positive_rate:8.3f} "
              f"{s.negatives_accepted:13.2e} {s.seconds:8.1f}")
    print(f"{result.cascade.n_stages} stages, {int(result.cascade.stage_sizes.sum())} features in {wall / 60:.1f} min "
          f"wall ({cpu / 60:.1f} min CPU; goal: under 15 min); stopped: {result.stop_reason}")
    print(f"windows of the training negatives the final cascade accepts: {result.final_negatives_accepted:.2e}")
    if run_dir:
        print(f"run saved in {run_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--skip-train", action="store_true", help="detection timings only")
    parser.add_argument("--run-dir", default=None, help="keep the trained cascade in this run directory")
    args = parser.parse_args()
    bench_detection(repeats=2 if args.quick else 5, n_scenes=1 if args.quick else 3)
    if not args.skip_train:
        bench_training(args.quick, args.run_dir)


if __name__ == "__main__":
    main()
