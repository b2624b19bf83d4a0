"""vislab.metrics.retrieval against pytorch-metric-learning's AccuracyCalculator, scikit-learn's
KNeighborsClassifier and ROC functions, and values computed by hand."""

import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN, return_results
from sklearn import metrics as skm
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier

from vislab.errors import UserError
from vislab.metrics import retrieval
from vislab.metrics.retrieval import (
    knn_accuracy,
    knn_classify,
    retrieval_scores,
    roc_auc,
    verification_pairs,
    verification_scores,
)

PML_NAMES = {"precision_at_1": "precision_at_1", "r_precision": "r_precision",
             "map_at_r": "mean_average_precision_at_r"}


def pml_scores(knn_func, query, query_labels, reference, reference_labels, ref_includes_query):
    """Our three names -> pytorch-metric-learning's values, over all references (k=None)."""
    calc = AccuracyCalculator(include=tuple(PML_NAMES.values()), device=torch.device("cpu"),
                              knn_func=knn_func)
    got = calc.get_accuracy(query, query_labels, reference, reference_labels,
                            ref_includes_query=ref_includes_query)
    return {ours: got[theirs] for ours, theirs in PML_NAMES.items()}


def clusters(seed: int, n: int, n_classes: int, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy class clusters: neither perfect nor chance retrieval."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_classes, dim, generator=g)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return centers[y] + 1.2 * torch.randn(n, dim, generator=g), y


class Float64KNN(CustomKNN):
    """PML's CustomKNN in float64.  AccuracyCalculator casts embeddings to float32, where two
    libraries' rounding of the distance reorders near-tied neighbours (a few in 30,000 ranks here,
    moving MAP@R by ~1e-6); float32-valued embeddings lose nothing in that cast."""

    def __call__(self, query, k, reference, ref_includes_query=False):
        return super().__call__(query.double(), k, reference.double(), ref_includes_query)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("includes", [True, False])
@pytest.mark.parametrize("seed,n_classes", [(0, 3), (1, 12), (2, 40)])
def test_retrieval_matches_pml(seed, n_classes, includes, distance):
    x, y = clusters(seed, 300, n_classes)
    x = x.double()                                             # float32 values, see Float64KNN
    y[0] = n_classes        # a class only queries have (includes=False), or with one sample (True)
    if includes:
        q, qy, r, ry = x, y, x, y
    else:
        q, qy, r, ry = x[:100], y[:100], x[100:], y[100:]
    pml_distance = CosineSimilarity() if distance == "cosine" else LpDistance(normalize_embeddings=False)
    expected = pml_scores(Float64KNN(pml_distance), q, qy, r, ry, includes)
    got = retrieval_scores(q, qy, r, ry, reference_includes_query=includes, distance=distance)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    lone = sum(int((ry == label).sum()) == int(includes) for label in qy.tolist())
    assert lone >= 1 and got["queries_without_matches"] == lone
    assert got["recall_at_1"] == got["precision_at_1"]


class StableKNN:
    """pytorch-metric-learning's CustomKNN with neighbours in (distance, index) order, vislab's
    tie rule, instead of torch.topk's unspecified order.  Its removal of the query itself
    (return_results) and the metrics stay pytorch-metric-learning's."""

    def __call__(self, query, k, reference, ref_includes_query=False):
        dist, idx = LpDistance(normalize_embeddings=False)(query, reference).sort(dim=1, stable=True)
        k += ref_includes_query
        return return_results(dist[:, :k], idx[:, :k], ref_includes_query)


@pytest.mark.parametrize("includes", [True, False])
def test_retrieval_ties_match_pml_with_index_order(includes):
    """Integer points in {0, 1, 2}^3: exact distances (in both libraries) with many ties and exact
    duplicates.  PML's own CustomKNN orders ties as torch.topk happens to, which no rule fixes, so
    the comparison is with PML given the (distance, index) order; the reversed order gives other
    values, so the ties matter and the order is what is tested."""
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 3, (240, 3), generator=g).float()
    y = torch.randint(0, 4, (240,), generator=g)
    q, qy, r, ry = (x, y, x, y) if includes else (x[:80], y[:80], x[80:], y[80:])
    got = retrieval_scores(q, qy, r, ry, reference_includes_query=includes)
    expected = pml_scores(StableKNN(), q, qy, r, ry, includes)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    if not includes:
        reversed_ties = pml_scores(StableKNN(), q, qy, r.flip(0), ry.flip(0), False)
        assert any(abs(got[n] - reversed_ties[n]) > 1e-3 for n in PML_NAMES)


