"""Image captioning and seq2seq attention, measured (issue 16, docs/sequence.md).

    python -m benchmarks.bench_captioning                       # both parts
    python -m benchmarks.bench_captioning --part captioning     # or seq2seq, word2vec
    python -m benchmarks.bench_captioning --quick               # smoke run (minutes)
    python -m benchmarks.bench_captioning --device cuda         # on a GPU

- ``captioning``: the three captioners (``caption_lstm``: show and tell; ``caption_attention``:
  show, attend and tell; ``caption_transformer``) trained by ``vislab train RECIPE`` with the same
  budget on the same generated caption scenes, scored by ``vislab evaluate`` on the 500 test
  scenes (5 references each): BLEU-1..4 for greedy decoding and beam search of widths 3 and 5,
  perplexity, parameters, training time and decoding milliseconds per image.
- ``word2vec``: skip-gram and CBOW on the training captions: how often a word's nearest word is
  of its own kind (position, size, count, noun, plural) and the top-1 accuracy of the caption
  analogies (left : right :: top : bottom; bag : bags :: coat : coats), against random vectors;
  then show-and-tell and the Transformer captioner trained 3 epochs with the word table started
  from skip-gram vectors (``caption.word2vec=skipgram``) and as usual.
- ``seq2seq``: the LSTM encoder-decoder with and without attention on reversing sequences of 2
  to 30 symbols: exact-match accuracy by source length (the notes' argument: one context vector
  cannot hold a long input).
The machine's sgemm is printed beside the timings.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from benchmarks.common import measured_sgemm_gflops, run_parts, train_and_evaluate

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
    blind = blind_baseline(args)
    print(f"{'model':20s} {'decoding':8s} {'BLEU-1':>7s} {'BLEU-2':>7s} {'BLEU-3':>7s} {'BLEU-4':>7s} {'ms/img':>7s} "
          f"{'ppl':>6s} {'params':>9s} {'train s':>8s}")
    for r in rows:
        for k, d in r["decoding"].items():
            print(f"{r['recipe']:20s} {k:8s} " + " ".join(f"{d[f'bleu{n}']:7.3f}" for n in range(1, 5))
                  + f" {d['ms_per_image']:7.1f} {r['perplexity']:6.3f} {r['params']:9,d} {r['train_s']:8.0f}")
    print(f"{'blind (no image)':20s} {'constant':8s} " + " ".join(f"{blind[f'bleu{n}']:7.3f}" for n in range(1, 5))
          + f"   the best of the {BLIND_CANDIDATES} commonest training captions on the validation scenes, "
          f"said of every test scene: {blind['caption']!r}")
    return rows + [{"recipe": "blind", **blind}]


BLIND_CANDIDATES = 200


def blind_baseline(args) -> dict:
    """A captioner that never looks at the image: the one caption, among the commonest training
    captions, with the best validation BLEU-4, said of every test scene."""
    from collections import Counter

    from vislab.config import load_config
    from vislab.metrics.text import bleu_scores, corpus_bleu
    from vislab.tasks.captioning import load_caption_split
    cfg = load_config("caption_lstm", args.cap_data)
    refs = {split: [[c.split() for c in caps] for caps in load_caption_split(cfg, split)[1]] for split in ("val", "test")}
    _, train, _ = load_caption_split(cfg, "train")
    common = [c for c, _ in Counter(c for caps in train for c in caps).most_common(BLIND_CANDIDATES)]
    best = max(common, key=lambda c: corpus_bleu([c.split()] * len(refs["val"]), refs["val"]))
    scores = bleu_scores([best.split()] * len(refs["test"]), refs["test"])
    return {"caption": best, **{f"bleu{n}": scores[f"bleu{n}"] for n in range(1, 5)}}


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


def part_word2vec(args) -> dict:
    """Word2vec on the caption corpus (skip-gram and CBOW against random vectors), then captioners
    whose word table starts from it against the same captioners started as usual."""
    from vislab.config import load_config
    from vislab.tasks.captioning import caption_word2vec, encode_captions, training_captions, word_vector_report
    print(f"\n== word2vec on the training captions ({args.w2v_epochs} epochs, 32 dimensions, window 2, 5 negatives) ==")
    cfg = load_config("caption_lstm", args.cap_data)
    _, caps, classes, vocab = training_captions(cfg)
    y = encode_captions(caps, vocab)
    seen = sorted({t for row in y.reshape(-1, y.shape[-1]).tolist() for t in row} - {0, 1, 2, 3})
    words = [vocab.itos[i] for i in seen]
    vectors = {"random": torch.randn(len(vocab), 32, generator=torch.Generator().manual_seed(0))}
    times = {"random": 0.0}
    for mode in ("skipgram", "cbow"):
        t0 = time.perf_counter()
        vectors[mode] = caption_word2vec(y, len(vocab), 32, mode, args.w2v_epochs)[0].embeddings
        times[mode] = time.perf_counter() - t0
    vectors = {k: v[seen] for k, v in vectors.items()}
    reports = {k: word_vector_report(v, words, classes) for k, v in vectors.items()}
    kinds = list(reports["skipgram"]["analogy"])
    print(f"{'vectors':10s} {'same-kind NN':>12s} " + " ".join(f"{k + ' analogy':>16s}" for k in kinds) + f" {'s':>5s}")
    for k, r in reports.items():
        print(f"{k:10s} {r['agreement']:12.2f} " + " ".join(f"{r['analogy'][q]['accuracy']:16.2f}" for q in kinds)
              + f" {times[k]:5.0f}")
    print("questions: " + ", ".join(f"{q} {reports['skipgram']['analogy'][q]['questions']}" for q in kinds))

    print(f"\n== captioners with the word table from skip-gram word2vec vs as usual ({args.w2v_cap_epochs} epochs) ==")
    rows = []
    for recipe in ("caption_lstm", "caption_transformer"):
        for init in ("none", "skipgram"):
            ev, t = run(recipe, [f"train.epochs={args.w2v_cap_epochs}", f"caption.word2vec={init}", "caption.beams=[3]",
                                 *args.cap_data], os.path.join(args.out, f"{recipe}-w2v-{init}"), args)
            g = ev["decoding"]["greedy"]
            rows.append({"recipe": recipe, "word2vec": init, "bleu4": g["bleu4"], "perplexity": ev["perplexity"],
                         "train_s": t})
            print(f"{recipe:20s} word2vec={init:8s} greedy BLEU-4 {g['bleu4']:.3f}  perplexity "
                  f"{ev['perplexity']:.3f}  train {t:.0f}s")
    return {"vectors": reports, "captioners": rows}


PARTS = {"captioning": part_captioning, "seq2seq": part_seq2seq, "word2vec": part_word2vec}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", nargs="+", choices=list(PARTS), default=list(PARTS))
    ap.add_argument("--out", default="runs/bench_captioning")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reuse", action="store_true", help="skip runs that already have eval.json")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    args.cap_epochs, args.s2s_epochs, args.cap_data, args.s2s_data = 10, 8, [], []
    args.w2v_epochs, args.w2v_cap_epochs = 5, 3
    if args.quick:
        args.cap_epochs, args.s2s_epochs, args.w2v_epochs, args.w2v_cap_epochs = 1, 1, 1, 1
        args.cap_data = ["data.kwargs={train: 300, val: 50, test: 50}"]
        args.s2s_data = ["data.kwargs={train: 1000, val: 100, test: 200}"]
    os.makedirs(args.out, exist_ok=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
          f"sgemm {measured_sgemm_gflops(3):.0f} GFLOP/s")
    run_parts(PARTS, args)


if __name__ == "__main__":
    main()
