"""The metric-learning task end to end on tiny data (scikit-learn's digits, open set: trained on
0-4, evaluated on 5-9), its figures checked against scikit-learn on the run's own embeddings."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

TINY = ["--set", "data.name=digits", "--set", "model.kwargs={widths: [8, 16, 16]}", "--set", "train.epochs=3",
        "--set", "metric.images_per_class=8", "--set", "data.val_size=100", "--no-progress"]


@pytest.fixture(scope="module")
def triplet_run(tmp_path_factory):
    from vislab.cli import main
    run = tmp_path_factory.mktemp("metric") / "triplet"
    assert main(["train", "triplet", "--run-dir", str(run), *TINY]) == 0
    assert main(["evaluate", str(run)]) == 0
    return run


def _digit_png(path, index, split="test"):
    from vislab.data.datasets import load_split
    img = load_split("digits", split).images[index, 0]
    Image.fromarray(img).save(path)
    return path


def test_open_set_evaluation_matches_sklearn(triplet_run):
    """eval.json's precision@1 and kNN accuracy equal scikit-learn's on the same embeddings;
    the evaluated classes are the ones never trained on."""
    from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

    from vislab.data.datasets import load_split
    from vislab.tasks import load_run
    ev = json.loads((triplet_run / "eval.json").read_text())
    assert ev["protocol"] == "open set"
    assert ev["train_classes"] == ["0", "1", "2", "3", "4"] and ev["eval_classes"] == ["5", "6", "7", "8", "9"]
    run = load_run(str(triplet_run))
    test, train = load_split("digits", "test"), load_split("digits", "train")

    def embed(split):
        keep = split.labels >= 5
        with torch.no_grad():
            e = run.model(run.norm.from_uint8(split.images[keep])).numpy()
        return e, split.labels[keep]
    et, yt = embed(test)
    er, yr = embed(train)
    assert ev["num_queries"] == len(yt)
    nn_ = NearestNeighbors(n_neighbors=2).fit(et)
    _, idx = nn_.kneighbors(et)                     # the first neighbour is the query itself
    assert ev["precision_at_1"] == pytest.approx(float(np.mean(yt[idx[:, 1]] == yt)), abs=1e-9)
    knn = KNeighborsClassifier(n_neighbors=ev["knn_k"]).fit(er, yr)
    assert ev["knn_accuracy"] == pytest.approx(knn.score(et, yt), abs=1e-6)
    for k in ("r_precision", "map_at_r", "recall_at_1", "recall_at_8", "verification_auc"):
        assert 0 <= ev[k] <= 1
    assert ev["recall_at_1"] == pytest.approx(ev["precision_at_1"])
    for p in ev["plots"]:
        assert (triplet_run / "plots" / p).exists()


def test_training_data_holds_only_the_training_classes():
    from vislab.config import load_config
    from vislab.tasks import get_task
    cfg = load_config("triplet", ["data.name=digits", "data.val_size=100"])
    data = get_task("metric").build_data(cfg, torch.device("cpu"))
    assert set(data.train_y.tolist()) | set(data.val_y.tolist()) == {0, 1, 2, 3, 4}
    assert data.info.extra["eval_classes"] == [5, 6, 7, 8, 9]
    assert data.info.classes == ("0", "1", "2", "3", "4")


def test_embedding_learns(triplet_run):
    """Validation MAP@R after the last epoch beats the first epoch's (fixed seed)."""
    rows = [json.loads(line) for line in (triplet_run / "metrics.jsonl").read_text().splitlines()]
    maps = [r["val_map_at_r"] for r in rows if r.get("epoch_end")]
    assert len(maps) == 3 and maps[-1] > maps[0]


