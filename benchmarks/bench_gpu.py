"""Wall time to 94% Fashion-MNIST test accuracy on a CUDA device (bf16 autocast, channels_last,
data set and batched augmentation on the GPU), through `vislab train`'s own engine path.

The clock starts with the training loop and pauses while the test set is probed after every
epoch (as time-to-accuracy benchmarks such as airbench run it); the run's own model selection
uses validation only.

    python -m benchmarks.bench_gpu [--target 0.94] [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.bench_recipe import run_once, time_to
from vislab.io import resolve_device

RECIPE = ["model.kwargs={widths: [64, 128, 256], drop: 0.1}", "train.epochs=12", "train.batch_size=512",
          "optim.lr=0.4", "train.label_smoothing=0.1", "data.val_size=0.001",
          "data.augment.erase=0.25", "train.amp=true", "train.channels_last=true"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=float, default=0.94)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="one epoch on 5,000 images (smoke test, any device)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    overrides = RECIPE + [f"device={device}"] + (["data.limit_train=5000", "train.epochs=1"] if args.quick else [])
    if device.type != "cuda":
        overrides.append("train.amp=false")         # bf16 on a CPU without AMX is many times slower
    rows = run_once(None, overrides, seed=0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, recipe: {' '.join(RECIPE)}")
    for epoch, t, acc in rows:
        print(f"epoch {epoch:2d}  {t:7.2f} s  test accuracy {acc:.4f}")
    reached = time_to(rows, args.target)
    print(f"time to {args.target:.0%}: {reached:.2f} s (goal <= 3 s on an H100-class GPU)" if reached is not None
          else f"did not reach {args.target:.0%} in {len(rows)} epochs")


if __name__ == "__main__":
    main()
