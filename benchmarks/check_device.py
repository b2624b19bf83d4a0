"""Every named recipe trained and evaluated on one device, tiny: does each task's path (device
placement, mixed precision, channels_last) work there?  The CUDA check the CPU test suite
cannot make.

    python -m benchmarks.check_device --device cuda            # bf16 autocast + channels_last
    python -m benchmarks.check_device --device cpu --recipes default,fcn8s

Each recipe trains one epoch on a few hundred samples (``data.limit_train``) through
``vislab.tasks.runner.train``, then ``evaluate`` writes its ``eval.json``; a row per recipe says
OK with the seconds and the first metrics, or the error.  Exit status 1 when any recipe failed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback

import torch

from vislab.config import list_recipes, load_config
from vislab.io import resolve_device

# Recipes that need files the user brings (``data.root``), not generated or shipped data.
NEEDS_FILES = {"sliding_window"}
# Recipes whose own data options do not fit a few hundred samples.
TINY = {"ae_classifier": ["data.per_class=5", "data.val_size=100"]}


def check(recipe: str, device: torch.device, limit: int, root: str) -> str:
    """Train ``recipe`` one tiny epoch and evaluate it; one line of what came out."""
    from vislab.tasks.runner import evaluate, train

    overrides = [f"device={device}", "train.epochs=1", f"data.limit_train={limit}", *TINY.get(recipe, [])]
    if device.type == "cuda":
        overrides.append("train.amp=true")
    cfg = load_config(recipe, overrides)
    t0 = time.perf_counter()
    result = train(cfg, f"{root}/{recipe}", progress=False, log=lambda *a: None)
    report = evaluate(result.run_dir, device=str(device))
    numbers = {k: v for k, v in report.items() if isinstance(v, float)}
    shown = ", ".join(f"{k} {v:.4g}" for k, v in list(numbers.items())[:3])
    return f"OK   {time.perf_counter() - t0:6.1f} s  {shown}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--recipes", default=None, help="comma-separated (default: every shipped recipe)")
    ap.add_argument("--limit", type=int, default=600, help="training samples per recipe")
    args = ap.parse_args()
    device = resolve_device(args.device)
    recipes = args.recipes.split(",") if args.recipes else [r for r in list_recipes() if r not in NEEDS_FILES]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}; {len(recipes)} recipes, one epoch on "
          f"{args.limit} samples each", flush=True)
    failed = []
    with tempfile.TemporaryDirectory(prefix="vislab-check-") as root:
        for recipe in recipes:
            try:
                line = check(recipe, device, args.limit, root)
            except Exception as e:                 # report every recipe, not only the first broken one
                failed.append(recipe)
                line = f"FAIL {type(e).__name__}: {e}".splitlines()[0][:300]
                traceback.print_exc(limit=-3, file=sys.stdout)
            print(f"{recipe:20s} {line}", flush=True)
    print(f"{len(recipes) - len(failed)} of {len(recipes)} recipes trained and evaluated on {name}"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
