"""Metric learning on the open-set Fashion-MNIST split: one table of retrieval among classes the
networks never saw (trained on classes 0-4, tested on 5-9), every method with the same budget.

    python -m benchmarks.bench_metric                 # the whole table (about 25 minutes on 2 cores)
    python -m benchmarks.bench_metric --only triplet-semi-hard pixels
    python -m benchmarks.bench_metric --epochs 4      # a smaller budget for every method
    python -m benchmarks.bench_metric --set metric.embed_dim=64   # a linear 64-d embedding layer on the backbone
    python -m benchmarks.bench_metric --quick         # smoke run

Rows: kNN on raw pixels (no training); the cross-entropy classifier's penultimate layer, which
the notes say is the wrong embedding for unseen classes; the contrastive loss on random pairs (the
siamese network: `vislab train contrastive`); the triplet loss on random, batch-hard and semi-hard
triplets (`vislab train triplet` with one override).  Every network has the same backbone,
embedding, P x K batches, optimizer, schedule and epochs, and is scored by the task's own
evaluation (`vislab evaluate`); the pixels are scored by the same function.  The machine's sgemm is printed beside the training times.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from benchmarks.common import measured_sgemm_gflops
from vislab.config import load_config
from vislab.data.datasets import load_split
from vislab.data.subsets import keep_classes
from vislab.tasks.metric import open_set_scores
from vislab.tasks.runner import evaluate, train

METHODS = {                      # name -> (recipe, overrides)
    "cross-entropy": ("triplet", ["metric.loss=cross_entropy"]),
    "contrastive-random": ("contrastive", []),
    "triplet-random": ("triplet", ["metric.miner=random"]),
    "triplet-batch-hard": ("triplet", ["metric.miner=batch_hard"]),
    "triplet-semi-hard": ("triplet", ["metric.miner=semi_hard"]),
}
COLUMNS = ("precision_at_1", "r_precision", "map_at_r", "knn_accuracy", "verification_auc")


def pixels_row(eval_classes: list[int]) -> dict:
    """The baseline without learning: raw pixels on the 0..1 scale as the embedding."""
    def vectors(split: str):
        d = keep_classes(load_split("fashion_mnist", split), eval_classes)
        return torch.from_numpy(d.images.reshape(len(d.labels), -1)).float() / 255, torch.from_numpy(d.labels)
    (xt, yt), (xr, yr) = vectors("test"), vectors("train")
    scores, _ = open_set_scores(xt, yt, xr, yr)
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", choices=["pixels", *METHODS], help="run only these rows")
    ap.add_argument("--epochs", type=int, help="epochs of every network (default: the triplet recipe's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every network, e.g. metric.embed_dim=64 (repeatable)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3,000 training images, 1 epoch")
    ap.add_argument("--runs", help="keep the runs in this folder (default: a temporary one)")
    ap.add_argument("--json", help="also write the table to this JSON file")
    args = ap.parse_args()
    rows = args.only or ["pixels", *METHODS]
    print(f"sgemm {measured_sgemm_gflops(5):.0f} GFLOP/s, {torch.get_num_threads()} threads")
    base = [f"seed={args.seed}", *args.overrides]
    if args.epochs:
        base.append(f"train.epochs={args.epochs}")
    if args.quick:
        base += ["data.limit_train=3000", "train.epochs=1"]
    cfg0 = load_config("triplet", base)
    print(f"open set: trained on Fashion-MNIST classes {cfg0.metric.train_classes}, tested on the others; "
          f"{cfg0.model.name}, embedding: {f'{cfg0.metric.embed_dim}-d linear layer' if cfg0.metric.embed_dim else 'pooled backbone output'}, "
          f"{cfg0.train.epochs} epochs of "
          f"{cfg0.metric.classes_per_batch} x {cfg0.metric.images_per_class} batches")
    folder = args.runs or tempfile.mkdtemp(prefix="bench_metric-")
    table = {}
    eval_classes = [c for c in range(10) if c not in cfg0.metric.train_classes]
    for name in rows:
        if name == "pixels":
            table[name] = {**pixels_row(eval_classes), "train_s": 0.0}
        else:
            recipe, overrides = METHODS[name]
            cfg = load_config(recipe, base + overrides)
            res = train(cfg, os.path.join(folder, name), fresh=True, progress=False, log=lambda s: None)
            table[name] = {**evaluate(res.run_dir), "train_s": res.train_time_s}
        _print_row(name, table[name], header=len(table) == 1)
    best = max((n for n in table if n in METHODS and n != "cross-entropy"), key=lambda n: table[n]["map_at_r"],
               default=None)
    if best and "cross-entropy" in table:
        b, ce = table[best], table["cross-entropy"]
        print(f"goal: best metric-learning model ({best}) MAP@R {b['map_at_r']:.3f} vs cross-entropy "
              f"{ce['map_at_r']:.3f} ({b['map_at_r'] / ce['map_at_r']:.2f}x); precision@1 {b['precision_at_1']:.3f} "
              f"(goal >= 0.90)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({n: {k: r[k] for k in (*COLUMNS, "train_s")} for n, r in table.items()}, f, indent=1)
    print(f"runs in {folder}")


def _print_row(name: str, r: dict, header: bool) -> None:
    if header:
        print(f"{'method':22s} {'P@1':>7s} {'R-prec':>7s} {'MAP@R':>7s} {'kNN acc':>8s} {'ver AUC':>8s} {'train s':>8s}")
    print(f"{name:22s} {r['precision_at_1']:7.3f} {r['r_precision']:7.3f} {r['map_at_r']:7.3f} "
          f"{r['knn_accuracy']:8.3f} {r['verification_auc']:8.3f} {r['train_s']:8.1f}", flush=True)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f}s")
