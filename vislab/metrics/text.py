"""Text metrics for sequence models: corpus BLEU (Papineni et al., "BLEU: a Method for Automatic
Evaluation of Machine Translation", ACL 2002), token accuracy and perplexity.

BLEU works on token lists that are already tokenised; tokens are any hashable values (words,
integer ids).  ``references[i]`` is the list of reference token lists of hypothesis ``i``, NLTK's
convention.  It is a corpus statistic, not a mean of sentence scores:

* ``p_n``, the modified n-gram precision: each hypothesis n-gram counts as matched at most as
  often as it occurs in the one reference where it occurs most ("clipping"); matches and
  hypothesis n-grams are summed over the corpus before dividing;
* ``BP``, the brevity penalty: ``r`` sums over the hypotheses the length of the reference closest
  in length to the hypothesis, the shorter of two equally close ones; ``c`` is the total
  hypothesis length; ``BP = 1`` if ``c > r``, ``exp(1 - r / c)`` if ``0 < c <= r``, 0 if ``c = 0``;
* ``BLEU = BP * exp(sum_n log(p_n) / N)`` over the orders ``n = 1..N`` (uniform weights).

Unsmoothed, a zero ``p_n`` makes BLEU 0, as sacrebleu (``smooth_method='none'``) gives and as
NLTK's ``corpus_bleu`` gives up to a warning and a score of about 1e-77.  That happens easily on a
small corpus of short sentences, so two smoothings of Chen and Cherry ("A Systematic Comparison of
Smoothing Techniques for Sentence-Level BLEU", WMT 2014) are offered, under the names and defaults
of sacrebleu:

* ``"floor"`` (their method 1): a zero count of matches becomes ``smoothing_value`` (default 0.1),
  only for the orders with no match.  sacrebleu ``smooth_method='floor'``, NLTK
  ``SmoothingFunction(epsilon).method1``;
* ``"add-k"`` (their method 2, after Lin and Och 2004): ``smoothing_value`` (default 1) is added to
  the matches and to the hypothesis n-grams of every order ``n >= 2``, zero or not.  sacrebleu
  ``smooth_method='add-k'``; with k = 1 NLTK ``SmoothingFunction().method2``.

With either, a corpus without a single matching unigram still scores 0 (as in both references).

An order for which the corpus has no hypothesis n-gram at all (every hypothesis shorter than
``n``) has ``p_n = 0/0``, taken as 0, so BLEU is 0 unless ``"add-k"`` gives it a denominator.
NLTK differs there (checked on 3.10.4): its ``modified_precision`` puts each hypothesis shorter
than ``n`` tokens into the corpus denominator as one n-gram (``max(1, count)``, meant to avoid a
division by zero for one sentence), so on corpora with hypotheses shorter than ``max_n`` NLTK's
``p_n`` are lower than Papineni's; vislab counts as sacrebleu and mteval do.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

from vislab.errors import UserError

__all__ = ["SMOOTHINGS", "bleu_scores", "corpus_bleu", "perplexity", "token_accuracy"]

SMOOTHINGS = (None, "floor", "add-k")
_DEFAULT_SMOOTHING_VALUE = {"floor": 0.1, "add-k": 1.0}   # Chen and Cherry 2014; sacrebleu's defaults


def _tokens(seq: object, what: str) -> tuple[Hashable, ...]:
    """A token list as a tuple; refuses a plain string (its characters would become the tokens)."""
    if isinstance(seq, str):
        raise UserError(f"{what} is a string, {seq[:40]!r}: BLEU wants token lists; split it first (e.g. s.split())")
    if isinstance(seq, Tensor):
        seq = seq.tolist()                   # 0-d tensors hash by identity, so they never match
    try:
        return tuple(seq)
    except TypeError:
        raise UserError(f"{what} must be a list of tokens, got {type(seq).__name__}") from None


def _ngrams(tokens: tuple[Hashable, ...], n: int) -> Counter:
    return Counter(tokens[i:i + n] for i in range(len(tokens) - n + 1))


def _statistics(hypotheses: Sequence, references: Sequence, max_n: int) -> tuple[list[int], list[int], int, int]:
    """Corpus sums: clipped matches and hypothesis n-grams per order, hypothesis length ``c`` and
    closest-reference length ``r``."""
    if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
        raise UserError(f"max_n must be a positive integer, got {max_n!r}")
    if len(hypotheses) != len(references):
        raise UserError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists: "
                        "give references[i], the list of references of hypothesis i, for every hypothesis")
    if len(hypotheses) == 0:
        raise UserError("hypotheses is empty: BLEU needs at least one hypothesis")
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for i, (hyp, refs) in enumerate(zip(hypotheses, references)):
        hyp = _tokens(hyp, f"hypotheses[{i}]")
        if isinstance(refs, str) or len(refs) == 0 or any(isinstance(ref, str) for ref in refs):
            raise UserError(f"references[{i}] must be a non-empty list of reference token lists, got {refs!r:.60}: "
                            "wrap a single reference in a list, [['the', 'cat']], and split strings into tokens")
        refs = [_tokens(ref, f"references[{i}][{j}]") for j, ref in enumerate(refs)]
        hyp_len += len(hyp)
        ref_len += min((len(ref) for ref in refs), key=lambda length: (abs(length - len(hyp)), length))
        for n in range(1, max_n + 1):
            counts = _ngrams(hyp, n)
            max_ref = Counter()
            for ref in refs:
                max_ref |= _ngrams(ref, n)                          # elementwise max of the counts
            matches[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            totals[n - 1] += sum(counts.values())
    return matches, totals, hyp_len, ref_len


def _brevity_penalty(hyp_len: int, ref_len: int) -> float:
    if hyp_len > ref_len:
        return 1.0
    return math.exp(1 - ref_len / hyp_len) if hyp_len > 0 else 0.0


def _bleu(matches: list[int], totals: list[int], bp: float, order: int,
          smoothing: str | None, value: float) -> float:
    """Cumulative BLEU over the orders 1..``order`` from the corpus counts."""
    if matches[0] == 0:
        return 0.0
    log_sum = 0.0
    for n in range(1, order + 1):
        m, t = matches[n - 1], totals[n - 1]
        if smoothing == "add-k" and n > 1:
            m, t = m + value, t + value
        elif smoothing == "floor" and m == 0 and t > 0:
            m = value
        if m == 0:
            return 0.0
        log_sum += math.log(m / t)
    return bp * math.exp(log_sum / order)


def _check_smoothing(smoothing: str | None, smoothing_value: float | None) -> float:
    if smoothing not in SMOOTHINGS:
        raise UserError(f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}")
    if smoothing is None:
        if smoothing_value is not None:
            raise UserError(f"smoothing_value={smoothing_value!r} without a smoothing: "
                            "pass smoothing='floor' or 'add-k'")
        return 0.0
    value = _DEFAULT_SMOOTHING_VALUE[smoothing] if smoothing_value is None else float(smoothing_value)
    if not value > 0:
        raise UserError(f"smoothing_value must be positive, got {smoothing_value!r}")
    return value


def bleu_scores(hypotheses: Sequence[Sequence[Hashable]], references: Sequence[Sequence[Sequence[Hashable]]],
                max_n: int = 4, smoothing: str | None = None, smoothing_value: float | None = None) -> dict:
    """Cumulative BLEU-1 .. BLEU-``max_n`` of a corpus, each a fraction in [0, 1].

    BLEU-n uses the orders 1..n with weights 1/n (NLTK's ``weights=(1/n,) * n``); they share the
    brevity penalty.  Returns ``bleu1`` .. ``bleu{max_n}``, ``precisions`` (the unsmoothed
    modified precisions ``p_1..p_max_n``, 0 where an order has no hypothesis n-gram),
    ``matches`` and ``totals`` (their numerators and denominators), ``brevity_penalty``,
    ``hyp_len`` (``c``) and ``ref_len`` (``r``).  See the module docstring for the conventions.
    """
    value = _check_smoothing(smoothing, smoothing_value)
    matches, totals, hyp_len, ref_len = _statistics(hypotheses, references, max_n)
    bp = _brevity_penalty(hyp_len, ref_len)
    out = {f"bleu{n}": _bleu(matches, totals, bp, n, smoothing, value) for n in range(1, max_n + 1)}
    out.update(precisions=[m / t if t else 0.0 for m, t in zip(matches, totals)], matches=matches,
               totals=totals, brevity_penalty=bp, hyp_len=hyp_len, ref_len=ref_len)
    return out


def corpus_bleu(hypotheses: Sequence[Sequence[Hashable]], references: Sequence[Sequence[Sequence[Hashable]]],
                max_n: int = 4, smoothing: str | None = None, smoothing_value: float | None = None) -> float:
    """Corpus BLEU with uniform weights over the orders 1..``max_n``, a fraction in [0, 1]
    (sacrebleu reports 100 times this).

    Args:
        hypotheses: one token list per segment.
        references: ``references[i]`` is the non-empty list of reference token lists of
            ``hypotheses[i]``; their number may vary from segment to segment.
        max_n: highest n-gram order.
        smoothing: None (a zero precision gives 0), ``"floor"`` or ``"add-k"`` (module docstring).
        smoothing_value: epsilon of ``"floor"`` (default 0.1) or k of ``"add-k"`` (default 1).
    """
    value = _check_smoothing(smoothing, smoothing_value)
    matches, totals, hyp_len, ref_len = _statistics(hypotheses, references, max_n)
    return _bleu(matches, totals, _brevity_penalty(hyp_len, ref_len), max_n, smoothing, value)


def token_accuracy(pred: Tensor, target: Tensor, pad_index: int | None) -> float:
    """Fraction of the non-pad target positions where the prediction equals the target.

    ``pred`` holds token ids with the shape of ``target`` (e.g. ``(B, T)``), or scores with one
    more, last, dimension (``(B, T, V)``), which are reduced by argmax.  Positions where
    ``target == pad_index`` are not counted, whatever is predicted there; ``pad_index=None``
    counts every position.  Raises if there is no position to count.
    """
    if pred.dim() == target.dim() + 1:
        pred = pred.argmax(-1)
    if pred.shape != target.shape:
        raise UserError(f"pred has shape {tuple(pred.shape)} and target {tuple(target.shape)}: give token ids "
                        "of the target's shape, or scores with one more (vocabulary) dimension")
    keep = torch.ones_like(target, dtype=torch.bool) if pad_index is None else target != pad_index
    n = int(keep.sum())
    if n == 0:
        raise UserError(f"every target position is padding (pad_index={pad_index}): nothing to score")
    return int(((pred == target) & keep).sum()) / n


def perplexity(total_nll: float | Tensor, n_tokens: int) -> float:
    """``exp(total_nll / n_tokens)``: the exponential of the mean negative log-likelihood per
    token, in nats (sum the per-token cross-entropies over the non-pad tokens, e.g.
    ``F.cross_entropy(..., ignore_index=pad, reduction="sum")``, and count those tokens).
    ``inf`` when the mean is too large for a float."""
    if isinstance(n_tokens, bool) or int(n_tokens) != n_tokens or n_tokens < 1:
        raise UserError(f"n_tokens must be a positive integer, got {n_tokens!r}")
    mean = float(total_nll) / int(n_tokens)
    try:
        return math.exp(mean)
    except OverflowError:
        return math.inf
