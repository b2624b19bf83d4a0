"""Retrieval, k-NN and verification metrics for embeddings (metric learning, face recognition).

Retrieval (:func:`retrieval_scores`), with the definitions of Musgrave et al., "A Metric Learning
Reality Check" (ECCV 2020), as pytorch-metric-learning's ``AccuracyCalculator`` computes them.
Each query ranks the references by distance; ``R`` is the number of references with the query's
label (not counting the query itself when the reference set includes the queries), and

* ``precision_at_1``: whether the nearest reference has the query's label;
* ``r_precision``: the fraction of the ``R`` nearest references that have the query's label;
* ``map_at_r``: for each position ``i <= R`` that holds a correct reference, the precision of the
  ``i`` nearest; their sum divided by ``R`` (a miss within the ``R`` nearest costs its share);
* ``recall_at_{k}``: whether at least one of the ``k`` nearest has the query's label, the
  "Recall@K" of deep metric learning papers (not the recall of information retrieval);

each averaged over the queries.  A query whose label no reference has (``R = 0``) is left out of
every mean, as pytorch-metric-learning leaves out such "lone" queries; their number is reported as
``queries_without_matches``.

Distances: ``"euclidean"``, or ``"cosine"``, which is the Euclidean distance between L2-normalised
vectors (``sqrt(2 - 2 cos)``): it ranks neighbours as ``1 - cos`` does, and a verification
threshold ``t`` on it is the cosine-similarity threshold ``1 - t**2 / 2``.

Ties: references at the same distance from a query rank in the order of their index, so results
are deterministic.  pytorch-metric-learning takes neighbours with ``torch.topk``, which leaves the
order of ties unspecified; with distinct distances the two agree exactly.  When the reference set
includes the queries, query ``i`` is left out of its own neighbours by index, not by distance, so
an exact duplicate of it is still a neighbour (pytorch-metric-learning removes the query's own
index too).

k-NN classification (:func:`knn_classify`) follows scikit-learn's ``KNeighborsClassifier``: a
majority vote among the ``k`` nearest training samples (``weights="distance"``: votes weighted by
``1 / distance``, and a training sample at distance 0 takes all the weight), a tie between classes
going to the smallest label.

Verification (:func:`verification_scores`): a seeded sample of same-label and different-label
pairs, half each, is classified "same" when the pair's distance is at most a threshold; the ROC
curve sweeps that threshold and the AUC is the probability that a random same pair is closer than
a random different pair (ties count one half).

Everything runs chunked over queries, so the distance matrix held at once stays near
``_CHUNK_ELEMENTS`` entries, on the device of the embeddings.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vislab.errors import UserError
from vislab.metrics.classification import roc_curve

DISTANCES = ("euclidean", "cosine")
KNN_WEIGHTS = ("uniform", "distance")
_CHUNK_ELEMENTS = 1 << 22          # entries of one (queries, references) distance block


def _check_distance(distance: str) -> None:
    if distance not in DISTANCES:
        raise UserError(f"distance {distance!r} is unknown; use one of {', '.join(DISTANCES)}")


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def _check_embeddings(name: str, x: Tensor, labels: Tensor | None, dim: int | None = None) -> None:
    """``x`` is a finite float (N, D) tensor, N >= 1, D == ``dim`` if given, with N ``labels``."""
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        raise UserError(f"{name} must be a float tensor of shape (N, D), got {_shape(x)}")
    if len(x) == 0:
        raise UserError(f"{name} is empty; pass at least one embedding")
    if dim is not None and x.shape[1] != dim:
        raise UserError(f"{name} embeddings have {x.shape[1]} dimensions but the others {dim}; "
                        "embed all with the same model")
    if labels is not None and (not isinstance(labels, Tensor) or labels.shape != x.shape[:1]):
        raise UserError(f"{name} has {len(x)} embeddings but its labels have shape {_shape(labels)}; "
                        "pass one label per embedding as a 1-D tensor")
    if not torch.isfinite(x).all():
        raise UserError(f"{name} contains NaN or inf; check the model that produced the embeddings")


def _prepare(x: Tensor, distance: str) -> Tensor:
    """The vectors whose Euclidean distance is ``distance``."""
    return F.normalize(x, dim=1) if distance == "cosine" else x


def _nearest(d: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` smallest entries of each row of ``d`` (B, M) and their columns, (B, k) each,
    ordered by (value, column); ``torch.topk`` alone leaves the order of ties unspecified."""
    m = d.shape[1]
    vals, idx = d.topk(min(k + 1, m), dim=1, largest=False)               # (B, k + 1), by value
    crossing = vals[:, k] == vals[:, k - 1] if k < m else torch.zeros_like(idx[:, 0], dtype=torch.bool)
    vals, idx = vals[:, :k], idx[:, :k]
    if crossing.any():
        # A tie straddles the k-th place, so topk took arbitrary ones of the tied columns: take
        # every column below the tied value and the lowest-numbered tied ones.
        sub, kth = d[crossing], vals[crossing, -1:]
        below, tied = sub < kth, sub == kth
        room = k - below.sum(1, keepdim=True)
        take = below | (tied & (tied.cumsum(1) <= room))
        idx[crossing] = take.nonzero()[:, 1].view(-1, k)                  # row-major: ascending columns
    ties = crossing | (vals[:, 1:] == vals[:, :-1]).any(1)                # rows to order by (value, column)
    if ties.any():
        cols = idx[ties].sort(dim=1).values
        v, order = d[ties].gather(1, cols).sort(dim=1, stable=True)
        vals[ties], idx[ties] = v, cols.gather(1, order)
    return vals, idx


