"""The captioning task: a CNN encoder and a recurrent or Transformer decoder that describe
generated scenes in words, trained with teacher forcing by the one engine and decoded greedily
or by beam search (003 "Seq2Seq and Word Embedding", "Transformers"; image captioning is the
notes' own example of a sequence problem with an image as input).

Data: scenes of Fashion-MNIST items (:mod:`vislab.detection.scenes`) captioned from their
annotations (:mod:`vislab.sequence.captions`: what is where, several phrasings per scene),
generated on the fly (``data.name: scenes``, options in ``data.kwargs``) or read from a folder
written by ``vislab data make-scenes OUT --captions`` (``data.name: caption_folder``,
``data.root: OUT``).  The vocabulary is built from the training captions (``caption.min_freq``)
and saved with the run; every epoch pairs each training image with one of its captions at
random.  The loss is the cross-entropy of the next token over the real tokens only (padding
never counts: :func:`vislab.sequence.text.masked_cross_entropy`).  With ``caption.word2vec``
(skipgram or cbow) the word table starts from word2vec trained on the run's training captions
(:meth:`CaptioningTask.init_model`); ``vislab word2vec`` trains and queries the same vectors.

Evaluation (``eval.json``) on the test scenes, every caption of a scene a reference: corpus
BLEU-1..4 (:func:`vislab.metrics.text.corpus_bleu`, NLTK's convention) for greedy decoding and
beam search of each width in ``caption.beams``, perplexity and token accuracy under teacher
forcing, decoding milliseconds per image; examples with their attention maps (the attention
model) in ``plots/``.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from vislab.config import Config
from vislab.data.formats import load_image
from vislab.data.info import DataInfo, Normalization
from vislab.detection.scenes import (
    SceneConfig,
    load_scenes,
    make_scenes,
    resolve_scene_options,
)
from vislab.errors import UserError
from vislab.io import atomic_write_text
from vislab.metrics.text import bleu_scores, perplexity
from vislab.report import html as H
from vislab.report.plots import heatmap_overlay, plot_image_rows
from vislab.sequence import models as _models  # noqa: F401  (registers the captioners)
from vislab.sequence.captions import caption_analogies, caption_word_groups, load_captions, scene_captions
from vislab.sequence.decode import beam_search, greedy_decode
from vislab.sequence.text import (
    EOS_INDEX,
    PAD_INDEX,
    SOS_INDEX,
    Vocab,
    masked_cross_entropy,
)
from vislab.sequence.word2vec import (
    Word2Vec,
    analogy_accuracy,
    load_into_embedding,
    neighbour_agreement,
    train_word2vec,
)
from vislab.tasks.base import (
    DataBundle,
    Section,
    create_kind_model,
    inference,
    register_task,
)
from vislab.tasks.trained import TrainedRun

SCENE_DEFAULTS = {"source": "fashion_mnist", "image_size": 64, "objects": [1, 3], "scale": [1.0, 2.0],
                  "max_truncation": 0.2, "max_occlusion": 0.3, "train": 6000, "val": 300, "test": 500,
                  "captions": 5, "seed": 0}
MAX_LEN = 24                   # tokens generated at most (captions have <= 20, <eos> counted)
SHOWN = 6                      # test scenes shown with their captions in the report
SHOWN_WORDS = 12               # words of each with their attention map


def scene_options(kwargs: dict) -> tuple[SceneConfig, dict]:
    return resolve_scene_options(kwargs, SCENE_DEFAULTS, "captioning")


def load_caption_split(cfg: Config, split: str, n: int | None = None) -> tuple[Tensor, list[list[str]], list[str]]:
    """uint8 images ``(N, 3, H, W)``, each image's captions and the class names of a split."""
    if cfg.data.name == "scenes":
        config, opts = scene_options(cfg.data.kwargs)
        count = opts[split] if n is None else min(n, opts[split])
        scenes = make_scenes(split, count, config, opts["seed"], cfg.data.root)
        h, w = config.image_size
        caps = []
        for i, t in enumerate(scenes.targets):
            rng = np.random.default_rng([opts["seed"], ("train", "val", "test").index(split), i, 0xCA])
            caps.append(scene_captions(t, (h, w), scenes.categories, rng, opts["captions"]))
        return scenes.images, caps, list(scenes.categories)
    if cfg.data.name == "caption_folder":
        if not cfg.data.root or not os.path.isdir(cfg.data.root):
            raise UserError(f"data.name=caption_folder reads the folder of `vislab data make-scenes OUT --captions`: "
                            f"set data.root=OUT (got {cfg.data.root!r})")
        scenes = load_scenes(cfg.data.root, split)
        by_file = load_captions(cfg.data.root, split)
        caps = list(by_file.values())
        if len(caps) != len(scenes):
            raise UserError(f"{cfg.data.root}/{split}: {len(scenes)} scenes but {len(caps)} captioned; write the "
                            "captions again with make-scenes --captions")
        images = scenes.images if n is None else scenes.images[:n]
        return images, caps[:len(images)], list(scenes.categories)
    raise UserError(f"the captioning task reads data.name=scenes (generated) or caption_folder (a folder written by "
                    f"`vislab data make-scenes OUT --captions`), not {cfg.data.name!r}")


