"""The contract every task family implements, and the registry of tasks.

A task is what a run trains: classification, localisation, and the families to come (detection,
segmentation, metric learning, generative and sequence models).  The engine trains any task; a
task supplies its data, model, loss and metrics, evaluates and predicts with a trained run, and
gives the report its sections.  A task module registers its task when it is imported, as model
families register their models; ``vislab.tasks`` imports every task module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from vislab.config import Config
from vislab.data.info import DataInfo
from vislab.data.loader import TensorLoader
from vislab.errors import UserError
from vislab.models.registry import create_model, default_kwargs, list_models, model_kind

if TYPE_CHECKING:
    from vislab.tasks.trained import TrainedRun


@dataclass
class DataBundle:
    """Training and validation data on the device, normalised, with what the run must remember
    about them (``info``) and what the user should be told (``notes``, one line each, logged at
    start).  The test set is never part of it: only ``evaluate`` reads it."""
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    info: DataInfo
    notes: list[str] = field(default_factory=list)


@dataclass
class Section:
    """One section of ``report.html``: an anchor, a title and its HTML."""
    id: str
    title: str
    html: str


@runtime_checkable
class Task(Protocol):
    """What a task family implements.

    ``augment``: whether the image-only batch augmentations of ``data.augment`` apply to its
    inputs (they would move a box without its target).  ``monitor`` is the validation metric
    that picks ``best.pt`` unless the recipe names another (``train.monitor``).

    Two optional methods, for families that train otherwise than one loss per batch:
    ``train_step(cfg, model) -> step_fn`` gives the trainer its ``step_fn`` (see
    :class:`vislab.engine.trainer.Trainer`: a GAN's alternating updates), and
    ``training_hooks(cfg, run_dir, info, device) -> [Hook]`` adds hooks to the run's own (a
    GAN's sample grid after every epoch).  ``init_model(cfg, model, data, log)`` initialises
    part of a new run's model from its training data before the first step (a captioner's word
    table from word2vec on the training captions); a resumed run skips it.
    """
    name: str
    augment: bool
    monitor: str

    def build_data(self, cfg: Config, device: torch.device,
                   val_indices: np.ndarray | None = None) -> DataBundle:
        """Train and validation tensors, normalised with statistics of the training part."""
        ...

    def train_loader(self, cfg: Config, data: DataBundle, gen: torch.Generator):
        """The training batches: an iterable of ``(x, target)`` on the device with ``__len__``
        and ``gen`` (whose state a checkpoint saves); most tasks return :func:`shuffled_batches`."""
        ...

    def build_model(self, cfg: Config, info: DataInfo) -> nn.Module:
        """The model, sized for the data; completes ``cfg.model.kwargs`` with every default so
        that the saved config rebuilds this exact model."""
        ...

    def loss(self, cfg: Config, model: nn.Module) -> Callable[[Any, Tensor], Tensor]:
        """``loss(model_output, target) -> scalar`` for the trainer."""
        ...

    def correct(self, out: Any, target: Tensor) -> Tensor | None:
        """Correct samples in a batch, for the running training accuracy (``None``: not tracked)."""
        ...

    def validate(self, model: nn.Module, loader, amp_dtype: torch.dtype | None = None) -> dict[str, float]:
        """``val_*`` metrics after each epoch."""
        ...

    def evaluate(self, run: TrainedRun, tta: bool = False) -> dict:
        """Test-set evaluation; writes ``eval.json`` (and the task's plots) into the run and
        returns the report, whose ``summary`` is what the CLI prints."""
        ...

    def predict(self, run: TrainedRun, paths: list[str], topk: int = 1) -> list[dict]:
        """Predictions for image files, each a dict with ``path`` and ``lines`` to print."""
        ...

    def report_sections(self, run: TrainedRun, evaluation: dict) -> list[Section]:
        """What ``report.html`` shows for this family, after the headline and curves."""
        ...

    def headline(self, evaluation: dict) -> list[tuple[str, str]]:
        """The report's headline figures: ``(label, value)`` pairs."""
        ...


def shuffled_batches(cfg: Config, data: DataBundle, gen: torch.Generator, augment: bool) -> TensorLoader:
    """Shuffled batches of ``train.batch_size`` (the last partial one dropped when there is more
    than one), with the batch augmentations of ``data.augment`` when ``augment``."""
    return TensorLoader(data.train_x, data.train_y, cfg.train.batch_size, shuffle=True,
                        drop_last=len(data.train_y) > cfg.train.batch_size,
                        augment=cfg.data.augment if augment else None, gen=gen,
                        num_classes=data.info.num_classes, fill=data.info.norm.black)


@contextlib.contextmanager
def inference(model: nn.Module, amp_dtype: torch.dtype | None = None) -> Iterator[None]:
    """Predict with ``model``: no gradients, eval mode (the previous mode restored after), and
    autocast to ``amp_dtype`` on the model's device when given."""
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    device = "cpu" if param is None else param.device.type
    cast = torch.autocast(device, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    try:
        with torch.no_grad(), cast:
            yield
    finally:
        model.train(was_training)


def create_kind_model(cfg: Config, kind: str, task: str, num_classes: int, in_chans: int, **fixed) -> nn.Module:
    """The registry model ``cfg.model.name``, refused with the list of its kind's models when it
    is of another kind; ``cfg.model.kwargs`` completed with every default and ``fixed`` (values
    the data decides, e.g. ``img_size``), so the saved config rebuilds this exact model."""
    name = cfg.model.name
    if model_kind(name) != kind:
        raise UserError(f"{name!r} is a {model_kind(name)}; the {task} task trains one of "
                        f"{', '.join(list_models(kind=kind))}")
    cfg.model.kwargs = kwargs = {**default_kwargs(name), **cfg.model.kwargs, **fixed}
    try:
        return create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    except UserError:                  # the model's own one-line refusal says it best
        raise
    except (TypeError, ValueError) as e:
        raise UserError(f"model {name!r} does not take these arguments ({e}); check model.kwargs") from None


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if not isinstance(task, Task):
        raise TypeError(f"{type(task).__name__} does not implement the Task protocol")
    if task.name in _TASKS:
        raise RuntimeError(f"task {task.name!r} registered twice")
    _TASKS[task.name] = task
    return task


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    if name not in _TASKS:
        raise UserError(f"unknown task {name!r}: choose one of {', '.join(list_tasks())}")
    return _TASKS[name]


__all__ = ["DataBundle", "Section", "Task", "create_kind_model", "get_task", "inference", "list_tasks", "register_task",
           "shuffled_batches"]
