"""``vislab explain``: every method on a trained run (the default recipe's network, narrowed, on
8x8 digits) writes its image; figures are checked against independent computations."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.neighbors import KNeighborsClassifier

from tests.explain.tiny_run import train_tiny
from vislab.cli.explain import METHOD_HELP
from vislab.data.datasets import load_split
from vislab.data.loader import to_tensor
from vislab.explain.run import METHODS
from vislab.tasks import load_run

ARGS = {"maximize": ["--steps", "30", "--class", "3"], "patches": ["--layer", "stages.0", "--unit", "3", "--k", "5"],
        "localize": ["--limit", "60"], "tsne": ["--limit", "200"], "retrieval": ["--image", "test:5"],
        "gradcam": ["--image", "test:0-1", "--class", "3", "--layer", "stages.1"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny(str(tmp_path_factory.mktemp("explain") / "run"))


def test_the_cli_offers_every_method():
    assert list(METHOD_HELP) == list(METHODS)


@pytest.mark.parametrize("method", METHOD_HELP)
def test_every_method_writes_its_image(run, run_cli, method):
    code, out, err = run_cli("explain", run, "--method", method, "--device", "cpu", *ARGS.get(method, []))
    assert code == 0, err
    written = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("written: ")]
    pngs = [p for p in written if p.endswith(".png")]
    assert len(pngs) == 1 and pngs[0].startswith(f"{run}/explain/")
    with Image.open(pngs[0]) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_figures_agree_with_independent_computations(run, run_cli):
    loaded = load_run(run, "cpu")
    model, stats = loaded.model, loaded.info.to_dict()
    train, test = load_split("digits", "train"), load_split("digits", "test")
    xt = to_tensor(test.images, stats["mean"], stats["std"])
    with torch.no_grad():
        probs = torch.softmax(model(xt), 1)
        emb = lambda x: model.forward_head(model.forward_features(x), pre_logits=True)   # noqa: E731
        g, q = emb(to_tensor(train.images, stats["mean"], stats["std"])), emb(xt)

    # retrieval: precision@8 = mean fraction of same-class neighbours, by scikit-learn's k-NN
    code, out, err = run_cli("explain", run, "--method", "retrieval", "--k", "8")
    assert code == 0, err
    rep = json.load(open(f"{run}/explain/retrieval.json"))
    knn = KNeighborsClassifier(8, metric="cosine").fit(g.numpy(), train.labels)
    nbr = knn.kneighbors(q.numpy(), return_distance=False)
    assert rep["precision_at_k"] == pytest.approx(float(np.mean(train.labels[nbr] == test.labels[:, None])))
    assert f"precision@8 by class over 360 test queries: {rep['precision_at_k']:.3f}" in out

    # mistakes: the images listed are wrong, and no wrong image is more confident
    code, out, err = run_cli("explain", run, "--method", "mistakes", "--k", "3")
    assert code == 0, err
    conf, pred = probs.max(1)
    wrong = (pred != torch.from_numpy(test.labels)).nonzero()[:, 0]
    expected = wrong[conf[wrong].argsort(descending=True)[:3]].tolist()
    assert f"{len(wrong)} mistakes in 360 test images" in out
    assert [int(line.split()[0].split(":")[1]) for line in out.splitlines()[1:4]] == expected

    # filters: one entry per conv and activation call, the first layer's 8 filters
    code, out, err = run_cli("explain", run, "--method", "filters")
    rep = json.load(open(f"{run}/explain/filters.json"))
    assert rep["first_layer"] == "stem.0" and rep["layers"][0]["channels"] == 8
    assert len(rep["layers"]) == 12 and rep["images"] == 360

    # localisation on 16x16 canvases: figures in range, the centred-box baseline is reported
    code, out, err = run_cli("explain", run, "--method", "localize", "--limit", "40", "--map", "gradcam")
    rep = json.load(open(f"{run}/explain/localize.json"))
    assert rep["canvas"] == 16 and rep["images"] == 40 and rep["map"] == "gradcam"
    assert 0 < rep["mean_iou"] <= 1 and 0 <= rep["top1_loc"] <= rep["gt_known_loc"] <= 1
    assert f"mean IoU {rep['mean_iou']:.3f}" in out


@pytest.mark.parametrize("args, message", [
    (["--method", "gradcam", "--class", "cat"], "unknown class 'cat'"),
    (["--method", "gradcam", "--layer", "stages.7"], "has no layer 'stages.7'"),
    (["--method", "saliency", "--image", "test:400"], "the split has images 0..359"),
    (["--method", "cam", "--image", "nowhere.png"], "nowhere.png does not exist"),
    (["--method", "patches", "--unit", "99"], "unit 99 does not exist"),
    (["--method", "localize", "--canvas", "4"], "cannot hold 8x8 images"),
    (["--method", "retrieval", "--k", "0"], "must be positive"),
])
def test_mistakes_are_one_line_and_exit_2(run, run_cli, args, message):
    code, out, err = run_cli("explain", run, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_not_a_run(run_cli, tmp_path):
    code, _, err = run_cli("explain", tmp_path, "--method", "cam")
    assert code == 2 and "not a run directory" in err
