"""The P x K class-balanced batch loader."""

import pytest
import torch

from vislab.config import AugmentConfig
from vislab.data.sampler import BalancedBatchLoader
from vislab.errors import UserError


def data(per_class=(20, 20, 20, 20, 20, 3, 1)):
    """Images whose every pixel holds the image's index, labels 10, 11, ... (shuffled order)."""
    labels = torch.cat([torch.full((n,), 10 + c) for c, n in enumerate(per_class)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    images = torch.arange(len(labels), dtype=torch.float32)[:, None, None, None].expand(-1, 1, 4, 4).clone()
    return images, labels


def loader(p=3, k=4, seed=0, **kw):
    images, labels = data()
    return BalancedBatchLoader(images, labels, p, k, gen=torch.Generator().manual_seed(seed), **kw)


def test_each_batch_is_p_classes_of_k_images():
    ld = loader(steps_per_epoch=200)
    assert len(ld) == 200
    for x, y in ld:
        assert x.shape == (12, 1, 4, 4) and y.shape == (12,)
        idx = x[:, 0, 0, 0].long()
        assert torch.equal(ld.labels[idx], y)                      # images and labels agree
        groups = y.view(3, 4)
        assert (groups == groups[:, :1]).all() and len(set(groups[:, 0].tolist())) == 3
        for g in idx.view(3, 4):
            if (ld.labels == ld.labels[g[0]]).sum() >= 4:          # enough images: no repeats
                assert len(set(g.tolist())) == 4


def test_small_classes_are_drawn_with_replacement():
    images, labels = data((2, 1))
    x, y = next(iter(BalancedBatchLoader(images, labels, 2, 5, gen=torch.Generator().manual_seed(0))))
    assert sorted(y.tolist()) == [10] * 5 + [11] * 5
    assert torch.equal(labels[x[:, 0, 0, 0].long()], y)


def test_default_length_and_generator():
    images, labels = data()
    ld = BalancedBatchLoader(images, labels, 2, 4)
    assert len(ld) == len(labels) // 8 == 13 and isinstance(ld.gen, torch.Generator)


def test_repeatable_for_a_seed_and_resumable_from_the_generator_state():
    first = [y for _, y in loader(seed=5, steps_per_epoch=10)]
    again = [y for _, y in loader(seed=5, steps_per_epoch=10)]
    other = [y for _, y in loader(seed=6, steps_per_epoch=10)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    ld = loader(seed=5, steps_per_epoch=10)
    state = ld.gen.get_state()
    epoch = [y for _, y in ld]
    ld.gen.set_state(state)
    assert all(torch.equal(a, b) for a, b in zip(epoch, (y for _, y in ld)))


def test_classes_and_images_covered_uniformly():
    ld = loader(steps_per_epoch=3000)
    ys = torch.cat([y for _, y in ld])
    per_class = torch.bincount(ys - 10).float() / 4                 # batches in which each class appears
    expected = 3000 * 3 / 7
    assert ((per_class - expected).abs() < 0.1 * expected).all()
    idx = torch.cat([x[:, 0, 0, 0].long() for x, _ in ld])
    big = torch.bincount(idx[ld.labels[idx] == 10], minlength=len(ld.labels))
    big = big[ld.labels == 10].float()                              # the 20 images of class 10
    assert ((big - big.mean()).abs() < 0.25 * big.mean()).all()


def test_augment_applies_batch_augmentations():
    images, labels = data()
    images = torch.randn(len(labels), 1, 4, 4, generator=torch.Generator().manual_seed(1))
    ld = BalancedBatchLoader(images, labels, 3, 4, steps_per_epoch=20, gen=torch.Generator().manual_seed(0),
                             augment=AugmentConfig(flip=True))
    flipped = 0
    for x, y in ld:
        assert x.shape == (12, 1, 4, 4)
        for xi in x:
            match = (images == xi).flatten(1).all(1)
            match_flip = (images.flip(3) == xi).flatten(1).all(1)
            assert match.any() or match_flip.any()
            flipped += int(match_flip.any() and not match.any())
    assert 0 < flipped < 240


@pytest.mark.parametrize("p, k, match", [(8, 4, "between 1 and 7"), (0, 4, "between 1 and 7"),
                                         (3, 1, "2 or more")])
def test_bad_sizes_raise_user_error(p, k, match):
    with pytest.raises(UserError, match=match):
        BalancedBatchLoader(*data(), p, k)


def test_mixup_refused():
    with pytest.raises(UserError, match="mixup"):
        BalancedBatchLoader(*data(), 2, 2, augment=AugmentConfig(mixup=0.2))
