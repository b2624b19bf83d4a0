"""The face every vislab classifier shows to the rest of the system.

``forward_features(x)`` returns the last feature map ``(B, C, H, W)`` (or tokens ``(B, N, C)``),
``forward_head(x, pre_logits=False)`` pools and classifies, ``reset_classifier(n)`` swaps the head,
and ``feature_info`` lists each stage (module name, channels, stride) for backbones, necks and
Grad-CAM.  Families override ``forward_head`` when their head is not "global pool + linear".
"""

from __future__ import annotations

from torch import Tensor, nn


class Classifier(nn.Module):
    """Base class: subclasses set ``num_features``, ``feature_info`` and ``head``."""

    num_features: int
    feature_info: list[dict]
    head: nn.Module
    head_drop: float = 0.0

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if x.ndim == 4:                       # (B, C, H, W) -> (B, C)
            x = x.mean(dim=(2, 3))
        elif x.ndim == 3:                     # (B, N, C) tokens -> (B, C)
            x = x.mean(dim=1)
        if self.head_drop and self.training:
            x = nn.functional.dropout(x, self.head_drop, training=True)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh ``num_classes``-way linear layer (0: identity)."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
