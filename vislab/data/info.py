"""What a trained run knows about its data: the normalisation its inputs went through, and the
classes, channels and image size that rebuild its model and convert new images.

Both are small frozen dataclasses.  Checkpoints store :meth:`DataInfo.to_dict` (plain values, as
``weights_only`` loading requires) under ``"data"``; :meth:`DataInfo.from_dict` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std`` of images on the ``[0, 1]`` scale, statistics of the
    training split only."""
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def _view(self, values: tuple[float, ...], like: Tensor) -> Tensor:
        return torch.tensor(values, device=like.device, dtype=torch.float32).view(1, -1, 1, 1)

    def normalize(self, x: Tensor) -> Tensor:
        """``[0, 1]`` images ``(B, C, H, W)`` -> the model's input."""
        return (x - self._view(self.mean, x)) / self._view(self.std, x)

    def denormalize(self, x: Tensor) -> Tensor:
        """The model's input -> ``[0, 1]`` images (not clipped)."""
        return x * self._view(self.std, x) + self._view(self.mean, x)

    def from_uint8(self, images: np.ndarray | Tensor, device: torch.device | str = "cpu",
                   channels_last: bool = False) -> Tensor:
        """uint8 ``(N, C, H, W)`` -> normalised float32 on ``device``."""
        x = images if isinstance(images, Tensor) else torch.from_numpy(np.ascontiguousarray(images))
        x = self.normalize(x.to(device).float().div_(255.0))
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    @property
    def black(self) -> float:
        """The normalised value of a black pixel in the first channel (the padding of crops)."""
        return -self.mean[0] / self.std[0]


_KEYS = ("dataset", "classes", "in_chans", "image_size", "mean", "std")


@dataclass(frozen=True)
class DataInfo:
    """The data a model was trained on, as far as using the model needs it.

    ``extra`` holds a task's own plain values (localisation keeps its scene options there).
    """
    dataset: str
    classes: tuple[str, ...]
    in_chans: int
    image_size: tuple[int, int]
    norm: Normalization
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "classes": list(self.classes), "in_chans": self.in_chans,
                "image_size": list(self.image_size), "mean": list(self.norm.mean),
                "std": list(self.norm.std), **self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataInfo:
        return cls(str(d["dataset"]), tuple(d["classes"]), int(d["in_chans"]),
                   (int(d["image_size"][0]), int(d["image_size"][1])),
                   Normalization(tuple(map(float, d["mean"])), tuple(map(float, d["std"]))),
                   {k: v for k, v in d.items() if k not in _KEYS})


__all__ = ["DataInfo", "Normalization"]
