"""The training loop: forward, loss, backward, step, and hooks around it.

It is deliberately small (compare detectron2's ``SimpleTrainer``); everything else is a hook.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from vislab.engine import distributed
from vislab.engine.checkpoint import rng_state, set_rng_state
from vislab.engine.hooks import EMAHook, Hook
from vislab.errors import UserError


class NonFiniteLossError(UserError):
    """The loss became NaN or infinite; the last checkpoint is left as it was."""


class Trainer:
    """Runs ``max_epochs`` epochs over ``loader`` with ``hooks``.

    Args:
        model, optimizer: what is trained.
        loss_fn: ``loss_fn(model_output, target) -> loss`` (the task's loss, aux heads included).
        correct_fn: ``correct_fn(model_output, target) -> number of correct samples`` for the
            running training accuracy (``None``, or a function returning ``None``: not tracked).
        loader: iterable of ``(x, target)`` batches already on the device; must have ``gen``
            (its ``torch.Generator``) whose state is saved for resume, and ``__len__``.
        hooks: run in list order at each point of the loop.
        amp_dtype: autocast dtype (``None``: full precision).
        grad_clip: max global gradient L2 norm (``None``: off).
        step_fn: ``step_fn(trainer, x, target) -> {"loss": Tensor, name: Tensor, ...}`` replaces
            the one forward-backward-step of :meth:`train_step` for models trained in several
            moves per batch (a GAN's discriminator then generator); it calls
            :meth:`optimize` for each move and returns detached scalars: ``loss`` and any others,
            whose epoch means are logged as ``train_NAME``.
        forward_model: what the one-loss step calls forward on: ``model`` wrapped in
            ``DistributedDataParallel`` when several processes train (:mod:`vislab.engine.distributed`);
            default ``model``.  Without the wrapper, :meth:`optimize` averages the gradients over
            the processes itself (the step-function path).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable, loader, max_epochs: int, hooks: Iterable[Hook] = (),
                 device: torch.device = torch.device("cpu"), amp_dtype: torch.dtype | None = None,
                 grad_clip: float | None = None, correct_fn: Callable | None = None,
                 log: Callable[[str], None] = print, step_fn: Callable | None = None,
                 forward_model: nn.Module | None = None) -> None:
        self.model, self.optimizer, self.loss_fn, self.loader = model, optimizer, loss_fn, loader
        self.forward_model = forward_model if forward_model is not None else model
        self._rng_ranks: list | None = None
        self.step_fn = step_fn
        self.max_epochs, self.hooks, self.device = max_epochs, list(hooks), device
        self.amp_dtype, self.grad_clip, self.correct_fn, self.log = amp_dtype, grad_clip, correct_fn, log
        self.epoch = self.step = self.seen = 0
        self.steps_per_epoch = len(loader)
        self.stop = self.improved = False
        self.epoch_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ loop
    def train(self) -> None:
        try:
            self._call("before_train")
            while self.epoch < self.max_epochs and not self.stop:
                self.run_epoch()
        finally:
            self._call("after_train")

    def run_epoch(self) -> None:
        self.model.train()
        self.epoch_metrics, self.improved = {}, False
        self.reset_running()
        self._call("before_epoch")
        for x, y in self.loader:
            self.train_step(x, y)
            self._call("after_step")
        self._reduce_running()
        loss, acc = self.running()
        self._check_finite(loss)
        self.epoch_metrics["train_loss"] = loss
        if acc is not None:
            self.epoch_metrics["train_top1"] = acc
        n = max(self._count, 1)
        self.epoch_metrics.update({f"train_{k}": float(v) / n for k, v in self._terms.items()})
        if distributed.active():           # each process's random state, for the checkpoint process 0 writes
            self._rng_ranks = distributed.gather(rng_state())
        self._call("after_epoch")
        self.epoch += 1

    def train_step(self, x: Tensor, y: Tensor) -> None:
        terms: dict[str, Tensor] = {}
        if self.step_fn is not None:
            terms = dict(self.step_fn(self, x, y))
            loss, correct = terms.pop("loss"), None
        else:
            with self.autocast():
                out = self.forward_model(x)
                loss = self.loss_fn(out, y)
            self.optimize(loss)
            with torch.no_grad():
                correct = self.correct_fn(out, y) if self.correct_fn is not None else None
        self.step += 1
        self.seen += len(x) * distributed.world_size()       # images of the global batch
        with torch.no_grad():
            self._loss_sum += loss.detach() * len(x)
            for k, v in terms.items():
                self._terms[k] = self._terms.get(k, 0.0) + v.detach() * len(x)
            if correct is not None:
                self._correct += correct
                self._tracked = True
            self._count += len(x)
        if self.step % 25 == 0:
            self._check_finite(float(self._loss_sum))

    def optimize(self, loss: Tensor) -> None:
        """One optimizer step on ``loss``: gradients zeroed (to ``None``), backward, the global
        norm clipped when ``grad_clip`` is set, step.  Parameters the loss does not reach keep
        ``grad=None`` and the optimizer leaves them (and their state) untouched, so one optimizer
        serves models updated part by part.  With several processes and no
        DistributedDataParallel wrapper (the step-function path) the gradients are averaged
        over the processes here."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.forward_model is self.model:
            distributed.average_gradients(self.model.parameters())
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()

    def reset_running(self) -> None:
        """Start the epoch's running loss and accuracy afresh."""
        self._loss_sum = torch.zeros((), device=self.device)
        self._correct = torch.zeros((), device=self.device)
        self._count = 0
        self._tracked = False
        self._terms: dict[str, Tensor] = {}

    def _reduce_running(self) -> None:
        """The epoch's running sums over every process (the logged training loss is the global
        batch's)."""
        if not distributed.active():
            return
        keys = sorted(self._terms)
        flat = torch.stack([self._loss_sum.float(), self._correct.float(),
                            torch.tensor(float(self._count), device=self.device),
                            torch.tensor(float(self._tracked), device=self.device),
                            *(self._terms[k].float() for k in keys)])
        distributed.all_reduce_sum(flat)
        self._loss_sum, self._correct = flat[0], flat[1]
        self._count, self._tracked = int(flat[2]), bool(flat[3])
        self._terms = dict(zip(keys, flat[4:]))

    def running(self) -> tuple[float, float | None]:
        """Mean training loss and accuracy (``None`` when not tracked) of the epoch so far."""
        n = max(self._count, 1)
        acc = float(self._correct) / n if self._tracked else None
        return float(self._loss_sum) / n, acc

    def _check_finite(self, loss_sum: float) -> None:
        if not torch.isfinite(torch.tensor(loss_sum)):
            raise NonFiniteLossError(
                f"training loss became non-finite at epoch {self.epoch + 1}, step {self.step}; "
                "lower optim.lr or set train.grad_clip (the last checkpoint is intact: --resume "
                "continues from it)")

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _call(self, event: str) -> None:
        for h in self.hooks:
            getattr(h, event)(self)

    # ------------------------------------------------------------------ state
    def eval_model(self) -> nn.Module:
        """The weights to evaluate: the EMA when there is one, else the model."""
        for h in self.hooks:
            if isinstance(h, EMAHook):
                return h.ema.module
        return self.model

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "hooks": {type(h).__name__: h.state_dict() for h in self.hooks},
            "epoch": self.epoch + 1,            # the next epoch to run
            "step": self.step, "seen": self.seen,
            "epoch_metrics": dict(self.epoch_metrics),
            "rng": rng_state(),
            "loader_rng": self.loader.gen.get_state(),
            "world_size": distributed.world_size(),
            **({"rng_ranks": self._rng_ranks} if self._rng_ranks is not None else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        saved_world, world = state.get("world_size", 1), distributed.world_size()
        if saved_world != world:
            raise UserError(f"this run was trained by {saved_world} process(es); resume it with --nproc {saved_world}, "
                            f"not {world}: its random state and batch split are per process")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for h in self.hooks:
            if type(h).__name__ in state["hooks"]:
                h.load_state_dict(state["hooks"][type(h).__name__])
        self.epoch, self.step, self.seen = state["epoch"], state["step"], state["seen"]
        set_rng_state(state["rng_ranks"][distributed.rank()] if "rng_ranks" in state else state["rng"])
        self.loader.gen.set_state(state["loader_rng"])


def set_determinism(seed: int, deterministic: bool) -> None:
    """Seed every generator; with ``deterministic`` also force deterministic kernels, else let
    cuDNN time its convolution algorithms once per shape and keep the fastest (CUDA only)."""

    import numpy as np
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
