"""The text pipeline of a sequence model (003, "Seq2Seq and Word Embedding"): tokenizer,
vocabulary with the special tokens, the six steps of batch preparation, and the masked
cross-entropy that keeps padding out of the loss.

Special tokens, at fixed indices in every :class:`Vocab`:

- ``<pad>`` = 0: during training, examples are fed to the network in batches, and the inputs of
  a batch need the same width; shorter sequences are padded up to the batch's longest.
- ``<sos>`` = 1 (the notes' ``<SOS>``/``<GO>``): the input to the first time step of the decoder,
  to let it know when to start generating output.
- ``<eos>`` = 2: tells the decoder where a sentence ends, and lets the decoder indicate the same
  thing in its outputs.
- ``<unk>`` = 3: replaces the words that do not show up often enough in the corpus to be in the
  vocabulary (``min_freq``), and any out-of-vocabulary (OOV) word met later.

Teacher forcing: at training time the decoder does not feed its own output of each step to the
next; it is fed the ground truth ``tgt_in = <sos> y_1 .. y_n`` and trained to predict
``tgt_out = y_1 .. y_n <eos>``, so it learns from the correct context (and converges faster).
The loss is the cross-entropy of each step, ``-y_t^T log(p_t)``, summed over the real tokens of
the batch and divided by their number: padding never counts (:func:`masked_cross_entropy`).

Masks: ``Batch.tgt_mask`` is True on the real tokens (the positions the loss counts), whereas
``Batch.src_padding_mask`` is True on the padding, the ``key_padding_mask`` convention of
:mod:`vislab.sequence.attention` and ``torch.nn.MultiheadAttention``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Self

import torch
from torch import Tensor

from vislab.errors import UserError

__all__ = [
    "EOS",
    "EOS_INDEX",
    "PAD",
    "PAD_INDEX",
    "SOS",
    "SOS_INDEX",
    "SPECIALS",
    "UNK",
    "UNK_INDEX",
    "Batch",
    "TargetBatch",
    "Vocab",
    "masked_cross_entropy",
    "prepare_batch",
    "prepare_targets",
    "tokenize",
]

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
SPECIALS = (PAD, SOS, EOS, UNK)
PAD_INDEX, SOS_INDEX, EOS_INDEX, UNK_INDEX = range(len(SPECIALS))

_TOKEN = re.compile(r"\w+|[^\w\s]")

Tokens = Sequence[str]


def tokenize(text: str) -> list[str]:
    """Lower-cased words (runs of letters, digits and ``_``) and single punctuation marks, split
    on whitespace: ``"A red shirt, left." -> ["a", "red", "shirt", ",", "left", "."]``.  Every
    other character stands alone (``"it's" -> ["it", "'", "s"]``), so a special token written
    in the text (``"<eos>"``) is three tokens, never the special one."""
    if not isinstance(text, str):
        raise UserError(f"tokenize takes a str, got {type(text).__name__}")
    return _TOKEN.findall(text.lower())


def _as_tokens(seq: str | Tokens) -> list[str]:
    """A string is tokenized; a sequence of tokens is taken as it is."""
    if isinstance(seq, str):
        return tokenize(seq)
    tokens = list(seq)
    if not all(isinstance(t, str) for t in tokens):
        raise UserError(f"a token sequence must hold str tokens, got {tokens[:5]!r}...; give a str or a list of str")
    return tokens


class Vocab:
    """Token <-> index table: the four special tokens at indices 0..3 (``<pad>``, ``<sos>``,
    ``<eos>``, ``<unk>``), then the words.

    Args:
        words: the words after the specials, in index order, without duplicates or specials.
    """

    pad_index, sos_index, eos_index, unk_index = PAD_INDEX, SOS_INDEX, EOS_INDEX, UNK_INDEX

    def __init__(self, words: Sequence[str]) -> None:
        words = list(words)
        if clash := sorted(set(words) & set(SPECIALS)):
            raise UserError(f"words {clash} are special tokens, which every Vocab holds at fixed indices: drop them")
        if len(set(words)) != len(words):
            dup = sorted(w for w, n in Counter(words).items() if n > 1)
            raise UserError(f"duplicate words {dup[:5]} in the vocabulary: give each word once")
        self.itos: list[str] = [*SPECIALS, *words]
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, corpus: Iterable[str | Tokens], min_freq: int = 1) -> Self:
        """The vocabulary of ``corpus`` (strings, tokenized with :func:`tokenize`, or token lists):
        the words seen at least ``min_freq`` times, the most frequent first, words of equal
        frequency in alphabetical order, so the same corpus always gives the same indices.
        The rarer words are left to ``<unk>``."""
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise UserError(f"min_freq must be an integer >= 1, got {min_freq!r}")
        counts = Counter(tok for seq in corpus for tok in _as_tokens(seq) if tok not in SPECIALS)
        kept = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
        return cls(kept)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens: {self.itos[len(SPECIALS):len(SPECIALS) + 5]}...)"

    def encode(self, tokens: str | Tokens) -> list[int]:
        """The indices of ``tokens`` (a string is tokenized first); an out-of-vocabulary token
        becomes ``<unk>``.  No ``<sos>``/``<eos>`` is added: :func:`prepare_batch` does that."""
        return [self.stoi.get(tok, UNK_INDEX) for tok in _as_tokens(tokens)]

    def decode(self, ids: Sequence[int] | Tensor, strip_special: bool = True) -> list[str]:
        """The tokens of ``ids`` (ints or a 1-D tensor) up to the first ``<eos>``, which ends the
        sentence.  ``strip_special`` drops ``<pad>``, ``<sos>`` and that ``<eos>``; ``<unk>`` stays,
        standing for a word.  Without it, every token is kept, the ``<eos>`` included."""
        if isinstance(ids, Tensor):
            if ids.dim() != 1:
                raise UserError(f"decode takes one sequence, a 1-D tensor; got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= i < len(self.itos):
                raise UserError(f"index {i} is outside the vocabulary of {len(self.itos)} tokens")
            if i == EOS_INDEX:
                if not strip_special:
                    out.append(EOS)
                break
            if not (strip_special and i in (PAD_INDEX, SOS_INDEX)):
                out.append(self.itos[i])
        return out

    def to_dict(self) -> dict[str, list[str]]:
        """Plain JSON-able values, to save in a checkpoint: ``{"itos": [token, ...]}``, the specials
        first."""
        return {"itos": list(self.itos)}

    @classmethod
    def from_dict(cls, state: dict[str, list[str]]) -> Self:
        """The vocabulary saved by :meth:`to_dict`."""
        itos = list(state.get("itos", ()))
        if tuple(itos[:len(SPECIALS)]) != SPECIALS:
            raise UserError(f"a saved Vocab starts with the special tokens {list(SPECIALS)}, this one with "
                            f"{itos[:len(SPECIALS)]}: it was not written by Vocab.to_dict")
        return cls(itos[len(SPECIALS):])


@dataclass
class TargetBatch:
    """The decoder side of a batch, every tensor ``(B, T)`` but the lengths ``(B,)``, all int64
    but the mask.

    Attributes:
        tgt_in: ``<sos> y_1 .. y_n``, the teacher-forcing input, padded with ``<pad>``.
        tgt_out: ``y_1 .. y_n <eos>``, the targets of the loss, padded with ``<pad>``.
        tgt_mask: bool, True on the real tokens of ``tgt_out`` (the ``n + 1`` counted by the loss).
        tgt_lengths: ``n + 1`` per sequence.
    """

    tgt_in: Tensor
    tgt_out: Tensor
    tgt_mask: Tensor
    tgt_lengths: Tensor

    def to(self, device: torch.device | str) -> Self:
        """The same batch on ``device``."""
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass
class Batch(TargetBatch):
    """A seq2seq batch: the decoder side of :class:`TargetBatch` and the source.

    Attributes:
        src: ``(B, S)`` ``x_1 .. x_m <eos>``, padded with ``<pad>``.
        src_lengths: ``(B,)`` ``m + 1`` per sequence (on ``src``'s device; ``pack_padded_sequence``
            wants them on the CPU: ``src_lengths.cpu()``).
    """

    src: Tensor
    src_lengths: Tensor

    @property
    def src_padding_mask(self) -> Tensor:
        """``(B, S)`` bool, True on the padding of ``src``: the ``key_padding_mask`` of attention."""
        return torch.arange(self.src.shape[1], device=self.src.device)[None] >= self.src_lengths[:, None]


def _pad_encode(seqs: list[list[str]], vocab: Vocab, device: torch.device | str | None) -> tuple[Tensor, Tensor]:
    """Steps 4 to 6 on sequences of tokens: pad to the longest with ``<pad>`` (4), look each token
    up in ``vocab`` (5), out-of-vocabulary ones as ``<unk>`` (6).  Returns ``(B, L)`` and the
    lengths ``(B,)``."""
    width = max(len(s) for s in seqs)
    padded = [s + [PAD] * (width - len(s)) for s in seqs]
    ids = torch.tensor([vocab.encode(s) for s in padded], dtype=torch.long, device=device)
    return ids, torch.tensor([len(s) for s in seqs], dtype=torch.long, device=device)


def _check_batch(seqs: Sequence, name: str) -> list[list[str]]:
    if isinstance(seqs, str) or len(seqs) == 0:
        raise UserError(f"{name} must be a non-empty list of sentences (str or token lists), got {seqs!r}")
    return [_as_tokens(s) for s in seqs]


def prepare_targets(captions: Sequence[str | Tokens], vocab: Vocab,
                    device: torch.device | str | None = None) -> TargetBatch:
    """The target side of :func:`prepare_batch` alone, for captioning, where the source is an
    image: steps 3 to 6 on ``captions`` (strings or token lists), see there."""
    caps = _check_batch(captions, "captions")
    tgt_in, lengths = _pad_encode([[SOS, *c] for c in caps], vocab, device)   # step 3, then 4-6
    tgt_out, _ = _pad_encode([[*c, EOS] for c in caps], vocab, device)
    mask = torch.arange(tgt_out.shape[1], device=tgt_out.device)[None] < lengths[:, None]
    return TargetBatch(tgt_in=tgt_in, tgt_out=tgt_out, tgt_mask=mask, tgt_lengths=lengths)


def prepare_batch(sources: Sequence[str | Tokens], targets: Sequence[str | Tokens], vocab_src: Vocab,
                  vocab_tgt: Vocab, device: torch.device | str | None = None) -> Batch:
    """A seq2seq batch from ``batch_size`` (source, target) pairs, strings or token lists, in the
    notes' six steps:

    1. Sample ``batch_size`` pairs of (source_sequence, target_sequence): the caller's sampler
       (a shuffled ``DataLoader``, say) gives them, ``sources[i]`` paired with ``targets[i]``.
    2. Append ``<eos>`` to the source_sequence.
    3. Prepend ``<sos>`` to the target_sequence to obtain the target_input_sequence (``tgt_in``)
       and append ``<eos>`` to obtain the target_output_sequence (``tgt_out``).
    4. Pad up to the max_input_length (max_target_length) within the batch using the ``<pad>``
       token: each batch is as wide as its own longest sequence, not the corpus's.
    5. Encode tokens based on the vocabulary: ``vocab_src`` for the source, ``vocab_tgt`` for
       the target (one Vocab may serve both).
    6. Replace out-of-vocabulary (OOV) tokens with ``<unk>``.

    Steps 5 and 6 are one lookup, :meth:`Vocab.encode`.  Returns a :class:`Batch` with ``src``,
    ``src_lengths``, ``tgt_in``, ``tgt_out``, ``tgt_mask`` (True on the real tokens of
    ``tgt_out``) and ``tgt_lengths``, in the order of the pairs (nothing sorted by length).
    """
    srcs = _check_batch(sources, "sources")
    if len(targets) != len(srcs):   # step 1: pairs
        raise UserError(f"{len(srcs)} sources but {len(targets)} targets: give one target per source")
    src, src_lengths = _pad_encode([[*s, EOS] for s in srcs], vocab_src, device)   # step 2, then 4-6
    tgt = prepare_targets(targets, vocab_tgt, device)   # steps 3-6
    return Batch(**{f.name: getattr(tgt, f.name) for f in fields(tgt)}, src=src, src_lengths=src_lengths)


def masked_cross_entropy(logits: Tensor, tgt_out: Tensor, pad_index: int = PAD_INDEX) -> Tensor:
    """Mean cross-entropy over the real tokens: ``-sum log softmax(logits)[y_t]`` over the
    positions where ``tgt_out != pad_index``, divided by their number.

    ``logits (..., V)`` (e.g. ``(B, T, V)``) and ``tgt_out (...)``.  Equal to
    ``F.cross_entropy(logits.flatten(0, -2), tgt_out.flatten(), ignore_index=pad_index)``; the
    padding positions are dropped before the softmax, so whatever a model puts there (even
    ``inf`` or ``nan``) changes neither the loss nor its gradient.
    """
    if logits.shape[:-1] != tgt_out.shape:
        raise UserError(f"logits {tuple(logits.shape)} and tgt_out {tuple(tgt_out.shape)} disagree: give "
                        "logits (..., V) for targets (...), e.g. (B, T, V) and (B, T)")
    real = tgt_out != pad_index
    n = int(real.sum())
    if n == 0:
        raise UserError(f"tgt_out is all padding (pad_index={pad_index}): no token to compute a loss on")
    log_p = torch.log_softmax(logits[real], dim=-1)                    # (n, V)
    return -log_p.gather(-1, tgt_out[real][:, None]).sum() / n