def training_captions(cfg: Config) -> tuple[Tensor, list[list[str]], list[str], Vocab]:
    """The training split (``data.limit_train`` scenes at most): uint8 images, captions, class
    names, and the vocabulary of its captions (``caption.min_freq``)."""
    tx, tcaps, classes = load_caption_split(cfg, "train", cfg.data.limit_train)
    return tx, tcaps, classes, Vocab.build([c.split() for per in tcaps for c in per], cfg.caption.min_freq)


def encode_captions(caps: list[list[str]], vocab: Vocab) -> Tensor:
    """Every caption of every image as ``tokens <eos>``, padded with ``<pad>``: ``(N, K, L)``
    int64 (images with fewer captions repeat theirs)."""
    k = max(len(c) for c in caps)
    seqs = [[vocab.encode(c[j % len(c)].split()) + [EOS_INDEX] for j in range(k)] for c in caps]
    width = max(len(s) for per in seqs for s in per)
    out = torch.full((len(caps), k, width), PAD_INDEX, dtype=torch.long)
    for i, per in enumerate(seqs):
        for j, s in enumerate(per):
            out[i, j, :len(s)] = torch.tensor(s)
    return out


def teacher_forcing(y: Tensor) -> tuple[Tensor, Tensor]:
    """``tokens <eos> <pad>..`` ``(B, L)`` -> ``(tgt_in, tgt_out)``: ``<sos> tokens`` and
    ``tokens <eos>``, trimmed to the longest caption of the batch."""
    width = int((y != PAD_INDEX).sum(1).max())
    tgt_out = y[:, :width]
    sos = torch.full_like(tgt_out[:, :1], SOS_INDEX)
    tgt_in = torch.cat([sos, tgt_out[:, :-1]], 1)
    return tgt_in, tgt_out


