"""Draw a trained segmentation run's predictions on a few test scenes (image, ground truth,
prediction, overlay) into ``docs/images/segmentation.png``.

    python -m benchmarks.fig_segmentation RUN [--scenes 0 1 2] [--out docs/images/segmentation.png]
"""

from __future__ import annotations

import argparse
import os

import torch

from vislab.data.masks import colorize, overlay
from vislab.metrics.segmentation import segmentation_scores
from vislab.report.plots import plot_image_rows
from vislab.tasks import load_run
from vislab.tasks.segmentation import load_split_pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--scenes", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--out", default=os.path.join("docs", "images", "segmentation.png"))
    args = ap.parse_args()
    run = load_run(args.run_dir, "cpu")
    images, masks, _ = load_split_pairs(run.config, "test", max(args.scenes) + 1)
    with torch.no_grad():
        pred = run.model(run.norm.from_uint8(images[args.scenes])).argmax(1)
    rows, titles = [], []
    for k, i in enumerate(args.scenes):
        img, gt, p = images[i].permute(1, 2, 0).numpy(), masks[i].numpy(), pred[k].numpy()
        miou = segmentation_scores(pred[k], masks[i].long(), run.info.num_classes, ignore_index=255)["miou"]
        present = sorted({run.classes[c] for c in set(gt.ravel().tolist()) if 0 < c < run.info.num_classes})
        rows.append([img, colorize(gt), colorize(p), overlay(img, p)])
        titles.append([f"test scene {i}", "ground truth: " + ", ".join(present)[:40], f"prediction (mIoU {miou:.2f})",
                       "overlay"])
    plot_image_rows(rows, titles, args.out)
    print(f"wrote {args.out} ({run.config.model.name}, {args.run_dir})")


if __name__ == "__main__":
    main()
