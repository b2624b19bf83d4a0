import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from vislab.data.datasets import load_split
from vislab.data.formats import load_image, read_cifar, read_image_folder
from vislab.errors import UserError


def _cifar_archive(tmp_path, n=6, label_key=b"labels"):
    rng = np.random.default_rng(0)
    batches = {}
    tar_path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        for name in ("data_batch_1", "data_batch_2", "test_batch"):
            x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            y = [int(v) for v in rng.integers(0, 10, n)]
            batches[name] = (x, y)
            blob = pickle.dumps({b"data": x, label_key: y, b"batch_label": b"x"}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return tar_path, batches


def test_cifar_archive_and_registry(tmp_path):
    tar_path, batches = _cifar_archive(tmp_path)
    x, y = read_cifar(str(tar_path), "train")
    want = np.concatenate([batches["data_batch_1"][0], batches["data_batch_2"][0]]).reshape(-1, 3, 32, 32)
    assert np.array_equal(x, want)
    assert y.tolist() == batches["data_batch_1"][1] + batches["data_batch_2"][1]
    # the same through the data-set registry with an explicit root
    test = load_split("cifar10", "test", root=str(tmp_path))
    assert np.array_equal(test.images, batches["test_batch"][0].reshape(-1, 3, 32, 32))
    # channel layout: pixel (0, 0) of the red plane is the first byte of the row
    assert test.images[0, 0, 0, 0] == batches["test_batch"][0][0, 0]
    assert test.images[0, 1, 0, 0] == batches["test_batch"][0][0, 1024]


def test_cifar_refuses_code_in_pickle(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    folder = tmp_path / "cifar"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(UserError, match="not a CIFAR python batch"):
        read_cifar(str(folder), "test")


def test_image_folder_and_conversion(tmp_path):
    rng = np.random.default_rng(1)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    x, y, classes = read_image_folder(str(tmp_path), channels=3)
    assert classes == ["cat", "dog"] and y.tolist() == [0, 0, 1, 1] and x.shape == (4, 3, 5, 7)
    # grayscale conversion and resizing agree with PIL's own
    img = load_image(str(tmp_path / "cat" / "0.png"), 1, (10, 14))
    ref = np.asarray(Image.open(tmp_path / "cat" / "0.png").convert("L").resize((14, 10), Image.BILINEAR))
    assert img.shape == (1, 10, 14) and np.array_equal(img[0], ref)


def test_corrupt_image(tmp_path):
    p = tmp_path / "bad.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(UserError, match="cannot decode image"):
        load_image(str(p), 1)


def test_digits_split_is_stratified_and_disjoint():
    from sklearn.datasets import load_digits
    tr, te = load_split("digits", "train"), load_split("digits", "test")
    assert len(tr.labels) + len(te.labels) == len(load_digits().target)
    assert tr.images.max() == 255 and tr.images.shape[1:] == (1, 8, 8)
    assert abs(np.bincount(te.labels).min() - np.bincount(te.labels).max()) <= 2