def test_retrieve_verify_predict_report(triplet_run, tmp_path, run_cli):
    from vislab.data.datasets import load_split
    q = _digit_png(tmp_path / "q.png", int(np.flatnonzero(load_split("digits", "test").labels == 7)[0]))
    code, out, err = run_cli("retrieve", triplet_run, q, "--k", "4", "--out", tmp_path / "r.png")
    assert code == 0, err
    line = out.splitlines()[0]
    assert line.startswith(str(q)) and line.count("test:") == 4 and (tmp_path / "r.png").exists()
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for i in range(3):
        _digit_png(gallery / f"g{i}.png", i)
    code, out, err = run_cli("retrieve", triplet_run, q, "--gallery", gallery, "--k", "3")
    assert code == 0, err
    assert all(f"g{i}.png" in out for i in range(3))
    # the query itself is at distance 0 from itself: "same"
    code, out, err = run_cli("verify", triplet_run, q, q)
    assert code == 0, err
    assert out.startswith("same: distance 0.000")
    code, out, err = run_cli("predict", triplet_run, q)
    assert code == 0, err
    assert "\t" in out and "nearest" in out
    code, out, err = run_cli("report", triplet_run)
    assert code == 0, err
    page = (triplet_run / "report.html").read_text()
    for heading in ("Retrieval on 5, 6, 7, 8, 9", "Queries and their nearest test images",
                    "t-SNE map of the test embeddings", "Verification: same or different?"):
        assert f"<h2>{heading}" in page
    assert "MAP@R" in page and page.count('<img src="data:image/png;base64,') == 5   # curves x2, 3 plots


def test_cross_entropy_baseline_is_evaluated_on_its_penultimate_layer(tmp_path, run_cli):
    from vislab.tasks import load_run
    run = tmp_path / "ce"
    code, _, err = run_cli("train", "triplet", "--run-dir", run, *TINY, "--set", "metric.loss=cross_entropy",
                           "--set", "train.epochs=1")
    assert code == 0, err
    model = load_run(str(run)).model
    x = torch.randn(4, 1, 8, 8)
    model.train()
    assert model(x).shape == (4, 5)                  # logits over the 5 training classes
    model.eval()
    e = model(x)
    assert e.shape == (4, 16) and torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)   # the pooled widths[-1]
    code, out, err = run_cli("evaluate", run)
    assert code == 0, err
    assert "cross_entropy" in out


def test_user_mistakes(triplet_run, tmp_path, run_cli):
    code, _, err = run_cli("train", "triplet", "--run-dir", tmp_path / "a", *TINY,
                           "--set", "metric.train_classes=[0,1,2,3,4,5,6,7,8,9]")
    assert code == 2 and "no class is left unseen" in err and not (tmp_path / "a").exists()
    code, _, err = run_cli("train", "triplet", "--run-dir", tmp_path / "b", *TINY, "--set", "metric.classes_per_batch=9")
    assert code == 2 and "metric.classes_per_batch=5" in err
    code, _, err = run_cli("retrieve", triplet_run, tmp_path / "nope.png")
    assert code == 2 and "does not exist" in err
    q = _digit_png(tmp_path / "q.png", 0)
    code, _, err = run_cli("retrieve", triplet_run, q, "--gallery", tmp_path / "nofolder")
    assert code == 2 and "neither" in err
    code, _, err = run_cli("retrieve", triplet_run, q, "--k", "100000")
    assert code == 2 and "--k" in err


def test_embedding_and_siamese_networks():
    from vislab.models import create_model
    from vislab.models.embedding import EmbeddingNet, SiameseNetwork
    net = EmbeddingNet(create_model("small_cnn", num_classes=3, in_chans=1, widths=(4, 8, 8)), embed_dim=6).eval()
    x1, x2 = torch.randn(5, 1, 12, 12), torch.randn(5, 1, 12, 12)
    siamese = SiameseNetwork(net)
    e1, e2 = siamese(x1, x2)
    assert torch.equal(e1, net(x1)) and torch.equal(e2, net(x2))         # one module, shared weights
    assert sum(p.numel() for p in siamese.parameters()) == sum(p.numel() for p in net.parameters())
    assert torch.allclose(siamese.distance(x1, x2), torch.linalg.vector_norm(net(x1) - net(x2), dim=1))
    assert torch.allclose(e1.norm(dim=1), torch.ones(5), atol=1e-6)
    raw = EmbeddingNet(create_model("small_cnn", num_classes=3, in_chans=1, widths=(4, 8, 8)), 6, normalize=False).eval()
    assert not torch.allclose(raw(x1).norm(dim=1), torch.ones(5))


def test_closed_set_evaluates_every_class(tmp_path, run_cli):
    run = tmp_path / "closed"
    code, _, err = run_cli("train", "contrastive", "--run-dir", run, *TINY, "--set", "metric.train_classes=null",
                           "--set", "train.epochs=1")
    assert code == 0, err
    code, _, err = run_cli("evaluate", run)
    assert code == 0, err
    ev = json.loads((run / "eval.json").read_text())
    assert ev["protocol"] == "closed set" and ev["num_queries"] == 360
    assert ev["train_classes"] == ev["eval_classes"] == [str(d) for d in range(10)]
