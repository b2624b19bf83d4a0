"""vislab.metrics.text against sacrebleu (2.6.0), NLTK's corpus_bleu (3.10.4), values computed by
hand and torch's cross-entropy."""

import math
import random
import warnings

import pytest
import sacrebleu
import torch
import torch.nn.functional as F
from nltk.translate import bleu_score as nltk_bleu
from sacrebleu.metrics import BLEU

from vislab.errors import UserError
from vislab.metrics.text import bleu_scores, corpus_bleu, perplexity, token_accuracy

REL = 1e-9
SACRE_METHOD = {None: "none", "floor": "floor", "add-k": "add-k"}


def sacre(hyps, refs, max_n=4, smoothing=None, value=None) -> float:
    """sacrebleu on pre-tokenised text, as a fraction.  sacrebleu takes reference streams
    (stream j holds the j-th reference of every segment); a segment with fewer references is
    padded with None, which sacrebleu documents as "no reference" ('' would be an empty one)."""
    streams = [[" ".join(r[j]) if j < len(r) else None for r in refs] for j in range(max(map(len, refs)))]
    kwargs = dict(smooth_method=SACRE_METHOD[smoothing], smooth_value=value, tokenize="none", force=True)
    if max_n == 4:
        score = sacrebleu.corpus_bleu([" ".join(h) for h in hyps], streams, **kwargs)
    else:
        score = BLEU(max_ngram_order=max_n, **kwargs).corpus_score([" ".join(h) for h in hyps], streams)
    return score.score / 100


