"""The default recipe end to end, as `make demo` runs it: wall time of training and the test
accuracy, against the targets (92% in at most 5 minutes of training on 2 CPU cores).

    python -m benchmarks.bench_recipe [--set key=value ...] [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import torch

from vislab.config import load_config
from vislab.engine import run

TARGET_ACC, TARGET_S = 0.92, 300.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--quick", action="store_true", help="5,000 images, one epoch (smoke test)")
    args = ap.parse_args()
    overrides = list(args.overrides) + (["data.limit_train=5000", "train.epochs=1"] if args.quick else [])
    cfg = load_config(None, overrides)
    tmp = tempfile.mkdtemp(prefix="vislab-recipe-")
    try:
        t0 = time.perf_counter()
        res = run.train(cfg, f"{tmp}/run", progress=False)
        total = time.perf_counter() - t0
        rep = run.evaluate(f"{tmp}/run")
    finally:
        shutil.rmtree(tmp)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {cfg.model.name}, "
          f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}")
    print(f"training time      {res.train_time_s:7.1f} s   (target <= {TARGET_S:.0f} s: "
          f"{res.train_time_s / TARGET_S:.2f} of the budget; with data loading {total:.1f} s)")
    print(f"test accuracy      {rep['top1']:7.4f}     (target >= {TARGET_ACC}; top-5 {rep['top5']:.4f})")


if __name__ == "__main__":
    main()
