"""The generative task end to end on tiny data (scikit-learn's 8x8 digits): every model kind
trains through the one engine, evaluates (reconstruction, FD against a small classifier run,
one-class AUROC checked against scikit-learn), samples, predicts and reports; the AE's encoder
starts a classifier."""

import json
import os

import pytest
import torch
from PIL import Image

COMMON = ["--set", "data.name=digits", "--set", "data.val_size=100", "--set", "train.batch_size=64",
          "--set", "generative.eval_samples=100", "--no-progress"]
SMALL = {"ae": "{latent_dim: 8, width: 8}", "vae": "{latent_dim: 4, width: 8}",
         "dcgan": "{latent_dim: 8, width: 8}", "bigan": "{latent_dim: 8, width: 8, hidden: 32}"}


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory):
    """A tiny digits classifier whose penultimate features the FD compares."""
    from vislab.cli import main
    run = tmp_path_factory.mktemp("gen") / "features"
    assert main(["train", "quick", "--run-dir", str(run), "--set", "data.name=digits", "--set", "train.epochs=2",
                 "--set", "model.name=small_cnn", "--set", "model.kwargs={widths: [8, 8, 16]}",
                 "--set", "data.val_size=100", "--no-progress"]) == 0
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory, feature_run):
    """One trained and evaluated run per recipe (BiGAN and a second AE one-class)."""
    from vislab.cli import main
    root = tmp_path_factory.mktemp("gen")
    out = {}
    for name, recipe, extra in (("ae", "ae", []), ("vae", "vae", []), ("dcgan", "dcgan", []),
                                ("bigan", "bigan", ["--set", "generative.normal_class=3"]),
                                ("ae_oc", "ae", ["--set", "generative.normal_class=3"])):
        run = root / name
        kw = SMALL[recipe]
        assert main(["train", recipe, "--run-dir", str(run), *COMMON, "--set", f"model.kwargs={kw}",
                     "--set", "train.epochs=2", "--set", f"generative.feature_run={feature_run}", *extra]) == 0
        assert main(["evaluate", str(run)]) == 0
        out[name] = run
    return out


def _eval(run):
    return json.loads((run / "eval.json").read_text())


def test_every_kind_evaluates_with_its_figures(runs):
    for name, run in runs.items():
        ev = _eval(run)
        assert ev["task"] == "generative" and ev["model"] in ("conv_ae", "vae", "dcgan", "bigan")
        assert ev["fd"] >= 0 and ev["fd_floor"] >= 0
        assert sum(ev["samples_class_histogram"]) == ev["fd_images"]["compared"]
        assert 0 <= ev["samples_class_entropy"] <= 1 and 0 < ev["samples_confidence"] <= 1
        for p in ev["plots"]:
            assert (run / "plots" / p).is_file(), p
        assert ("recon_mse" in ev) == (ev["kind"] != "gan")
        if ev["kind"] == "ae":          # AE sampling under the three priors, the configured one first
            assert list(ev["fd_by_prior"]) == ["full", "diagonal", "standard"]
            assert ev["fd_by_prior"]["full"] == ev["fd"]
    # GANs keep the last epoch; their fixed-noise grids are written after every epoch
    for name in ("dcgan", "bigan"):
        assert sorted(os.listdir(runs[name] / "samples")) == ["epoch_001.png", "epoch_002.png"]


def test_reconstruction_error_matches_a_direct_computation(runs):
    from vislab.data.datasets import load_split
    from vislab.tasks import load_run
    run = load_run(str(runs["ae"]))
    x = run.norm.from_uint8(load_split("digits", "test").images)
    with torch.no_grad():
        rec = torch.sigmoid(run.model(x).logits)
    assert _eval(runs["ae"])["recon_mse"] == pytest.approx(float(((rec - x) ** 2).mean()), rel=1e-5)


def test_fd_floor_and_fd_from_the_feature_run(runs, feature_run):
    """The floor is the FD between two halves of the test set; a model's FD is larger."""
    ev = _eval(runs["dcgan"])
    assert str(feature_run) in ev["fd_features"]
    assert ev["fd"] > ev["fd_floor"]


