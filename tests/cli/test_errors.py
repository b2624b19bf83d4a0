"""Every user mistake: one line on stderr naming the problem and the fix, exit code 2,
and nothing already written is lost."""

import gzip
import os

import numpy as np
import pytest

from vislab.data.idx import write_idx


def snapshot(root) -> dict[str, bytes]:
    """Every file under ``root`` (plots/, tb/, checkpoints/ ... included), keyed by its path."""
    return {os.path.join(dp, f): open(os.path.join(dp, f), "rb").read()
            for dp, _, files in os.walk(root) for f in files}


@pytest.fixture
def refused(run_cli, tmp_path, monkeypatch):
    """``refused(args, *needles)``: the command fails with exit code 2 and one line on stderr
    holding every needle, and no file under the test's folder (the working directory) was
    created, changed or removed."""
    monkeypatch.chdir(tmp_path)

    def check(args, *needles):
        before = snapshot(tmp_path)
        code, _, err = run_cli(*args)
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        for n in needles:
            assert n in lines[0], lines[0]
        assert snapshot(tmp_path) == before
    return check


def _idx_dir(tmp_path, n_img=20, n_lab=20, max_label=9):
    d = tmp_path / "fm"
    d.mkdir(exist_ok=True)
    for prefix in ("train", "t10k"):
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n_img, 28, 28), np.uint8))
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n_lab) % (max_label + 1)).astype(np.uint8))
    return d


def test_unknown_names_and_keys(refused):
    refused(["train", "--set", "data.name=imagenet5"], "unknown data set 'imagenet5'", "vislab data list")
    refused(["train", "--set", "model.name=resnet9000"], "unknown model 'resnet9000'", "vislab models")
    refused(["train", "--set", "train.epoch=3"], "unknown config key 'train.epoch'", "train.epochs")
    refused(["train", "--set", "train.epochs=three"], "'train.epochs' must be int")
    refused(["train", "--set", "optim.name=adagrad"], "optim.name", "sgd")
    refused(["train", "--set", "train.epochs"], "key=value")
    refused(["train", "--bogus-flag"], "unrecognized arguments")
    refused(["data", "check", "nope"], "unknown data set")


def test_config_file_problems(refused, tmp_path):
    refused(["train", tmp_path / "missing.yaml"], "does not exist")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1, 2\n")
    refused(["train", bad], "fix the YAML")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("trian:\n  epochs: 2\n")
    refused(["train", wrong], "unknown config key 'trian'", "did you mean train")


@pytest.mark.parametrize("damage,needle", [
    ("truncate", "truncated or corrupt gzip"),
    ("magic", "not an IDX file"),
    ("count", "images but"),
    ("label", "labels must lie in"),
    ("missing", "missing in"),
])
def test_bad_data_files(refused, tmp_path, damage, needle):
    d = _idx_dir(tmp_path)
    f = d / "train-images-idx3-ubyte.gz"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:-20])
    elif damage == "magic":
        f.write_bytes(gzip.compress(b"\x01\x02\x03\x04" + bytes(100)))
    elif damage == "count":
        d = _idx_dir(tmp_path, n_img=20, n_lab=19)
    elif damage == "label":
        write_idx(d / "train-labels-idx1-ubyte.gz", np.full(20, 12, np.uint8))
    elif damage == "missing":
        os.remove(f)
    refused(["train", "--set", f"data.root={d}", "--run-dir", tmp_path / "r"], needle)


def test_bad_paths(refused, tmp_path):
    refused(["train", "--set", f"data.root={tmp_path}/nowhere"], "does not exist")
    refused(["evaluate", tmp_path / "norun"], "not a run directory")
    refused(["train", "--run-dir", tmp_path / "r", "--resume"], "not a run directory")


def test_predict_bad_images_and_nothing_lost(run_cli, refused, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--run-dir", run, "--set", "data.name=digits", "--set", "train.epochs=1",
                           "--set", "model.kwargs={widths: [4, 4, 4]}", "--no-progress")
    assert code == 0, err
    before = snapshot(run)
    assert any("/plots/" in p for p in before) and any("/tb/" in p for p in before)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    refused(["predict", run, tmp_path / "bad.png"], "cannot decode image", "valid PNG or JPEG")
    refused(["predict", run, tmp_path / "none.png"], "does not exist")
    refused(["train", "--run-dir", run, "--set", "data.name=digits"], "already holds a run")
    assert snapshot(run) == before
