"""Embeddings against direct forward passes; retrieval, PCA and t-SNE against scikit-learn."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA
from sklearn.manifold import trustworthiness
from sklearn.neighbors import NearestNeighbors

from tests.explain.nets import gap_cnn
from vislab.explain.latent import (
    embed,
    nearest_neighbours,
    pca_2d,
    precision_at_k,
    tsne_2d,
)
from vislab.models import create_model


def test_embeddings_from_the_head_a_named_layer_and_a_plain_module():
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3, in_chans=1, widths=(4, 8, 8)).eval()
    x = torch.randn(10, 1, 12, 12)
    with torch.no_grad():
        feats = model.forward_features(x)
        stage1 = model.stages[1](model.stages[0](model.stem(x)))
    assert torch.allclose(embed(model, x, batch_size=4), model.forward_head(feats, pre_logits=True))
    assert torch.allclose(embed(model, x, "stages.1", batch_size=3), stage1.mean((2, 3)))
    net = gap_cnn()
    y = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(embed(net, y), net[:-1](y))          # the input of the last Linear


def test_nearest_neighbours_match_scikit_learn():
    rng = np.random.default_rng(0)
    gallery, queries = rng.normal(size=(50, 6)), rng.normal(size=(7, 6))
    idx, sims = nearest_neighbours(torch.from_numpy(queries), torch.from_numpy(gallery), 5)
    nn_ = NearestNeighbors(n_neighbors=5, metric="cosine").fit(gallery)
    dist, ref = nn_.kneighbors(queries)
    assert np.array_equal(idx.numpy(), ref)
    assert np.allclose(sims.numpy(), 1 - dist, atol=1e-6)
    idx, _ = nearest_neighbours(torch.from_numpy(gallery), torch.from_numpy(gallery), 4, exclude_self=True)
    assert np.array_equal(idx.numpy(), NearestNeighbors(n_neighbors=4, metric="cosine").fit(gallery).kneighbors()[1])


def test_precision_at_k_by_hand():
    neighbour_labels = torch.tensor([[0, 0, 1, 2], [1, 1, 1, 1], [2, 0, 0, 0]])
    query_labels = torch.tensor([0, 1, 0])
    assert precision_at_k(neighbour_labels, query_labels) == pytest.approx((2 / 4 + 1 + 3 / 4) / 3)


def test_pca_matches_scikit_learn_up_to_sign():
    x = np.random.default_rng(1).normal(size=(40, 5)) * [5, 3, 1, 0.5, 0.1]
    ours = pca_2d(torch.from_numpy(x)).double().numpy()
    ref = PCA(2).fit_transform(x)
    signs = np.sign((ours * ref).sum(0))
    assert np.allclose(ours, ref * signs, atol=1e-5)


def test_tsne_keeps_neighbourhoods():
    x, _ = make_blobs(120, 10, centers=4, random_state=0)
    points = tsne_2d(torch.from_numpy(x), perplexity=20)
    assert points.shape == (120, 2)
    assert trustworthiness(x, points.numpy(), n_neighbors=5) > 0.9
    assert tsne_2d(torch.from_numpy(x[:10])).shape == (10, 2)       # perplexity lowered to fit
