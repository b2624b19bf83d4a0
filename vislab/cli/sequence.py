"""Sequence subcommands: word2vec on the caption corpus, its nearest words and analogies."""

from __future__ import annotations

import argparse

QUERIES = ("left", "top", "small", "two", "bag", "sneakers")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("word2vec", help="word vectors of the caption corpus: nearest words, analogies",
                       description="Train word2vec (skip-gram or CBOW, negative sampling) on the training captions "
                                   "of a captioning recipe (default caption_lstm: generated caption scenes) or "
                                   "load vectors saved with --out; print each query word's nearest words, the "
                                   "answers to analogies, and how the vectors group the caption vocabulary.")
    p.add_argument("config", nargs="?", default="caption_lstm", metavar="RECIPE",
                   help="the captioning recipe (name or YAML) whose training captions are the corpus "
                        "(default caption_lstm)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the recipe, e.g. --set data.name=caption_folder --set data.root=DIR")
    p.add_argument("--load", metavar="FILE", help="query vectors saved by --out instead of training")
    p.add_argument("--out", metavar="FILE", help="save the words and vectors (.pt)")
    p.add_argument("--mode", default="skipgram", choices=["skipgram", "cbow"])
    p.add_argument("--dim", type=int, default=32, help="vector size (default 32)")
    p.add_argument("--window", type=int, default=2, help="context words each side (default 2)")
    p.add_argument("--negatives", type=int, default=5, help="noise words per example (default 5; 0: full softmax)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nearest", nargs="+", metavar="WORD", help=f"query words (default {' '.join(QUERIES)})")
    p.add_argument("--analogy", nargs=3, action="append", metavar=("A", "B", "C"),
                   help="A is to B as C is to ? (repeatable)")
    p.add_argument("-k", type=int, default=5, help="answers per query (default 5)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_word2vec)


def _word2vec(args: argparse.Namespace) -> int:
    from vislab.errors import UserError
    from vislab.sequence.word2vec import analogy, load_word_vectors, nearest, save_word_vectors
    from vislab.tasks.captioning import word_vector_report

    if args.load:
        words, vectors, meta = load_word_vectors(args.load)
        classes = meta.get("classes", [])
        print(f"{args.load}: {len(words)} words, {vectors.shape[1]} dimensions ({meta.get('mode', '?')})")
    else:
        words, vectors, classes, meta = _train(args)
    if args.out:
        save_word_vectors(args.out, words, vectors, **meta)
        print(f"saved: {args.out}")
    ids = {w: i for i, w in enumerate(words)}

    def word_id(w: str) -> int:
        if w not in ids:
            raise UserError(f"{w!r} is not in the vocabulary; its words: {' '.join(words)}")
        return ids[w]

    for w in args.nearest or [w for w in QUERIES if w in ids]:
        near, sims = nearest(vectors, word_id(w), args.k)
        print(f"nearest {w:10s} " + "  ".join(f"{words[i]} {s:.2f}" for i, s in zip(near.tolist(), sims.tolist())))
    for a, b, c in args.analogy or []:
        ans, sims = analogy(vectors, word_id(a), word_id(b), word_id(c), args.k)
        print(f"{a} : {b} :: {c} : " + "  ".join(f"{words[i]} {s:.2f}" for i, s in zip(ans.tolist(), sims.tolist())))
    if classes:
        rep = word_vector_report(vectors, words, classes)
        kinds = "  ".join(f"{k} {v['accuracy']:.2f} ({v['questions']} questions)" for k, v in rep["analogy"].items())
        print(f"nearest word of the same kind (position, size, count, noun, plural): {rep['agreement']:.2f}; "
              f"analogy top-1 accuracy: {kinds}")
    return 0


def _train(args: argparse.Namespace):
    from vislab.config import load_config
    from vislab.errors import UserError
    from vislab.tasks.captioning import caption_sentences, caption_word2vec, encode_captions, training_captions

    cfg = load_config(args.config, args.overrides)
    if cfg.task != "captioning":
        raise UserError(f"{args.config} is a {cfg.task} recipe; word2vec reads the captions of a captioning recipe "
                        "(caption_lstm)")
    for name in ("dim", "epochs", "window"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(args, name)}")
    _, caps, classes, vocab = training_captions(cfg)
    y = encode_captions(caps, vocab)
    model, history = caption_word2vec(y, len(vocab), args.dim, args.mode, args.epochs, args.window,
                                      args.negatives, args.seed, args.device)
    print(f"{args.mode} word2vec on {y.shape[0] * y.shape[1]} training captions ({len(vocab)} words, {args.dim} "
          f"dimensions, window {args.window}, {args.negatives} negatives): loss by epoch "
          + " ".join(f"{h:.3f}" for h in history))
    meta = {"mode": args.mode, "window": args.window, "negatives": args.negatives, "epochs": args.epochs,
            "classes": classes}
    seen = sorted({t for s in caption_sentences(y) for t in s})     # the specials never occur: left out
    return [vocab.itos[i] for i in seen], model.embeddings.cpu()[seen], classes, meta
