"""Selective search's recall: the fraction of ground-truth boxes that the first n proposals cover
at IoU 0.5 and 0.7, for n = 1..max, per mode, on generated test scenes (the detection recipes'
64x64 scenes of 1-4 Fashion-MNIST items), with the CPU time per scene; prints a table and draws
``docs/images/proposals_recall.png``.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.fig_proposals [--scenes 200] [--modes single fast quality]

Times are the process's CPU time (``time.process_time``), so a busy machine inflates them less
than wall time; the search is single-threaded numpy / scikit-image.
"""

from __future__ import annotations

import argparse
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from vislab.detection.proposals import MODES, proposal_recall, selective_search
from vislab.detection.scenes import SceneConfig, make_scenes

TABLE_COUNTS = (1, 10, 50, 100, 300, 1000, 2000)
IOUS = (0.5, 0.7)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=200)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--out", default=os.path.join("docs", "images", "proposals_recall.png"))
    args = ap.parse_args()
    scenes = make_scenes("test", args.scenes, SceneConfig(image_size=(64, 64), objects=(1, 4), scale=(0.8, 1.6)))
    images = [im.permute(1, 2, 0).numpy() for im in scenes.images]
    gt = [t["boxes"] for t in scenes.targets]
    print(f"{args.scenes} test scenes, {sum(len(g) for g in gt)} objects")
    curves = {}
    print(f"{'mode':8s} {'ms/scene':>8s} {'boxes':>6s}  IoU  " + " ".join(f"{'@' + str(n):>6s}" for n in TABLE_COUNTS))
    for mode in args.modes:
        start = time.process_time()
        props = [torch.from_numpy(selective_search(im, mode)) for im in images]
        ms = (time.process_time() - start) / len(images) * 1e3
        most = max(len(p) for p in props)
        counts = np.arange(1, most + 1)
        curves[mode] = {iou: proposal_recall(props, gt, counts.tolist(), iou) for iou in IOUS}
        for iou in IOUS:
            row = [curves[mode][iou][min(n, most) - 1] for n in TABLE_COUNTS]
            head = f"{mode:8s} {ms:8.1f} {np.mean([len(p) for p in props]):6.0f}" if iou == IOUS[0] else " " * 24
            print(f"{head}  {iou:.1f}  " + " ".join(f"{r:6.3f}" for r in row))
    fig, axes = plt.subplots(1, len(IOUS), figsize=(5 * len(IOUS), 3.6), sharey=True)
    for ax, iou in zip(axes, IOUS):
        for mode, c in curves.items():
            ax.plot(np.arange(1, len(c[iou]) + 1), c[iou], label=mode)
        ax.set_xscale("log")
        ax.set_xlabel("proposals per scene")
        ax.set_title(f"recall at IoU {iou}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ground-truth boxes covered")
    axes[0].legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
