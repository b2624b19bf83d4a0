import types

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection.ssd import SSD

from vislab.detection.sampling import hard_negative_mask, sample_balanced


def _brute_force(cls_loss, positive, ratio):
    """Per image: all positives, and the negatives sorted by (loss descending, index)."""
    mask = positive.clone()
    for b in range(cls_loss.shape[0]):
        negs = [i for i in range(cls_loss.shape[1]) if not positive[b, i]]
        negs.sort(key=lambda i: (-float(cls_loss[b, i]), i))
        n = ratio * int(positive[b].sum())
        for rank, i in enumerate(negs):
            if rank < n:
                mask[b, i] = True
    return mask


def _positives(num_pos, num_anchors, g):
    positive = torch.zeros(len(num_pos), num_anchors, dtype=torch.bool)
    for b, n in enumerate(num_pos):
        positive[b, torch.randperm(num_anchors, generator=g)[:n]] = True
    return positive


@pytest.mark.parametrize("ties", [False, True])
def test_hard_negatives_match_brute_force(ties):
    g = torch.Generator().manual_seed(0)
    # 3:1 with room to spare, fewer negatives than 3 * pos, no positive, all positive
    positive = _positives([4, 15, 0, 1, 40], 40, g)
    cls_loss = torch.rand(5, 40, generator=g)
    if ties:   # few distinct values: the lower index must win
        cls_loss = torch.randint(0, 3, (5, 40), generator=g).float()
    got = hard_negative_mask(cls_loss, positive)
    assert torch.equal(got, _brute_force(cls_loss, positive, 3))
    assert got.sum(1).tolist() == [16, 40, 0, 4, 40]


def test_hard_negative_counts_by_hand():
    loss = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.8, 0.2, 0.7, 0.4]])
    positive = torch.zeros(1, 8, dtype=torch.bool)
    positive[0, 0] = True
    # one positive -> the three negatives of highest loss: 0.9, 0.8, 0.7
    assert hard_negative_mask(loss, positive).nonzero()[:, 1].tolist() == [0, 1, 4, 6]
    assert hard_negative_mask(loss, positive, neg_pos_ratio=1).nonzero()[:, 1].tolist() == [0, 1]
    # 2.5 * 1 -> ranks 0, 1, 2 are < 2.5: the ceiling, as torchvision's `rank < ratio * num_pos`
    assert int(hard_negative_mask(loss, positive, neg_pos_ratio=2.5).sum()) == 4
    assert not hard_negative_mask(loss, torch.zeros_like(positive)).any()


def test_hard_negatives_match_torchvision_ssd_compute_loss():
    # torchvision's SSD.compute_loss, called on a stand-in `self`, returns only the loss; the
    # anchors it selected are those whose logits get a gradient (softmax - one-hot is never 0
    # for random logits), and random logits make the losses distinct, so its unstable sort
    # cannot break a tie differently
    g = torch.Generator().manual_seed(1)
    num_images, num_anchors, num_classes = 4, 60, 5
    num_pos = [3, 20, 0, 1]
    xy = torch.rand(num_images, num_anchors, 2, generator=g) * 50
    anchors = torch.cat((xy, xy + 10 + torch.rand(num_images, num_anchors, 2, generator=g) * 20), -1)
    targets, matched = [], []
    for n in num_pos:
        m = torch.full((num_anchors,), -1)
        m[torch.randperm(num_anchors, generator=g)[:n]] = torch.randint(0, 2, (n,), generator=g)
        matched.append(m)
        targets.append({"boxes": torch.tensor([[5.0, 5.0, 30.0, 40.0], [20.0, 10.0, 60.0, 35.0]]),
                        "labels": torch.tensor([1, 3])})
    logits = torch.randn(num_images, num_anchors, num_classes, generator=g, requires_grad=True)
    head = {"cls_logits": logits, "bbox_regression": torch.zeros(num_images, num_anchors, 4)}
    fake_ssd = types.SimpleNamespace(box_coder=tv_utils.BoxCoder((10.0, 10.0, 5.0, 5.0)),
                                     neg_to_pos_ratio=3.0)
    losses = SSD.compute_loss(fake_ssd, targets, head, list(anchors), matched)
    losses["classification"].backward()
    theirs = logits.grad.abs().sum(-1) > 0

    cls_targets = torch.stack([torch.where(m >= 0, t["labels"][m.clamp(min=0)], 0)
                               for m, t in zip(matched, targets)])
    cls_loss = F.cross_entropy(logits.detach().flatten(0, 1), cls_targets.flatten(),
                               reduction="none").view(num_images, num_anchors)
    ours = hard_negative_mask(cls_loss, torch.stack(matched) >= 0)
    assert torch.equal(ours, theirs)
    assert ours.sum(1).tolist() == [12, 60, 0, 4]


