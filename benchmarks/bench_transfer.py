"""Transfer learning with few labels: a backbone trained on Fashion-MNIST classes 0-4 (T-shirt,
trouser, pullover, dress, coat) reused for classes 5-9 (sandal, shirt, sneaker, bag, ankle boot)
with 10 and 100 labelled training images per class.

    python -m benchmarks.bench_transfer              # 3 seeds (about 3.5 minutes a seed on two cores)
    python -m benchmarks.bench_transfer --seeds 1
    python -m benchmarks.bench_transfer --quick      # smoke run: small backbone, few epochs, one seed

Four ways to learn the new classes, as the notes (003, "Transfer Learning") list them, each with
the same batches, epochs and one-cycle schedule of the default recipe: a linear probe (the
backbone frozen, in eval mode: only the new head trains), fine-tuning everything at the recipe's
rate, fine-tuning with the backbone at a tenth of it (``optim.backbone_lr_scale=0.1``), and the
same network from scratch.  The labelled images are the first N of each class in the training
part; ``best.pt`` is picked on 500 other training images of classes 5-9 (``data.val_size``), and
the figure is the test accuracy on the 5,000 test images of classes 5-9 (``vislab evaluate``).
Each seed retrains the backbone and draws another validation split, hence other labelled images.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from benchmarks.common import measured_sgemm_gflops
from vislab.config import load_config
from vislab.tasks.runner import evaluate, train

SOURCE = [0, 1, 2, 3, 4]
TARGET = [5, 6, 7, 8, 9]
# The settings of the default recipe when the table of docs/metric_learning.md was measured.
MEASURED_WITH = ["data.augment.crop_pad=2", "model.kwargs={drop: 0.1}"]
METHODS = {                                   # name -> overrides (None: from scratch, no init_from)
    "linear probe (frozen backbone)": ["train.freeze=backbone"],
    "fine-tune all": [],
    "fine-tune, backbone lr x0.1": ["optim.backbone_lr_scale=0.1"],
    "from scratch": None,
}
# labels per class -> (batch size, epochs): 10 steps or more per epoch for 500 images, 5 for 50;
# every method of a row gets exactly these steps
SHOTS = {10: (10, 50), 100: (25, 25)}
QUICK_SHOTS = {10: (10, 5), 100: (25, 2)}


def run(overrides: list[str], run_dir: str) -> tuple[float, float]:
    """Train a run of the default recipe with ``overrides``; its test top-1 and training seconds."""
    res = train(load_config(None, [*MEASURED_WITH, *overrides]), run_dir, progress=False, log=lambda s: None)
    return evaluate(run_dir)["top1"], res.train_time_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a backbone of 4,500 images and 2 epochs, few epochs after it, one seed")
    args = ap.parse_args()
    seeds = 1 if args.quick else args.seeds
    shots = QUICK_SHOTS if args.quick else SHOTS
    backbone = [f"data.classes={SOURCE}", "train.epochs=4"]
    backbone += ["data.limit_train=10000", "data.val_size=500", "train.epochs=2", "train.batch_size=64"] if args.quick else []
    sgemm = measured_sgemm_gflops(5)
    print(f"transfer from Fashion-MNIST classes {SOURCE} to {TARGET}: small_cnn, backbone "
          f"{' '.join(backbone)}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"measured sgemm {sgemm:.0f} GFLOP/s (best of 5)", flush=True)
    source_acc: list[float] = []
    acc: dict[tuple[int, str], list[float]] = {}
    secs: dict[tuple[int, str], list[float]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vislab-transfer-") as d:
        for seed in range(seeds):
            src = os.path.join(d, f"source-{seed}")
            top1, t = run([*backbone, f"seed={seed}"], src)
            source_acc.append(top1)
            print(f"seed {seed}: backbone test top-1 {top1:.4f} on classes {SOURCE} ({t:.0f} s)", flush=True)
            for n, (batch, epochs) in shots.items():
                target = [f"data.classes={TARGET}", f"data.per_class={n}", "data.val_size=500",
                          f"train.batch_size={batch}", f"train.epochs={epochs}", f"seed={seed}"]
                for m, (name, extra) in enumerate(METHODS.items()):
                    init = [] if extra is None else [f"model.init_from={src}", *extra]
                    top1, t = run([*target, *init], os.path.join(d, f"seed{seed}-{n}shot-method{m}"))
                    acc.setdefault((n, name), []).append(top1)
                    secs.setdefault((n, name), []).append(t)
                    print(f"  {n:3d} labels/class  {name:32s} {top1:.4f}  ({t:.0f} s)", flush=True)
    after = measured_sgemm_gflops(5)

    def spread(v: list[float]) -> str:
        return f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"
    print(f"\ntest top-1 on classes {TARGET} (5,000 test images), {seeds} seed(s)"
          + (" (mean ± std)" if seeds > 1 else "") + f"; backbone on {SOURCE}: {spread(source_acc)}")
    print(f"{'labels/class':>12}  {'steps':>5}  {'method':32s} {'test top-1':>17}  {'train s':>7}")
    for n, (batch, epochs) in shots.items():
        steps = (n * len(TARGET) // batch) * epochs
        for name in METHODS:
            print(f"{n:>12}  {steps:>5}  {name:32s} {spread(acc[n, name]):>17}  "
                  f"{statistics.mean(secs[n, name]):>7.1f}")
    print(f"total {time.perf_counter() - t0:.0f} s; measured sgemm {sgemm:.0f} before, {after:.0f} GFLOP/s after")


if __name__ == "__main__":
    main()
