"""The latent space: embeddings from any layer, image retrieval by nearest neighbours, and 2-D
maps of the embeddings (PCA, t-SNE).

An image's embedding is a layer's output: maps ``(B, C, H, W)`` are averaged over space,
tokens ``(B, N, D)`` over tokens, vectors kept.  By default it is the representation the
classifier reads (a vislab model's ``pre_logits``; otherwise the input of the last linear
layer).  Retrieval ranks a gallery by cosine similarity to the query; precision@k is the
fraction of the ``k`` nearest gallery images of the query's class, averaged over queries.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vislab.errors import UserError
from vislab.explain.hooks import capture, inspecting
from vislab.models.base import Classifier


def _pool(out: Tensor) -> Tensor:
    if out.ndim == 4:
        return out.mean((2, 3))
    if out.ndim == 3:
        return out.mean(1)
    return out.flatten(1)


@torch.no_grad()
def embed(model: nn.Module, images: Tensor, layer: str | None = None, batch_size: int = 512) -> Tensor:
    """Embeddings ``(N, D)`` (float32, CPU) of ``images`` at ``layer`` (see the module notes)."""
    out = []
    with inspecting(model):
        if layer is None and isinstance(model, Classifier):
            for i in range(0, len(images), batch_size):
                f = model.forward_features(images[i:i + batch_size])
                out.append(_pool(model.forward_head(f, pre_logits=True)).float().cpu())
            return torch.cat(out)
        if layer is None:
            return _last_linear_inputs(model, images, batch_size)
        with capture(model, [layer], keep_graph=False) as acts:
            for i in range(0, len(images), batch_size):
                model(images[i:i + batch_size])
                out.append(_pool(acts[layer]).float().cpu())
    return torch.cat(out)


def _last_linear_inputs(model: nn.Module, images: Tensor, batch_size: int) -> Tensor:
    linear = next((m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)), None)
    if linear is None:
        raise UserError(f"{type(model).__name__} has no linear classifier to take embeddings "
                        "before; name a layer with --layer")
    out: list[Tensor] = []
    handle = linear.register_forward_pre_hook(lambda m, args: out.append(_pool(args[0]).float().cpu()))
    try:
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size])
    finally:
        handle.remove()
    return torch.cat(out)


def nearest_neighbours(queries: Tensor, gallery: Tensor, k: int = 8,
                       exclude_self: bool = False) -> tuple[Tensor, Tensor]:
    """Indices and cosine similarities ``(Q, k)`` of the ``k`` gallery embeddings closest to each
    query, best first.  ``exclude_self``: the queries are the gallery; skip each one itself."""
    if not 1 <= k <= len(gallery) - int(exclude_self):
        raise UserError(f"k={k} neighbours asked from a gallery of {len(gallery)}; choose a smaller k")
    q = nn.functional.normalize(queries.float(), dim=1)
    g = nn.functional.normalize(gallery.float(), dim=1)
    sims = q @ g.T                                                     # (Q, G)
    if exclude_self:
        sims.fill_diagonal_(-float("inf"))
    top = sims.topk(k, dim=1)
    return top.indices, top.values


def precision_at_k(neighbour_labels: Tensor, query_labels: Tensor) -> float:
    """Mean over queries of the fraction of their neighbours ``(Q, k)`` with the query's label."""
    return float((neighbour_labels == query_labels[:, None]).float().mean())


def pca_2d(embeddings: Tensor) -> Tensor:
    """The first two principal components ``(N, 2)``: the centred data projected on the top two
    right singular vectors (sign fixed so the largest loading of each is positive)."""
    x = embeddings.double() - embeddings.double().mean(0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    v = vh[:2]
    sign = torch.sign(v.gather(1, v.abs().argmax(1, keepdim=True)))
    return (x @ (v * sign).T).float()


def tsne_2d(embeddings: Tensor, perplexity: float = 30.0, seed: int = 0) -> Tensor:
    """A 2-D t-SNE map ``(N, 2)`` (scikit-learn's, PCA-initialised; ``perplexity`` is lowered
    to fit fewer than ``3 x perplexity + 1`` points)."""
    from sklearn.manifold import TSNE
    n = len(embeddings)
    if n < 5:
        raise UserError(f"t-SNE needs at least 5 images, got {n}")
    perplexity = min(perplexity, (n - 1) / 3)
    out = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        embeddings.double().numpy())
    return torch.from_numpy(out).float()


__all__ = ["embed", "nearest_neighbours", "pca_2d", "precision_at_k", "tsne_2d"]
