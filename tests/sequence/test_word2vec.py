"""vislab.sequence.word2vec: the skip-gram pairs and CBOW windows against loops, the SGNS loss
against the paper's formula written out sample by sample, the noise distribution against
counts ** 0.75 from many draws, cosine queries against torch's cosine_similarity, the analogy
and neighbour scores on vectors built by hand, training on a corpus of two word groups that never
share a sentence, and the copy of vectors into a model's word table."""

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from vislab.errors import UserError
from vislab.sequence.word2vec import (
    Word2Vec,
    analogy,
    analogy_accuracy,
    cbow_examples,
    load_into_embedding,
    load_word_vectors,
    nearest,
    neighbour_agreement,
    sample_negatives,
    save_word_vectors,
    sgns_loss,
    skipgram_pairs,
    subsample_keep_prob,
    train_word2vec,
    unigram_distribution,
)

F64 = torch.float64


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# --- examples ----------------------------------------------------------------------------------

@pytest.mark.parametrize("window", [1, 2, 3])
def test_skipgram_pairs_against_loop(window):
    sentences = [[0, 1, 2, 3, 4], [5, 6], [7], [8, 9, 10]]
    expected = Counter((s[i], s[j]) for s in sentences for i in range(len(s)) for j in range(len(s))
                       if i != j and abs(i - j) <= window)
    centres, contexts = skipgram_pairs(sentences, window)
    assert Counter(zip(centres.tolist(), contexts.tolist())) == expected
    assert len(centres) == sum(expected.values())


def test_skipgram_pairs_hand_example():
    centres, contexts = skipgram_pairs([[0, 1, 2], [3, 4]], window=1)
    assert sorted(zip(centres.tolist(), contexts.tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3)]
    # one stream, as a list of ints or a 1-D tensor: the window crosses 2 -> 3
    for stream in ([0, 1, 2, 3], torch.tensor([0, 1, 2, 3])):
        centres, contexts = skipgram_pairs(stream, window=1)
        assert sorted(zip(centres.tolist(), contexts.tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)]


def test_cbow_examples_hand_example():
    contexts, mask, centres = cbow_examples([[5, 6, 7], [8]], window=1)   # 8 has no context
    assert torch.equal(centres, torch.tensor([5, 6, 7]))
    assert torch.equal(mask, torch.tensor([[False, True], [True, True], [True, False]]))
    assert torch.equal(contexts[mask], torch.tensor([6, 5, 7, 6]))
    contexts, mask, centres = cbow_examples([[1, 2, 3, 4, 5]], window=2)
    assert torch.equal(contexts[2], torch.tensor([1, 2, 4, 5])) and bool(mask[2].all())
    assert torch.equal(contexts[0][mask[0]], torch.tensor([2, 3]))


# --- noise distribution and subsampling -------------------------------------------------------

def test_unigram_distribution_hand_values():
    probs = unigram_distribution(torch.tensor([1, 16, 81, 0]))
    torch.testing.assert_close(probs, torch.tensor([1, 8, 27, 0], dtype=F64) / 36)


def test_negative_samples_follow_counts_to_three_quarters():
    counts = torch.tensor([500, 120, 60, 10, 3, 1, 0, 250])
    noise = unigram_distribution(counts)
    draws = sample_negatives(noise, (40_000, 5), torch.Generator().manual_seed(0))
    assert draws.shape == (40_000, 5)
    empirical = torch.bincount(draws.flatten(), minlength=len(counts)).double() / draws.numel()
    expected = counts.double() ** 0.75 / (counts.double() ** 0.75).sum()
    torch.testing.assert_close(empirical, expected, atol=3e-3, rtol=0)
    assert empirical[6] == 0
    # and not the plain unigram distribution: rare words are drawn more often than their frequency
    unigram = counts.double() / counts.sum()
    assert empirical[5] > 2 * unigram[5] and empirical[0] < unigram[0] - 0.05


def test_subsample_keep_prob():
    keep = subsample_keep_prob(torch.tensor([900, 100]), t=0.01)
    torch.testing.assert_close(keep, torch.tensor([math.sqrt(0.01 / 0.9), math.sqrt(0.01 / 0.1)], dtype=F64))
    assert torch.equal(subsample_keep_prob(torch.tensor([900, 100]), t=1.0), torch.ones(2, dtype=F64))


# --- loss and model ----------------------------------------------------------------------------

def sgns_by_hand(h, u_pos, u_neg) -> list[float]:
    """-log σ(u_o·v_c) - Σ_k log σ(-u_k·v_c), one sample at a time, with math."""
    def sigmoid(x):
        return 1.0 / (1.0 + math.exp(-x))
    out = []
    for b in range(len(h)):
        loss = -math.log(sigmoid(float(u_pos[b] @ h[b])))
        for k in range(u_neg.shape[1]):
            loss -= math.log(sigmoid(-float(u_neg[b, k] @ h[b])))
        out.append(loss)
    return out


