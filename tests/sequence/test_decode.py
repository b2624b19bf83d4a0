"""vislab.sequence.decode: beam search of width 1 is greedy decoding; a beam wide enough to keep
every extension finds the same ranking as enumerating every sequence (with and without length
normalisation); finished hypotheses, <eos> and max_len; states reordered along dim 0 whatever
their structure."""

import math
from itertools import product

import pytest
import torch
from torch import nn

from vislab.errors import UserError
from vislab.sequence.decode import Hypothesis, beam_search, greedy_decode

SOS, EOS = 0, 1
F64 = torch.float64


class ToyLSTM:
    """A random conditional language model: the next token's log-probabilities from an LSTM cell
    fed the previous token; state ``(h, c)``.  ``<sos>`` is never generated (log p = -inf)."""

    def __init__(self, vocab: int, hidden: int = 8, seed: int = 0, scale: float = 2.0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.vocab, self.hidden, self.gen = vocab, hidden, gen
        self.cell = nn.LSTMCell(hidden, hidden, dtype=F64).requires_grad_(False)
        for p in self.cell.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=F64) / math.sqrt(hidden))
        self.emb = torch.randn(vocab, hidden, generator=gen, dtype=F64)
        self.out = torch.randn(hidden, vocab, generator=gen, dtype=F64) * scale

    def init_state(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(torch.randn(n, self.hidden, generator=self.gen, dtype=F64) for _ in range(2))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        logits = h @ self.out
        logits[:, SOS] = -math.inf
        return logits

    def step(self, tokens, state):
        h, c = self.cell(self.emb[tokens], state)
        return torch.log_softmax(self.logits(h), -1), (h, c)

    def log_prob(self, state, seq: list[int]) -> float:
        """``sum log p`` of ``seq`` (without <sos>) after ``state`` (batch of 1), fed its own prefix."""
        total, tok = 0.0, SOS
        for t in seq:
            log_p, state = self.step(torch.tensor([tok]), state)
            total += float(log_p[0, t])
            tok = t
        return total


def every_sequence(vocab: int, max_len: int) -> list[list[int]]:
    """Every sequence beam search can return: ``k < max_len`` words then <eos>, or ``max_len``
    words cut without <eos>."""
    words = [t for t in range(vocab) if t not in (SOS, EOS)]
    ended = [[*p, EOS] for k in range(max_len) for p in product(words, repeat=k)]
    return ended + [list(p) for p in product(words, repeat=max_len)]


def brute_force(model: ToyLSTM, state, max_len: int, alpha: float) -> list[tuple[float, float, list[int]]]:
    """Every sequence as (score, log_prob, tokens), the best first."""
    out = []
    for seq in every_sequence(model.vocab, max_len):
        lp = model.log_prob(state, seq)
        out.append((lp / len(seq) ** alpha, lp, seq))
    return sorted(out, key=lambda x: x[0], reverse=True)


def markov(table: dict[int, dict[int, float]], vocab: int):
    """A step function from a hand table of next-token probabilities given the previous token;
    state None.  Records every batch of tokens it is fed."""
    log_table = torch.full((vocab, vocab), -math.inf, dtype=F64)
    for prev, nxt in table.items():
        for tok, p in nxt.items():
            log_table[prev, tok] = math.log(p)
    fed = []

    def step(tokens, state):
        fed.append(tokens.tolist())
        return log_table[tokens], state
    return step, fed


# --- beam width 1 == greedy ---------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_beam_width_one_is_greedy(seed):
    model = ToyLSTM(vocab=12, seed=seed)
    h, c = model.init_state(6)
    greedy = greedy_decode(model.step, (h, c), batch_size=6, sos=SOS, eos=EOS, max_len=10)
    assert len(greedy) == 6
    for i, g in enumerate(greedy):
        state = (h[i:i + 1], c[i:i + 1])
        beam = beam_search(model.step, state, sos=SOS, eos=EOS, beam_width=1, max_len=10)
        assert len(beam) == 1
        assert beam[0].tokens == g.tokens
        assert beam[0].log_prob == pytest.approx(g.log_prob, abs=1e-12)
        assert g.log_prob == pytest.approx(model.log_prob(state, g.tokens), abs=1e-10) == g.score
        # the argmax at every step, taken independently
        prefix, tok, st = [], SOS, state
        for _ in range(10):
            log_p, st = model.step(torch.tensor([tok]), st)
            tok = int(log_p.argmax())
            prefix.append(tok)
            if tok == EOS:
                break
        assert g.tokens == prefix
        # with length normalisation the width-1 search picks the same tokens
        normed = beam_search(model.step, state, SOS, EOS, beam_width=1, max_len=10, length_penalty=0.7)[0]
        assert normed.tokens == g.tokens
        assert normed.score == pytest.approx(g.log_prob / len(g.tokens) ** 0.7)


def test_greedy_batch_stops_per_sequence():
    # each row prefers (p = 0.7) one token per step: row 0 ends at once, row 1 after two words
    plans = torch.tensor([[EOS, 2, 2, 2, 2], [2, 3, EOS, 2, 2]])

    def step(tokens, t):
        log_p = torch.full((2, 4), math.log(0.1), dtype=F64)
        log_p[torch.arange(2), plans[torch.arange(2), t]] = math.log(0.7)
        return log_p, t + 1
    calls = []
    hyps = greedy_decode(lambda tok, t: calls.append(tok.tolist()) or step(tok, t), torch.zeros(2, dtype=torch.long),
                         batch_size=2, sos=SOS, eos=EOS, max_len=5)
    assert [h.tokens for h in hyps] == [[EOS], [2, 3, EOS]]
    assert hyps[0].log_prob == pytest.approx(math.log(0.7))
    assert hyps[1].log_prob == pytest.approx(3 * math.log(0.7))
    assert calls == [[SOS, SOS], [EOS, 2], [EOS, 3]]      # a finished row is fed <eos>


# --- exactness against enumeration ------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_exhaustive_beam_matches_brute_force(seed, alpha):
    max_len, vocab = 4, 4                       # words 2, 3: 31 possible sequences
    width = 2 ** (max_len - 1) * 3              # every extension of every live prefix at the last step
    model = ToyLSTM(vocab=vocab, seed=seed, scale=1.5)
    state = model.init_state(1)
    ref = brute_force(model, state, max_len, alpha)
    assert len(ref) == 31
    hyps = beam_search(model.step, state, SOS, EOS, beam_width=width, max_len=max_len, length_penalty=alpha)
    assert len(hyps) == width
    assert [h.tokens for h in hyps] == [seq for _, _, seq in ref[:width]]
    for h, (score, lp, _) in zip(hyps, ref):
        assert h.log_prob == pytest.approx(lp, abs=1e-10)
        assert h.score == pytest.approx(score, abs=1e-10)
    # the best sequence of a narrower beam is a real sequence, scored right
    best = beam_search(model.step, state, SOS, EOS, beam_width=3, max_len=max_len, length_penalty=alpha)[0]
    assert best.log_prob == pytest.approx(model.log_prob(state, best.tokens), abs=1e-10)
    assert best.score <= ref[0][0] + 1e-12


# --- finished hypotheses and <eos> --------------------------------------------------------------

# next-token probabilities given the previous token (sos 0, eos 1, a 2, b 3)
TABLE = {
    SOS: {EOS: 0.5, 2: 0.4, 3: 0.1},
    2: {EOS: 0.05, 3: 0.95},
    3: {EOS: 1.0},
}


def test_finished_hypotheses_set_aside():
    step, fed = markov(TABLE, 4)
    greedy = greedy_decode(step, None, batch_size=1, sos=SOS, eos=EOS, max_len=10)[0]
    assert greedy.tokens == [EOS] and greedy.log_prob == pytest.approx(math.log(0.5))

    step, fed = markov(TABLE, 4)
    hyps = beam_search(step, None, SOS, EOS, beam_width=2, max_len=10)
    # step 1 keeps "<eos>" (finished) and "a"; step 2 "a b" and "a <eos>" (finished);
    # step 3 "a b <eos>"; nothing is left alive, so the search ends
    assert [h.tokens for h in hyps] == [[EOS], [2, 3, EOS]]
    assert hyps[0].log_prob == pytest.approx(math.log(0.5))
    assert hyps[1].log_prob == pytest.approx(math.log(0.4 * 0.95))
    assert fed == [[SOS], [2], [3]]             # a finished hypothesis is never extended
    assert all(h.tokens[-1] == EOS and SOS not in h.tokens for h in hyps)


def test_length_normalisation_changes_the_winner():
    step, _ = markov(TABLE, 4)
    best = beam_search(step, None, SOS, EOS, beam_width=2, max_len=10, length_penalty=1.0)[0]
    # log(0.38) / 3 = -0.32 beats log(0.5) / 1 = -0.69: the <eos> counts in the length
    assert best.tokens == [2, 3, EOS]
    assert best.score == pytest.approx(math.log(0.4 * 0.95) / 3)
    assert best.log_prob == pytest.approx(math.log(0.4 * 0.95))


def test_early_stop_when_no_live_hypothesis_can_win():
    table = {prev: {EOS: 0.9, 2: 0.06, 3: 0.04} for prev in (SOS, 2, 3)}
    step, fed = markov(table, 4)
    hyps = beam_search(step, None, SOS, EOS, beam_width=2, max_len=50)
    # after step 2, "<eos>" (0.9) and "a <eos>" (0.054) are finished and the best live "a a"
    # (0.0036) can only lose probability: stop
    assert [h.tokens for h in hyps] == [[EOS], [2, EOS]]
    assert len(fed) == 2


def test_max_len_cuts_without_eos():
    table = {SOS: {2: 0.7, 3: 0.3}, 2: {2: 0.6, 3: 0.4}, 3: {2: 0.8, 3: 0.2}}   # <eos> never
    step, _ = markov(table, 4)
    greedy = greedy_decode(step, None, batch_size=1, sos=SOS, eos=EOS, max_len=3)[0]
    assert greedy.tokens == [2, 2, 2] and greedy.log_prob == pytest.approx(math.log(0.7 * 0.6 * 0.6))
    hyps = beam_search(step, None, SOS, EOS, beam_width=2, max_len=3, length_penalty=1.0)
    # step 2 keeps "a a" (0.42) and "a b" (0.28); step 3 "a a a" (0.252) and "a b a" (0.224)
    assert [h.tokens for h in hyps] == [[2, 2, 2], [2, 3, 2]]
    assert hyps[1].log_prob == pytest.approx(math.log(0.224))
    assert hyps[1].score == pytest.approx(math.log(0.224) / 3)


# --- states ------------------------------------------------------------------------------------

@pytest.mark.parametrize("structure", ["tuple", "list", "dict", "nested"])
def test_state_reordering(structure):
    """The state carries the tokens consumed so far and the LSTM state; the step function checks
    that they agree (a rerun from scratch), and the returned log-probabilities are checked against
    a rerun of each hypothesis: a leaf left unreordered, or reordered wrongly, fails one of them."""
    model = ToyLSTM(vocab=5, seed=3, scale=1.5)
    h0, c0 = model.init_state(1)
    pack = {
        "tuple": lambda p, h, c: (p, h, c),
        "list": lambda p, h, c: [p, h, c],
        "dict": lambda p, h, c: {"prefix": p, "h": h, "c": c},
        "nested": lambda p, h, c: (p, {"hc": [h, c], "none": None}),
    }[structure]
    unpack = {
        "tuple": lambda s: s,
        "list": lambda s: s,
        "dict": lambda s: (s["prefix"], s["h"], s["c"]),
        "nested": lambda s: (s[0], *s[1]["hc"]),
    }[structure]
    calls = []

    def step(tokens, state):
        prefix, h, c = unpack(state)
        for i in range(len(tokens)):
            st = (h0, c0)
            for tok in prefix[i]:
                _, st = model.step(tok[None], st)
            torch.testing.assert_close((st[0][0], st[1][0]), (h[i], c[i]))
        log_p, (h, c) = model.step(tokens, (h, c))
        calls.append(len(tokens))
        return log_p, pack(torch.cat([prefix, tokens[:, None]], 1), h, c)

    init = pack(torch.empty((1, 0), dtype=torch.long), h0, c0)
    hyps = beam_search(step, init, SOS, EOS, beam_width=3, max_len=5)
    assert len(hyps) == 3
    for h in hyps:
        assert h.log_prob == pytest.approx(model.log_prob((h0, c0), h.tokens), abs=1e-10)
    plain = beam_search(model.step, (h0, c0), SOS, EOS, beam_width=3, max_len=5)
    assert [h.tokens for h in hyps] == [h.tokens for h in plain]
    assert calls[0] == 1 and max(calls) == 3    # the beam grows from one hypothesis


def test_namedtuple_state():
    from collections import namedtuple
    HC = namedtuple("HC", "h c")
    model = ToyLSTM(vocab=6, seed=4)
    h0, c0 = model.init_state(1)

    def step(tokens, state):
        assert isinstance(state, HC)
        log_p, (h, c) = model.step(tokens, (state.h, state.c))
        return log_p, HC(h, c)
    hyps = beam_search(step, HC(h0, c0), SOS, EOS, beam_width=4, max_len=6)
    plain = beam_search(model.step, (h0, c0), SOS, EOS, beam_width=4, max_len=6)
    assert [h.tokens for h in hyps] == [h.tokens for h in plain]


# --- errors ------------------------------------------------------------------------------------

def test_errors():
    model = ToyLSTM(vocab=5)
    with pytest.raises(UserError, match="dim 0 of size 1"):
        beam_search(model.step, model.init_state(2), SOS, EOS, beam_width=2, max_len=3)
    with pytest.raises(UserError, match="beam_width"):
        beam_search(model.step, model.init_state(1), SOS, EOS, beam_width=0, max_len=3)
    with pytest.raises(UserError, match="length_penalty"):
        beam_search(model.step, model.init_state(1), SOS, EOS, beam_width=2, max_len=3, length_penalty=-1)
    with pytest.raises(UserError, match="max_len"):
        greedy_decode(model.step, model.init_state(2), 2, SOS, EOS, max_len=0)
    with pytest.raises(UserError, match="different"):
        greedy_decode(model.step, model.init_state(2), 2, SOS, SOS, max_len=3)
    with pytest.raises(UserError, match="decoding state"):
        beam_search(lambda t, s: (torch.zeros(len(t), 5), s), {1, 2}, SOS, EOS, beam_width=2, max_len=3)
    with pytest.raises(UserError, match="log_probs"):
        greedy_decode(lambda t, s: (torch.zeros(5), s), None, 2, SOS, EOS, max_len=3)
    assert isinstance(greedy_decode(model.step, model.init_state(1), 1, SOS, EOS, 3)[0], Hypothesis)