def nltk(hyps, refs, max_n=4, smoothing=None, value=None):
    fn = {None: None,
          "floor": nltk_bleu.SmoothingFunction(epsilon=0.1 if value is None else value).method1,
          "add-k": nltk_bleu.SmoothingFunction().method2}[smoothing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # method0 warns on a zero precision
        return nltk_bleu.corpus_bleu(refs, hyps, weights=(1 / max_n,) * max_n, smoothing_function=fn)


def random_corpus(seed: int, n: int = 30, vocab: int = 3, hyp_len=(4, 12), ref_len=(4, 12), max_refs: int = 3):
    """Segments over a small vocabulary (so that 4-grams match), 1..max_refs references each."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    hyps = [[rng.choice(words) for _ in range(rng.randint(*hyp_len))] for _ in range(n)]
    refs = [[[rng.choice(words) for _ in range(rng.randint(*ref_len))] for _ in range(rng.randint(1, max_refs))]
            for _ in range(n)]
    return hyps, refs


CORPORA = {                                 # name: (hypothesis lengths, reference lengths)
    "mixed": ((4, 12), (4, 12)),
    "short": ((4, 7), (8, 14)),            # brevity penalty well below 1
    "long": ((10, 16), (4, 9)),            # hypotheses longer than every reference: BP = 1
}


@pytest.mark.parametrize("smoothing", [None, "floor", "add-k"])
@pytest.mark.parametrize("corpus", list(CORPORA))
@pytest.mark.parametrize("seed", range(3))
def test_corpus_bleu_matches_sacrebleu_and_nltk(seed, corpus, smoothing):
    hyps, refs = random_corpus(seed, hyp_len=CORPORA[corpus][0], ref_len=CORPORA[corpus][1])
    ours = corpus_bleu(hyps, refs, smoothing=smoothing)
    assert ours > 0
    assert ours == pytest.approx(sacre(hyps, refs, smoothing=smoothing), rel=REL)
    assert ours == pytest.approx(nltk(hyps, refs, smoothing=smoothing), rel=REL)
    bp = bleu_scores(hyps, refs)["brevity_penalty"]
    assert {"mixed": True, "short": bp < 0.8, "long": bp == 1.0}[corpus]


@pytest.mark.parametrize("max_n", [1, 2, 3, 5])
def test_other_orders_match_sacrebleu_and_nltk(max_n):
    hyps, refs = random_corpus(10 + max_n, hyp_len=(5, 12))
    ours = corpus_bleu(hyps, refs, max_n=max_n)
    assert ours > 0
    assert ours == pytest.approx(sacre(hyps, refs, max_n=max_n), rel=REL)
    assert ours == pytest.approx(nltk(hyps, refs, max_n=max_n), rel=REL)


@pytest.mark.parametrize("smoothing,value", [("floor", 0.01), ("floor", 0.5), ("add-k", 1.0), ("add-k", 3.0)])
def test_smoothing_values_match_sacrebleu(smoothing, value):
    hyps, refs = random_corpus(23, vocab=8, n=6)            # sparse: no 3-gram and no 4-gram matches
    assert bleu_scores(hyps, refs)["matches"][2:] == [0, 0]
    ours = corpus_bleu(hyps, refs, smoothing=smoothing, smoothing_value=value)
    assert ours > 0
    assert ours == pytest.approx(sacre(hyps, refs, smoothing=smoothing, value=value), rel=REL)
    if smoothing == "floor" or value == 1.0:                # NLTK's method2 has k = 1 built in
        assert ours == pytest.approx(nltk(hyps, refs, smoothing=smoothing, value=value), rel=REL)


def test_bleu_scores_cumulative_orders():
    hyps, refs = random_corpus(30, hyp_len=(4, 10))
    out = bleu_scores(hyps, refs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_nltk = nltk_bleu.corpus_bleu(refs, hyps, weights=[(1 / n,) * n for n in range(1, 5)])
    for n in range(1, 5):
        assert out[f"bleu{n}"] > 0
        assert out[f"bleu{n}"] == pytest.approx(ref_nltk[n - 1], rel=REL)
        assert out[f"bleu{n}"] == pytest.approx(sacre(hyps, refs, max_n=n), rel=REL)
        assert out[f"bleu{n}"] == pytest.approx(corpus_bleu(hyps, refs, max_n=n), rel=REL)
    stats = sacrebleu.corpus_bleu([" ".join(h) for h in hyps], [[" ".join(r[0]) for r in refs]] + [
        [" ".join(r[j]) if j < len(r) else None for r in refs] for j in (1, 2)], tokenize="none", force=True)
    assert out["matches"] == stats.counts and out["totals"] == stats.totals
    assert out["hyp_len"] == stats.sys_len and out["ref_len"] == stats.ref_len
    assert out["brevity_penalty"] == pytest.approx(stats.bp, rel=REL)
    assert out["precisions"] == pytest.approx([p / 100 for p in stats.precisions], rel=REL)


def test_hand_computed_example():
    # hypothesis a b c d, reference a b c e f: p1 = 3/4, p2 = 2/3 (ab, bc), p3 = 1/2 (abc), p4 = 0/1;
    # c = 4 < r = 5, so BP = exp(1 - 5/4).
    hyps, refs = [["a", "b", "c", "d"]], [[["a", "b", "c", "e", "f"]]]
    bp = math.exp(-0.25)
    out = bleu_scores(hyps, refs)
    assert out["precisions"] == [3 / 4, 2 / 3, 1 / 2, 0.0]
    assert out["brevity_penalty"] == pytest.approx(bp, rel=1e-15)
    assert out["bleu1"] == pytest.approx(bp * 3 / 4, rel=1e-12)
    assert out["bleu2"] == pytest.approx(bp * (3 / 4 * 2 / 3) ** (1 / 2), rel=1e-12)
    assert out["bleu3"] == pytest.approx(bp * (1 / 4) ** (1 / 3), rel=1e-12)
    assert out["bleu4"] == 0.0 == corpus_bleu(hyps, refs)
    # floor: p4 = 0.1 / 1; add-k (k = 1, orders >= 2): p2 = 3/4, p3 = 2/3, p4 = 1/2
    floor, add_one = bp * (3 / 4 * 2 / 3 * 1 / 2 * 0.1) ** 0.25, bp * (3 / 4 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert corpus_bleu(hyps, refs, smoothing="floor") == pytest.approx(floor, rel=1e-12)
    assert corpus_bleu(hyps, refs, smoothing="add-k") == pytest.approx(add_one, rel=1e-12)
    assert corpus_bleu(hyps, refs, smoothing="floor") == pytest.approx(sacre(hyps, refs, smoothing="floor"), rel=REL)


def test_clipping_takes_the_max_over_references():
    # Papineni et al. 2002, Sec. 2.1: "the" occurs at most twice in one reference, so 7 "the" score 2/7
    hyp = ["the"] * 7
    refs = [["the", "cat", "is", "on", "the", "mat"], ["there", "is", "a", "cat", "on", "the", "mat"]]
    assert bleu_scores([hyp], [refs], max_n=1)["precisions"] == [2 / 7]
    # the max over references, not their sum: "x" twice in one reference and once in another clips at 2
    assert bleu_scores([["x"] * 4], [[["x", "x", "y"], ["x", "y", "y"]]], max_n=1)["precisions"] == [2 / 4]


def test_brevity_penalty_closest_reference_and_tie_rule():
    # c = 5 with references of lengths 4 and 6: both 1 away, the shorter (4) counts, so c > r and BP = 1
    hyp = ["a"] * 5
    refs = [["a"] * 6, ["a"] * 4]
    out = bleu_scores([hyp], [refs], max_n=1)
    assert out["ref_len"] == 4 and out["brevity_penalty"] == 1.0
    assert out["bleu1"] == pytest.approx(sacre([hyp], [refs], max_n=1), rel=REL) == nltk([hyp], [refs], max_n=1)
    # the closest reference, neither the shortest nor the longest: lengths 2, 7, 12 for c = 6 -> r = 7
    out = bleu_scores([["a"] * 6], [[["a"] * 2, ["a"] * 12, ["a"] * 7]], max_n=1)
    assert out["ref_len"] == 7 and out["brevity_penalty"] == pytest.approx(math.exp(1 - 7 / 6), rel=1e-15)
    # corpus level: r and c are summed over segments before the penalty (3 + 6 vs 4 + 6)
    out = bleu_scores([["a"] * 3, ["a"] * 6], [[["a"] * 4], [["a"] * 6]], max_n=1)
    assert (out["hyp_len"], out["ref_len"]) == (9, 10)
    assert out["brevity_penalty"] == pytest.approx(math.exp(1 - 10 / 9), rel=1e-15)
    # c == r: no penalty; an empty corpus of hypotheses: BP = 0
    assert bleu_scores([["a"] * 4], [[["a"] * 4]], max_n=1)["brevity_penalty"] == 1.0
    assert bleu_scores([[]], [[["a"]]], max_n=1)["brevity_penalty"] == 0.0


def test_zero_precision_without_smoothing_is_zero():
    hyps, refs = [["a", "b", "a", "b"], ["b", "a", "c", "c"]], [[["a", "b", "c", "a"]], [["c", "b", "a", "c"]]]
    out = bleu_scores(hyps, refs)
    assert out["matches"][3] == 0 and out["bleu4"] == 0.0 and out["bleu3"] > 0
    assert sacre(hyps, refs) == 0.0
    assert nltk(hyps, refs) < 1e-60                 # sys.float_info.min in NLTK's log: about 1e-77
    with pytest.warns(UserWarning, match="0 counts of 4-gram"):
        nltk_bleu.corpus_bleu(refs, hyps)
    # no unigram match at all: 0 even with smoothing, in all three
    no_match = ([["x", "y", "z", "x"]], [[["a", "b", "c", "d"]]])
    for smoothing in (None, "floor", "add-k"):
        assert corpus_bleu(*no_match, smoothing=smoothing) == 0.0 == sacre(*no_match, smoothing=smoothing)
        assert nltk(*no_match, smoothing=smoothing) == 0


def test_hypotheses_shorter_than_max_n_follow_sacrebleu_not_nltk():
    # a hypothesis of fewer than n tokens has no n-gram: sacrebleu adds 0 to the order-n denominator,
    # NLTK adds 1 (its max(1, count)); vislab counts as sacrebleu.
    hyps, refs = random_corpus(40, hyp_len=(1, 6), ref_len=(3, 8))
    assert min(map(len, hyps)) < 4
    for smoothing in (None, "floor", "add-k"):
        assert corpus_bleu(hyps, refs, smoothing=smoothing) == pytest.approx(
            sacre(hyps, refs, smoothing=smoothing), rel=REL)
    hyps, refs = [["a", "b"], ["a", "b", "c", "d"]], [[["a", "b", "c"]], [["a", "b", "c", "d"]]]
    out = bleu_scores(hyps, refs)
    assert out["totals"] == [6, 4, 2, 1]             # NLTK's denominators would be 6, 4, 3, 2
    assert out["precisions"] == [1.0, 1.0, 1.0, 1.0]
    assert out["bleu4"] == pytest.approx(math.exp(1 - 7 / 6), rel=1e-12)
    assert out["bleu4"] == pytest.approx(sacre(hyps, refs), rel=REL)
    assert nltk(hyps, refs) == pytest.approx(math.exp(1 - 7 / 6) * (2 / 3 * 1 / 2) ** 0.25, rel=1e-12)
    # an order with no hypothesis n-gram in the whole corpus: p = 0/0 -> BLEU 0 (sacrebleu too)
    assert corpus_bleu([["a", "b"]], [[["a", "b"]]]) == 0.0 == sacre([["a", "b"]], [[["a", "b"]]])
    assert corpus_bleu([["a", "b"]], [[["a", "b"]]], smoothing="add-k") == pytest.approx(
        sacre([["a", "b"]], [[["a", "b"]]], smoothing="add-k"), rel=REL)


def test_integer_and_tensor_tokens():
    hyps, refs = random_corpus(50)
    ids = {f"w{i}": i for i in range(3)}
    int_hyps = [torch.tensor([ids[w] for w in h]) for h in hyps]
    int_refs = [[[ids[w] for w in r] for r in rs] for rs in refs]
    assert corpus_bleu(int_hyps, int_refs) == corpus_bleu(hyps, refs)


def test_bleu_input_errors():
    with pytest.raises(UserError, match="string"):
        corpus_bleu(["a b c"], [[["a", "b", "c"]]])
    with pytest.raises(UserError, match="list of reference token lists"):
        corpus_bleu([["a"]], [["a b c"]])
    with pytest.raises(UserError, match="list of reference token lists"):
        corpus_bleu([["a", "b"]], [["a", "b"]])                 # one reference not wrapped in a list
    with pytest.raises(UserError, match="list of tokens"):
        corpus_bleu([[1, 2]], [[1, 2]])
    with pytest.raises(UserError, match="2 hypotheses but 1"):
        corpus_bleu([["a"], ["b"]], [[["a"]]])
    with pytest.raises(UserError, match="non-empty"):
        corpus_bleu([["a"]], [[]])
    with pytest.raises(UserError, match="empty"):
        corpus_bleu([], [])
    with pytest.raises(UserError, match="smoothing"):
        corpus_bleu([["a"]], [[["a"]]], smoothing="exp")
    with pytest.raises(UserError, match="without a smoothing"):
        corpus_bleu([["a"]], [[["a"]]], smoothing_value=0.1)
    with pytest.raises(UserError, match="max_n"):
        corpus_bleu([["a"]], [[["a"]]], max_n=0)


def test_token_accuracy():
    pad = 0
    target = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 0, 0, 0]])
    pred = torch.tensor([[5, 1, 7, 0, 3], [8, 2, 4, 4, 4]])
    assert token_accuracy(pred, target, pad) == 3 / 5             # 5, 7, 8 right; pads not counted
    assert token_accuracy(pred, target, None) == 4 / 10          # and 0 == 0 at one pad position
    logits = F.one_hot(pred, 10).float()                         # (B, T, V): argmax gives pred
    assert token_accuracy(logits, target, pad) == 3 / 5
    with pytest.raises(UserError, match="shape"):
        token_accuracy(pred[:, :3], target, pad)
    with pytest.raises(UserError, match="padding"):
        token_accuracy(pred, torch.zeros_like(target), pad)


def test_perplexity_is_exp_of_the_mean_token_nll():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g, dtype=torch.float64)
    target = torch.randint(1, 11, (3, 7), generator=g)
    target[:, 5:] = 0
    nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=0, reduction="sum")
    n = int((target != 0).sum())
    expected = torch.exp(F.cross_entropy(logits.transpose(1, 2), target, ignore_index=0))   # mean over non-pad
    assert perplexity(nll, n) == pytest.approx(float(expected), rel=1e-12)
    assert perplexity(0.0, 5) == 1.0
    assert perplexity(10 * math.log(4), 10) == pytest.approx(4.0, rel=1e-12)   # uniform over 4 tokens
    assert perplexity(1e6, 1) == math.inf
    with pytest.raises(UserError, match="n_tokens"):
        perplexity(1.0, 0)
