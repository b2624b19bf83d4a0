"""ONNX export and onnxruntime inference of a classification run, checked against a PyTorch
model rebuilt here from the checkpoint and run on images normalised by hand."""

import copy
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from tests.explain.tiny_run import train_tiny
from vislab.config import config_from_run
from vislab.data.datasets import load_split
from vislab.errors import UserError
from vislab.models import create_model
from vislab.tasks import export
from vislab.tasks.runner import predict


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny(str(tmp_path_factory.mktemp("export") / "run"), evaluated=False)


def _reference(run_dir: str) -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    """The run's model rebuilt from ``best.pt`` and the first 256 test images normalised by hand."""
    ckpt = torch.load(os.path.join(run_dir, "checkpoints", "best.pt"), weights_only=True)
    cfg = config_from_run(run_dir)
    data = ckpt["data"]
    model = create_model(cfg.model.name, num_classes=len(data["classes"]), in_chans=data["in_chans"],
                         **cfg.model.kwargs)
    model.load_state_dict(ckpt["model"])
    images = load_split("digits", "test").images[:256].astype(np.float32) / 255
    mean, std = np.array(data["mean"]).reshape(1, -1, 1, 1), np.array(data["std"]).reshape(1, -1, 1, 1)
    return model.eval(), ((images - mean) / std).astype(np.float32), images


def test_onnxruntime_equals_pytorch_computed_here(run_dir):
    rep = export.export_onnx(run_dir)
    path = os.path.join(run_dir, "model.onnx")
    assert rep["path"] == path and rep["images"] == 256
    onnx.checker.check_model(onnx.load(path))
    model, x, _ = _reference(run_dir)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.shape[1:] == [1, 8, 8] and isinstance(inp.shape[0], str)      # dynamic batch axis
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    diffs = []
    for lo, hi in [(0, 64), (64, 128), (128, 192), (192, 256), (0, 1), (3, 10), (0, 256)]:
        got = session.run(None, {inp.name: x[lo:hi]})[0]
        assert got.shape == expected[lo:hi].shape
        diffs.append(np.abs(got - expected[lo:hi]).max())
    assert max(diffs) <= 1e-5, diffs
    # the figure the export reports is this difference (thread counts move the last bits of both)
    assert rep["max_abs_diff"] <= 1e-5 and abs(rep["max_abs_diff"] - max(diffs[:4])) < 5e-6


def test_predict_onnx_equals_the_torch_runtime(run_dir, tmp_path):
    _, _, images = _reference(run_dir)
    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray((images[i, 0] * 255).round().astype(np.uint8)).save(paths[-1])
    if os.path.exists(os.path.join(run_dir, "model.onnx")):
        os.remove(os.path.join(run_dir, "model.onnx"))
    said = []
    got = export.predict_onnx(run_dir, paths, topk=3, log=said.append)
    assert len(said) == 1 and "missing: exporting it first" in said[0]
    want = predict(run_dir, paths, "cpu", topk=3)
    for g, w in zip(got, want, strict=True):
        assert [p["class"] for p in g["predictions"]] == [p["class"] for p in w["predictions"]]
        np.testing.assert_allclose([p["prob"] for p in g["predictions"]], [p["prob"] for p in w["predictions"]],
                                   atol=1e-5, rtol=0)
    said.clear()
    export.predict_onnx(run_dir, paths[:1], log=said.append)
    assert said == []                                                          # up to date: not exported again


def test_a_file_older_than_the_checkpoint_is_exported_again(run_dir, tmp_path):
    path = os.path.join(run_dir, "model.onnx")
    if not os.path.exists(path):
        export.export_onnx(run_dir)
    ckpt = os.path.getmtime(os.path.join(run_dir, "checkpoints", "best.pt"))
    os.utime(path, (ckpt - 100, ckpt - 100))
    img = str(tmp_path / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    said = []
    export.predict_onnx(run_dir, [img], log=said.append)
    assert len(said) == 1 and "older than best.pt" in said[0]
    assert os.path.getmtime(path) >= ckpt


def test_a_graph_that_differs_from_pytorch_is_refused_and_leaves_no_file(run_dir, tmp_path, monkeypatch):
    real = export.onnx_bytes

    def perturbed(model, size):                  # an exporter that gets one bias slightly wrong
        broken = copy.deepcopy(model)
        with torch.no_grad():
            broken.head.bias[0] += 1e-3
        return real(broken, size)

    monkeypatch.setattr(export, "onnx_bytes", perturbed)
    out = tmp_path / "out" / "m.onnx"
    with pytest.raises(UserError, match=r"differs from PyTorch by 0.001 .*nothing written") as e:
        export.export_onnx(run_dir, str(out))
    assert "\n" not in str(e.value)
    assert not out.exists() and not (out.parent.exists() and os.listdir(out.parent))


def test_topk_below_one_is_refused(run_dir):
    with pytest.raises(UserError, match="--topk must be at least 1"):
        predict(run_dir, ["x.png"], topk=0, runtime="onnx")
