"""Class subsets and the first images of each class, against selections written out by hand."""

import numpy as np
import pytest

from vislab.data.datasets import ArrayDataset
from vislab.data.subsets import class_indices, first_per_class, keep_classes
from vislab.errors import UserError


def _data(n: int = 200, num_classes: int = 10, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256          # no two of the first 256 images alike
    return ArrayDataset(images, rng.integers(0, num_classes, n).astype(np.int64),
                        [f"c{i}" for i in range(num_classes)], "synthetic")


def test_keep_classes_relabels_in_the_order_given():
    data = _data()
    classes = [7, 2, 5]
    out = keep_classes(data, classes)
    # by hand: a loop over the images, each kept one labelled by its class's place in the list
    want_idx = [i for i, y in enumerate(data.labels) if y in classes]
    want_labels = [classes.index(data.labels[i]) for i in want_idx]
    np.testing.assert_array_equal(out.images, data.images[want_idx])
    np.testing.assert_array_equal(out.labels, want_labels)
    assert out.labels.dtype == np.int64
    assert out.classes == ["c7", "c2", "c5"]
    np.testing.assert_array_equal(class_indices(data.labels, classes, 10), want_idx)


def test_keep_classes_of_every_class_in_order_is_the_identity():
    data = _data()
    out = keep_classes(data, list(range(10)))
    np.testing.assert_array_equal(out.images, data.images)
    np.testing.assert_array_equal(out.labels, data.labels)
    assert out.classes == data.classes


@pytest.mark.parametrize("classes, message", [([3, 10], "0..9"), ([-1], "0..9"), ([], "0..9"),
                                              ([4, 2, 4], "4 twice")])
def test_bad_classes_are_refused_with_the_valid_range(classes, message):
    with pytest.raises(UserError, match=message):
        keep_classes(_data(), classes)


def _first_by_hand(labels: np.ndarray, n: int) -> list[int]:
    seen: dict[int, int] = {}
    out = []
    for i, y in enumerate(labels.tolist()):
        if seen.get(y, 0) < n:
            out.append(i)
            seen[y] = seen.get(y, 0) + 1
    return out


@pytest.mark.parametrize("n", [1, 3, 7])
def test_first_per_class_picks_the_first_n_of_each_class(n):
    labels = _data(300).labels
    got = first_per_class(labels, n, 10)
    assert got.tolist() == _first_by_hand(labels, n)
    assert np.bincount(labels[got], minlength=10).tolist() == [n] * 10


def test_first_per_class_refuses_a_class_that_is_short_or_missing():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(first_per_class(labels, 2), [0, 1, 3, 4, 5, 6])
    with pytest.raises(UserError, match="class 1 has 2; ask for at most 2"):
        first_per_class(labels, 3)
    with pytest.raises(UserError, match="class 3 has 0"):      # absent, but asked for with num_classes
        first_per_class(labels, 1, num_classes=4)
    with pytest.raises(UserError, match="positive"):
        first_per_class(labels, 0)
