"""Class-balanced ``P x K`` batches for metric learning: ``P`` classes, ``K`` images of each, so
that every batch holds positives and negatives for every anchor (Hermans et al. 2017)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from vislab.config import AugmentConfig
from vislab.data.transforms import augment_batch
from vislab.errors import UserError


@dataclass
class BalancedBatchLoader:
    """Batches of ``classes_per_batch`` (P) distinct classes drawn at random, ``images_per_class``
    (K) images of each, from tensors already on the device; the same face as
    :class:`~vislab.data.loader.TensorLoader`.

    Yields ``(x, y)``, ``B = P * K`` images grouped by class.  A class with at least ``K`` images
    gives ``K`` distinct ones; a smaller class repeats some (drawn with replacement).  All
    randomness comes from ``gen`` (on any device), whose state the trainer checkpoints;
    ``None`` means a generator seeded with 0 on the labels' device.  ``augment`` applies the
    image-only batch augmentations (mixup, whose soft labels no metric loss can use, is refused).
    ``steps_per_epoch`` defaults to ``len(labels) // (P * K)`` batches (at least one).
    """
    images: Tensor = field(repr=False)
    labels: Tensor = field(repr=False)
    classes_per_batch: int
    images_per_class: int
    steps_per_epoch: int | None = None
    gen: torch.Generator | None = None
    augment: AugmentConfig | None = None
    fill: float = 0.0

    def __post_init__(self) -> None:
        p, k = self.classes_per_batch, self.images_per_class
        classes, counts = torch.unique(self.labels, return_counts=True)
        if k < 2:
            raise UserError(f"images_per_class is {k}: metric losses need at least 2 images of a "
                            "class in a batch to form positive pairs; set it to 2 or more")
        if not 1 <= p <= len(classes):
            raise UserError(f"classes_per_batch is {p} but the training data has {len(classes)} "
                            f"classes: set classes_per_batch between 1 and {len(classes)}")
        if self.augment is not None and self.augment.mixup > 0:
            raise UserError("mixup makes soft labels, which metric losses cannot use: "
                            "set data.augment.mixup to 0")
        if self.gen is None:
            self.gen = torch.Generator(device=self.labels.device).manual_seed(0)
        if self.steps_per_epoch is None:
            self.steps_per_epoch = max(1, len(self.labels) // (p * k))
        # The images of class c are order[start[c] : start[c] + counts[c]].
        self._order = torch.argsort(self.labels, stable=True)
        self._counts = counts
        self._start = torch.cumsum(counts, 0) - counts
        self._max_count = int(counts.max())

    @property
    def batch_size(self) -> int:
        return self.classes_per_batch * self.images_per_class

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for _ in range(len(self)):
            idx = self._sample()
            x, y = self.images[idx], self.labels[idx]
            if self.augment is not None:
                x = augment_batch(x, self.augment, self.gen, self.fill)
            yield x, y

    def _sample(self) -> Tensor:
        """Indices ``(P * K,)`` of one batch, class after class."""
        p, k, dev = self.classes_per_batch, self.images_per_class, self.labels.device
        gdev = self.gen.device
        cls = torch.randperm(len(self._counts), generator=self.gen, device=gdev)[:p].to(dev)
        count = self._counts[cls][:, None]                                    # (P, 1)
        # Without replacement: the K smallest of random keys over each class's valid slots.
        keys = torch.rand((p, self._max_count), generator=self.gen, device=gdev).to(dev)
        keys = keys.masked_fill(torch.arange(self._max_count, device=dev) >= count, 2.0)
        distinct = keys.topk(min(k, self._max_count), dim=1, largest=False).indices   # (P, <=K)
        if distinct.shape[1] < k:
            distinct = torch.cat([distinct, distinct.new_zeros(p, k - distinct.shape[1])], 1)
        # With replacement, for classes with fewer than K images.
        drawn = torch.rand((p, k), generator=self.gen, device=gdev).to(dev)
        repeated = (drawn * count).long().clamp_(max=count - 1)
        slot = torch.where(count >= k, distinct, repeated)                    # (P, K)
        return self._order[self._start[cls][:, None] + slot].reshape(-1)