def test_sgns_loss_against_the_formula():
    h, u_pos, u_neg = randn(6, 4, seed=0), randn(6, 4, seed=1), randn(6, 5, 4, seed=2)
    ref = torch.tensor(sgns_by_hand(h, u_pos, u_neg), dtype=F64)
    torch.testing.assert_close(sgns_loss(h, u_pos, u_neg, reduction="none"), ref, atol=1e-6, rtol=0)
    assert float(sgns_loss(h, u_pos, u_neg)) == pytest.approx(float(ref.mean()), abs=1e-6)
    assert float(sgns_loss(h, u_pos, u_neg, reduction="sum")) == pytest.approx(float(ref.sum()), abs=1e-6)
    # stable where log(sigmoid(x)) in floats is not
    big = sgns_loss(torch.full((1, 1), 100.0), torch.full((1, 1), -100.0), torch.zeros(1, 1, 1))
    assert math.isfinite(float(big)) and float(big) == pytest.approx(1e4 + math.log(2))
    with pytest.raises(UserError):
        sgns_loss(h, u_pos, u_neg, reduction="max")


def test_word2vec_forward():
    model = Word2Vec(10, 4, mode="skipgram").double().requires_grad_(False)
    model.out_embed.weight.data.copy_(randn(10, 4, seed=3))
    centres, targets, negs = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6]), torch.tensor([[7, 8], [9, 0], [1, 1]])
    v, u = model.in_embed.weight.detach(), model.out_embed.weight.detach()
    expected = sum(sgns_by_hand(v[centres], u[targets], u[negs])) / 3
    assert float(model(centres, targets, negs)) == pytest.approx(expected, abs=1e-10)
    # full softmax: -log softmax(h U^T)[target], by hand
    logits = v[centres] @ u.T
    expected = float((torch.logsumexp(logits, 1) - logits[range(3), targets]).mean())
    assert float(model(centres, targets)) == pytest.approx(expected, abs=1e-10)

    cbow = Word2Vec(10, 4, mode="cbow").double().requires_grad_(False)
    ctx = torch.tensor([[1, 2, 0, 3], [4, 4, 5, 6]])
    mask = torch.tensor([[True, True, False, True], [True, True, True, False]])
    v = cbow.in_embed.weight.detach()
    h = torch.stack([(v[1] + v[2] + v[3]) / 3, (2 * v[4] + v[5]) / 3])
    torch.testing.assert_close(cbow.hidden(ctx, mask), h)


def test_init_weights():
    model = Word2Vec(50, 8)
    assert model.embeddings.abs().max() <= 0.5 / 8 and model.embeddings.std() > 0
    assert torch.equal(model.out_embed.weight, torch.zeros(50, 8))
    a, b = Word2Vec(50, 8), Word2Vec(50, 8)
    a.init_weights(torch.Generator().manual_seed(1))
    b.init_weights(torch.Generator().manual_seed(1))
    assert torch.equal(a.embeddings, b.embeddings)


# --- queries -----------------------------------------------------------------------------------

def test_nearest_against_cosine_similarity():
    emb = randn(20, 5, seed=4)
    ids, sims = nearest(emb, 7, k=4)
    ref = F.cosine_similarity(emb, emb[7][None], dim=1)
    ref[7] = -2
    order = ref.argsort(descending=True)[:4]
    assert torch.equal(ids, order)
    torch.testing.assert_close(sims, ref[order])
    assert 7 not in nearest(emb, 7, k=19)[0].tolist()


def test_analogy_by_construction():
    # dimensions (royal, male, female): king - man + woman = queen exactly
    emb = torch.tensor([[0.0, 1.0, 0.0],     # 0 man
                        [1.0, 1.0, 0.0],     # 1 king
                        [0.0, 0.0, 1.0],     # 2 woman
                        [1.0, 0.0, 1.0],     # 3 queen
                        [1.0, 0.0, 0.0]])    # 4 crown
    ids, sims = analogy(emb, 0, 1, 2, k=2)
    assert ids.tolist() == [3, 4]
    assert float(sims[0]) == pytest.approx(1.0, abs=0.05)


def test_analogy_excludes_the_inputs():
    emb = randn(30, 4, seed=1)
    a, b, c = 3, 11, 17
    unit = F.normalize(emb, dim=1)
    ref = F.cosine_similarity(unit, (unit[b] - unit[a] + unit[c])[None], dim=1)
    assert int(ref.argmax()) in (a, b, c)        # without the exclusion an input would win
    ref[[a, b, c]] = -2
    order = ref.argsort(descending=True)[:5]
    ids, sims = analogy(emb, a, b, c, k=5)
    assert torch.equal(ids, order)
    torch.testing.assert_close(sims, ref[order])
    with pytest.raises(UserError):
        analogy(emb, a, b, c, k=28)


def test_analogy_accuracy_by_construction():
    emb = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    # man : king :: woman : queen is right; king : man :: queen : crown is wrong (the answer is woman)
    assert analogy_accuracy(emb, [(0, 1, 2, 3)]) == 1.0
    assert analogy_accuracy(emb, [(0, 1, 2, 3), (1, 0, 3, 4)]) == 0.5
    with pytest.raises(UserError):
        analogy_accuracy(emb, [])