class CaptionLoader:
    """Each epoch: the training images shuffled, each with one of its captions drawn at random."""

    def __init__(self, cfg: Config, data: DataBundle, gen: torch.Generator) -> None:
        self.x, self.y, self.gen = data.train_x, data.train_y, gen
        self.batch_size = min(cfg.train.batch_size, len(self.x))

    def __len__(self) -> int:
        return max(len(self.x) // self.batch_size, 1)

    def __iter__(self):
        n, k = self.y.shape[:2]
        order = torch.randperm(n, generator=self.gen, device=self.gen.device).to(self.y.device)
        pick = torch.randint(k, (n,), generator=self.gen, device=self.gen.device).to(self.y.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.x[idx], self.y[idx, pick[idx]]


def teacher_forced_step(forward: Callable[[nn.Module, Tensor, Tensor], Tensor]):
    """The trainer's ``step_fn`` for a decoder trained with teacher forcing: it reads
    ``<sos> y_1 .. y_n`` and predicts ``y_1 .. y_n <eos>`` (padding not counted);
    ``forward(model, x, tgt_in) -> logits`` feeds the model its source (an image, a sequence)."""
    def step(t, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        tgt_in, tgt_out = teacher_forcing(y)
        with t.autocast():
            logits = forward(t.model, x, tgt_in).float()
            loss = masked_cross_entropy(logits, tgt_out, PAD_INDEX)
        t.optimize(loss)
        with torch.no_grad():
            real = tgt_out != PAD_INDEX
            acc = ((logits.argmax(-1) == tgt_out) & real).sum() / real.sum()
        return {"loss": loss.detach(), "token_acc": acc}
    return step


caption_step = teacher_forced_step(lambda model, x, tgt_in: model(x, tgt_in))


def teacher_forced_counts(model: nn.Module, x: Tensor, y: Tensor, batch_size: int,
                          amp_dtype: torch.dtype | None = None) -> tuple[float, int, int]:
    """Summed negative log-likelihood, number of real tokens and of correctly predicted ones of
    captions ``y`` (``tokens <eos> <pad>..``, one per image) under teacher forcing."""
    nll, tokens, correct = 0.0, 0, 0
    with inference(model, amp_dtype):
        for i in range(0, len(x), batch_size):
            tgt_in, tgt_out = teacher_forcing(y[i:i + batch_size])
            logits = model(x[i:i + batch_size], tgt_in).float()
            real = tgt_out != PAD_INDEX
            nll += float(masked_cross_entropy(logits, tgt_out, PAD_INDEX)) * int(real.sum())
            tokens += int(real.sum())
            correct += int(((logits.argmax(-1) == tgt_out) & real).sum())
    return nll, tokens, correct


def vocab_of(info: DataInfo) -> Vocab:
    return Vocab.from_dict({"itos": list(info.classes)})


def decode_captions(model: nn.Module, x: Tensor, beam: int = 1, batch_size: int = 256,
                    keep_attention: bool = False, length_penalty: float = 0.7
                    ) -> tuple[list[list[int]], list[Tensor | None]]:
    """Token ids of each image's caption (without ``<eos>``): greedy decoding of whole batches
    (``beam=1``), else beam search image by image ranked by ``log p / length**length_penalty``;
    with ``keep_attention`` (greedy) also the attention weights of each generated token
    ``(T, h*w)`` (models that attend)."""
    out, attn = [], []
    with inference(model):
        if beam == 1 and not keep_attention:
            for i in range(0, len(x), batch_size):
                xb = x[i:i + batch_size]
                hyps = greedy_decode(model.step, model.start(xb), len(xb), SOS_INDEX, EOS_INDEX, MAX_LEN)
                out += [[tok for tok in h.tokens if tok != EOS_INDEX] for h in hyps]
            return out, [None] * len(out)
        for i in range(len(x)):
            if keep_attention:
                tokens, weights = _greedy_with_attention(model, x[i:i + 1])
                out.append(tokens)
                attn.append(weights)
                continue
            best = beam_search(model.step, model.start(x[i:i + 1]), SOS_INDEX, EOS_INDEX, beam, MAX_LEN,
                               length_penalty)[0]
            out.append([tok for tok in best.tokens if tok != EOS_INDEX])
            attn.append(None)
    return out, attn


def _greedy_with_attention(model: nn.Module, x: Tensor) -> tuple[list[int], Tensor | None]:
    state = model.start(x)
    token = torch.full((1,), SOS_INDEX, dtype=torch.long, device=x.device)
    tokens, weights = [], []
    for _ in range(MAX_LEN):
        log_probs, state = model.step(token, state)
        token = log_probs.argmax(-1)
        if isinstance(state, dict) and "attention" in state:
            weights.append(state["attention"][0].float().cpu())
        if int(token) == EOS_INDEX:
            break
        tokens.append(int(token))
    return tokens, torch.stack(weights) if weights else None


def caption_sentences(y: Tensor) -> list[list[int]]:
    """Encoded captions ``(N, K, L)`` (:func:`encode_captions`) as token-id sentences, without
    ``<eos>`` and padding: the corpus word2vec learns from."""
    return [[t for t in row if t not in (PAD_INDEX, EOS_INDEX)] for row in y.reshape(-1, y.shape[-1]).tolist()]


def caption_word2vec(y: Tensor | list[list[int]], vocab_size: int, dim: int, mode: str = "skipgram",
                     epochs: int = 5, window: int = 2, negatives: int = 5, seed: int = 0,
                     device: torch.device | str | None = None) -> tuple[Word2Vec, list[float]]:
    """Word2vec (:func:`vislab.sequence.word2vec.train_word2vec`) on the captions ``y (N, K, L)``
    (or their :func:`caption_sentences`), every caption a sentence (no window crosses two)."""
    sentences = caption_sentences(y.cpu()) if isinstance(y, Tensor) else y
    return train_word2vec(sentences, vocab_size, dim, window, negatives, epochs,
                          mode=mode, batch_size=1024, seed=seed, device=device)


def word_vector_report(vectors: Tensor, words: list[str], class_names: list[str]) -> dict:
    """How word vectors of the caption vocabulary are arranged: the fraction of position, size,
    count, noun and plural words whose nearest word is of the same kind, and the top-1 accuracy
    of the caption analogies by kind (left : right :: top : bottom; bag : bags :: coat : coats),
    questions with a word outside the vocabulary left out."""
    ids = {w: i for i, w in enumerate(words)}
    groups = {k: [ids[w] for w in g if w in ids] for k, g in caption_word_groups(class_names).items()}
    out = {"agreement": neighbour_agreement(vectors, list(groups.values())), "analogy": {}}
    for kind, qs in caption_analogies(class_names).items():
        known = [tuple(ids[w] for w in q) for q in qs if all(w in ids for w in q)]
        if known:
            out["analogy"][kind] = {"accuracy": analogy_accuracy(vectors, known), "questions": len(known)}
    return out


class CaptioningTask:
    name = "captioning"
    augment = False
    monitor = "val_bleu4"

    def build_data(self, cfg: Config, device: torch.device, val_indices: np.ndarray | None = None) -> DataBundle:
        if val_indices is not None:
            raise UserError("cross-validation (--folds) is for classification recipes; captioning has its own val split")
        tx, tcaps, classes, vocab = training_captions(cfg)
        vx, vcaps, _ = load_caption_split(cfg, "val")
        x = tx.float() / 255
        norm = Normalization(tuple(x.mean((0, 2, 3)).tolist()), tuple(max(s, 1e-6) for s in x.std((0, 2, 3)).tolist()))
        extra = {"scene_classes": classes}
        if cfg.data.name == "scenes":
            extra["scenes"] = scene_options(cfg.data.kwargs)[1]
        info = DataInfo(cfg.data.name, tuple(vocab.itos), 3, tuple(tx.shape[-2:]), norm, extra)
        lengths = [len(c.split()) for per in tcaps for c in per]
        notes = [(f"captioning {len(tx)} training scenes ({sum(map(len, tcaps))} captions, {len(vocab)} tokens in "
                  f"the vocabulary, {np.mean(lengths):.1f} words per caption), {len(vx)} validation scenes")]
        return DataBundle(norm.from_uint8(tx, device), encode_captions(tcaps, vocab).to(device),
                          norm.from_uint8(vx, device), encode_captions(vcaps, vocab).to(device), info, notes)

    def train_loader(self, cfg: Config, data: DataBundle, gen: torch.Generator) -> CaptionLoader:
        return CaptionLoader(cfg, data, gen)

    def build_model(self, cfg: Config, info: DataInfo) -> nn.Module:
        """A captioner of the registry; its vocabulary is the run's (``info.classes``)."""
        return create_kind_model(cfg, "captioning", self.name, info.num_classes, info.in_chans,
                                 img_size=info.image_size[0])

    def init_model(self, cfg: Config, model: nn.Module, data: DataBundle, log) -> None:
        """With ``caption.word2vec`` (skipgram or cbow): the word table ``model.embed`` starts from
        word2vec trained on this run's training captions, vectors of the table's width rescaled
        to its initial spread (:func:`vislab.sequence.word2vec.load_into_embedding`)."""
        if cfg.caption.word2vec == "none":
            return
        table = model.embed.weight
        sentences = caption_sentences(data.train_y.cpu())
        w2v, history = caption_word2vec(sentences, table.shape[0], table.shape[1], cfg.caption.word2vec,
                                        cfg.caption.word2vec_epochs, seed=cfg.seed, device=table.device)
        seen = torch.unique(torch.tensor([t for s in sentences for t in s]))
        load_into_embedding(table, w2v.embeddings, seen)
        log(f"word table initialised from {cfg.caption.word2vec} word2vec on the training captions "
            f"({len(seen)} words, {table.shape[1]} dimensions, {cfg.caption.word2vec_epochs} epochs, "
            f"loss {history[0]:.3f} -> {history[-1]:.3f})")

    def loss(self, cfg: Config, model: nn.Module):
        """Cross-entropy of the next token over the real tokens: ``loss((images, tgt_in) logits, tgt_out)``."""
        return lambda logits, tgt_out: masked_cross_entropy(logits.float(), tgt_out, PAD_INDEX)

    def train_step(self, cfg: Config, model: nn.Module):
        return caption_step

    def correct(self, out, target: Tensor) -> None:
        return

    def validate(self, model: nn.Module, loader, amp_dtype=None) -> dict[str, float]:
        """Teacher-forced loss and token accuracy on the validation scenes' first captions, and
        greedy BLEU-4 against all their captions."""
        x, y = loader.images, loader.labels
        nll, tokens, correct = teacher_forced_counts(model, x, y[:, 0], loader.batch_size, amp_dtype)
        hyps, _ = decode_captions(model, x, 1, loader.batch_size)
        refs = [[_strip(r) for r in per.tolist()] for per in y.cpu()]
        scores = bleu_scores(hyps, refs, 4)
        return {"val_loss": nll / tokens, "val_token_acc": correct / tokens, "val_bleu4": scores["bleu4"]}

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, run: TrainedRun, tta: bool = False) -> dict:
        cfg, info, model = run.config, run.info, run.model
        vocab = vocab_of(info)
        images, caps, _ = load_caption_split(cfg, "test")
        x = run.norm.from_uint8(images, run.device)
        refs = [[vocab.encode(c.split()) for c in per] for per in caps]
        report: dict = {"task": self.name, "run_dir": run.run_dir, "model": cfg.model.name, "dataset": cfg.data.name,
                        "num_test_images": len(x), "vocab_size": len(vocab),
                        "params": sum(p.numel() for p in model.parameters()), "decoding": {}, "plots": []}
        for beam in (1, *cfg.caption.beams):
            t0 = time.perf_counter()
            hyps, _ = decode_captions(model, x, beam, cfg.train.eval_batch_size,
                                      length_penalty=cfg.caption.length_penalty)
            ms = (time.perf_counter() - t0) * 1000 / len(x)
            scores = bleu_scores(hyps, refs, 4)
            key = "greedy" if beam == 1 else f"beam{beam}"
            report["decoding"][key] = {**{f"bleu{n}": scores[f"bleu{n}"] for n in range(1, 5)}, "ms_per_image": ms}
            if beam == 1:
                report["examples"] = [{"captions": caps[i], "greedy": " ".join(vocab.decode(hyps[i]))}
                                      for i in range(min(SHOWN, len(x)))]
        best = max(report["decoding"], key=lambda k: report["decoding"][k]["bleu4"])
        report.update({f"bleu{n}": report["decoding"][best][f"bleu{n}"] for n in range(1, 5)}, best_decoding=best)
        report.update(self._teacher_forced(model, x, refs, vocab, cfg.train.eval_batch_size))
        report["plots"].append(self._plot_examples(run, images, x, vocab, run.path("plots", "captions.png")))
        report["summary"] = "\n".join([
            f"{cfg.model.name} on {len(x)} test scenes ({report['params']:,} parameters)",
            *(f"  {k:7s} BLEU-1..4 " + " ".join(f"{v[f'bleu{n}']:.3f}" for n in range(1, 5))
              + f"   {v['ms_per_image']:.1f} ms/image" for k, v in report["decoding"].items()),
            f"  perplexity {report['perplexity']:.3f}, token accuracy {report['token_acc']:.3f} (teacher forcing)"])
        report["plots"] = [os.path.basename(p) for p in report["plots"]]
        atomic_write_text(run.path("eval.json"), json.dumps(report, indent=1))
        return report

    def _teacher_forced(self, model: nn.Module, x: Tensor, refs: list[list[list[int]]], vocab: Vocab,
                        batch_size: int) -> dict:
        """Perplexity and token accuracy of the model on every reference caption of the test set."""
        nll = tokens = correct = 0.0
        for j in range(max(len(r) for r in refs)):
            seqs = [r[j % len(r)] + [EOS_INDEX] for r in refs]
            width = max(map(len, seqs))
            y = torch.tensor([s + [PAD_INDEX] * (width - len(s)) for s in seqs], device=x.device)
            counts = teacher_forced_counts(model, x, y, batch_size)
            nll, tokens, correct = nll + counts[0], tokens + counts[1], correct + counts[2]
        return {"perplexity": perplexity(nll, int(tokens)), "token_acc": correct / tokens}

    def _plot_examples(self, run: TrainedRun, images: Tensor, x: Tensor, vocab: Vocab, path: str) -> str:
        """Test scenes with their greedy caption; for a model that attends, the attention map
        of each generated word over the image."""
        rows, titles = [], []
        hyps, attn = decode_captions(run.model, x[:SHOWN], 1, keep_attention=True)
        fh, fw = getattr(run.model, "feature_size", (1, 1))
        for i in range(min(SHOWN, len(x))):
            img = images[i].permute(1, 2, 0).numpy()
            words = vocab.decode(hyps[i])
            row, tit = [img], [textwrap.fill(" ".join(words), 44)]
            if attn[i] is not None:
                for t, w in enumerate(words[:SHOWN_WORDS]):
                    a = attn[i][t].reshape(1, 1, fh, fw)
                    a = torch.nn.functional.interpolate(a, size=img.shape[:2], mode="bilinear", align_corners=False)[0, 0]
                    a = (a / a.max().clamp_min(1e-12)).numpy()
                    over = heatmap_overlay(images[i].float().numpy() / 255, a)
                    row.append((over * 255).round().astype(np.uint8))
                    tit.append(w)
            rows.append(row)
            titles.append(tit)
        return plot_image_rows(rows, titles, path)

    def predict(self, run: TrainedRun, paths: list[str], topk: int = 1, beam: int = 1) -> list[dict]:
        """A caption per image file (greedy, or beam search of width ``beam``)."""
        vocab = vocab_of(run.info)
        imgs = np.stack([load_image(p, 3, run.info.image_size) for p in paths])
        x = run.norm.from_uint8(imgs, run.device)
        hyps, _ = decode_captions(run.model, x, beam, length_penalty=run.config.caption.length_penalty)
        return [{"path": p, "caption": " ".join(vocab.decode(h)), "line": " ".join(vocab.decode(h))}
                for p, h in zip(paths, hyps)]

    def headline(self, ev: dict) -> list[tuple[str, str]]:
        return [("BLEU-4", f"{ev['bleu4']:.3f} ({ev['best_decoding']})"), ("BLEU-1", f"{ev['bleu1']:.3f}"),
                ("perplexity", f"{ev['perplexity']:.3f}"), ("test scenes", str(ev["num_test_images"]))]

    def report_sections(self, run: TrainedRun, ev: dict) -> list[Section]:
        rows = [[k, *(f"{v[f'bleu{n}']:.3f}" for n in range(1, 5)), f"{v['ms_per_image']:.1f}"]
                for k, v in ev["decoding"].items()]
        table = H.table(["decoding", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ms / image"], rows)
        examples = H.table(["references", "greedy caption"],
                           [[" / ".join(e["captions"]), e["greedy"]] for e in ev.get("examples", [])])
        return [Section("bleu", "BLEU by decoding", table + H.note(
                    f"perplexity {ev['perplexity']:.3f}, token accuracy {ev['token_acc']:.3f} (teacher forcing)")),
                Section("captions", "Test scenes, their captions and attention",
                        H.img(run.path("plots", "captions.png"), "captions") + examples)]


def _strip(ids: list[int]) -> list[int]:
    """Token ids up to ``<eos>`` (padding and ``<eos>`` dropped)."""
    out = []
    for t in ids:
        if t in (EOS_INDEX, PAD_INDEX):
            break
        out.append(t)
    return out


register_task(CaptioningTask())

__all__ = ["CaptioningTask", "decode_captions", "encode_captions", "load_caption_split", "teacher_forcing"]
