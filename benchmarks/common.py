"""What several benchmarks share: this machine's measured fp32 matmul speed, printed beside every
timing so that a figure can be read against what the machine could do at that moment."""

from __future__ import annotations

import json
import os
import time

import torch


def measured_sgemm_gflops(best_of: int, n: int = 2048) -> float:
    """fp32 ``n x n`` matmul GFLOP/s on this machine now: the best of ``best_of`` timed products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(best_of):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def measured_rows(jobs, reuse: bool, summary) -> list[dict]:
    """Each job's row, measured and saved as soon as it is, or read back with ``reuse``.

    ``jobs``: ``(label, path, measure)`` triples; ``measure()`` returns the row, written
    atomically to ``path`` (a JSON file).  One job that fails is reported and skipped, so that it
    does not cost the others their turn.  ``summary(row)`` is the progress line's figure."""
    from vislab.io import atomic_write_text
    rows, t0 = [], time.perf_counter()
    for label, path, measure in jobs:
        if reuse and os.path.exists(path):
            with open(path) as f:
                rows.append(json.load(f))
            print(f"  {label}: reused {path}", flush=True)
            continue
        try:
            row = measure()
        except Exception as e:  # noqa: BLE001  (one broken job must not cost the others their turn)
            print(f"  {label}: FAILED: {type(e).__name__}: {e}", flush=True)
            continue
        atomic_write_text(path, json.dumps(row, indent=1))
        rows.append(row)
        print(f"  {label}: {summary(row)} ({(time.perf_counter() - t0) / 60:.1f} min so far)", flush=True)
    return rows


def train_and_evaluate(recipe: str, overrides: list[str], run_dir: str, device: str = "cpu",
                       reuse: bool = False) -> tuple[dict, float]:
    """``vislab train RECIPE --set ...`` into ``run_dir`` then ``vislab evaluate``; returns
    ``eval.json`` (with ``train_time_s`` added) and the training time.  With ``reuse`` a run
    that already has ``eval.json`` is read, not trained again."""
    import json
    import os

    from vislab.config import load_config
    from vislab.tasks.runner import evaluate, train
    done = os.path.join(run_dir, "eval.json")
    if reuse and os.path.exists(done):
        with open(done) as f:
            ev = json.load(f)
        return ev, ev.get("train_time_s", float("nan"))
    cfg = load_config(recipe, [*overrides, f"device={device}"])
    res = train(cfg, run_dir, fresh=True, progress=False, log=lambda s: None)
    ev = evaluate(run_dir, device=device)
    ev["train_time_s"] = res.train_time_s
    with open(done, "w") as f:
        json.dump(ev, f, indent=1)
    return ev, res.train_time_s


def run_parts(parts: dict, args, suffix: str = "") -> dict:
    """Run each part named in ``args.part`` (``parts[name](args)``) and write their results to
    ``args.out/results-PARTS{suffix}.json``; prints the path and the total time."""
    t0 = time.perf_counter()
    results = {part: parts[part](args) for part in args.part}
    path = os.path.join(args.out, f"results-{'-'.join(args.part)}{suffix}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nresults: {path} ({time.perf_counter() - t0:.0f}s)")
    return results
