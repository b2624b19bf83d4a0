"""Training throughput of one process against several (``vislab train --nproc N``,
DistributedDataParallel through torchrun's launcher), the same recipe and global batch.

    python -m benchmarks.bench_ddp                      # the default recipe on 20,000 images, 2 epochs
    python -m benchmarks.bench_ddp --nproc 1 2 4 --device cuda   # on a machine with GPUs
    python -m benchmarks.bench_ddp --quick              # smoke run

Each configuration is a whole ``vislab train`` command; the figure is the images per second of
its last epoch (``metrics.jsonl``, counted over the global batch, validation excluded), with
the final validation accuracy beside it.  On CPU every process gets ``threads / N`` threads
(torchrun's default is one), so on a 2-core machine two processes share the same two cores as
one process with two threads: little speed-up is expected; what it shows is the cost of the
gradient all-reduce.  A last row runs one process on one thread, the share each of two
processes has.  The machine's sgemm is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

from benchmarks.common import measured_sgemm_gflops


def run(nproc: int, threads: int, args, root: str) -> dict:
    run_dir = os.path.join(root, f"p{nproc}-t{threads}")
    cmd = [sys.executable, "-m", "vislab", "train", "--run-dir", run_dir, "--no-progress", "--device", args.device,
           "--set", f"data.limit_train={args.images + 1000}", "--set", f"train.epochs={args.epochs}",
           "--nproc", str(nproc)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        last = [r for r in map(json.loads, f) if r.get("epoch_end")][-1]
    return {"nproc": nproc, "threads": threads, "images_per_s": last["images_per_s"], "val_top1": last["val_top1"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads shared by the processes")
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.images, args.epochs = 2000, 1
    print(f"torch {torch.__version__}, {args.threads} threads, device {args.device}; "
          f"sgemm {measured_sgemm_gflops(3):.0f} GFLOP/s")
    print(f"default recipe (small CNN, global batch 256), {args.images} training images, {args.epochs} epochs")
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for n in args.nproc:
            rows.append(run(n, max(1, args.threads // n), args, root))
        if args.threads > 1 and args.device == "cpu":     # the share of one core, for comparison
            rows.append(run(1, 1, args, root))
    base = rows[0]["images_per_s"]
    print(f"{'processes':>9s} {'threads each':>12s} {'images/s':>9s} {'vs first':>8s} {'val top1':>8s}")
    for r in rows:
        print(f"{r['nproc']:9d} {r['threads']:12d} {r['images_per_s']:9.0f} {r['images_per_s'] / base:7.2f}x "
              f"{r['val_top1']:8.4f}")


if __name__ == "__main__":
    main()