def test_retrieval_by_hand():
    # 1-D references at 1..5 labelled A B A B A (A=0, B=1); three queries at 0 labelled A, B, C.
    reference = torch.arange(1.0, 6.0)[:, None]
    reference_labels = torch.tensor([0, 1, 0, 1, 0])
    query = torch.zeros(3, 1)
    # A: R=3, nearest A B A: R-precision 2/3, MAP@R (1/1 + 2/3) / 3 = 5/9, hit at 1.
    # B: R=2, nearest A B:   R-precision 1/2, MAP@R (1/2) / 2 = 1/4, miss at 1, hit at 2.
    # C: no reference has it, left out.
    got = retrieval_scores(query, torch.tensor([0, 1, 2]), reference, reference_labels, ks=(1, 2, 4))
    assert got == pytest.approx({"precision_at_1": 0.5, "r_precision": 7 / 12, "map_at_r": 29 / 72,
                                 "recall_at_1": 0.5, "recall_at_2": 1.0, "recall_at_4": 1.0,
                                 "queries_without_matches": 1})


def test_retrieval_tie_goes_to_lower_index():
    query, query_labels = torch.zeros(1, 1), torch.tensor([0])
    reference = torch.tensor([[-1.0], [1.0], [5.0]])           # the first two tie
    first_wrong = retrieval_scores(query, query_labels, reference, torch.tensor([1, 0, 1]), ks=(1,))
    first_right = retrieval_scores(query, query_labels, reference, torch.tensor([0, 1, 1]), ks=(1,))
    assert first_wrong["precision_at_1"] == 0.0 and first_wrong["map_at_r"] == 0.0
    assert first_right["precision_at_1"] == 1.0 and first_right["map_at_r"] == 1.0


def test_no_query_has_a_match():
    x = torch.randn(4, 2)
    got = retrieval_scores(x, torch.tensor([5, 5, 6, 6]), x, torch.tensor([0, 1, 2, 3]), ks=(1,))
    assert np.isnan(got["map_at_r"]) and got["queries_without_matches"] == 4


def test_chunking_changes_nothing(monkeypatch):
    g = torch.Generator().manual_seed(4)
    ties = torch.randint(0, 3, (150, 3), generator=g).float()
    y = torch.randint(0, 5, (150,), generator=g)
    whole = retrieval_scores(ties, y, ties, y, reference_includes_query=True)
    knn = knn_classify(ties[:100], y[:100], ties[100:], k=7, weights="distance")
    monkeypatch.setattr(retrieval, "_CHUNK_ELEMENTS", 400)     # 2 queries per chunk
    chunked = retrieval_scores(ties, y, ties, y, reference_includes_query=True)
    assert chunked == pytest.approx(whole, rel=1e-12)           # sums in another order
    assert torch.equal(knn_classify(ties[:100], y[:100], ties[100:], k=7, weights="distance"), knn)


def sklearn_knn(train, train_labels, test, k, distance, weights):
    """scikit-learn's prediction.  Its cosine distance is 1 - cos, ours the Euclidean distance of
    unit vectors; they rank alike, but "distance" weights differ, so those are compared on unit
    vectors with the Euclidean metric."""
    train, test = train.numpy(), test.numpy()
    metric = distance
    if distance == "cosine" and weights == "distance":
        train = train / np.linalg.norm(train, axis=1, keepdims=True)
        test = test / np.linalg.norm(test, axis=1, keepdims=True)
        metric = "euclidean"
    clf = KNeighborsClassifier(n_neighbors=k, weights=weights, metric=metric)
    return clf.fit(train, train_labels.numpy()).predict(test)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("k", [1, 4, 7])
def test_knn_matches_sklearn_on_random_data(k, weights, distance):
    classes = torch.tensor([2, 5, 9, 11])                      # not 0..C-1
    x, y = clusters(k, 400, 4, dim=8)
    x, y = x.double(), classes[y]
    ours = knn_classify(x[:300], y[:300], x[300:], k=k, distance=distance, weights=weights)
    assert np.array_equal(ours.numpy(), sklearn_knn(x[:300], y[:300], x[300:], k, distance, weights))
    assert ours.dtype == y.dtype


@pytest.mark.parametrize("distance,weights", [("euclidean", "uniform"), ("euclidean", "distance"),
                                              ("cosine", "uniform")])
def test_knn_matches_sklearn_on_digits(distance, weights):
    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X), torch.tensor(y)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1200], perm[1200:]
    ours = knn_classify(X[train], y[train], X[test], k=5, distance=distance, weights=weights)
    expected = sklearn_knn(X[train], y[train], X[test], 5, distance, weights)
    assert np.array_equal(ours.numpy(), expected)
    acc = knn_accuracy(X[train], y[train], X[test], y[test], k=5, distance=distance, weights=weights)
    assert acc == pytest.approx(np.mean(expected == y[test].numpy())) and acc > 0.95


def test_knn_vote_tie_goes_to_smallest_label():
    train, labels, test = torch.tensor([[-1.0], [1.0]]), torch.tensor([7, 3]), torch.zeros(1, 1)
    assert knn_classify(train, labels, test, k=2).tolist() == [3]
    assert sklearn_knn(train, labels, test, 2, "euclidean", "uniform").tolist() == [3]


