"""Exported inference: a classification run's model as an ONNX file, checked against PyTorch,
and predictions computed from that file by onnxruntime.

The export is ``torch.onnx.export`` (the ``torch.export``-based exporter, which needs
onnxscript): one input ``images`` of the run's shape ``(N, C, H, W)`` with ``N`` dynamic, one
output ``logits``.  Before anything is written, onnxruntime runs the exported graph on the first
``CHECK_IMAGES`` images of the run's test set and its logits must equal PyTorch's within
``TOLERANCE`` (max abs): a model that does not survive the export is refused and leaves no file.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from vislab.config import config_from_run
from vislab.data.datasets import load_split
from vislab.data.loader import TensorLoader
from vislab.errors import UserError
from vislab.io import atomic_write_bytes
from vislab.tasks.classification import images_to_input, predict_logits, top_predictions
from vislab.tasks.trained import TrainedRun, load_run

ONNX_FILE = "model.onnx"
TOLERANCE = 1e-5          # max abs difference of the logits, onnxruntime against PyTorch
CHECK_IMAGES = 256        # test images the check runs on
CHECK_BATCH = 64          # images per call in the check


def onnx_bytes(model: nn.Module, input_size: tuple[int, int, int]) -> bytes:
    """The serialized ONNX graph of ``model`` in eval mode (its own mode is left as it was) for
    inputs ``(N, *input_size)``: traced at ``N = 1``, with ``N`` left dynamic.  A model the
    exporter cannot translate is a :class:`UserError` naming it."""
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    model = copy.deepcopy(model).cpu().eval() if not on_cpu or model.training else model
    example = torch.zeros(1, *input_size)
    try:
        program = torch.onnx.export(model, (example,), input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                                    verbose=False)
    except torch.onnx.OnnxExporterError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{type(model).__name__} cannot be exported to ONNX ({first}); "
                        "use the PyTorch runtime") from None
    return program.model_proto.SerializeToString()


def onnx_session(model: bytes | str, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session for an ONNX graph (bytes or a file); ``threads`` intra-op
    threads (default: onnxruntime's choice)."""
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def onnx_logits(session: ort.InferenceSession, x: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """The session's output for the float32 images ``x`` ``(N, C, H, W)``, ``batch`` at a time."""
    name = session.get_inputs()[0].name
    xs = x.detach().float().cpu().numpy()
    step = batch or max(len(xs), 1)
    outs = [session.run(None, {name: xs[i:i + step]})[0] for i in range(0, len(xs), step)]
    return torch.from_numpy(np.concatenate(outs))


def export_onnx(run_dir: str, out: str | None = None, device: str = "cpu") -> dict:
    """Export a classification run's model to ONNX (default ``RUN/model.onnx``) after checking
    that onnxruntime's logits equal PyTorch's (on ``device``) within ``TOLERANCE`` on the first
    ``CHECK_IMAGES`` test images.  Returns the path, the max abs difference and the image count."""
    return _export(_load_classification_run(run_dir, device), out)


def predict_onnx(run_dir: str, paths: list[str], topk: int = 1,
                 log: Callable[[str], None] = print) -> list[dict]:
    """What ``predict`` returns for a classification run, with the logits computed by
    onnxruntime from ``RUN/model.onnx``.  The file is exported first (said through ``log``)
    when it is missing or older than the run's checkpoint.  (``runner.predict`` checks the
    arguments.)"""
    run = _load_classification_run(run_dir, "cpu")
    x = images_to_input(run.info, paths)       # a bad image is said before any export
    path = run.path(ONNX_FILE)
    if not os.path.exists(path) or os.path.getmtime(path) < os.path.getmtime(run.checkpoint):
        why = "missing" if not os.path.exists(path) else f"older than {os.path.basename(run.checkpoint)}"
        log(f"{path} {why}: exporting it first")
        _export(run, path)
    return top_predictions(onnx_logits(onnx_session(path), x), paths, run.classes, topk)


def _load_classification_run(run_dir: str, device: str) -> TrainedRun:
    task = config_from_run(run_dir).task
    if task != "classification":
        raise UserError(f"{run_dir} is a {task} run; ONNX export and onnxruntime inference take classification "
                        "runs only (use the PyTorch runtime: vislab predict without --runtime onnx)")
    return load_run(run_dir, device)


def _export(run: TrainedRun, out: str | None) -> dict:
    out = out or run.path(ONNX_FILE)
    cfg = run.config
    data = onnx_bytes(run.model, (run.info.in_chans, *run.info.image_size))
    test = load_split(cfg.data.name, "test", cfg.data.root)
    x = run.norm.from_uint8(test.images[:CHECK_IMAGES], run.device)
    y = torch.from_numpy(test.labels[:CHECK_IMAGES]).to(run.device)
    reference, _ = predict_logits(run.model, TensorLoader(x, y, CHECK_BATCH))
    diff = float((onnx_logits(onnx_session(data), x, CHECK_BATCH) - reference).abs().max())
    if not diff <= TOLERANCE:                 # also refuses NaN
        raise UserError(f"the ONNX graph of {cfg.model.name} differs from PyTorch by {diff:.3g} (max abs logit "
                        f"over {len(x)} test images, limit {TOLERANCE:g}); nothing written, use --runtime torch")
    atomic_write_bytes(out, data)
    return {"path": out, "max_abs_diff": diff, "images": len(x), "tolerance": TOLERANCE}


__all__ = ["CHECK_IMAGES", "ONNX_FILE", "TOLERANCE", "export_onnx", "onnx_bytes", "onnx_logits",
           "onnx_session", "predict_onnx"]
