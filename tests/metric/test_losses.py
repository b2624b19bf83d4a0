"""Metric losses against pytorch-metric-learning (PML) and against the notes' formulas written out
pair by pair."""

import math

import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import ContrastiveLoss, TripletMarginLoss
from pytorch_metric_learning.reducers import AvgNonZeroReducer, MeanReducer
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from vislab.errors import UserError
from vislab.metric.losses import contrastive_loss, triplet_loss
from vislab.metric.miners import pairwise_distances, random_triplets


def batch(b=24, dim=8, classes=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, dim, generator=g, dtype=dtype) * 0.4
    labels = torch.randint(classes, (b,), generator=g) * 7 + 3      # labels need not be 0..C-1
    return emb, labels


def pml_triplet(emb, labels, indices, margin, squared, normalize, reduction):
    reducer = AvgNonZeroReducer() if reduction == "mean_nonzero" else MeanReducer()
    loss = TripletMarginLoss(margin=margin, reducer=reducer,
                             distance=LpDistance(normalize_embeddings=normalize, power=2 if squared else 1))
    return loss(emb, labels, indices)


def test_pairwise_distances_match_cdist():
    emb, _ = batch()
    ref = torch.cdist(emb, emb)
    torch.testing.assert_close(pairwise_distances(emb), ref)
    torch.testing.assert_close(pairwise_distances(emb, squared=True), ref ** 2)
    assert (pairwise_distances(emb).diagonal() == 0).all()


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("reduction", ["mean_nonzero", "mean"])
def test_triplet_loss_all_triplets_matches_pml(squared, normalize, reduction):
    emb, labels = batch()
    emb_ref = emb.clone().requires_grad_()
    emb = emb.requires_grad_()
    ours = triplet_loss(emb, labels, margin=0.3, squared=squared, normalize=normalize, reduction=reduction)
    ref = pml_triplet(emb_ref, labels, lmu.get_all_triplets_indices(labels), 0.3, squared, normalize, reduction)
    torch.testing.assert_close(ours, ref)
    ours.backward(), ref.backward()
    torch.testing.assert_close(emb.grad, emb_ref.grad)


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("reduction", ["mean_nonzero", "mean"])
def test_triplet_loss_mined_triplets_matches_pml(squared, reduction):
    emb, labels = batch(seed=1)
    triplets = random_triplets(labels, 50, torch.Generator().manual_seed(0))
    ours = triplet_loss(emb, labels, triplets, margin=0.5, squared=squared, reduction=reduction)
    ref = pml_triplet(emb, labels, triplets, 0.5, squared, False, reduction)
    torch.testing.assert_close(ours, ref)


def test_triplet_loss_by_hand():
    # a=0, p=1 at distance 1; n=2 at distance 1.5: plain max(0, 1 - 1.5 + 0.6) = 0.1,
    # squared max(0, 1 - 2.25 + 0.6) = 0.
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.5]])
    labels = torch.tensor([0, 0, 1])
    t = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    assert triplet_loss(emb, labels, t, margin=0.6).item() == pytest.approx(0.1)
    assert triplet_loss(emb, labels, t, margin=0.6, squared=True).item() == 0.0


def notes_contrastive(emb, labels, margin, form):
    """The notes' formulas written pair by pair: 002 (squared) and 003 (plain, y = 0 same)."""
    terms = []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            d = math.dist(emb[i].tolist(), emb[j].tolist())
            if form == "squared":
                terms.append(d ** 2 if labels[i] == labels[j] else max(0.0, margin - d) ** 2)
            else:
                y = float(labels[i] != labels[j])
                terms.append((1 - y) / 2 * d + y / 2 * max(0.0, margin - d))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("form", ["squared", "plain"])
def test_contrastive_loss_matches_the_notes(form):
    emb, labels = batch(b=16)
    assert contrastive_loss(emb, labels, margin=1.2, form=form).item() == \
        pytest.approx(notes_contrastive(emb, labels, 1.2, form), rel=1e-9)


def test_contrastive_loss_normalize():
    emb, labels = batch(b=16)
    unit = emb / emb.norm(dim=1, keepdim=True)
    assert contrastive_loss(emb, labels, normalize=True).item() == \
        pytest.approx(notes_contrastive(unit, labels, 1.0, "squared"), rel=1e-9)


def pml_pos_neg(emb, labels, pairs, margin, power):
    """PML's ContrastiveLoss, mean over the positive pairs and over the negative pairs separately.

    PML computes relu(D - pos_margin) on positives and relu(neg_margin - D) on negatives, D its
    distance (d, or d² with power=2), then averages each kind on its own and adds the two.
    """
    a, b = pairs
    same = labels[a] == labels[b]
    empty = torch.empty(0, dtype=torch.long)
    loss = ContrastiveLoss(pos_margin=0, neg_margin=margin, reducer=MeanReducer(),
                           distance=LpDistance(normalize_embeddings=False, power=power))
    return (loss(emb, labels, (a[same], b[same], empty, empty)),
            loss(emb, labels, (empty, empty, a[~same], b[~same])), int(same.sum()), int((~same).sum()))


