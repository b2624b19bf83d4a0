"""A trained run, loaded once and typed: what ``evaluate``, ``predict``, ``explain``, ``report``
and ``detect`` all start from."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from vislab.config import Config, config_from_run
from vislab.data.info import DataInfo, Normalization
from vislab.engine.checkpoint import load_checkpoint
from vislab.io import resolve_device
from vislab.tasks.base import Task, get_task
from vislab.tasks.rundir import BEST, LAST


@dataclass
class TrainedRun:
    """A run directory's model (in eval mode, on ``device``), its data, config and task."""
    run_dir: str
    model: nn.Module
    info: DataInfo
    config: Config
    task: Task
    device: torch.device
    checkpoint: str                    # the file the weights came from

    @property
    def norm(self) -> Normalization:
        return self.info.norm

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    def path(self, *parts: str) -> str:
        return os.path.join(self.run_dir, *parts)


def load_run(run_dir: str, device: str | torch.device = "auto", which: str = "best") -> TrainedRun:
    """Load a run: the weights of ``best.pt`` (else ``last.pt``; ``which='last'`` for the
    latter), the model rebuilt from the saved config by the run's task, in eval mode."""
    cfg = config_from_run(run_dir)
    task = get_task(cfg.task)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    path = os.path.join(run_dir, BEST if which == "best" else LAST)
    if which == "best" and not os.path.exists(path):
        path = os.path.join(run_dir, LAST)
    ckpt = load_checkpoint(path, dev)
    info = DataInfo.from_dict(ckpt["data"])
    model = task.build_model(cfg, info).to(dev)
    model.load_state_dict(ckpt["model"])
    return TrainedRun(run_dir, model.eval(), info, cfg, task, dev, path)


__all__ = ["TrainedRun", "load_run"]
