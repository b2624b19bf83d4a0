"""Box regression targets: encode a ground-truth box relative to an anchor, and decode back.

The parametrisation of R-CNN (Girshick et al. 2014), kept by Faster R-CNN, RetinaNet and SSD:
``dx = wx * (gx - ax) / aw``, ``dy = wy * (gy - ay) / ah``, ``dw = ww * log(gw / aw)``,
``dh = wh * log(gh / ah)``, with ``(x, y)`` the centres and ``(w, h)`` the sizes.  The weights
scale the targets to unit-ish variance: ``(1, 1, 1, 1)`` for the RPN and RetinaNet, ``(10, 10,
5, 5)`` for the Fast R-CNN box head.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class BoxCoder:
    """Encode boxes as deltas to anchors and decode deltas back into boxes.

    Args:
        weights: ``(wx, wy, ww, wh)`` multipliers of the four deltas.
        clip: largest ``dw``/``dh`` accepted when decoding (keeps ``exp`` finite: by default a box
            may grow at most 1000/16 times its anchor, as in Detectron).
    """

    def __init__(self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                 clip: float = math.log(1000.0 / 16)) -> None:
        if len(weights) != 4:
            raise ValueError(f"weights must be four numbers (wx, wy, ww, wh), got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.clip = clip

    @staticmethod
    def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        w = boxes[..., 2] - boxes[..., 0]
        h = boxes[..., 3] - boxes[..., 1]
        return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Deltas ``Tensor[N, 4]`` that turn ``anchors`` ``Tensor[N, 4]`` into ``boxes``."""
        if boxes.shape != anchors.shape:
            raise ValueError(f"boxes {tuple(boxes.shape)} and anchors {tuple(anchors.shape)} "
                             "must have the same shape (one anchor per box)")
        anchors = anchors.to(boxes.dtype)
        gx, gy, gw, gh = self._centre_size(boxes)
        ax, ay, aw, ah = self._centre_size(anchors)
        wx, wy, ww, wh = self.weights
        return torch.stack((wx * (gx - ax) / aw, wy * (gy - ay) / ah,
                            ww * torch.log(gw / aw), wh * torch.log(gh / ah)), dim=-1)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes from ``deltas`` and ``anchors`` ``Tensor[N, 4]``; ``deltas`` is ``Tensor[N, 4]``
        or, for one regression per class, ``Tensor[N, K, 4]`` (then the result is too)."""
        if deltas.shape[0] != anchors.shape[0] or deltas.shape[-1] != 4:
            raise ValueError(f"deltas {tuple(deltas.shape)} must be (N, 4) or (N, K, 4) for "
                             f"anchors {tuple(anchors.shape)}")
        anchors = anchors.to(deltas.dtype)
        if deltas.ndim == 3:
            anchors = anchors[:, None]
        ax, ay, aw, ah = self._centre_size(anchors)
        wx, wy, ww, wh = self.weights
        dx, dy, dw, dh = deltas.unbind(-1)
        cx = dx / wx * aw + ax
        cy = dy / wy * ah + ay
        half_w = 0.5 * (torch.exp((dw / ww).clamp(max=self.clip)) * aw)
        half_h = 0.5 * (torch.exp((dh / wh).clamp(max=self.clip)) * ah)
        return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)