def test_knn_training_sample_at_distance_zero_takes_all_weight():
    # Two training samples at the query itself (labels 1 and 2) tie; the one at 0.5 would tip a
    # 1 / distance vote to label 2.
    train, labels, test = torch.tensor([[0.0], [0.0], [0.5]]), torch.tensor([1, 2, 2]), torch.zeros(1, 1)
    assert knn_classify(train, labels, test, k=3, weights="distance").tolist() == [1]
    assert sklearn_knn(train, labels, test, 3, "euclidean", "distance").tolist() == [1]


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    same = rng.integers(0, 2, 500).astype(bool)
    scores = np.round(rng.normal(same * 0.7, 1.0), 1)         # rounded: many ties
    assert roc_auc(torch.tensor(scores), torch.tensor(same)) == pytest.approx(skm.roc_auc_score(same, scores))
    assert roc_auc(torch.ones(6), torch.tensor([1, 0, 1, 0, 0, 1])) == pytest.approx(0.5)


def test_verification_pairs():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    i, j, same = verification_pairs(labels, 1001, seed=5)
    assert len(i) == len(j) == len(same) == 1001 and int(same.sum()) == 500
    assert bool((i != j).all())
    assert torch.equal(same, labels[i] == labels[j])
    again = verification_pairs(labels, 1001, seed=5)
    assert all(torch.equal(a, b) for a, b in zip((i, j, same), again))
    assert not torch.equal(verification_pairs(labels, 1001, seed=6)[0], i)


def test_verification_pairs_are_uniform():
    # Ordered pairs i != j of [0, 0, 0, 1, 1, 2]: 8 same-label ones, 22 different-label ones.
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    i, j, same = verification_pairs(labels, 80000, seed=0)
    for kind, n_kinds in ((same, 8), (~same, 22)):
        pairs, counts = torch.unique(i[kind] * 6 + j[kind], return_counts=True)
        assert len(pairs) == n_kinds
        assert np.allclose(counts / kind.sum(), 1 / n_kinds, atol=0.006)


@pytest.mark.parametrize("integer", [False, True])
def test_verification_scores(integer):
    x, y = clusters(7, 400, 10, dim=6)
    x = x.round() if integer else x.double()                  # integer: tied distances
    got = verification_scores(x, y, n_pairs=2000, seed=1)
    i, j, same = (t.numpy() for t in verification_pairs(y, 2000, seed=1))
    d = np.linalg.norm(x.numpy()[i] - x.numpy()[j], axis=1)
    assert got["auc"] == pytest.approx(skm.roc_auc_score(same, -d))
    fpr, tpr, _ = skm.roc_curve(same, -d, drop_intermediate=False)
    assert np.allclose(got["fpr"], fpr) and np.allclose(got["tpr"], tpr)
    thresholds = np.r_[-np.inf, np.unique(d)]
    accuracy = [np.mean((d <= t) == same) for t in thresholds]
    best = int(np.argmax(accuracy))
    assert got["best_accuracy"] == pytest.approx(accuracy[best])
    assert got["best_threshold"] == pytest.approx(thresholds[best], rel=1e-6)


def test_verification_cosine_is_euclidean_on_unit_vectors():
    x, y = clusters(8, 200, 5)
    cos = verification_scores(x, y, n_pairs=500, distance="cosine")
    unit = verification_scores(torch.nn.functional.normalize(x, dim=1), y, n_pairs=500)
    assert cos["auc"] == unit["auc"] and cos["best_threshold"] == pytest.approx(unit["best_threshold"])


X4, Y4 = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])


@pytest.mark.parametrize("call,message", [
    (lambda: retrieval_scores(X4, Y4[:3], X4, Y4), "one label per embedding"),
    (lambda: retrieval_scores(X4, Y4, X4[:, :2], Y4), "dimensions"),
    (lambda: retrieval_scores(X4, Y4, X4, Y4, ks=(5,)), r"1\.\.4"),
    (lambda: retrieval_scores(X4, Y4, X4, Y4, reference_includes_query=True, ks=(4,)), r"1\.\.3"),
    (lambda: retrieval_scores(X4, Y4, X4 + 1, Y4, reference_includes_query=True), "same tensors"),
    (lambda: retrieval_scores(X4, Y4, X4, Y4, distance="manhattan"), "manhattan"),
    (lambda: retrieval_scores(X4.long(), Y4, X4, Y4), "float tensor"),
    (lambda: retrieval_scores(X4 * np.nan, Y4, X4, Y4), "NaN"),
    (lambda: knn_classify(X4, Y4, X4, k=5), r"k must lie in 1\.\.4"),
    (lambda: knn_classify(X4, Y4, X4[:, :2]), "dimensions"),
    (lambda: knn_classify(X4, Y4, X4, k=1, weights="gaussian"), "gaussian"),
    (lambda: knn_accuracy(X4, Y4, X4, Y4[:2], k=1), "one label per embedding"),
    (lambda: verification_pairs(torch.zeros(5, dtype=torch.long), 10, 0), "two labels"),
    (lambda: verification_pairs(torch.arange(5), 10, 0), "two samples"),
    (lambda: roc_auc(torch.rand(5), torch.ones(5)), "positive and negative"),
])
def test_bad_inputs_raise_user_error(call, message):
    with pytest.raises(UserError, match=message):
        call()
