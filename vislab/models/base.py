"""The face every vislab classifier shows to the rest of the system.

``forward_features(x)`` returns the last feature map ``(B, C, H, W)`` (or tokens ``(B, N, C)``),
``forward_head(x, pre_logits=False)`` pools and classifies, ``reset_classifier(n)`` swaps the head,
and ``feature_info`` lists each stage (module name, channels, stride) for backbones, necks and
Grad-CAM.  Families override ``forward_head`` when their head is not "global pool + linear".

Auxiliary classifiers (GoogLeNet, Inception v3) have one explicit contract: in training mode such
a model returns an :class:`AuxOutput` (``{"logits": Tensor, "aux_logits": (Tensor, ...)}``) and
sets ``aux_logits_weight``, the weight of their losses; in eval mode it returns the logits tensor.
:func:`split_logits` is the one place that reads a classifier's output.
"""

from __future__ import annotations

from typing import TypedDict

from torch import Tensor, nn


class AuxOutput(TypedDict):
    """A classifier's training-mode output when it has auxiliary heads."""
    logits: Tensor
    aux_logits: tuple[Tensor, ...]


def aux_output(logits: Tensor, aux_logits: list[Tensor] | tuple[Tensor, ...]) -> AuxOutput:
    return {"logits": logits, "aux_logits": tuple(aux_logits)}


def split_logits(out: Tensor | AuxOutput) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Main logits and auxiliary logits of a classifier's output (a tensor or an
    :class:`AuxOutput`); anything else breaks the contract and raises ``TypeError``."""
    if isinstance(out, Tensor):
        return out, ()
    if isinstance(out, dict) and set(out) == {"logits", "aux_logits"}:
        return out["logits"], tuple(out["aux_logits"])
    raise TypeError(f"a classifier returns logits or an AuxOutput, got {type(out).__name__}"
                    + (f" with keys {sorted(out)}" if isinstance(out, dict) else ""))


class Classifier(nn.Module):
    """Base class: subclasses set ``num_features``, ``feature_info`` and ``head``."""

    num_features: int
    feature_info: list[dict]
    head: nn.Module
    head_drop: float = 0.0
    aux_logits_weight: float = 0.0       # weight of each auxiliary head's loss (no heads: unused)

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