def _neighbours(query: Tensor, reference: Tensor, k: int, distance: str,
                exclude_self: bool = False) -> Iterator[tuple[int, Tensor, Tensor]]:
    """Per chunk of queries: ``(start, dist, idx)``, the ``k`` nearest references of queries
    ``start...``, nearest first, (B, k) each.  ``exclude_self``: query i is reference i."""
    query, reference = _prepare(query, distance), _prepare(reference, distance)
    ref_sq = (reference * reference).sum(1)                                  # (M,)
    step = max(1, _CHUNK_ELEMENTS // len(reference))
    for start in range(0, len(query), step):
        q = query[start:start + step]
        # |r|^2 - 2 q.r ranks references as the distance does (|q|^2 is the same for the whole
        # row) and costs one matrix product; the distance itself is taken for the k nearest only.
        key = torch.addmm(ref_sq, q, reference.T, alpha=-2)                 # (B, M)
        if exclude_self:
            rows = torch.arange(len(q), device=q.device)
            key[rows, start + rows] = float("inf")
        key, idx = _nearest(key, k)
        dist = (key + (q * q).sum(1, keepdim=True)).clamp(min=0).sqrt()
        yield start, dist, idx


def retrieval_scores(query: Tensor, query_labels: Tensor, reference: Tensor, reference_labels: Tensor,
                     reference_includes_query: bool = False, ks: Sequence[int] = (1, 2, 4, 8),
                     distance: str = "euclidean") -> dict[str, float]:
    """Precision@1, R-precision, MAP@R and Recall@k of ``query`` (N, D) against ``reference``
    (M, D), as defined in the module docstring; NaN where no query has a match.

    ``reference_includes_query``: query i is reference i (pass the same tensors), and is not
    its own neighbour.
    """
    _check_distance(distance)
    _check_embeddings("query", query, query_labels)
    _check_embeddings("reference", reference, reference_labels, dim=query.shape[1])
    query_labels, reference_labels = query_labels.to(query.device), reference_labels.to(query.device)
    if reference_includes_query and not (torch.equal(query, reference)
                                         and torch.equal(query_labels, reference_labels)):
        raise UserError("reference_includes_query=True means query i is reference i, but query and "
                        "reference (or their labels) differ; pass the same tensors, or "
                        "reference_includes_query=False")
    visible = len(reference) - int(reference_includes_query)
    ks = tuple(ks)
    if not ks or not all(1 <= k <= visible for k in ks):
        raise UserError(f"each k in ks must lie in 1..{visible} (the references a query can see), "
                        f"got {ks}; use fewer neighbours or more references")

    classes, counts = torch.unique(reference_labels, return_counts=True)
    labels = query_labels.to(classes.dtype)
    at = torch.searchsorted(classes, labels).clamp(max=len(classes) - 1)
    r = torch.where(classes[at] == labels, counts[at], 0) - int(reference_includes_query)   # (N,)
    matched = r > 0
    k = max(max(ks), int(r.max()))
    rank = torch.arange(1, k + 1, device=query.device, dtype=torch.float64)                 # (k,)

    sums = torch.zeros(3 + len(ks), dtype=torch.float64, device=query.device)
    for start, _, idx in _neighbours(query, reference, k, distance, reference_includes_query):
        rows = slice(start, start + len(idx))
        hit = reference_labels[idx] == query_labels[rows, None]                    # (B, k)
        rr = r[rows, None].clamp(min=1).double()                                   # (B, 1)
        hit_r = hit & (rank <= rr)                                         # correct and among the R nearest
        r_precision = hit_r.sum(1) / rr[:, 0]
        map_at_r = (hit_r.cumsum(1) / rank * hit_r).sum(1) / rr[:, 0]
        recalls = [hit[:, :kk].any(1) for kk in ks]
        per_query = torch.stack([hit[:, 0], r_precision, map_at_r, *recalls], dim=1).double()
        sums += per_query[matched[rows]].sum(0)                                   # (3 + len(ks),)

    n = int(matched.sum())
    names = ["precision_at_1", "r_precision", "map_at_r", *(f"recall_at_{kk}" for kk in ks)]
    means = (sums / n).tolist() if n else [float("nan")] * len(names)
    return {**dict(zip(names, means)), "queries_without_matches": len(query) - n}


def knn_classify(train: Tensor, train_labels: Tensor, test: Tensor, k: int = 5,
                 distance: str = "euclidean", weights: str = "uniform") -> Tensor:
    """The label of each ``test`` (N, D) embedding by a vote of its ``k`` nearest ``train``
    embeddings, (N,); the rules of scikit-learn's ``KNeighborsClassifier`` (module docstring)."""
    _check_distance(distance)
    _check_embeddings("train", train, train_labels)
    _check_embeddings("test", test, None, dim=train.shape[1])
    if weights not in KNN_WEIGHTS:
        raise UserError(f"weights {weights!r} is unknown; use one of {', '.join(KNN_WEIGHTS)}")
    if not 1 <= k <= len(train):
        raise UserError(f"k must lie in 1..{len(train)} (the number of training samples), got {k}")

    classes, y = torch.unique(train_labels.to(train.device), return_inverse=True)
    preds = []
    for _, dist, idx in _neighbours(test, train, k, distance):
        if weights == "uniform":
            w = torch.ones_like(dist)
        else:
            exact = dist == 0
            w = torch.where(exact.any(1, keepdim=True), exact.to(dist.dtype), 1 / dist)
        votes = torch.zeros(len(idx), len(classes), dtype=w.dtype, device=w.device)
        votes.scatter_add_(1, y[idx], w)                                           # (B, C)
        preds.append(classes[votes.argmax(1)])      # the first maximum: a tie goes to the smallest label
    return torch.cat(preds)


def knn_accuracy(train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor, k: int = 5,
                 distance: str = "euclidean", weights: str = "uniform") -> float:
    """Fraction of ``test`` embeddings that :func:`knn_classify` labels right."""
    _check_embeddings("test", test, test_labels)
    pred = knn_classify(train, train_labels, test, k, distance, weights)
    return float((pred == test_labels.to(pred.device)).double().mean())


def verification_pairs(labels: Tensor, n_pairs: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """``n_pairs // 2`` same-label pairs and the rest different-label ones, each drawn uniformly
    (with replacement) from all ordered pairs ``(i, j)``, ``i != j``, of its kind.

    Returns ``i``, ``j`` (indices into ``labels``) and ``same`` (bool), (n_pairs,) each, on the CPU.
    """
    labels = labels.cpu()
    if labels.ndim != 1:
        raise UserError(f"labels must be a 1-D tensor, got shape {tuple(labels.shape)}")
    if n_pairs < 2:
        raise UserError(f"n_pairs must be at least 2 (one same and one different pair), got {n_pairs}")
    classes, cls, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    if len(classes) < 2 or counts.max() < 2:
        raise UserError(f"verification pairs need two labels and a label with two samples; the labels have "
                        f"{len(classes)} distinct values, the largest class {int(counts.max())} samples")
    n = len(labels)
    order = torch.argsort(labels, stable=True)        # the samples grouped by class
    first = (counts.cumsum(0) - counts)[cls]          # (n,) where each sample's class starts in `order`
    size = counts[cls]                                 # (n,) its class size
    pos = torch.empty_like(order)
    pos[order] = torch.arange(n)                       # each sample's place in `order`
    g = torch.Generator().manual_seed(seed)

    def draw(weight: Tensor, count: int) -> tuple[Tensor, Tensor]:
        """``i`` in proportion to ``weight`` (its partners), and an offset below ``weight[i]``."""
        i = torch.multinomial(weight.double(), count, replacement=True, generator=g)
        return i, torch.randint(0, 1 << 62, (count,), generator=g) % weight[i]

    n_same = n_pairs // 2
    # Same: j is the member of i's class `1 + off` places after i in `order`, wrapping round
    # within the class.  Different: j lies `off` places after i's class in `order`, wrapping
    # round the whole of it, so it is any sample outside the class.
    i_same, off = draw(size - 1, n_same)
    j_same = order[first[i_same] + (pos[i_same] - first[i_same] + 1 + off) % size[i_same]]
    i_diff, off = draw(n - size, n_pairs - n_same)
    j_diff = order[(first[i_diff] + size[i_diff] + off) % n]
    same = torch.arange(n_pairs) < n_same
    return torch.cat([i_same, i_diff]), torch.cat([j_same, j_diff]), same


def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve of ``scores`` (higher = more likely positive) for binary
    ``labels`` (1 or True = positive: a same pair, an anomaly), by the rank-sum (Mann-Whitney)
    formula with tied scores given their average rank, which equals scikit-learn's
    ``roc_auc_score``.  Tensors or arrays."""
    scores = torch.as_tensor(scores).double().flatten().cpu()
    labels = torch.as_tensor(labels).bool().flatten().cpu()
    if len(scores) != len(labels):
        raise UserError(f"{len(scores)} scores but {len(labels)} labels; pass one label per score")
    if not torch.isfinite(scores).all():
        raise UserError("scores contain NaN or inf")
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise UserError(f"ROC AUC needs positive and negative samples, got {n_pos} and {n_neg}")
    s, order = scores.sort()
    _, counts = torch.unique_consecutive(s, return_counts=True)
    size = counts.double()
    ranks = (size.cumsum(0) - (size - 1) / 2).repeat_interleave(counts)   # mean 1-based rank of its group
    u = ranks[labels[order]].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def verification_scores(embeddings: Tensor, labels: Tensor, n_pairs: int = 10000, seed: int = 0,
                        distance: str = "euclidean") -> dict:
    """ROC AUC, the best threshold and its accuracy, and the ROC curve of "same if distance <= t"
    on :func:`verification_pairs` of ``embeddings`` (N, D).

    ``best_threshold`` is the smallest distance at which the accuracy peaks (``-inf``, "never
    same", only if nothing beats it).
    """
    _check_distance(distance)
    _check_embeddings("embeddings", embeddings, labels)
    i, j, same = verification_pairs(labels, n_pairs, seed)
    x = _prepare(embeddings, distance)
    dist = (x[i.to(x.device)] - x[j.to(x.device)]).norm(dim=1).double().cpu()   # (n_pairs,)
    fpr, tpr, scores = (torch.from_numpy(a) for a in roc_curve(same.numpy(), (-dist).numpy()))
    thresholds = -scores                               # "same if distance <= t", ascending from -inf
    n_same = int(same.sum())
    accuracy = (tpr * n_same + (1 - fpr) * (len(same) - n_same)) / len(same)
    best = int(accuracy.argmax())
    return {"auc": roc_auc(-dist, same), "best_threshold": float(thresholds[best]),
            "best_accuracy": float(accuracy[best]), "fpr": fpr.tolist(), "tpr": tpr.tolist()}
