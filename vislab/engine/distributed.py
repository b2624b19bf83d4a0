"""Data-parallel training on PyTorch's own engine: ``torch.distributed`` processes started by
``torchrun`` (its rendezvous gives several machines for free), gradients averaged by
``DistributedDataParallel``.

One batch, whatever the number of processes.  Every process holds the whole data set in memory
and draws the same global batch of ``train.batch_size`` images from the same generator (same
shuffle, same augmentation of each image); process ``r`` of ``N`` trains on rows ``r*B/N ..
(r+1)*B/N`` of it.  The gradient averaged over the processes is then the gradient of the global
batch's mean loss, so ``N`` processes follow one process at the same global batch step for step
(to rounding, for models without BatchNorm; BatchNorm normalises each process's part with its
own statistics unless ``train.sync_bn`` on CUDA).  Drawing the global batch costs each process
the augmentation of ``N`` times its share, a few percent of a step on the in-memory path.

Process 0 alone writes: it holds the run directory's lock, validates after each epoch (every
image once, no padded duplicates) and sends the metrics to the others, so that early stopping
agrees; it writes the logs, checkpoints and plots.  A checkpoint keeps each process's random
state, so ``--resume`` with the same number of processes continues exactly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vislab.errors import UserError


@dataclass(frozen=True)
class Context:
    """This process's place: ``rank`` of ``world_size``, ``local_rank`` on its machine."""
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its variables)
    with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> Context | None:
    """Join the process group when launched by torchrun (``None`` otherwise): NCCL for CUDA,
    gloo for the CPU.  On CUDA each process takes the GPU of its local rank.  Returns the
    context; the caller uses :func:`device_for` for the device."""
    if not launched():
        return None
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(rank, world, local)


def device_for(device: torch.device, ctx: Context | None) -> torch.device:
    """``cuda:LOCAL_RANK`` for a CUDA run of several processes; else ``device``."""
    if ctx is not None and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def broadcast(obj: Any = None) -> Any:
    """Process 0's ``obj`` on every process (a picklable object)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list:
    """Every process's ``obj``, in rank order, on every process."""
    if not active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def share_failure(error: UserError | None) -> None:
    """Process 0 tells the others whether it failed (a run-directory or data mistake): every
    process then raises the same one-line error instead of waiting for it forever."""
    message = broadcast(str(error) if error is not None else None)
    if message is not None:
        raise error if error is not None else UserError(message)


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_sum(t: Tensor) -> Tensor:
    """The sum of ``t`` over the processes (in place, returned)."""
    if active():
        dist.all_reduce(t)
    return t


def average_gradients(params) -> None:
    """Average the gradients of ``params`` over the processes, for models trained in several
    moves per batch (a GAN's step function), which DistributedDataParallel's single forward
    does not cover.  Parameters without a gradient on every process stay without one (a move
    reaches the same parameters on every process)."""
    if not active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(model: nn.Module) -> None:
    """Process 0's parameters and buffers on every process (DistributedDataParallel does this
    when it wraps a model; the step-function path calls it itself)."""
    if not active():
        return
    for t in [*model.parameters(), *model.buffers()]:
        dist.broadcast(t.data, src=0)


def wrap(model: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
    """``DistributedDataParallel(model)`` on ``device``; with ``sync_bn`` its BatchNorm layers
    become ``SyncBatchNorm`` first (CUDA only: PyTorch implements it for NCCL alone)."""
    if sync_bn:
        check_sync_bn(device)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def check_sync_bn(device: torch.device) -> None:
    if device.type != "cuda":
        raise UserError("train.sync_bn needs CUDA: PyTorch's SyncBatchNorm runs only on NCCL; on the CPU each "
                        "process normalises with its own statistics (drop --set train.sync_bn=true)")


def check_batch(batch_size: int) -> int:
    """The per-process batch: ``train.batch_size / N``, which must divide evenly."""
    return check_batch_for(batch_size, world_size())


def check_batch_for(batch_size: int, n: int) -> int:
    if batch_size % n:
        raise UserError(f"train.batch_size {batch_size} does not split evenly over {n} processes; use a multiple "
                        f"of {n} (the batch is global: each process takes batch_size / {n})")
    return batch_size // n


def launch(nproc: int, args: list[str]) -> int:
    """Run ``python ARGS`` in ``nproc`` local processes through torchrun's launcher
    (``torch.distributed.launcher.elastic_launch``: what ``torchrun --standalone --nproc-per-node
    N`` does), and return the exit code of the first process that failed (0 when none did).
    A process's own error line is already on stderr; the launcher's report of it is not repeated."""
    import logging
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)   # its failure report repeats the error
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    try:
        elastic_launch(config, sys.executable)(*args)
    except ChildFailedError as e:
        codes = [f.exitcode for f in e.failures.values()]
        return next((c for c in codes if c > 0), 1)
    return 0


def _rows(obj: Any, lo: int, hi: int) -> Any:
    if isinstance(obj, Tensor):
        return obj[lo:hi]
    if isinstance(obj, tuple):
        return tuple(_rows(o, lo, hi) for o in obj)
    if isinstance(obj, list):
        return obj[lo:hi]
    if isinstance(obj, dict):
        return {k: _rows(v, lo, hi) for k, v in obj.items()}
    return obj


def _length(obj: Any) -> int:
    return _length(obj[0]) if isinstance(obj, tuple) else len(obj)


class ShardedLoader:
    """A task's loader of global batches, each process keeping its rows: ``rank`` takes rows
    ``rank * b .. (rank + 1) * b`` of every batch, ``b = len(batch) / world_size`` (a short last
    batch is split as evenly as it goes).  ``gen`` and ``len`` are the wrapped loader's, the
    same on every process."""

    def __init__(self, loader, rank: int, world_size: int) -> None:
        self.loader, self.rank, self.world_size = loader, rank, world_size
        self.gen = loader.gen
        self.batch_size = loader.batch_size // world_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for x, y in self.loader:
            n = _length(x)
            lo, hi = n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size
            yield _rows(x, lo, hi), _rows(y, lo, hi)


__all__ = ["Context", "ShardedLoader", "active", "all_reduce_sum", "average_gradients", "barrier", "broadcast",
           "broadcast_parameters", "check_batch", "check_batch_for", "check_sync_bn", "device_for", "gather", "launch", "launched", "rank", "setup",
           "share_failure", "teardown", "world_size", "wrap"]
