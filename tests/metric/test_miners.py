"""Miners against pytorch-metric-learning's (PML) miners and against brute-force loops."""

import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.miners import BatchHardMiner, TripletMarginMiner
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from vislab.errors import UserError
from vislab.metric.losses import triplet_loss
from vislab.metric.miners import (
    MINERS,
    all_pairs,
    batch_all_triplets,
    batch_hard_triplets,
    hard_triplets,
    mine,
    pairwise_distances,
    random_pairs,
    random_triplets,
    semi_hard_triplets,
)


def batch(b=32, dim=6, classes=6, seed=0):
    # float64, so that no triplet sits within rounding of a category boundary in one library only
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, dim, generator=g, dtype=torch.float64) * 0.3
    labels = torch.randint(classes, (b,), generator=g) * 10 + 1
    return emb, labels


def as_set(triplets):
    return set(zip(*(t.tolist() for t in triplets)))


def lp(squared):
    return LpDistance(normalize_embeddings=False, power=2 if squared else 1)


def assert_valid(labels, triplets):
    a, p, n = triplets
    assert len(a) == len(p) == len(n) and a.dtype == torch.long
    assert (a != p).all() and (labels[a] == labels[p]).all() and (labels[a] != labels[n]).all()


def test_batch_all_matches_pml_and_brute_force():
    _, labels = batch()
    ours = as_set(batch_all_triplets(labels))
    assert ours == as_set(lmu.get_all_triplets_indices(labels))
    y = labels.tolist()
    assert ours == {(a, p, n) for a in range(32) for p in range(32) for n in range(32)
                    if a != p and y[a] == y[p] != y[n]}


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("margin", [0.1, 0.5])
def test_semi_hard_without_fallback_matches_pml(squared, margin):
    emb, labels = batch()
    ours = semi_hard_triplets(emb, labels, margin, squared, fallback=False)
    ref = TripletMarginMiner(margin, type_of_triplets="semihard", distance=lp(squared))(emb, labels)
    assert len(ours[0]) > 0 and as_set(ours) == as_set(ref)


@pytest.mark.parametrize("squared", [False, True])
def test_hard_matches_pml(squared):
    emb, labels = batch(seed=1)
    ours = hard_triplets(emb, labels, squared)
    ref = TripletMarginMiner(0.2, type_of_triplets="hard", distance=lp(squared))(emb, labels)
    assert len(ours[0]) > 0 and as_set(ours) == as_set(ref)


@pytest.mark.parametrize("squared", [False, True])
def test_hard_and_semi_hard_are_the_triplets_with_positive_loss(squared):
    emb, labels = batch(seed=2)
    a, p, n = batch_all_triplets(labels)
    d = torch.cdist(emb, emb) ** (2 if squared else 1)
    losing = torch.relu(d[a, p] - d[a, n] + 0.3) > 0
    expected = as_set((a[losing], p[losing], n[losing]))
    semi = as_set(semi_hard_triplets(emb, labels, 0.3, squared, fallback=False))
    hard = as_set(hard_triplets(emb, labels, squared))
    assert semi | hard == expected and not semi & hard


def test_semi_hard_fallback_is_facenets_farthest_negative():
    emb, labels = batch(seed=3)
    d = torch.cdist(emb, emb)
    y = labels.tolist()
    expected = set()
    for a in range(32):
        negs = [n for n in range(32) if y[n] != y[a]]
        for p in range(32):
            if p != a and y[p] == y[a] and negs and all(d[a, n] <= d[a, p] for n in negs):
                expected.add((a, p, max(negs, key=lambda n: d[a, n])))
    assert expected, "the test batch must have pairs with no negative beyond the positive"
    with_fallback = as_set(semi_hard_triplets(emb, labels, 0.2))
    assert with_fallback - as_set(semi_hard_triplets(emb, labels, 0.2, fallback=False)) == expected


