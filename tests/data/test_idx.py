import gzip
import os

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from tests.conftest import FMNIST_DIR
from vislab.data.idx import read_idx, write_idx
from vislab.errors import UserError


def test_fashion_mnist_matches_torchvision_reader(tmp_path):
    # torchvision reads the raw (uncompressed) files: decompress and compare with ours.
    for stem, tv_read in (("t10k-images-idx3-ubyte", read_image_file), ("t10k-labels-idx1-ubyte", read_label_file)):
        raw = tmp_path / stem
        raw.write_bytes(gzip.decompress(open(os.path.join(FMNIST_DIR, stem + ".gz"), "rb").read()))
        ours = read_idx(os.path.join(FMNIST_DIR, stem + ".gz"))
        assert torch.equal(torch.from_numpy(ours.astype(np.int64)), tv_read(str(raw)).long())
        assert np.array_equal(read_idx(raw), ours)   # raw and gzipped give the same array


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_roundtrip(tmp_path, dtype, suffix):
    a = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    p = tmp_path / f"x{suffix}"
    write_idx(p, a)
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype) and np.array_equal(a, b)


def test_header_bytes_by_hand(tmp_path):
    p = tmp_path / "x"
    write_idx(p, np.array([[1, 2, 3]], np.uint8))
    assert p.read_bytes() == bytes([0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 3, 1, 2, 3])


def test_bad_magic(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(p)


def test_truncated_gzip(tmp_path):
    p = tmp_path / "x.gz"
    write_idx(p, np.zeros((100, 28, 28), np.uint8))
    p.write_bytes(p.read_bytes()[:-30])
    with pytest.raises(UserError, match="truncated or corrupt gzip"):
        read_idx(p)


def test_truncated_data(tmp_path):
    p = tmp_path / "x"
    write_idx(p, np.zeros((4, 2), np.uint8))
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(UserError, match="truncated or damaged"):
        read_idx(p)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        read_idx(tmp_path / "nope.gz")