def test_contrastive_plain_matches_pml_power_1():
    # Same per-pair terms as PML with power=1 (d and relu(m - d)) up to the factor 1/2; PML averages
    # positives and negatives separately and sums, we average over all pairs: weight by the counts.
    emb, labels = batch(b=20)
    pairs = torch.triu_indices(20, 20, 1)
    pos, neg, n_pos, n_neg = pml_pos_neg(emb, labels, pairs, 0.8, power=1)
    expected = (n_pos * pos + n_neg * neg) / (2 * (n_pos + n_neg))
    torch.testing.assert_close(contrastive_loss(emb, labels, tuple(pairs), margin=0.8, form="plain"), expected)


def test_contrastive_squared_positives_match_pml_power_2():
    # Only the positives of the squared form match PML (power=2 gives d²); PML's negative term
    # with power=2 is relu(m - d²), not Hadsell's relu(m - d)², so negatives are checked against
    # the notes' formula above instead.
    emb, labels = batch(b=20)
    a, b = torch.triu_indices(20, 20, 1)
    same = labels[a] == labels[b]
    pos, _, _, _ = pml_pos_neg(emb, labels, (a, b), 1.0, power=2)
    torch.testing.assert_close(contrastive_loss(emb, labels, (a[same], b[same]), form="squared"), pos)


@pytest.mark.parametrize("loss_fn", [
    lambda e, y: contrastive_loss(e, y, form="squared"),
    lambda e, y: contrastive_loss(e, y, form="plain"),
    lambda e, y: triplet_loss(e, y, margin=1.0),
    lambda e, y: triplet_loss(e, y, margin=1.0, squared=True),
    lambda e, y: triplet_loss(e, y, margin=1.0, normalize=True),
])
def test_no_nan_gradient_when_embeddings_coincide(loss_fn):
    emb = torch.tensor([[0.3, -0.2], [0.3, -0.2], [1.0, 1.0], [1.0, 1.0], [0.5, 0.5]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 0])
    loss = loss_fn(emb, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emb.grad).all()


def test_gradient_matches_autograd_of_cdist():
    emb, labels = batch(b=12)
    emb.requires_grad_()
    triplet_loss(emb, labels, margin=0.5, reduction="mean").backward()
    ours = emb.grad.clone()
    emb.grad = None
    a, p, n = lmu.get_all_triplets_indices(labels)
    d = torch.cdist(emb, emb)
    torch.relu(d[a, p] - d[a, n] + 0.5).mean().backward()
    torch.testing.assert_close(ours, emb.grad)


def test_nothing_to_sum_gives_a_zero_that_backpropagates():
    emb = torch.randn(4, 3, requires_grad=True)
    labels = torch.arange(4)                                       # no positives: no triplets
    loss = triplet_loss(emb, labels)
    loss.backward()
    assert loss.item() == 0.0 and (emb.grad == 0).all()
    empty = torch.empty(0, dtype=torch.long)
    assert contrastive_loss(emb, labels, (empty, empty)).item() == 0.0


def test_mean_nonzero_with_all_triplets_easy_is_zero():
    emb = torch.tensor([[0.0], [0.0], [5.0]])
    assert triplet_loss(emb, torch.tensor([0, 0, 1]), margin=0.5).item() == 0.0


def test_bad_names_raise_user_error():
    emb, labels = batch(b=6)
    with pytest.raises(UserError, match="squared"):
        contrastive_loss(emb, labels, form="hadsell")
    with pytest.raises(UserError, match="mean_nonzero"):
        triplet_loss(emb, labels, reduction="sum")


def test_gradient_with_coincident_embeddings_matches_pml():
    # torch.cdist, under PML, also gives a zero distance a zero gradient.
    emb = torch.tensor([[0.3, -0.2], [0.3, -0.2], [1.0, 1.0], [1.0, 1.0], [0.5, 0.5]], requires_grad=True)
    emb_ref = emb.detach().clone().requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 0])
    triplet_loss(emb, labels, margin=1.0).backward()
    pml_triplet(emb_ref, labels, lmu.get_all_triplets_indices(labels), 1.0, False, False, "mean_nonzero").backward()
    torch.testing.assert_close(emb.grad, emb_ref.grad)


def test_pairwise_distances_in_float32_under_autocast():
    emb = torch.randn(16, 8, generator=torch.Generator().manual_seed(0)).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = pairwise_distances(emb)
    assert d.dtype == torch.float32
    torch.testing.assert_close(d, torch.cdist(emb.float(), emb.float()), rtol=1e-5, atol=1e-5)
