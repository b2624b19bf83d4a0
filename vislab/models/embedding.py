"""Embedding networks for metric learning: any registry backbone, its classifier removed, and a
linear projection to a small embedding (the notes' ``f(x)``; or none), optionally L2-normalised; and the
siamese network the notes draw, the same embedding module applied to both images of a pair.

In eval mode an :class:`EmbeddingNet` returns embeddings.  The cross-entropy baseline of metric
learning is the same network with a linear classifier on the embedding (``num_classes > 0``): in
training mode it returns that classifier's logits, and its embedding is then the penultimate
layer, as the notes compare it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vislab.models.base import Classifier


class EmbeddingNet(Classifier):
    """``f(x) = normalize(W · pool(backbone(x)) + b)``.

    Args:
        backbone: a :class:`Classifier`; its head is replaced by the identity.
        embed_dim: size of the embedding; 0 keeps the backbone's pooled features as the embedding
            (no projection: "the output of the backbone is our embedding", 002 notes).
        normalize: L2-normalise the embedding (Euclidean distances then lie in ``[0, 2]`` and
            rank like cosine similarities).
        num_classes: 0 for a metric-learning model; ``K > 0`` adds a ``K``-way classifier on the
            (unnormalised) embedding, for the cross-entropy baseline.
    """

    def __init__(self, backbone: Classifier, embed_dim: int = 64, normalize: bool = True,
                 num_classes: int = 0) -> None:
        super().__init__()
        backbone.reset_classifier(0)
        self.backbone = backbone
        if embed_dim == 0:          # the notes' embedding: the backbone's own (pooled) output
            embed_dim, self.embed = backbone.num_features, nn.Identity()
        else:
            self.embed = nn.Linear(backbone.num_features, embed_dim)
        self.embed_dim, self.normalize = embed_dim, normalize
        self.num_features = embed_dim
        self.feature_info = [{**f, "module": f"backbone.{f['module']}"} for f in getattr(backbone, "feature_info", [])]
        self.num_classes = num_classes
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.backbone.forward_features(x)

    def embedding(self, features: Tensor, normalize: bool | None = None) -> Tensor:
        """Backbone features -> the embedding ``(B, embed_dim)``."""
        e = self.embed(self.backbone.forward_head(features, pre_logits=True))
        return F.normalize(e, dim=1) if (self.normalize if normalize is None else normalize) else e

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """The embedding (``pre_logits``, eval mode, or no classifier), else the logits of the
        classifier on the unnormalised embedding."""
        if pre_logits or not self.training or self.num_classes == 0:
            return self.embedding(x)
        return self.head(self.embedding(x, normalize=False))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()


class SiameseNetwork(nn.Module):
    """Two branches with shared weights: one embedding module applied to each image of a pair.
    ``forward(x1, x2)`` returns both embeddings; :meth:`distance` the Euclidean distance of each
    pair, which a threshold turns into "same" or "different" (verification)."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        return self.branch(x1), self.branch(x2)

    def distance(self, x1: Tensor, x2: Tensor) -> Tensor:
        e1, e2 = self(x1, x2)
        return (e1 - e2).norm(dim=1)


__all__ = ["EmbeddingNet", "SiameseNetwork"]
