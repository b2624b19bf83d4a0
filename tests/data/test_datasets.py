import gzip
import hashlib
import os
import struct

import numpy as np
import pytest

from tests.conftest import FMNIST_DIR
from vislab.data import datasets as ds
from vislab.errors import UserError

_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
          "t10k-labels-idx1-ubyte")


def _idx_bytes(type_code: int, shape: tuple[int, ...], data: bytes) -> bytes:
    """An IDX file written from its definition: 0, 0, type, ndim, big-endian uint32 dims, data."""
    return bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + data


def _idx_root(folder, image_type: int):
    """Four hand-made IDX files (two 2x2 images per split, pixels 0, 100, 200, 255) in ``folder``."""
    pixels = bytes([0, 100, 200, 255] * 2)
    for prefix in ("train", "t10k"):
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(_idx_bytes(image_type, (2, 2, 2), pixels))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(0x08, (2,), bytes([3, 7])))
    return str(folder)


def test_unsigned_idx_images_load(tmp_path):
    d = ds.load_split("fashion_mnist", "train", root=_idx_root(tmp_path, 0x08))
    assert d.images.dtype == np.uint8 and d.images.shape == (2, 1, 2, 2)
    assert d.images[1, 0].tolist() == [[0, 100], [200, 255]] and d.labels.tolist() == [3, 7]


def test_signed_idx_images_refused(tmp_path):
    """Type 0x09 (int8) would read pixel 200 as -56: the data set refuses the file."""
    root = _idx_root(tmp_path, 0x09)
    with pytest.raises(UserError) as e:
        ds.load_split("fashion_mnist", "train", root=root)
    msg = str(e.value)
    assert os.path.join(root, "train-images-idx3-ubyte") in msg
    assert "int8" in msg and "0x09" in msg and "0x08" in msg and "\n" not in msg


# --------------------------------------------------------------------------- checksums

@pytest.fixture
def pinned(tmp_path, monkeypatch):
    """A test-only data set whose four files are pinned by their SHA-256 (computed here)."""
    src = tmp_path / "src"
    src.mkdir()
    _idx_root(src, 0x08)
    files = []
    for stem in _STEMS:
        raw = (src / stem).read_bytes()
        (src / f"{stem}.gz").write_bytes(gzip.compress(raw, mtime=0))
        (src / stem).unlink()
        files.append(ds.RemoteFile(f"{stem}.gz", "http://127.0.0.1:9/none",
                                   hashlib.sha256((src / f"{stem}.gz").read_bytes()).hexdigest(),
                                   hashlib.sha256(raw).hexdigest()))
    info = ds.DatasetInfo("test_pinned", tuple("abcdefgh"), 1, 2, files=tuple(files),
                          reader=ds._idx_reader("test_pinned", tuple("abcdefgh")))
    monkeypatch.setitem(ds._DATASETS, "test_pinned", info)
    return src


def test_checksum_warning_none_when_intact(pinned):
    assert ds.checksum_warning("test_pinned", str(pinned)) is None


def test_checksum_warning_accepts_recompressed_file(pinned):
    """Re-compressed (as Debian does) or decompressed files keep their content checksum."""
    p = pinned / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes()), compresslevel=1, mtime=12345))
    q = pinned / "t10k-labels-idx1-ubyte.gz"
    (pinned / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(q.read_bytes()))
    q.unlink()
    assert ds.checksum_warning("test_pinned", str(pinned)) is None


def test_checksum_warning_names_tampered_file(pinned):
    p = pinned / "train-labels-idx1-ubyte.gz"
    p.write_bytes(gzip.compress(_idx_bytes(0x08, (2,), bytes([3, 6]))))   # one label changed
    msg = ds.checksum_warning("test_pinned", str(pinned))
    assert msg is not None and "\n" not in msg
    assert "train-labels-idx1-ubyte.gz" in msg and "t10k" not in msg and "train-images" not in msg
    assert f"vislab data check test_pinned --root {pinned}" in msg
    assert ds.check_dataset("test_pinned", str(pinned))["ok"] is False   # `data check` agrees


def test_checksum_warning_caches_digests(pinned, monkeypatch):
    calls = []
    real = ds.sha256_file
    monkeypatch.setattr(ds, "sha256_file", lambda p: calls.append(p) or real(p))
    ds.checksum_warning("test_pinned", str(pinned))
    first = len(calls)
    assert first == 4
    ds.checksum_warning("test_pinned", str(pinned))
    assert len(calls) == first                     # unchanged files are not read again
    p = pinned / "t10k-images-idx3-ubyte.gz"
    tmp = pinned / "new.gz"
    tmp.write_bytes(gzip.compress(_idx_bytes(0x08, (2, 2, 2), bytes(8))))
    os.replace(tmp, p)                             # a replaced file is hashed again
    assert "t10k-images-idx3-ubyte.gz" in ds.checksum_warning("test_pinned", str(pinned))


@pytest.mark.parametrize("name", ["digits", "folder", "emnist_letters"])
def test_checksum_warning_none_without_pinned_files(name):
    assert ds.checksum_warning(name, None) is None


@pytest.mark.skipif(not os.path.isdir(FMNIST_DIR), reason="Debian's dataset-fashion-mnist is not installed")
def test_checksum_warning_debian_fashion_mnist(tmp_path):
    assert ds.checksum_warning("fashion_mnist", FMNIST_DIR) is None
    for stem in _STEMS[:3]:
        os.symlink(os.path.join(FMNIST_DIR, f"{stem}.gz"), tmp_path / f"{stem}.gz")
    with gzip.open(os.path.join(FMNIST_DIR, "t10k-labels-idx1-ubyte.gz")) as f:
        raw = bytearray(f.read())
    raw[-1] = (raw[-1] + 1) % 10                                          # one label changed
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    msg = ds.checksum_warning("fashion_mnist", str(tmp_path))
    assert msg is not None and "t10k-labels-idx1-ubyte.gz" in msg and "vislab data check fashion_mnist" in msg


# --------------------------------------------------------------------------- missing files

def test_missing_data_set_names_a_working_option(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path))
    with pytest.raises(UserError) as e:
        ds.load_split("cifar10", "train")
    assert "--set data.download=true" in str(e.value) and "pass --download" not in str(e.value)
