"""The text-only seq2seq task: an LSTM encoder-decoder, with or without attention, on a synthetic
problem whose answer is known, to measure what the notes argue (003 "Seq2Seq", "Attention
Mechanism in seq2seq models"): a decoder that sees the source only through the encoder's final
state (one fixed-size context vector) loses long inputs; attention over every encoder output
does not.

Data (``data.name: sequences``, options in ``data.kwargs``): sequences of ``symbols`` tokens
(``s0``, ``s1``, ...) of uniform random length in ``[min_len, max_len]``; the target is the source
reversed (``op: reverse``) or sorted (``op: sort``).  Train, validation and test sets are drawn
from separate random streams.  The batches are the notes' six steps: source + ``<eos>``,
``<sos>`` + target as the teacher-forcing input, target + ``<eos>`` as the output, padded per
batch, the loss over the real tokens only.

Evaluation (``eval.json``): greedy decoding of the test set; exact-match accuracy (the whole
sequence right) and token accuracy (position by position), overall and by source length, with
``plots/accuracy_by_length.png``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import Tensor, nn

from vislab.config import Config
from vislab.data.info import DataInfo, Normalization
from vislab.errors import UserError
from vislab.io import atomic_write_text
from vislab.report import html as H
from vislab.report.plots import pyplot, save_figure
from vislab.sequence import models as _models  # noqa: F401  (registers the seq2seq models)
from vislab.sequence.decode import greedy_decode
from vislab.sequence.text import (
    EOS_INDEX,
    PAD_INDEX,
    SOS_INDEX,
    Vocab,
    masked_cross_entropy,
)
from vislab.tasks.base import (
    DataBundle,
    Section,
    create_kind_model,
    inference,
    register_task,
    shuffled_batches,
)
from vislab.tasks.captioning import teacher_forced_step
from vislab.tasks.trained import TrainedRun

DEFAULTS = {"op": "reverse", "symbols": 20, "min_len": 2, "max_len": 30, "train": 20000, "val": 500,
            "test": 2000, "seed": 0}
OPS = ("reverse", "sort")


def options(kwargs: dict) -> dict:
    unknown = set(kwargs) - set(DEFAULTS)
    if unknown:
        raise UserError(f"unknown data.kwargs {sorted(unknown)} for sequences; known: {', '.join(DEFAULTS)}")
    opts = {**DEFAULTS, **kwargs}
    if opts["op"] not in OPS:
        raise UserError(f"data.kwargs.op={opts['op']!r}: use one of {', '.join(OPS)}")
    if not 1 <= opts["min_len"] <= opts["max_len"]:
        raise UserError(f"data.kwargs: need 1 <= min_len <= max_len, got {opts['min_len']} and {opts['max_len']}")
    return opts


def vocabulary(opts: dict) -> Vocab:
    return Vocab([f"s{i}" for i in range(opts["symbols"])])


def make_pairs(split: str, n: int, opts: dict) -> tuple[Tensor, Tensor]:
    """``n`` (source, target) pairs as token ids: sources ``x <eos>`` and targets ``y <eos>``,
    each padded with ``<pad>`` to the longest possible, ``(n, max_len + 1)``."""
    rng = np.random.default_rng([opts["seed"], ("train", "val", "test").index(split)])
    width = opts["max_len"] + 1
    src = torch.full((n, width), PAD_INDEX, dtype=torch.long)
    tgt = torch.full((n, width), PAD_INDEX, dtype=torch.long)
    first = len(vocabulary(opts).itos) - opts["symbols"]            # the symbols follow the special tokens
    for i in range(n):
        k = int(rng.integers(opts["min_len"], opts["max_len"] + 1))
        x = rng.integers(0, opts["symbols"], k) + first
        y = x[::-1] if opts["op"] == "reverse" else np.sort(x)
        src[i, :k + 1] = torch.from_numpy(np.append(x, EOS_INDEX))
        tgt[i, :k + 1] = torch.from_numpy(np.append(y, EOS_INDEX).copy())
    return src, tgt


def lengths_of(src: Tensor) -> Tensor:
    return (src != PAD_INDEX).sum(1)


def trim(src: Tensor) -> Tensor:
    return src[:, :int(lengths_of(src).max())]


def _forward(model: nn.Module, src: Tensor, tgt_in: Tensor) -> Tensor:
    src = trim(src)
    return model(src, lengths_of(src), tgt_in)


seq2seq_step = teacher_forced_step(_forward)


def decode(model: nn.Module, src: Tensor, max_len: int, batch_size: int = 512) -> list[list[int]]:
    """Greedy decoding of every source (token ids, ``<eos>`` dropped)."""
    out = []
    with inference(model):
        for i in range(0, len(src), batch_size):
            s = trim(src[i:i + batch_size])
            hyps = greedy_decode(model.step, model.start(s, lengths_of(s)), len(s), SOS_INDEX, EOS_INDEX, max_len)
            out += [[t for t in h.tokens if t != EOS_INDEX] for h in hyps]
    return out


def accuracies(hyps: list[list[int]], tgt: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: whether the whole sequence is right, and the fraction of target positions right."""
    exact, tokens = [], []
    for h, t in zip(hyps, tgt.tolist()):
        y = [v for v in t if v not in (PAD_INDEX, EOS_INDEX)]
        exact.append(h == y)
        tokens.append(sum(a == b for a, b in zip(h, y)) / len(y))
    return np.array(exact, dtype=float), np.array(tokens)


