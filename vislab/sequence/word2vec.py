"""Word2Vec (003, "Word Embedding"; Mikolov et al., "Efficient Estimation of Word Representations
in Vector Space", 2013, and "Distributed Representations of Words and Phrases and their
Compositionality", NeurIPS 2013): each word gets a dense vector, learnt without labels from the
words around it, so that words used in similar contexts end up close.

No hidden layer: a word is projected to its input vector ``v`` (an embedding lookup), and the
output word is scored by the dot product with its output vector ``u``.

- Skip-gram predicts the context from the centre word: one example per (centre, context) pair
  within ``window`` words of each other, ``h = v_c``.
- CBOW (continuous bag of words) predicts the word from its context: the input vectors of the
  up to ``2 * window`` context words are averaged, ``h = mean v``, and ``h`` predicts the centre.

The notes' output layer is a softmax over the vocabulary trained with multi-class cross-entropy
(:meth:`Word2Vec.forward` with ``negatives=None``).  Negative sampling (SGNS, the second paper's
Eq. 4) replaces it by ``k + 1`` binary logistic regressions, the true output word against ``k``
noise words ``w_k`` drawn from the unigram distribution raised to the 3/4 power::

    loss = -log σ(u_o·h) - Σ_k log σ(-u_k·h)

(the paper's ``log σ(v'_wO^T v_wI) + Σ_k E_{w_i ~ P_n(w)} log σ(-v'_wi^T v_wI)``, maximised, with
``v' = u`` the output vectors and ``v_wI = h``).  The 3/4 power flattens the unigram
distribution, drawing rare words more often than their frequency (the paper found it best).
A noise word that happens to equal the true one is kept (the paper's code skips it); on a real
vocabulary that is rare.

Optionally, frequent words are subsampled (the second paper, Section 2.3): each occurrence of
word ``w`` of corpus frequency ``f(w)`` is kept with probability ``min(1, sqrt(t / f(w)))``,
anew every epoch, before the windows are taken.

The word vectors are the input vectors, :attr:`Word2Vec.embeddings`; :func:`nearest` and
:func:`analogy` query them by cosine similarity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vislab.errors import UserError
from vislab.io import atomic_torch_save

__all__ = [
    "Word2Vec",
    "analogy",
    "analogy_accuracy",
    "cbow_examples",
    "load_into_embedding",
    "load_word_vectors",
    "nearest",
    "neighbour_agreement",
    "sample_negatives",
    "save_word_vectors",
    "sgns_loss",
    "skipgram_pairs",
    "subsample_keep_prob",
    "train_word2vec",
    "unigram_distribution",
]

Corpus = Sequence[Sequence[int]] | Sequence[int] | Tensor
MODES = ("skipgram", "cbow")


def _stream(corpus_ids: Corpus) -> tuple[Tensor, Tensor]:
    """The corpus as one stream of token ids ``(L,)`` and the sentence of each ``(L,)``.  A 1-D
    tensor or a list of ints is one sentence; a list of sequences is a list of sentences, and no
    window crosses from one to the next."""
    if isinstance(corpus_ids, Tensor):
        sentences = [corpus_ids] if corpus_ids.dim() == 1 else None
    elif len(corpus_ids) and all(isinstance(i, int) for i in corpus_ids):
        sentences = [corpus_ids]
    else:
        sentences = list(corpus_ids)
    if sentences is None:
        raise UserError(f"corpus_ids as a tensor must be 1-D, got shape {tuple(corpus_ids.shape)}")
    ids = [torch.as_tensor(s, dtype=torch.long).reshape(-1) for s in sentences]
    if not ids or sum(len(s) for s in ids) == 0:
        raise UserError("corpus_ids is empty: give token ids, one list per sentence")
    sid = torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, s in enumerate(ids)])
    return torch.cat(ids), sid


def skipgram_pairs(corpus_ids: Corpus, window: int) -> tuple[Tensor, Tensor]:
    """The (centre, context) pairs of the skip-gram, ``centres (P,)`` and ``contexts (P,)``: every
    two tokens of a sentence at most ``window`` positions apart, in both directions."""
    return _pairs(*_stream(corpus_ids), window)


def _pairs(stream: Tensor, sid: Tensor, window: int) -> tuple[Tensor, Tensor]:
    _check_window(window)
    centres, contexts = [], []
    for d in range(1, window + 1):
        same = sid[:-d] == sid[d:]
        left, right = stream[:-d][same], stream[d:][same]
        centres += [left, right]
        contexts += [right, left]
    return torch.cat(centres), torch.cat(contexts)


def cbow_examples(corpus_ids: Corpus, window: int) -> tuple[Tensor, Tensor, Tensor]:
    """The CBOW examples: ``contexts (P, 2 * window)``, the ids of the words at offsets
    ``-window..-1, 1..window`` from each centre; ``mask (P, 2 * window)``, True where that word
    exists (inside the sentence; elsewhere the id is 0 and is not used); ``centres (P,)``.
    Centres without any context word (one-word sentences) give no example."""
    return _cbow(*_stream(corpus_ids), window)


def _cbow(stream: Tensor, sid: Tensor, window: int) -> tuple[Tensor, Tensor, Tensor]:
    _check_window(window)
    offsets = torch.cat([torch.arange(-window, 0), torch.arange(1, window + 1)])
    idx = torch.arange(len(stream))[:, None] + offsets[None]                  # (L, 2w)
    inside = (idx >= 0) & (idx < len(stream))
    idx = idx.clamp(0, len(stream) - 1)
    mask = inside & (sid[idx] == sid[:, None])
    has_context = mask.any(dim=1)
    contexts = stream[idx].masked_fill(~mask, 0)
    return contexts[has_context], mask[has_context], stream[has_context]


def _check_window(window: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise UserError(f"window must be an integer >= 1, got {window!r}")


def unigram_distribution(counts: Tensor, power: float = 0.75) -> Tensor:
    """The noise distribution of negative sampling: ``counts ** power``, normalised (the
    paper's ``U(w)^{3/4} / Z``)."""
    weights = counts.double().clamp_min(0) ** power
    if not weights.sum() > 0:
        raise UserError("every count is zero: no word to draw negatives from")
    return weights / weights.sum()


def sample_negatives(noise: Tensor, shape: tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
    """Noise word ids of ``shape`` (e.g. ``(B, k)``), drawn independently, with replacement, from
    the distribution ``noise (V,)`` (:func:`unigram_distribution`)."""
    return torch.multinomial(noise, math.prod(shape), replacement=True, generator=generator).view(shape)


def subsample_keep_prob(counts: Tensor, t: float) -> Tensor:
    """``min(1, sqrt(t / f(w)))`` per word, ``f(w) = count / total``: the probability that an
    occurrence survives the subsampling of frequent words (``t`` about 1e-5 on large corpora)."""
    freq = counts.double() / counts.sum()
    return (t / freq.clamp_min(1e-300)).sqrt().clamp(max=1.0)


def sgns_loss(h: Tensor, u_pos: Tensor, u_neg: Tensor, reduction: str = "mean") -> Tensor:
    """``-log σ(u_o·h) - Σ_k log σ(-u_k·h)`` per example, for ``h (B, D)`` (the centre's input
    vector ``v_c``, or CBOW's context average), the true output word's vector ``u_pos (B, D)``
    and ``k`` noise words' ``u_neg (B, k, D)``; ``reduction`` ``"mean"``, ``"sum"`` or
    ``"none"`` over the ``B`` examples.  ``log σ`` is ``F.logsigmoid``, stable for large scores."""
    pos = F.logsigmoid((u_pos * h).sum(-1))                                      # (B,)
    neg = F.logsigmoid(-torch.einsum("bkd,bd->bk", u_neg, h)).sum(-1)            # (B,)
    loss = -pos - neg
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise UserError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class Word2Vec(nn.Module):
    """Input vectors ``in_embed`` (``v``, the word vectors) and output vectors ``out_embed``
    (``u``), each ``(vocab_size, dim)``.

    Args:
        vocab_size: number of words (ids ``0 .. vocab_size - 1``).
        dim: size of the vectors.
        mode: ``"skipgram"`` (inputs are centre ids ``(B,)``) or ``"cbow"`` (inputs are context
            ids ``(B, C)`` with a mask ``(B, C)``).
    """

    def __init__(self, vocab_size: int, dim: int, mode: str = "skipgram") -> None:
        super().__init__()
        if mode not in MODES:
            raise UserError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.in_embed = nn.Embedding(vocab_size, dim)
        self.out_embed = nn.Embedding(vocab_size, dim)
        self.init_weights()

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """As the paper's code (word2vec.c): input vectors uniform on ``±0.5 / dim``, output
        vectors zero."""
        dim = self.in_embed.embedding_dim
        with torch.no_grad():
            self.in_embed.weight.uniform_(-0.5 / dim, 0.5 / dim, generator=generator)
            self.out_embed.weight.zero_()

    @property
    def embeddings(self) -> Tensor:
        """``(vocab_size, dim)``: the input vectors, detached."""
        return self.in_embed.weight.detach()

    def hidden(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        """``h (B, D)``: the centre's input vector (skip-gram, ``inputs (B,)``), or the mean input
        vector of the context words where ``mask`` is True (CBOW, ``inputs`` and ``mask (B, C)``)."""
        if self.mode == "skipgram":
            return self.in_embed(inputs)
        if mask is None:
            mask = torch.ones_like(inputs, dtype=torch.bool)
        m = mask.to(self.in_embed.weight.dtype)[..., None]                       # (B, C, 1)
        return (self.in_embed(inputs) * m).sum(1) / m.sum(1).clamp_min(1)

    def forward(self, inputs: Tensor, targets: Tensor, negatives: Tensor | None = None,
                mask: Tensor | None = None) -> Tensor:
        """The mean loss of predicting ``targets (B,)``: SGNS against ``negatives (B, k)``, or
        with ``negatives=None`` the full softmax over the vocabulary and its cross-entropy."""
        h = self.hidden(inputs, mask)                                            # (B, D)
        if negatives is None:
            return F.cross_entropy(h @ self.out_embed.weight.T, targets)
        return sgns_loss(h, self.out_embed(targets), self.out_embed(negatives))


def train_word2vec(corpus_ids: Corpus, vocab_size: int, dim: int = 32, window: int = 2, negatives: int = 5,
                   epochs: int = 5, lr: float = 0.01, batch_size: int = 512, mode: str = "skipgram",
                   subsample: float | None = None, seed: int = 0,
                   device: torch.device | str | None = None) -> tuple[Word2Vec, list[float]]:
    """Train a :class:`Word2Vec` on ``corpus_ids`` (a list of sentences of token ids, or one
    stream) with Adam on minibatches, every draw (initial vectors, subsampling, shuffling,
    negatives) from one ``torch.Generator`` seeded with ``seed``.

    ``negatives`` noise words per example are drawn from the corpus's unigram counts to the 3/4
    power; ``negatives=0`` trains the full softmax instead.  ``subsample`` is the ``t`` of the
    subsampling of frequent words (``None``: none).  Returns the model and the mean loss of each
    epoch.
    """
    if isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 0:
        raise UserError(f"negatives must be an integer >= 0 (0: full softmax), got {negatives!r}")
    stream, sid = _stream(corpus_ids)
    if int(stream.min()) < 0 or int(stream.max()) >= vocab_size:
        raise UserError(f"token ids span {int(stream.min())}..{int(stream.max())}, outside the vocabulary "
                        f"0..{vocab_size - 1}: give vocab_size > the largest id")
    gen = torch.Generator().manual_seed(seed)
    model = Word2Vec(vocab_size, dim, mode)
    model.init_weights(gen)
    model.to(device)
    counts = torch.bincount(stream, minlength=vocab_size)
    noise = unigram_distribution(counts).float()
    keep_prob = subsample_keep_prob(counts, subsample) if subsample is not None else None
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(epochs):
        s, i = stream, sid
        if keep_prob is not None:
            kept = torch.rand(len(s), generator=gen, dtype=torch.float64) < keep_prob[s]
            s, i = s[kept], i[kept]
        if mode == "skipgram":
            inputs, targets = _pairs(s, i, window)
            masks = None
        else:
            inputs, masks, targets = _cbow(s, i, window)
        order = torch.randperm(len(targets), generator=gen)
        total, seen = 0.0, 0
        for start in range(0, len(order), batch_size):
            b = order[start:start + batch_size]
            negs = sample_negatives(noise, (len(b), negatives), gen) if negatives else None
            loss = model(*_on(device, inputs[b], targets[b], negs, None if masks is None else masks[b]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
            seen += len(b)
        history.append(total / max(seen, 1))
    return model, history


def _on(device: torch.device | str | None, *tensors: Tensor | None) -> list[Tensor | None]:
    return [t if t is None or device is None else t.to(device) for t in tensors]


def _unit(embeddings: Tensor) -> Tensor:
    return F.normalize(embeddings.detach().double(), dim=-1)


def _top(sims: Tensor, exclude: list[int], k: int) -> tuple[Tensor, Tensor]:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(sims) - len(set(exclude)):
        raise UserError(f"k must be an integer in 1..{len(sims) - len(set(exclude))}, got {k!r}")
    sims = sims.clone()
    sims[exclude] = -torch.inf
    top, ids = sims.topk(k)
    return ids, top


def nearest(embeddings: Tensor, word_id: int, k: int = 5) -> tuple[Tensor, Tensor]:
    """The ``k`` words most cosine-similar to ``word_id``, itself excluded: ids ``(k,)`` and
    similarities ``(k,)``, the most similar first.  ``embeddings (V, D)``."""
    unit = _unit(embeddings)
    return _top(unit @ unit[word_id], [word_id], k)


def analogy(embeddings: Tensor, a: int, b: int, c: int, k: int = 1) -> tuple[Tensor, Tensor]:
    """The answer to "``a`` is to ``b`` as ``c`` is to ?": the ``k`` words most cosine-similar to
    ``b - a + c`` (man : king :: woman : queen, ``queen ~ king - man + woman``), the three
    inputs excluded.  The vectors are normalised to unit length first (3CosAdd, as gensim's
    ``most_similar``).  Returns ids ``(k,)`` and similarities ``(k,)``."""
    unit = _unit(embeddings)
    target = F.normalize(unit[b] - unit[a] + unit[c], dim=-1)
    return _top(unit @ target, [a, b, c], k)


def analogy_accuracy(embeddings: Tensor, questions: Sequence[tuple[int, int, int, int]]) -> float:
    """The fraction of analogy questions ``(a, b, c, d)`` whose top answer (:func:`analogy`) is
    ``d`` (Mikolov et al.'s "exact match" accuracy)."""
    if not questions:
        raise UserError("no analogy questions: give (a, b, c, d) word ids")
    hits = [int(analogy(embeddings, a, b, c)[0][0]) == d for a, b, c, d in questions]
    return sum(hits) / len(hits)


def neighbour_agreement(embeddings: Tensor, groups: Sequence[Sequence[int]]) -> float:
    """The fraction of words of ``groups`` (lists of word ids, e.g. the positions, the sizes, the
    nouns) whose nearest word by cosine (:func:`nearest`, over the whole vocabulary) lies in the
    same group.  Groups of one word are skipped."""
    words = [(w, set(g)) for g in groups if len(g) > 1 for w in g]
    if not words:
        raise UserError("no groups of two or more words to check")
    return sum(int(nearest(embeddings, w, 1)[0][0]) in g for w, g in words) / len(words)


def load_into_embedding(weight: Tensor, vectors: Tensor, rows: Sequence[int] | Tensor) -> None:
    """Initialise an embedding table from word vectors: ``weight[rows] = vectors[rows]``, rescaled
    so that the copied rows keep the standard deviation the table had (the scale the model's own
    initialisation chose: ``N(0, 1)`` for ``nn.Embedding``, ``d^-1/2`` for the Transformer's).  The
    directions, what word2vec learnt, are kept; rows not listed (``<pad>``, words word2vec never
    saw) keep the model's initialisation.  ``weight (V, D)`` is changed in place."""
    if weight.shape != vectors.shape:
        raise UserError(f"word vectors of shape {tuple(vectors.shape)} do not fit the word table "
                        f"{tuple(weight.shape)}: train word2vec with the captioner's embed_dim and vocabulary")
    rows = torch.as_tensor(rows, dtype=torch.long)
    if not len(rows):
        return
    with torch.no_grad():
        src = vectors.to(weight)[rows]
        scale = weight[rows].std() / src.std().clamp_min(1e-12)
        weight[rows] = src * scale


def save_word_vectors(path: str, words: Sequence[str], vectors: Tensor, **meta) -> None:
    """Write ``words`` and their ``vectors (V, D)`` (and ``meta``: how they were trained) to a
    ``.pt`` file, atomically."""
    if len(words) != len(vectors):
        raise UserError(f"{len(words)} words but {len(vectors)} vectors")
    atomic_torch_save({"words": list(words), "vectors": vectors.detach().float().cpu(), "meta": dict(meta)}, path)


def load_word_vectors(path: str) -> tuple[list[str], Tensor, dict]:
    """Read back :func:`save_word_vectors`' file: ``(words, vectors (V, D), meta)``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; write word vectors with `vislab word2vec --out {path}`") from None
    except Exception as e:  # noqa: BLE001  (torch raises many kinds for a file that is not its own)
        raise UserError(f"{path} is not a word-vector file ({type(e).__name__}); write it again with "
                        "`vislab word2vec --out FILE`") from None
    if not (isinstance(obj, dict) and isinstance(obj.get("vectors"), Tensor) and isinstance(obj.get("words"), list)
            and obj["vectors"].dim() == 2 and len(obj["words"]) == len(obj["vectors"])):
        raise UserError(f"{path} is not a word-vector file of `vislab word2vec --out`; write it again")
    return obj["words"], obj["vectors"], obj.get("meta", {})