def test_one_class_auroc_matches_sklearn(runs):
    from sklearn.metrics import roc_auc_score

    from vislab.data.datasets import load_split
    from vislab.tasks import load_run
    from vislab.tasks.generative import anomaly_scores
    for name, keys in (("bigan", {"latent", "discriminator", "reconstruction"}), ("ae_oc", {"reconstruction"})):
        ev = _eval(runs[name])
        assert ev["normal_class"] == 3 and set(ev["auroc"]) == keys
        test = load_split("digits", "test")
        run = load_run(str(runs[name]))
        scores = anomaly_scores(run.model, run.norm.from_uint8(test.images))
        for k in keys:
            assert ev["auroc"][k] == pytest.approx(roc_auc_score(test.labels != 3, scores[k].numpy()), abs=1e-9)
        assert len(ev["auroc_by_anomaly_class"]) == 9
        assert "anomaly_maps.png" in ev["plots"]


def test_one_class_trains_on_the_normal_class_only(tmp_path):
    from vislab.config import load_config
    from vislab.tasks.generative import GenerativeTask
    cfg = load_config("ae", ["data.name=digits", "generative.normal_class=3", "data.val_size=20"])
    data = GenerativeTask().build_data(cfg, torch.device("cpu"))
    from vislab.data.datasets import load_split
    labels = load_split("digits", "train").labels
    assert len(data.train_y) + len(data.val_y) == int((labels == 3).sum())
    assert data.train_x.min() >= 0 and data.train_x.max() <= 1       # [0, 1]: no standardisation


def test_sample_cli_writes_a_grid(runs, run_cli, tmp_path):
    out = tmp_path / "grid.png"
    code, _, _ = run_cli("sample", runs["vae"], "--n", 10, "--nrow", 5, "--out", out)
    assert code == 0 and out.is_file()
    w, h = Image.open(out).size
    assert (w, h) == (5 * 8 + 6 * 2, 2 * 8 + 3 * 2)        # make_grid: 2-pixel padding around 8x8 images
    code, _, err = run_cli("sample", runs["vae"], "--n", 0)
    assert code == 2 and "--n" in err


def test_sample_refuses_other_tasks(feature_run, run_cli):
    code, _, err = run_cli("sample", feature_run)
    assert code == 2 and "generative runs" in err


def test_ae_sampling_draws_from_the_fitted_latent_gaussian(runs):
    from vislab.tasks import load_run
    run = load_run(str(runs["ae"]))
    prior = run.task.latent_prior(run)
    assert os.path.exists(run.path("latent_prior.pt"))
    from vislab.data.datasets import load_split
    x = run.norm.from_uint8(load_split("digits", "train").images)
    with torch.no_grad():
        z = run.model.encode(x).double()
    assert torch.allclose(prior.mean, z.mean(0), atol=1e-4)
    diag = run.task.latent_prior(run, "diagonal")
    assert torch.equal(diag.mean, prior.mean) and torch.equal(diag.cov, torch.diag(prior.cov.diagonal()))
    std = run.task.latent_prior(run, "standard")
    assert torch.equal(std.mean, torch.zeros(8, dtype=torch.float64)) and torch.equal(std.cov, torch.eye(8, dtype=torch.float64))
    a = run.task.sample(run, 6, seed=1)
    assert a.shape == (6, 1, 8, 8) and torch.equal(a, run.task.sample(run, 6, seed=1))


def test_predict_prints_anomaly_scores(runs, run_cli, tmp_path):
    from vislab.data.datasets import load_split
    img = tmp_path / "digit.png"
    Image.fromarray(load_split("digits", "test").images[0, 0]).save(img)
    code, out, _ = run_cli("predict", runs["bigan"], img)
    assert code == 0
    for k in ("reconstruction", "latent", "discriminator"):
        assert k in out


def test_report_shows_the_family_sections(runs, run_cli):
    code, _, _ = run_cli("report", runs["bigan"])
    assert code == 0
    html = (runs["bigan"] / "report.html").read_text()
    for anchor in ("training-samples", "samples", "reconstructions", "interpolation", "anomaly"):
        assert f'id="{anchor}"' in html


def test_user_mistakes_get_one_line(runs, run_cli, tmp_path):
    code, _, err = run_cli("train", "ae", "--run-dir", tmp_path / "a", *COMMON, "--set", "generative.normal_class=12")
    assert code == 2 and "normal_class" in err and not (tmp_path / "a").exists()
    code, _, err = run_cli("train", "ae", "--run-dir", tmp_path / "b", *COMMON, "--set", "model.name=small_cnn")
    assert code == 2 and "generative task trains one of" in err
    code, _, err = run_cli("evaluate", runs["ae"].parent / "nonexistent")
    assert code == 2
    code, _, err = run_cli("train", "ae", *COMMON, "--set", "generative.recon_loss=l3")
    assert code == 2 and "generative.recon_loss" in err


