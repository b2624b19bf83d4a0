"""Data sets as tensors in memory: splits, normalisation and the batch iterator of the fast path,
plus a ``torch.utils.data.Dataset`` adapter for data that does not fit in memory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vislab.data.datasets import ArrayDataset
from vislab.data.info import Normalization
from vislab.data.transforms import AugmentConfig, augment_batch, mixup


def train_val_split(n: int, val_size: int | float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a random train/validation split of the *training* set (the test set is never
    touched).  ``val_size``: a count, or a fraction of ``n`` when < 1."""
    n_val = int(round(val_size * n)) if 0 < val_size < 1 else int(val_size)
    if not 0 <= n_val < n:
        raise ValueError(f"validation size {val_size} does not fit a training set of {n}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images ``(N, C, H, W)`` on the 0..1 scale."""
    x = images.astype(np.float64) / 255.0
    return x.mean(axis=(0, 2, 3)).tolist(), x.std(axis=(0, 2, 3)).tolist()


def to_tensor(images: np.ndarray, mean: list[float], std: list[float],
              device: torch.device | str = "cpu", channels_last: bool = False) -> Tensor:
    """uint8 ``(N, C, H, W)`` -> normalised float32 on ``device`` (:meth:`Normalization.from_uint8`)."""
    return Normalization(tuple(mean), tuple(std)).from_uint8(images, device, channels_last)


@dataclass
class TensorLoader:
    """Batches from tensors already on the device: shuffle with ``gen``, augment whole batches.

    Yields ``(x, target)``: ``target`` is int64 labels, or soft labels ``(B, K)`` under mixup.
    """
    images: Tensor
    labels: Tensor
    batch_size: int
    shuffle: bool = False
    drop_last: bool = False
    augment: AugmentConfig | None = None
    gen: torch.Generator | None = None
    num_classes: int = 0
    fill: float = 0.0

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self.gen, device=self.gen.device).to(self.labels.device)
        else:
            order = torch.arange(n, device=self.labels.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x, y = self.images[idx], self.labels[idx]
            if self.augment is not None:
                x = augment_batch(x, self.augment, self.gen, self.fill)
                if self.augment.mixup > 0:
                    x, y = mixup(x, y, self.num_classes, self.gen, self.augment.mixup)
            yield x, y


class ArrayTorchDataset(torch.utils.data.Dataset):
    """Adapter: an :class:`ArrayDataset` as a map-style torch ``Dataset`` of ``(image, label)``
    with an optional per-image ``transform`` (for torchvision pipelines and data too big for memory)."""

    def __init__(self, data: ArrayDataset, transform=None) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data.labels)

    def __getitem__(self, i: int):
        img = torch.from_numpy(self.data.images[i])
        return (self.transform(img) if self.transform else img), int(self.data.labels[i])
