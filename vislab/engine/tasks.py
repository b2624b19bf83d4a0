"""Tasks: what a run trains.  The engine (loop, hooks, checkpoints, run directory) is shared;
a task supplies the data, the model, the loss and the metrics.

``classification`` is built in; task packages register their own (``localization`` in
``vislab.detection``).  A task is chosen with the config key ``task``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from vislab.errors import UserError


@dataclass(frozen=True)
class Task:
    """The parts of training that depend on the task.

    prepare(cfg, device, val_indices) -> Prepared: train/val tensors on the device + ``stats``
        (everything needed later to rebuild the model and read new inputs).
    build_model(cfg, stats) -> nn.Module.
    loss(cfg, model) -> (model_output, target) -> scalar loss.
    correct(model_output, target) -> number of correct samples in a batch (or ``None``).
    validate(model, loader, amp_dtype) -> dict of ``val_*`` metrics.
    evaluate(run_dir, tta, device) -> report dict (written to ``eval.json`` by the task).
    augment: whether the image-only batch augmentations of ``data.augment`` apply.
    """
    name: str
    prepare: Callable
    build_model: Callable
    loss: Callable
    validate: Callable
    evaluate: Callable
    correct: Callable | None = None
    augment: bool = True


_TASKS: dict[str, Task] = {}
_PROVIDERS = {"classification": "vislab.engine.classification",
              "localization": "vislab.detection.localization"}


def register_task(task: Task) -> Task:
    if task.name in _TASKS:
        raise RuntimeError(f"task {task.name!r} registered twice")
    _TASKS[task.name] = task
    return task


def list_tasks() -> list[str]:
    return sorted(_PROVIDERS)


def get_task(name: str) -> Task:
    if name not in _PROVIDERS:
        raise UserError(f"unknown task {name!r}: choose one of {', '.join(list_tasks())}")
    if name not in _TASKS:
        importlib.import_module(_PROVIDERS[name])
    return _TASKS[name]