def test_bad_feature_run_is_refused(runs, run_cli, tmp_path):
    from vislab.cli import main
    code = main(["train", "ae", "--run-dir", str(tmp_path / "r"), *COMMON, "--set", f"model.kwargs={SMALL['ae']}",
                 "--set", "train.epochs=1", "--set", f"generative.feature_run={runs['vae']}"])
    assert code == 0
    code, _, err = run_cli("evaluate", tmp_path / "r")
    assert code == 2 and "classification run" in err


def test_ae_encoder_starts_a_classifier(runs, tmp_path, run_cli):
    """The notes' AE initialisation: model.init_from an AE run loads its encoder into
    conv_ae_encoder (decoder dropped, head new); another model name is refused with the fix."""
    from vislab.tasks import load_run
    clf = tmp_path / "clf"
    code, _, err = run_cli("train", "ae_classifier", "--run-dir", clf, "--set", "data.name=digits",
                             "--set", f"model.kwargs={SMALL['ae']}", "--set", f"model.init_from={runs['ae']}",
                             "--set", "train.freeze=backbone", "--set", "data.per_class=5", "--set", "train.epochs=1",
                             "--set", "train.batch_size=16", "--set", "data.val_size=100", "--no-progress")
    assert code == 0, err
    ae, c = load_run(str(runs["ae"])), load_run(str(clf))
    for k, v in c.model.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(v, ae.model.state_dict()[k]), k      # frozen: still the AE's encoder
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(c.model.forward_features(x), ae.model.encode(x))
    code, _, err = run_cli("train", "ae_classifier", "--run-dir", tmp_path / "bad", "--set", "data.name=digits",
                           "--set", "model.name=small_cnn", "--set", f"model.init_from={runs['ae']}")
    assert code == 2 and "conv_ae_encoder" in err


def test_gan_best_is_the_last_epoch(runs):
    from vislab.engine.checkpoint import load_checkpoint
    best = load_checkpoint(str(runs["dcgan"] / "checkpoints" / "best.pt"), "cpu")
    last = load_checkpoint(str(runs["dcgan"] / "checkpoints" / "last.pt"), "cpu")
    assert best["epoch"] == last["epoch"] - 1 == 1
    for k, v in last["model"].items():
        assert torch.equal(v, best["model"][k])
    cfg = (runs["dcgan"] / "config.yaml").read_text()
    assert "monitor: last" in cfg


def test_default_feature_run_is_cached(tmp_path, monkeypatch):
    """Without generative.feature_run the FD uses vislab's own classifier of the data set,
    trained once into $VISLAB_CACHE and reused."""
    from vislab.tasks import generative
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(generative, "FEATURE_RECIPE", ["train.epochs=1", "model.kwargs={widths: [4, 4, 8]}",
                                                      "data.val_size=100"])
    logs = []
    path = generative.default_feature_run("digits", None, logs.append)
    assert path == os.path.join(str(tmp_path), "fd-features", "digits")
    assert os.path.exists(os.path.join(path, "checkpoints", "best.pt")) and any("once" in s for s in logs)
    logs.clear()
    assert generative.default_feature_run("digits", None, logs.append) == path and not logs


def test_gan_resume_is_bit_identical(tmp_path):
    """A DCGAN run stopped after its first checkpoint and resumed ends with the weights of an
    uninterrupted run: both halves of the alternating step draw their noise from the global
    generator, whose state the checkpoint keeps, and the one optimizer holds D's and G's state."""
    from vislab.config import load_config
    from vislab.engine.checkpoint import load_checkpoint
    from vislab.engine.hooks import Hook
    from vislab.tasks.runner import train

    def cfg():
        return load_config("dcgan", ["data.name=digits", "data.val_size=100", "train.batch_size=64",
                                     f"model.kwargs={SMALL['dcgan']}", "train.epochs=2", "deterministic=true"])

    class Crash(Hook):
        def after_epoch(self, t):
            raise RuntimeError("simulated crash after the first checkpoint")

    train(cfg(), str(tmp_path / "ref"), progress=False, log=lambda s: None)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg(), str(tmp_path / "run"), progress=False, log=lambda s: None, extra_hooks=lambda i, d: [Crash()])
    train(cfg(), str(tmp_path / "run"), resume=True, progress=False, log=lambda s: None)
    a = load_checkpoint(str(tmp_path / "ref" / "checkpoints" / "last.pt"), "cpu")["model"]
    b = load_checkpoint(str(tmp_path / "run" / "checkpoints" / "last.pt"), "cpu")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
