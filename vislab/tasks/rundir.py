"""Run directories: where a run lives, who may write it, and what a resume may change.

A run directory holds ``config.yaml`` (resolved), ``metrics.jsonl``, ``tb/`` (TensorBoard),
``checkpoints/{last,best}.pt``, ``plots/*.png``, ``eval.json``, ``model.safetensors`` and
``report.html``.  One ``vislab train`` at a time holds its lock (``.lock``, an ``flock`` the OS
releases even when the process is killed); every decision about the folder is taken under it.
"""

from __future__ import annotations

import copy
import fcntl
import os
import shutil
import time

from vislab.config import Config, apply_override, config_from_run, validate
from vislab.errors import UserError

CONFIG = "config.yaml"
LAST = os.path.join("checkpoints", "last.pt")
BEST = os.path.join("checkpoints", "best.pt")


class RunLock:
    """An exclusive lock on a run directory (created if missing)."""

    def __init__(self, run_dir: str) -> None:
        os.makedirs(run_dir, exist_ok=True)
        self.f = open(os.path.join(run_dir, ".lock"), "w")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.f.close()
            raise UserError(f"run directory {run_dir} is in use by another `vislab train`; wait for "
                            "it to finish or choose another --run-dir") from None
        self.f.write(str(os.getpid()))
        self.f.flush()

    def release(self) -> None:
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def default_run_dir(cfg: Config) -> str:
    return os.path.join("runs", f"{cfg.model.name}-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}")


def check_run_dir(run_dir: str, resume: bool = False, fresh: bool = False) -> None:
    """The mistakes :func:`open_run_dir` refuses, seen without taking the lock (``--nproc``
    checks them before starting its processes; the process that trains checks again under the lock)."""
    if resume and not os.path.exists(os.path.join(run_dir, LAST)):
        raise UserError(f"nothing to resume in {run_dir} (no {LAST}); drop --resume to start a new "
                        "run there")
    if not resume and not fresh and os.path.exists(os.path.join(run_dir, CONFIG)):
        raise UserError(f"{run_dir} already holds a run; use --resume to continue it, --fresh to "
                        "start over (the old run is kept beside it), or another --run-dir")


def open_run_dir(run_dir: str, resume: bool = False, fresh: bool = False) -> RunLock:
    """Lock ``run_dir`` for training and check what is in it, in that order: a folder in use by
    another process is refused before anything in it is looked at or moved.

    ``resume`` needs ``checkpoints/last.pt``; a folder that already holds a run needs ``fresh``,
    which moves the old run aside (to ``RUN_DIR.prev-TIME``) and locks a new, empty folder."""
    if resume:
        check_run_dir(run_dir, resume)
    lock = RunLock(run_dir)
    if resume or not os.path.exists(os.path.join(run_dir, CONFIG)):
        return lock
    if not fresh:
        lock.release()
        check_run_dir(run_dir)
    backup = f"{run_dir.rstrip('/')}.prev-{time.strftime('%Y%m%d-%H%M%S')}"
    shutil.move(run_dir, backup)            # the held lock travels with the old run
    try:
        new = RunLock(run_dir)
    finally:
        lock.release()
    print(f"previous run moved to {backup}")
    return new


def resume_config(run_dir: str, overrides: list[str]) -> Config:
    """The saved config of a run; overrides may only move the device (anything else would
    silently differ from the optimizer and schedule state being resumed).  Repeating a saved
    value is no change."""
    saved = config_from_run(run_dir)
    cfg = copy.deepcopy(saved)
    for o in overrides:
        apply_override(cfg, o)
    validate(cfg)
    before, after = saved.to_dict(), cfg.to_dict()
    after["device"] = before["device"]
    for sec in ("model", "data"):      # the saved kwargs are complete; repeating a subset is no change
        after[sec]["kwargs"] = {**before[sec]["kwargs"], **after[sec]["kwargs"]}
    flat_before, flat_after = flatten(before), flatten(after)
    changed = sorted(k for k in flat_after.keys() | flat_before.keys() if flat_before.get(k) != flat_after.get(k))
    if changed:
        raise UserError(f"--resume continues the saved run; only the device may change, "
                        f"not {', '.join(changed)}: start a new run for other settings")
    return cfg


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


__all__ = ["BEST", "CONFIG", "LAST", "RunLock", "check_run_dir", "default_run_dir", "flatten", "open_run_dir", "resume_config"]
