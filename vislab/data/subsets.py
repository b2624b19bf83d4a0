"""Subsets of a data set: some of its classes (relabelled), the first images of each class.

What transfer learning and the few-labels setting train on (``data.classes``, ``data.per_class``)
and what metric learning splits into seen and unseen classes.  Pure functions of arrays; a
choice the user can get wrong raises :class:`UserError` naming the valid values.
"""

from __future__ import annotations

import numpy as np

from vislab.data.datasets import ArrayDataset
from vislab.errors import UserError


def class_indices(labels: np.ndarray, classes: list[int], num_classes: int) -> np.ndarray:
    """Positions of the images whose label is one of ``classes``, in their original order.

    Refuses an empty list, an index outside ``0..num_classes-1`` and a class named twice.
    """
    classes = [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < num_classes]
    if not classes or bad:
        raise UserError(f"classes {classes}: give class indices in 0..{num_classes - 1}"
                        + (f" ({', '.join(map(str, bad))} out of range)" if bad else ""))
    dup = sorted({c for c in classes if classes.count(c) > 1})
    if dup:
        raise UserError(f"classes {classes} names {', '.join(map(str, dup))} twice; list each class once")
    return np.flatnonzero(np.isin(labels, classes))


def keep_classes(data: ArrayDataset, classes: list[int]) -> ArrayDataset:
    """The images of ``classes`` only, relabelled ``0..k-1`` in the order given (``classes[i]``
    becomes label ``i``, named ``data.classes[classes[i]]``); the images keep their order."""
    idx = class_indices(data.labels, classes, len(data.classes))
    relabel = np.full(len(data.classes), -1, dtype=np.int64)
    relabel[list(classes)] = np.arange(len(classes))
    return ArrayDataset(data.images[idx], relabel[data.labels[idx]],
                        [data.classes[c] for c in classes],
                        f"{data.source}[classes {','.join(map(str, classes))}]")


def first_per_class(labels: np.ndarray, n: int, num_classes: int | None = None) -> np.ndarray:
    """Positions (ascending) of the first ``n`` images of each class in ``labels``: the labelled
    images of the few-labels setting.  Every class of ``labels`` (or of ``0..num_classes-1`` when
    given, so that a class missing altogether is caught too) must have at least ``n`` images."""
    if n <= 0:
        raise UserError(f"images per class must be positive, got {n}")
    counts = np.bincount(labels, minlength=num_classes or 0)
    wanted = range(num_classes) if num_classes is not None else np.flatnonzero(counts)
    short = [(int(c), int(counts[c])) for c in wanted if counts[c] < n]
    if short:
        listed = ", ".join(f"class {c} has {k}" for c, k in short[:5])
        raise UserError(f"{n} images per class asked, but {listed}{' ...' if len(short) > 5 else ''}; "
                        f"ask for at most {min(k for _, k in short)} per class")
    rank = np.empty(len(labels), dtype=np.int64)     # rank[i]: how many earlier images share i's class
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], labels[order])
    rank[order] = np.arange(len(labels)) - starts
    return np.flatnonzero(rank < n)


__all__ = ["class_indices", "first_per_class", "keep_classes"]
