"""`vislab export` and `vislab predict --runtime onnx`: the files written, the lines printed, and
one-line refusals (exit 2) for a bad run folder and a run that is not a classifier."""

import os

import numpy as np
import pytest
from PIL import Image

from tests.explain.tiny_run import train_tiny

LOCALIZATION = ["--set", "data.kwargs={source: digits, image_size: 32, scale: [2, 3], train: 40, val: 10, test: 12}",
                "--set", "model.kwargs={widths: [8, 8, 8], box_hidden: 16}", "--set", "train.epochs=1",
                "--set", "train.batch_size=16", "--no-progress"]      # as tests/detection/test_localization.py


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny(str(tmp_path_factory.mktemp("export-cli") / "run"), evaluated=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = [str(folder / f"{i}.png") for i in range(3)]
    for p in paths:
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(p)
    return paths


def test_export_writes_the_file_and_prints_the_difference(run_cli, run_dir, tmp_path):
    code, out, err = run_cli("export", run_dir, "--format", "onnx")
    assert code == 0, err
    path = os.path.join(run_dir, "model.onnx")
    assert os.path.getsize(path) > 0 and out.startswith(f"exported {path}: ")
    diff = float(out.split("max abs logit difference ")[1].split()[0])
    assert 0 <= diff <= 1e-5
    code, out, err = run_cli("export", run_dir, "--out", tmp_path / "elsewhere" / "m.onnx")
    assert code == 0, err
    assert (tmp_path / "elsewhere" / "m.onnx").read_bytes() == open(path, "rb").read()


def test_predict_with_onnxruntime_prints_the_torch_lines(run_cli, run_dir, images):
    if os.path.exists(os.path.join(run_dir, "model.onnx")):
        os.remove(os.path.join(run_dir, "model.onnx"))
    code, torch_out, err = run_cli("predict", run_dir, *images, "--topk", "3", "--device", "cpu")
    assert code == 0, err
    code, onnx_out, err = run_cli("predict", run_dir, *images, "--topk", "3", "--runtime", "onnx")
    assert code == 0, err
    assert err.strip() == f"{os.path.join(run_dir, 'model.onnx')} missing: exporting it first"
    assert onnx_out == torch_out and len(onnx_out.splitlines()) == 3
    code, again, err = run_cli("predict", run_dir, *images, "--topk", "3", "--runtime", "onnx")
    assert code == 0 and again == torch_out and err == ""


@pytest.mark.parametrize("command", [["export"], ["predict", "--runtime", "onnx"]])
def test_a_folder_that_is_no_run_is_one_line(run_cli, tmp_path, images, command):
    args = [command[0], tmp_path / "nope", *(images[:1] if command[0] == "predict" else []), *command[1:]]
    code, out, err = run_cli(*args)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{tmp_path / 'nope'} is not a run directory" in err
    assert not (tmp_path / "nope").exists()


def test_a_run_that_is_not_a_classifier_is_refused(run_cli, tmp_path, images):
    run = tmp_path / "loc"
    code, _, err = run_cli("train", "localization", "--run-dir", run, *LOCALIZATION)
    assert code == 0, err
    before = sorted(os.listdir(run))
    for args in (["export", run], ["predict", run, images[0], "--runtime", "onnx"]):
        code, _, err = run_cli(*args)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "is a localization run; ONNX export and onnxruntime inference take classification runs only" in err
    assert sorted(os.listdir(run)) == before


def test_a_missing_image_is_one_line_before_any_export(run_cli, run_dir, tmp_path):
    onnx_file = os.path.join(run_dir, "model.onnx")
    if os.path.exists(onnx_file):
        os.remove(onnx_file)
    code, out, err = run_cli("predict", run_dir, tmp_path / "nope.png", "--runtime", "onnx")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "nope.png" in err and not os.path.exists(onnx_file)
