"""Checkpoints that hold only tensors and plain values, and the RNG states that
make a resumed run bit-identical to an uninterrupted one."""

from __future__ import annotations

import os
import pickle
import random
import re
import warnings

import numpy as np
import torch

from vislab.errors import UserError
from vislab.io import atomic_write_bytes


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``: one that needs pickled code is refused."""
    if not os.path.exists(path):
        raise UserError(f"checkpoint {path} does not exist; train first or check the run directory")
    try:
        with warnings.catch_warnings():          # torch's own advice would be a second message
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" (it names {found.group(1)})" if found else ""
        raise UserError(f"refusing checkpoint {path}: it holds pickled Python objects{what}, not only tensors "
                        "and plain values; use a checkpoint that vislab wrote") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise UserError(f"checkpoint {path} is corrupt or truncated ({str(e).splitlines()[0][:160]}); "
                        "use another checkpoint (last.pt / best.pt)") from None


def rng_state() -> dict:
    """Every random-number state that training consumes."""
    state = {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": _python_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    version, internal, gauss_next = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal.tolist()), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> list:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]


def _python_state() -> list:
    version, internal, gauss_next = random.getstate()
    return [version, torch.tensor(internal, dtype=torch.int64), gauss_next]


def export_safetensors(state_dict: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None = None) -> None:
    """Weights only, as safetensors (shared storage is cloned), written atomically."""
    from safetensors.torch import save
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))
