"""Every user mistake: one line on stderr naming the problem and the fix, exit code 2,
and nothing already written is lost."""

import gzip
import os

import numpy as np
import pytest

from vislab.data.idx import write_idx


def _one_line_error(result, *needles):
    code, _, err = result
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


def _idx_dir(tmp_path, n_img=20, n_lab=20, max_label=9):
    d = tmp_path / "fm"
    d.mkdir(exist_ok=True)
    for prefix in ("train", "t10k"):
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n_img, 28, 28), np.uint8))
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n_lab) % (max_label + 1)).astype(np.uint8))
    return d


def test_unknown_names_and_keys(run_cli):
    _one_line_error(run_cli("train", "--set", "data.name=imagenet5"), "unknown data set 'imagenet5'", "vislab data list")
    _one_line_error(run_cli("train", "--set", "model.name=resnet9000"), "unknown model 'resnet9000'", "vislab models")
    _one_line_error(run_cli("train", "--set", "train.epoch=3"), "unknown config key 'train.epoch'", "train.epochs")
    _one_line_error(run_cli("train", "--set", "train.epochs=three"), "'train.epochs' must be int")
    _one_line_error(run_cli("train", "--set", "optim.name=adagrad"), "optim.name", "sgd")
    _one_line_error(run_cli("train", "--set", "train.epochs"), "key=value")
    _one_line_error(run_cli("train", "--bogus-flag"), "unrecognized arguments")
    _one_line_error(run_cli("data", "check", "nope"), "unknown data set")


def test_config_file_problems(run_cli, tmp_path):
    _one_line_error(run_cli("train", tmp_path / "missing.yaml"), "does not exist")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1, 2\n")
    _one_line_error(run_cli("train", bad), "fix the YAML")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("trian:\n  epochs: 2\n")
    _one_line_error(run_cli("train", wrong), "unknown config key 'trian'", "did you mean train")


@pytest.mark.parametrize("damage,needle", [
    ("truncate", "truncated or corrupt gzip"),
    ("magic", "not an IDX file"),
    ("count", "images but"),
    ("label", "labels must lie in"),
    ("missing", "missing in"),
])
def test_bad_data_files(run_cli, tmp_path, damage, needle):
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
    _one_line_error(run_cli("train", "--set", f"data.root={d}", "--run-dir", tmp_path / "r"), needle)


def test_bad_paths(run_cli, tmp_path):
    _one_line_error(run_cli("train", "--set", f"data.root={tmp_path}/nowhere"), "does not exist")
    _one_line_error(run_cli("evaluate", tmp_path / "norun"), "not a run directory")
    _one_line_error(run_cli("train", "--run-dir", tmp_path / "r", "--resume"), "not a run directory")


def test_predict_bad_images_and_nothing_lost(run_cli, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--run-dir", run, "--set", "data.name=digits", "--set", "train.epochs=1",
                           "--set", "model.kwargs={widths: [4, 4, 4]}", "--no-progress")
    assert code == 0, err
    before = {p: open(os.path.join(dp, p), "rb").read() for dp, _, fs in os.walk(run) for p in fs
              if p.endswith((".pt", ".yaml", ".jsonl", ".safetensors"))}
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    _one_line_error(run_cli("predict", run, tmp_path / "bad.png"), "cannot decode image", "valid PNG or JPEG")
    _one_line_error(run_cli("predict", run, tmp_path / "none.png"), "does not exist")
    _one_line_error(run_cli("train", "--run-dir", run, "--set", "data.name=digits"), "already holds a run")
    after = {p: open(os.path.join(dp, p), "rb").read() for dp, _, fs in os.walk(run) for p in fs
             if p.endswith((".pt", ".yaml", ".jsonl", ".safetensors"))}
    assert before == after
