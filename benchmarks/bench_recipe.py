"""Time to accuracy of a named recipe, as `vislab train RECIPE` runs it: test accuracy after every
epoch against the training clock, the time to 92/93/94/95%, over several seeds.

    python -m benchmarks.bench_recipe                          # the default recipe (make demo), 3 seeds
    python -m benchmarks.bench_recipe --recipe accurate --seeds 2
    python -m benchmarks.bench_recipe --recipe best --seeds 1 --tta    # and --first-seed 1 for another
    python -m benchmarks.bench_recipe --set train.epochs=4     # any override
    python -m benchmarks.bench_recipe --quick                  # smoke run

The clock runs as time-to-accuracy benchmarks (airbench) run it: the training loop with its own
validation, while the test-set probe after each epoch is paused out of it.  The test set is
only probed, never used to choose anything.  The machine's measured sgemm is printed beside the
times, so that figures from different machines compare.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from benchmarks.common import measured_sgemm_gflops
from vislab.config import load_config
from vislab.data.datasets import load_split
from vislab.data.info import DataInfo
from vislab.engine.hooks import Hook
from vislab.tasks.classification import image_logits
from vislab.tasks.runner import train

GOALS = {"default": (0.92, 120.0), "accurate": (0.93, 300.0), "best": (0.95, 3600.0)}
LEVELS = (0.92, 0.93, 0.94, 0.95)


class TestProbe(Hook):
    """Test accuracy after every epoch (of the weights `vislab evaluate` would use), with the
    time the probe takes kept out of the training clock."""

    def __init__(self, info: DataInfo, device: torch.device, images, labels, live: bool = False,
                 tta: bool = False) -> None:
        self.x = info.norm.from_uint8(images, device)
        self.y = torch.from_numpy(labels)
        self.rows: list[tuple[int, float, float]] = []      # (epoch, training seconds, accuracy)
        self.val: list[float | None] = []                   # the run's own validation top-1
        self.tta: float | None = None                       # after training, with the mirror image (`evaluate --tta`)
        self.paused = 0.0
        self.live, self.with_tta = live, tta

    def before_train(self, t) -> None:
        self.t0 = _now(t.device)

    def after_epoch(self, t) -> None:
        p0 = _now(t.device)
        logits, _ = image_logits(t.eval_model(), self.x, self.y, 1024)
        self.rows.append((t.epoch + 1, p0 - self.t0 - self.paused, float((logits.argmax(1) == self.y).float().mean())))
        self.val.append(t.epoch_metrics.get("val_top1"))
        if self.live:
            e, s, acc = self.rows[-1]
            print(f"  epoch {e:3d} {s:8.2f} s  test {acc:.4f}  val {self.val[-1] or float('nan'):.4f}", flush=True)
        self.paused += time.perf_counter() - p0

    def after_train(self, t) -> None:
        if self.with_tta:
            logits, _ = image_logits(t.eval_model(), self.x, self.y, 1024, tta=True)
            self.tta = float((logits.argmax(1) == self.y).float().mean())


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def run_once(recipe: str | None, overrides: list[str], seed: int, val: list | None = None,
             live: bool = False, tta: list | None = None) -> list[tuple[int, float, float]]:
    """One training run; the probe's rows ``(epoch, training seconds, test accuracy)``; the run's
    validation top-1 after each epoch is appended to ``val`` when given (choose by it, not by test),
    the final model's flip-TTA test accuracy to ``tta`` when given."""
    cfg = load_config(recipe, [*overrides, f"seed={seed}"])
    test = load_split(cfg.data.name, "test", cfg.data.root)
    probes: list[TestProbe] = []

    def hooks(info: DataInfo, device: torch.device) -> list[Hook]:
        probes.append(TestProbe(info, device, test.images, test.labels, live, tta is not None))
        return probes[-1:]
    with tempfile.TemporaryDirectory(prefix="vislab-recipe-") as d:
        train(cfg, f"{d}/run", progress=False, log=lambda s: None, extra_hooks=hooks)
    if val is not None:
        val.extend(probes[0].val)
    if tta is not None:
        tta.append(probes[0].tta)
    return probes[0].rows


def spread(values: list[float]) -> str:
    """Mean ± sample standard deviation (the value alone for one)."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def time_to(rows: list[tuple[int, float, float]], level: float) -> float | None:
    return next((t for _, t, acc in rows if acc >= level), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="default", help="a named recipe (default, accurate, best, ...)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds FIRST .. FIRST+SEEDS-1 (to split seeds over runs)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--tta", action="store_true",
                    help="also the final model's test accuracy with flip TTA (what `vislab evaluate --tta` "
                         "reports when best.pt is the last epoch, as it is when the validation loss falls to the end)")
    ap.add_argument("--quick", action="store_true", help="5,000 images, one epoch, one seed (smoke test)")
    args = ap.parse_args()
    overrides = list(args.overrides) + (["data.limit_train=5000", "data.val_size=500", "train.epochs=1"]
                                        if args.quick else [])
    seeds = 1 if args.quick else args.seeds
    sgemm = measured_sgemm_gflops(5)
    cfg = load_config(args.recipe, overrides)
    print(f"recipe {args.recipe} ({' '.join(overrides) or 'as shipped'}): {cfg.model.name} "
          f"{cfg.model.kwargs or ''}, {cfg.train.epochs} epochs, batch {cfg.train.batch_size}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; measured sgemm {sgemm:.0f} GFLOP/s (best of 5)")
    finals, reach, ttas = [], {level: [] for level in LEVELS}, []
    for seed in range(args.first_seed, args.first_seed + seeds):
        val: list = []
        rows = run_once(args.recipe, overrides, seed, val, live=True, tta=ttas if args.tta else None)
        print(f"seed {seed}: " + "  ".join(f"ep{e} {t:.0f}s {acc:.4f}" for e, t, acc in rows)
              + (f"  (validation top-1 after the last epoch {val[-1]:.4f})" if val and val[-1] is not None else ""),
              flush=True)
        finals.append((rows[-1][1], rows[-1][2]))
        for level in LEVELS:
            reach[level].append(time_to(rows, level))
    after = measured_sgemm_gflops(5)
    times, accs = [t for t, _ in finals], [a for _, a in finals]
    print(f"final test accuracy {spread(accs)} over {seeds} seed(s); training time "
          f"{statistics.mean(times):.1f} s (min {min(times):.1f}, max {max(times):.1f})")
    if ttas:
        print(f"with flip TTA (vislab evaluate --tta): {spread(ttas)}")
    for level in LEVELS:
        hit = [t for t in reach[level] if t is not None]
        shown = f"{statistics.mean(hit):.1f} s (reached by {len(hit)}/{seeds} seeds)" if hit else "not reached"
        print(f"time to {level:.0%}: {shown}")
    if args.recipe in GOALS and not args.overrides:
        acc, budget = GOALS[args.recipe]
        met = statistics.mean(accs) >= acc and statistics.mean(times) <= budget
        print(f"goal: >= {acc:.0%} in <= {budget:.0f} s -> {'met' if met else 'NOT met'} "
              f"(measured sgemm {sgemm:.0f} before, {after:.0f} GFLOP/s after)")


if __name__ == "__main__":
    main()