def test_semi_hard_fallback_keeps_collapsed_embeddings_training():
    # All embeddings equal: no semi-hard triplet; the fallback still gives one per positive pair.
    emb, labels = torch.zeros(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert len(semi_hard_triplets(emb, labels, fallback=False)[0]) == 0
    triplets = semi_hard_triplets(emb, labels)
    assert len(triplets[0]) == 8
    assert_valid(labels, triplets)


@pytest.mark.parametrize("squared", [False, True])
def test_batch_hard_matches_pml(squared):
    emb, labels = batch(seed=4)
    labels[0] = 999                                                  # an anchor with no positive
    a, p, n = batch_hard_triplets(emb, labels, squared)
    ra, rp, rn = BatchHardMiner(distance=lp(squared))(emb, labels)
    # Indices may differ at ties; the anchors and the chosen distances may not.
    d = pairwise_distances(emb, squared)
    order = torch.argsort(ra)
    assert a.tolist() == ra[order].tolist() and 0 not in a.tolist()
    torch.testing.assert_close(d[a, p], d[ra, rp][order])
    torch.testing.assert_close(d[a, n], d[ra, rn][order])
    torch.testing.assert_close(triplet_loss(emb, labels, (a, p, n), margin=0.3, squared=squared, reduction="mean"),
                               triplet_loss(emb, labels, (ra, rp, rn), margin=0.3, squared=squared, reduction="mean"))


def test_batch_hard_by_brute_force():
    emb, labels = batch(seed=5)
    a, p, n = batch_hard_triplets(emb, labels)
    d = torch.cdist(emb, emb)
    y = labels.tolist()
    for i, j, k in zip(a.tolist(), p.tolist(), n.tolist()):
        assert d[i, j] == pytest.approx(max(d[i, q] for q in range(32) if q != i and y[q] == y[i]))
        assert d[i, k] == pytest.approx(min(d[i, q] for q in range(32) if y[q] != y[i]))


def test_random_triplets_valid_and_repeatable():
    _, labels = batch()
    t1 = random_triplets(labels, 200, torch.Generator().manual_seed(7))
    t2 = random_triplets(labels, 200, torch.Generator().manual_seed(7))
    assert len(t1[0]) == 200 and all(torch.equal(x, y) for x, y in zip(t1, t2))
    assert_valid(labels, t1)
    assert len(random_triplets(torch.arange(5), 10)[0]) == 0            # no positives: none


def test_random_pairs_balanced():
    _, labels = batch()
    a, b = random_pairs(labels, 101, torch.Generator().manual_seed(0))
    same = labels[a] == labels[b]
    assert len(a) == 101 and int(same.sum()) == 50 and (a < b).all()
    a2, b2 = random_pairs(labels, 101, torch.Generator().manual_seed(0))
    assert torch.equal(a, a2) and torch.equal(b, b2)


def test_random_pairs_with_one_kind_only():
    a, b = random_pairs(torch.arange(6), 10)                           # all labels distinct
    assert len(a) == 10 and (a != b).all()
    a, b = random_pairs(torch.zeros(6, dtype=torch.long), 10)          # all the same
    assert len(a) == 10 and (a < b).all()
    assert len(random_pairs(torch.zeros(1, dtype=torch.long), 10)[0]) == 0


def test_all_pairs():
    a, b = all_pairs(torch.zeros(5, dtype=torch.long))
    assert set(zip(a.tolist(), b.tolist())) == {(i, j) for i in range(5) for j in range(i + 1, 5)}


@pytest.mark.parametrize("name", MINERS)
def test_mine_dispatches_every_miner(name):
    emb, labels = batch()
    emb.requires_grad_()
    triplets = mine(name, emb, labels, margin=0.3, generator=torch.Generator().manual_seed(0))
    assert_valid(labels, triplets)
    assert len(triplets[0]) > 0


def test_mine_unknown_name():
    emb, labels = batch(b=4)
    with pytest.raises(UserError, match="semi_hard"):
        mine("semihard", emb, labels)
