"""Readers for the other on-disk formats: CIFAR python pickles, image-folder trees, image files."""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np

from vislab.errors import UserError
from vislab.io import IMAGE_EXTENSIONS, read_image


class _NumpyOnly(pickle.Unpickler):
    """The CIFAR batches are pickles of dicts of numpy arrays: allow exactly that, nothing else."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar_batch(data: bytes, name: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch -> images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64."""
    try:
        d = _NumpyOnly(io.BytesIO(data), encoding="bytes").load()
        x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d[label_key.encode()], np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
        raise UserError(f"{name} is not a CIFAR python batch ({e}); use the "
                        "'python version' archive (cifar-*-python.tar.gz)") from None
    if len(x) != len(y):
        raise UserError(f"{name}: {len(x)} images but {len(y)} labels; the file is damaged")
    return x, y


def read_cifar(path: str, split: str, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10 (``label_key='labels'``) or CIFAR-100 (``'fine_labels'``) from the
    ``.tar.gz`` archive or its extracted folder.  ``split``: ``'train'`` or ``'test'``."""
    def wanted(member: str) -> bool:
        base = os.path.basename(member)
        if split == "test":
            return base in ("test_batch", "test")
        return base.startswith("data_batch_") or base == "train"

    blobs: list[tuple[str, bytes]] = []
    if os.path.isdir(path):
        for root, _, files in os.walk(path):
            for f in sorted(files):
                if wanted(f):
                    with open(os.path.join(root, f), "rb") as fh:
                        blobs.append((f, fh.read()))
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                for m in sorted(tar.getmembers(), key=lambda m: m.name):
                    if m.isfile() and wanted(m.name):
                        blobs.append((m.name, tar.extractfile(m).read()))
        except (tarfile.TarError, OSError, EOFError) as e:
            raise UserError(f"cannot read CIFAR archive {path} ({e}); download it again") from None
    if not blobs:
        raise UserError(f"no CIFAR {split} batches in {path}; point to cifar-*-python.tar.gz "
                        "or its extracted folder")
    parts = [read_cifar_batch(b, n, label_key) for n, b in sorted(blobs)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_image(path: str, channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read any PNG/JPEG/... as uint8 ``(channels, H, W)``: converted to grayscale or RGB as asked
    and, when ``size`` is given, resized (bilinear) to ``(H, W)``."""
    arr = read_image(path, "L" if channels == 1 else "RGB", size)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def read_image_folder(root: str, channels: int = 3, size: tuple[int, int] | None = None,
                      classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``root/CLASS/*.png`` -> images ``(N, C, H, W)`` uint8, labels, class names (sorted).
    Images of different sizes need ``size``."""
    if not os.path.isdir(root):
        raise UserError(f"image folder {root} does not exist; give a folder with one sub-folder per class")
    classes = classes or sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise UserError(f"{root} has no class sub-folders; expected root/CLASS/image.png")
    xs, ys = [], []
    for label, c in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(root, c))):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                xs.append(load_image(os.path.join(root, c, f), channels, size))
                ys.append(label)
    if not xs:
        raise UserError(f"no images under {root}; expected root/CLASS/*.png or *.jpg")
    if len({x.shape for x in xs}) > 1:
        raise UserError(f"images under {root} differ in size; set data.image_size to resize them")
    return np.stack(xs), np.asarray(ys, np.int64), classes