def test_hard_negative_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="B images"):
        hard_negative_mask(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        hard_negative_mask(torch.zeros(2, 3), torch.zeros(2, 3))


def _labels(g):
    """Images with: plenty of both, few foreground, few background, no foreground,
    class labels (box head) and nothing but ignored."""
    def image(n_pos, n_neg, n_ign, num_classes=1):
        lab = torch.cat((torch.randint(1, num_classes + 1, (n_pos,), generator=g),
                         torch.zeros(n_neg, dtype=torch.long), torch.full((n_ign,), -1)))
        return lab[torch.randperm(len(lab), generator=g)]
    return [image(100, 400, 50), image(5, 300, 20), image(80, 10, 30), image(0, 60, 5),
            image(40, 200, 0, num_classes=6), image(0, 0, 12)]


def test_sample_balanced_counts_and_ignored():
    g = torch.Generator().manual_seed(0)
    labels = _labels(g)
    pos, neg = sample_balanced(labels, 64, 0.25, generator=g)
    for lab, p, n in zip(labels, pos, neg):
        n_pos = min(int((lab >= 1).sum()), 16)
        assert int(p.sum()) == n_pos
        assert int(n.sum()) == min(int((lab == 0).sum()), 64 - n_pos)
        assert p.dtype == n.dtype == torch.bool and p.shape == n.shape == lab.shape
        assert (lab[p] >= 1).all() and (lab[n] == 0).all()   # so never an ignored -1
    assert [int(p.sum()) for p in pos] == [16, 5, 16, 0, 16, 0]
    assert [int(n.sum()) for n in neg] == [48, 59, 10, 60, 48, 0]


def test_sample_balanced_is_reproducible_and_leaves_global_rng_alone():
    labels = _labels(torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    a = sample_balanced(labels, 64, 0.25, generator=torch.Generator().manual_seed(5))
    b = sample_balanced(labels, 64, 0.25, generator=torch.Generator().manual_seed(5))
    c = sample_balanced(labels, 64, 0.25, generator=torch.Generator().manual_seed(6))
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(x, y) for x, y in zip(a[0] + a[1], b[0] + b[1]))
    assert not all(torch.equal(x, y) for x, y in zip(a[0] + a[1], c[0] + c[1]))


@pytest.mark.parametrize("batch, fraction", [(64, 0.25), (10, 0.5), (7, 0.3), (256, 1.0)])
def test_sample_balanced_matches_torchvision(batch, fraction):
    labels = _labels(torch.Generator().manual_seed(2))
    tv = tv_utils.BalancedPositiveNegativeSampler(batch, fraction)
    torch.manual_seed(3)
    tv_pos, tv_neg = tv(labels)
    torch.manual_seed(3)
    pos, neg = sample_balanced(labels, batch, fraction)
    assert [int(p.sum()) for p in pos] == [int(p.sum()) for p in tv_pos]
    assert [int(n.sum()) for n in neg] == [int(n.sum()) for n in tv_neg]
    # the same randperm calls in the same order: the same draws from the global generator
    assert all(torch.equal(p, t.bool()) for p, t in zip(pos + neg, tv_pos + tv_neg))


def test_sample_balanced_is_uniform_and_takes_rows_of_a_tensor():
    labels = torch.tensor([[1, 1, 1, 1, 0, 0, -1, -1]] * 400)
    pos, neg = sample_balanced(labels, 4, 0.5, generator=torch.Generator().manual_seed(0))
    counts = torch.stack(pos).sum(0)
    assert counts[6:].sum() == 0 and torch.stack(neg)[:, 4:6].all()
    # each of the 4 foreground drawn 2 times in 4: about 200 of 400
    assert ((counts[:4] - 200).abs() < 40).all()


def test_sample_balanced_rejects_bad_input():
    with pytest.raises(ValueError, match="positive_fraction"):
        sample_balanced([torch.zeros(3)], 4, 1.5)
    with pytest.raises(ValueError, match="1-D"):
        sample_balanced([torch.zeros(2, 3)], 4, 0.5)
