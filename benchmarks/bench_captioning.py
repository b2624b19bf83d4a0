"""Image captioning and seq2seq attention, measured (issue 16, docs/sequence.md).

    python -m benchmarks.bench_captioning                       # both parts
    python -m benchmarks.bench_captioning --part captioning     # or seq2seq
    python -m benchmarks.bench_captioning --quick               # smoke run (minutes)
    python -m benchmarks.bench_captioning --device cuda         # on a GPU

- ``captioning``: the three captioners (``caption_lstm``: show and tell; ``caption_attention``:
  show, attend and tell; ``caption_transformer``) trained by ``vislab train RECIPE`` with the same
  budget on the same generated caption scenes, scored by ``vislab evaluate`` on the 500 test
  scenes (5 references each): BLEU-1..4 for greedy decoding and beam search of widths 3 and 5,
  perplexity, parameters, training time and decoding milliseconds per image.
- ``seq2seq``: the LSTM encoder-decoder with and without attention on reversing sequences of 2
  to 30 symbols: exact-match accuracy by source length (the notes' argument: one context vector
  cannot hold a long input).
The machine's sgemm is printed beside the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from benchmarks.common import measured_sgemm_gflops, train_and_evaluate

CAPTIONERS = ("caption_lstm", "caption_attention", "caption_transformer")
SEQ2SEQ = ("seq2seq_lstm", "seq2seq_attention")
BUCKETS = ((2, 5), (6, 10), (11, 15), (16, 20), (21, 25), (26, 30))


def run(recipe: str, overrides: list[str], run_dir: str, args) -> tuple[dict, float]:
    return train_and_evaluate(recipe, overrides, run_dir, args.device, args.reuse)


def part_captioning(args) -> list[dict]:
    print(f"\n== captioning: {args.cap_epochs} epochs each on the same scenes ==")
    rows = []
    for recipe in CAPTIONERS:
        ev, t = run(recipe, [f"train.epochs={args.cap_epochs}", *args.cap_data], os.path.join(args.out, recipe), args)
        rows.append({"recipe": recipe, "params": ev["params"], "train_s": t, "perplexity": ev["perplexity"],
                     "decoding": ev["decoding"]})
    print(f"{'model':20s} {'decoding':8s} {'BLEU-1':>7s} {'BLEU-2':>7s} {'BLEU-3':>7s} {'BLEU-4':>7s} {'ms/img':>7s} "
          f"{'ppl':>6s} {'params':>9s} {'train s':>8s}")
    for r in rows:
        for k, d in r["decoding"].items():
            print(f"{r['recipe']:20s} {k:8s} " + " ".join(f"{d[f'bleu{n}']:7.3f}" for n in range(1, 5))
                  + f" {d['ms_per_image']:7.1f} {r['perplexity']:6.3f} {r['params']:9,d} {r['train_s']:8.0f}")
    return rows


def part_seq2seq(args) -> list[dict]:
    print(f"\n== seq2seq: reversing sequences, exact match by source length ({args.s2s_epochs} epochs) ==")
    rows = []
    for recipe in SEQ2SEQ:
        ev, t = run(recipe, [f"train.epochs={args.s2s_epochs}", *args.s2s_data], os.path.join(args.out, recipe), args)
        by = {int(k): v for k, v in ev["by_length"].items()}
        buckets = {}
        for lo, hi in BUCKETS:
            sel = [v for k, v in by.items() if lo <= k <= hi]
            n = sum(v["n"] for v in sel)
            buckets[f"{lo}-{hi}"] = sum(v["exact"] * v["n"] for v in sel) / n if n else float("nan")
        rows.append({"recipe": recipe, "exact": ev["exact"], "token_acc": ev["token_acc"], "by_bucket": buckets,
                     "train_s": t})
    heads = list(rows[0]["by_bucket"])
    print(f"{'model':20s} " + " ".join(f"{h:>7s}" for h in heads) + f" {'all':>7s} {'train s':>8s}")
    for r in rows:
        print(f"{r['recipe']:20s} " + " ".join(f"{r['by_bucket'][h]:7.3f}" for h in heads)
              + f" {r['exact']:7.3f} {r['train_s']:8.0f}")
    return rows


PARTS = {"captioning": part_captioning, "seq2seq": part_seq2seq}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", nargs="+", choices=list(PARTS), default=list(PARTS))
    ap.add_argument("--out", default="runs/bench_captioning")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reuse", action="store_true", help="skip runs that already have eval.json")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    args.cap_epochs, args.s2s_epochs, args.cap_data, args.s2s_data = 10, 8, [], []
    if args.quick:
        args.cap_epochs, args.s2s_epochs = 1, 1
        args.cap_data = ["data.kwargs={train: 300, val: 50, test: 50}"]
        args.s2s_data = ["data.kwargs={train: 1000, val: 100, test: 200}"]
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
          f"sgemm {measured_sgemm_gflops(3):.0f} GFLOP/s")
    t0 = time.perf_counter()
    results = {part: PARTS[part](args) for part in args.part}
    path = os.path.join(args.out, f"results-{'-'.join(args.part)}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nresults: {path} ({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
