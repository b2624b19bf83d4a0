"""The ground floor: atomic writes, image reading and device choice, shared by every layer.

It imports nothing of vislab but :mod:`vislab.errors` (held by an import-linter contract), so
that the command line, the data readers, the engine, the report and the classic methods can all
use it without pulling each other in.  torch is imported inside the two functions that need it:
the torch-free commands (``vislab --help``, ``vislab data list``) import this module too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

import numpy as np

from vislab.errors import UserError

if TYPE_CHECKING:
    import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


# ------------------------------------------------------------------------------ atomic writes

def _atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over ``path``: a
    crash leaves the old file or the new one, never half of one."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder; give a file name to write")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())          # mkstemp makes 0600; give the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: dict, path: str | os.PathLike) -> None:
    import torch
    _atomic(path, lambda f: torch.save(obj, f))


# ------------------------------------------------------------------------------ images

def read_image(path: str | os.PathLike, mode: str = "RGB", size: tuple[int, int] | None = None) -> np.ndarray:
    """An image file as uint8 ``(H, W)`` (``mode='L'``) or ``(H, W, 3)`` (``'RGB'``); resized
    (bilinear) to ``size = (H, W)`` when given.  A missing or undecodable file is a
    :class:`UserError` that names it."""
    from PIL import Image, UnidentifiedImageError
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode {mode!r}: use 'L' (grey) or 'RGB'")
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise UserError(f"image {os.fspath(path)} does not exist; check the path") from None
    except IsADirectoryError:
        raise UserError(f"{os.fspath(path)} is a folder, not an image; give an image file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"cannot decode image {os.fspath(path)} ({e}); give a valid PNG or JPEG") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise UserError(f"image {os.fspath(path)} does not exist; check the path") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"cannot decode image {os.fspath(path)} ({e}); give a valid PNG or JPEG") from None


# ------------------------------------------------------------------------------ devices

def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else must be available."""
    import torch
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("device 'mps' is not available here; use --device cpu")
    return dev


__all__ = ["IMAGE_EXTENSIONS", "atomic_write_bytes", "atomic_write_text", "atomic_torch_save",
           "read_image", "image_size", "resolve_device"]