def test_neighbour_agreement_by_hand():
    # two tight clusters {0, 1} and {2, 3}, and word 4 nearest to 0 though grouped with 2 and 3
    emb = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99], [0.95, 0.3]])
    assert neighbour_agreement(emb, [[0, 1], [2, 3]]) == 1.0
    # angles 0°, 5.7°, 90°, 84.2°, 17.5°: 4's nearest is 1 (11.8° away), outside its group; 4 of 5
    assert neighbour_agreement(emb, [[0, 1], [2, 3, 4]]) == pytest.approx(4 / 5)
    assert neighbour_agreement(emb, [[0, 1], [2]]) == 1.0         # a group of one is skipped
    with pytest.raises(UserError):
        neighbour_agreement(emb, [[0], [2]])


# --- training ----------------------------------------------------------------------------------

THE, AND = 0, 1
COLOURS, CLOTHES = [2, 3, 4, 5, 6], [7, 8, 9, 10, 11]


def two_groups(n: int = 400, seed: int = 0) -> list[list[int]]:
    """Sentences "the X Y and the Z" with X, Y, Z all colours or all clothes: a colour's context
    holds colours and function words, never clothes."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        group = COLOURS if float(torch.rand(1, generator=gen)) < 0.5 else CLOTHES
        x, y, z = (group[i] for i in torch.randint(0, 5, (3,), generator=gen).tolist())
        out.append([THE, x, y, AND, THE, z])
    return out


@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
def test_training_separates_the_groups(mode):
    model, history = train_word2vec(two_groups(), vocab_size=12, dim=16, window=2, negatives=5, epochs=15,
                                    batch_size=128, mode=mode, seed=0)
    assert history[-1] < history[0]
    for group in (COLOURS, CLOTHES):
        for word in group:
            ids, _ = nearest(model.embeddings, word, k=3)
            assert set(ids.tolist()) <= set(group), (word, ids)


def test_training_is_reproducible():
    corpus = two_groups(100)
    kw = {"vocab_size": 12, "dim": 8, "epochs": 2, "batch_size": 64, "subsample": 0.05, "seed": 3}
    a, hist_a = train_word2vec(corpus, **kw)
    b, hist_b = train_word2vec(corpus, **kw)
    assert torch.equal(a.embeddings, b.embeddings) and hist_a == hist_b
    c, _ = train_word2vec(corpus, **{**kw, "seed": 4})
    assert not torch.equal(a.embeddings, c.embeddings)
    _, hist_d = train_word2vec(corpus, **{**kw, "negatives": 0})     # full softmax
    assert all(math.isfinite(x) for x in hist_d)


def test_load_into_embedding_keeps_directions_and_the_tables_spread():
    table = torch.nn.Embedding(6, 4, padding_idx=0)
    before = table.weight.detach().clone()
    vectors = randn(6, 4, seed=9).float() * 0.01
    rows = [2, 3, 5]
    load_into_embedding(table.weight, vectors, rows)
    after = table.weight.detach()
    torch.testing.assert_close(F.cosine_similarity(after[rows], vectors[rows], dim=1), torch.ones(3))
    ratio = after[rows] / vectors[rows]                      # one scale for every copied row
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio[0, 0])))
    assert float(after[rows].std()) == pytest.approx(float(before[rows].std()), rel=1e-5)
    assert torch.equal(after[[0, 1, 4]], before[[0, 1, 4]])  # <pad> and unseen rows untouched
    with pytest.raises(UserError):
        load_into_embedding(table.weight, randn(6, 5), rows)


def test_word_vectors_round_trip(tmp_path):
    path = tmp_path / "v.pt"
    vectors = randn(3, 4).float()
    save_word_vectors(str(path), ["a", "b", "c"], vectors, mode="cbow")
    words, back, meta = load_word_vectors(str(path))
    assert words == ["a", "b", "c"] and torch.equal(back, vectors) and meta == {"mode": "cbow"}
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    for bad in (tmp_path / "bad.pt", tmp_path / "missing.pt"):
        with pytest.raises(UserError):
            load_word_vectors(str(bad))
    torch.save({"words": ["a"], "vectors": randn(2, 4)}, tmp_path / "mismatch.pt")
    with pytest.raises(UserError):
        load_word_vectors(str(tmp_path / "mismatch.pt"))


def test_errors():
    with pytest.raises(UserError):
        Word2Vec(10, 4, mode="glove")
    with pytest.raises(UserError):
        skipgram_pairs([[1, 2]], window=0)
    with pytest.raises(UserError):
        train_word2vec([[1, 12]], vocab_size=12)
    with pytest.raises(UserError):
        train_word2vec([[1, 2]], vocab_size=12, negatives=-1)
    with pytest.raises(UserError):
        skipgram_pairs([], window=1)
