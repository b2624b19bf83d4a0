"""Decoding a conditional language model (003, "Seq2Seq and Word Embedding"):
``y' = argmax_y prod_t P(y_t | y_<t, x, theta)``, searched for approximately.

- :func:`greedy_decode`: at each step pick the most probable token.  It does not guarantee the
  best sequence and cannot backtrack from an early error.
- :func:`beam_search`: keep track of the ``beam_width`` most probable hypotheses.

Both drive the model through one function, ``step_fn(tokens, state) -> (log_probs, new_state)``:
``tokens (N,)`` are the last tokens of ``N`` hypotheses (``<sos>`` at the first step),
``log_probs (N, V)`` the log-probabilities (``<= 0``, e.g. a ``log_softmax``) of the next token
of each, and ``state`` whatever the model carries from step to step (an RNN's ``(h, c)``, the
encoder's memory, the prefix so far): ``None``, a tensor, or tuples, lists and dicts of these,
every tensor with the hypotheses along dim 0.  Beam search reorders and copies the states of
the surviving hypotheses with ``index_select`` along dim 0.

Conventions shared by both:

- a returned sequence holds the generated tokens: without ``<sos>``, with the ``<eos>`` that
  ended it; a sequence still running at ``max_len`` generated tokens is cut there, without
  ``<eos>``;
- ``log_prob`` is ``sum_t log p(y_t | y_<t, x)`` over those tokens, the ``<eos>`` included;
- the length of a sequence is its number of generated tokens, the ``<eos>`` counted.

Both run under ``torch.no_grad()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vislab.errors import UserError

__all__ = ["Hypothesis", "beam_search", "greedy_decode"]

State = Any   # None, a Tensor, or tuples / lists / dicts of States; every tensor (N, ...)
StepFn = Callable[[Tensor, State], tuple[Tensor, State]]


@dataclass
class Hypothesis:
    """A decoded sequence.

    Attributes:
        tokens: the generated token ids, without ``<sos>``, with the ``<eos>`` that ended it.
        log_prob: ``sum log p`` of ``tokens``.
        score: what the search ranks by: ``log_prob / len(tokens) ** alpha`` (``log_prob`` for
            greedy decoding and ``alpha = 0``).
    """

    tokens: list[int]
    log_prob: float
    score: float


def _map_state(fn: Callable[[Tensor], Tensor], state: State) -> State:
    """``fn`` applied to every tensor of ``state``, keeping its structure."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, tuple) and hasattr(state, "_fields"):   # a namedtuple
        return type(state)(*(_map_state(fn, s) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(_map_state(fn, s) for s in state)
    if isinstance(state, dict):
        return type(state)((k, _map_state(fn, v)) for k, v in state.items())
    raise UserError(f"a decoding state holds None, tensors, tuples, lists and dicts; got {type(state).__name__}")


def _tensors(state: State) -> list[Tensor]:
    found: list[Tensor] = []
    _map_state(lambda t: found.append(t) or t, state)
    return found


def _device(state: State, device: torch.device | str | None) -> torch.device | str:
    """``device``, or by default that of the state's first tensor, or the CPU."""
    if device is not None:
        return device
    tensors = _tensors(state)
    return tensors[0].device if tensors else "cpu"


def _check_common(sos: int, eos: int, max_len: int) -> None:
    if sos == eos:
        raise UserError(f"sos and eos are both {sos}: they must be different tokens")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise UserError(f"max_len must be an integer >= 1 (generated tokens, <eos> counted), got {max_len!r}")


def _check_log_probs(log_probs: Tensor, n: int) -> None:
    if log_probs.dim() != 2 or log_probs.shape[0] != n:
        raise UserError(f"step_fn returned log_probs of shape {tuple(log_probs.shape)} for {n} hypotheses: "
                        f"it must return ({n}, V)")


@torch.no_grad()
def greedy_decode(step_fn: StepFn, init_state: State, batch_size: int, sos: int, eos: int, max_len: int,
                  device: torch.device | str | None = None) -> list[Hypothesis]:
    """Greedy decoding of ``batch_size`` sequences at once: feed ``<sos>``, then at each step the
    most probable token (argmax), until every sequence has produced ``<eos>`` or ``max_len``
    tokens were generated.

    A finished sequence keeps being fed ``<eos>`` (so the batch keeps its size and the state its
    shape) and its output is ignored.  ``device`` is where the token tensors go; by default that
    of the first tensor in ``init_state`` (the CPU if there is none).  Returns one
    :class:`Hypothesis` per sequence, ``score == log_prob``.
    """
    _check_common(sos, eos, max_len)
    device = _device(init_state, device)
    tokens = torch.full((batch_size,), sos, dtype=torch.long, device=device)
    done = torch.zeros(batch_size, dtype=torch.bool, device=device)
    log_prob = torch.zeros(batch_size, dtype=torch.float64, device=device)
    out, state = [], init_state
    for _ in range(max_len):
        log_probs, state = step_fn(tokens, state)
        _check_log_probs(log_probs, batch_size)
        best, tokens = log_probs.max(dim=-1)
        tokens = tokens.masked_fill(done, eos)
        log_prob += best.double().masked_fill(done, 0.0)
        out.append(tokens)
        done |= tokens == eos
        if bool(done.all()):
            break
    hyps = []
    for row, lp in zip(torch.stack(out, dim=1).tolist(), log_prob.tolist()):
        seq = row[:row.index(eos) + 1] if eos in row else row
        hyps.append(Hypothesis(tokens=seq, log_prob=lp, score=lp))
    return hyps


@torch.no_grad()
def beam_search(step_fn: StepFn, init_state: State, sos: int, eos: int, beam_width: int, max_len: int,
                length_penalty: float = 0.0, device: torch.device | str | None = None) -> list[Hypothesis]:
    """Beam search for one source sequence: ``init_state`` is its state with dim 0 of size 1
    (decode a batch one example at a time).

    At each step every live hypothesis is extended by every token, and the ``beam_width`` best
    extensions (by ``sum log p``; all of one length, so the length penalty does not change the
    order) are kept: those ending with ``<eos>`` are set aside as finished (never extended
    again), the others live on, so the beam holds ``beam_width`` minus that step's finished.
    Extensions of probability 0 (``log p = -inf``) are dropped.

    A finished hypothesis scores ``log_prob / len ** length_penalty`` (``len`` counts the ``<eos>``;
    ``length_penalty = 0``: no normalisation, longer sequences are penalised by their extra
    factors ``p < 1``; ``1``: the mean log-probability per token).  The search stops

    - when ``beam_width`` hypotheses are finished and no live one can beat the worst of these:
      with ``log p <= 0`` a live hypothesis's best possible score is its ``log_prob`` (kept if
      every later token had probability 1), divided by ``max_len ** length_penalty``, the longest
      it can become;
    - when no hypothesis is live;
    - after ``max_len`` generated tokens, where the live hypotheses join the finished ones,
      without ``<eos>``.

    Returns up to ``beam_width`` finished hypotheses, the best first.  ``beam_width = 1`` is
    greedy decoding; with a beam as wide as the number of possible extensions at every step the
    search is exhaustive, so exact.
    """
    _check_common(sos, eos, max_len)
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
        raise UserError(f"beam_width must be an integer >= 1, got {beam_width!r}")
    if not length_penalty >= 0:
        raise UserError(f"length_penalty (alpha) must be >= 0, got {length_penalty!r}")
    if any(t.shape[0] != 1 for t in _tensors(init_state)):
        raise UserError("beam_search decodes one example: every tensor of init_state needs dim 0 of size 1, got "
                        f"{[tuple(t.shape) for t in _tensors(init_state)]}")
    device = _device(init_state, device)

    def score(log_prob: float, length: int) -> float:
        return log_prob / length ** length_penalty

    prefixes: list[list[int]] = [[]]                      # live hypotheses
    live_lp = torch.zeros(1, dtype=torch.float64, device=device)
    tokens = torch.full((1,), sos, dtype=torch.long, device=device)
    state, finished = init_state, []
    for step in range(1, max_len + 1):
        log_probs, state = step_fn(tokens, state)
        _check_log_probs(log_probs, len(prefixes))
        vocab = log_probs.shape[1]
        cand = (live_lp[:, None] + log_probs.double()).flatten()               # (N * V,)
        top_lp, top_idx = cand.topk(min(beam_width, cand.numel()))
        keep = top_lp > -math.inf
        top_lp, top_idx = top_lp[keep], top_idx[keep]
        origin, token = top_idx // vocab, top_idx % vocab
        ends = token == eos
        for o, t, lp in zip(origin[ends].tolist(), token[ends].tolist(), top_lp[ends].tolist()):
            finished.append(Hypothesis(prefixes[o] + [t], lp, score(lp, step)))
        origin, token, live_lp = origin[~ends], token[~ends], top_lp[~ends]
        prefixes = [prefixes[o] + [t] for o, t in zip(origin.tolist(), token.tolist())]
        if not prefixes:
            break
        if step == max_len:
            finished += [Hypothesis(p, lp, score(lp, step)) for p, lp in zip(prefixes, live_lp.tolist())]
            break
        if len(finished) >= beam_width:
            worst_kept = sorted(h.score for h in finished)[-beam_width]
            if float(live_lp.max()) / max_len ** length_penalty <= worst_kept:
                break
        state = _map_state(lambda t, index=origin: t.index_select(0, index.to(t.device)), state)
        tokens = token
    finished.sort(key=lambda h: h.score, reverse=True)
    return finished[:beam_width]