class Seq2SeqTask:
    name = "seq2seq"
    augment = False
    monitor = "val_exact"

    def build_data(self, cfg: Config, device: torch.device, val_indices: np.ndarray | None = None) -> DataBundle:
        if cfg.data.name != "sequences":
            raise UserError(f"the seq2seq task reads data.name=sequences (generated), not {cfg.data.name!r}")
        opts = options(cfg.data.kwargs)
        n = min(opts["train"], cfg.data.limit_train or opts["train"])
        tx, ty = make_pairs("train", n, opts)
        vx, vy = make_pairs("val", opts["val"], opts)
        vocab = vocabulary(opts)
        info = DataInfo("sequences", tuple(vocab.itos), 1, (1, opts["max_len"] + 1), Normalization((0.0,), (1.0,)),
                        {"sequences": opts})
        note = (f"{opts['op']} sequences of {opts['symbols']} symbols, lengths {opts['min_len']}-{opts['max_len']}: "
                f"{n} training pairs, {opts['val']} validation pairs")
        return DataBundle(tx.to(device), ty.to(device), vx.to(device), vy.to(device), info, [note])

    def train_loader(self, cfg: Config, data: DataBundle, gen: torch.Generator):
        return shuffled_batches(cfg, data, gen, augment=False)

    def build_model(self, cfg: Config, info: DataInfo) -> nn.Module:
        return create_kind_model(cfg, "seq2seq", self.name, info.num_classes, 1)

    def loss(self, cfg: Config, model: nn.Module):
        return lambda logits, tgt_out: masked_cross_entropy(logits.float(), tgt_out, PAD_INDEX)

    def train_step(self, cfg: Config, model: nn.Module):
        return seq2seq_step

    def correct(self, out, target: Tensor) -> None:
        return

    def validate(self, model: nn.Module, loader, amp_dtype=None) -> dict[str, float]:
        src, tgt = loader.images, loader.labels
        exact, tokens = accuracies(decode(model, src, tgt.shape[1] + 1), tgt.cpu())
        return {"val_exact": float(exact.mean()), "val_token_acc": float(tokens.mean())}

    def evaluate(self, run: TrainedRun, tta: bool = False) -> dict:
        opts = run.info.extra["sequences"]
        src, tgt = make_pairs("test", opts["test"], opts)
        hyps = decode(run.model, src.to(run.device), tgt.shape[1] + 1)
        exact, tokens = accuracies(hyps, tgt)
        length = (lengths_of(src) - 1).numpy()
        by_length = {int(k): {"exact": float(exact[length == k].mean()), "token_acc": float(tokens[length == k].mean()),
                              "n": int((length == k).sum())} for k in np.unique(length)}
        report = {"task": self.name, "run_dir": run.run_dir, "model": run.config.model.name, "op": opts["op"],
                  "num_test_pairs": len(src), "exact": float(exact.mean()), "token_acc": float(tokens.mean()),
                  "by_length": by_length, "params": sum(p.numel() for p in run.model.parameters())}
        os.makedirs(run.path("plots"), exist_ok=True)
        report["plots"] = [os.path.basename(_plot_by_length(by_length, run.config.model.name,
                                                            run.path("plots", "accuracy_by_length.png")))]
        report["summary"] = (f"{run.config.model.name} on {len(src)} {opts['op']} test pairs: exact match "
                             f"{report['exact']:.3f}, token accuracy {report['token_acc']:.3f}")
        atomic_write_text(run.path("eval.json"), json.dumps(report, indent=1))
        return report

    def predict(self, run: TrainedRun, paths: list[str], topk: int = 1) -> list[dict]:
        raise UserError("a seq2seq run maps token sequences, not images; use `vislab evaluate` on its test pairs")

    def headline(self, ev: dict) -> list[tuple[str, str]]:
        return [("exact match", f"{ev['exact']:.3f}"), ("token accuracy", f"{ev['token_acc']:.3f}"),
                ("test pairs", str(ev["num_test_pairs"]))]

    def report_sections(self, run: TrainedRun, ev: dict) -> list[Section]:
        return [Section("by-length", "Accuracy by source length",
                        H.img(run.path("plots", "accuracy_by_length.png"), "accuracy by length"))]


def _plot_by_length(by_length: dict, name: str, path: str) -> str:
    plt = pyplot()
    k = sorted(by_length)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.plot(k, [by_length[i]["exact"] for i in k], marker="o", label="exact match")
    ax.plot(k, [by_length[i]["token_acc"] for i in k], marker=".", label="token accuracy")
    ax.set_xlabel("source length")
    ax.set_ylim(0, 1.02)
    ax.set_title(name, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


register_task(Seq2SeqTask())

__all__ = ["Seq2SeqTask", "accuracies", "decode", "make_pairs"]
