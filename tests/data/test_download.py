import hashlib
import http.server
import os
import re
import threading

import pytest

from vislab.config import Config, apply_override
from vislab.data.download import download
from vislab.errors import UserError


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "file.bin").write_bytes(os.urandom(300_000))

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


def test_download_checks_sha256(server, tmp_path):
    url, root = server
    good = hashlib.sha256((root / "file.bin").read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "file.bin"
    assert download(f"{url}/file.bin", dest, good) == str(dest)
    assert dest.read_bytes() == (root / "file.bin").read_bytes()


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    url, _ = server
    dest = tmp_path / "cache" / "file.bin"
    with pytest.raises(UserError, match="checksum mismatch"):
        download(f"{url}/file.bin", dest, "0" * 64)
    assert not dest.exists() and os.listdir(dest.parent) == []


def test_missing_url(server, tmp_path):
    url, _ = server
    with pytest.raises(UserError, match="cannot download"):
        download(f"{url}/nope.bin", tmp_path / "dl" / "x", "0" * 64)
    assert os.listdir(tmp_path / "dl") == []


def test_registry_downloads_into_vislab_data(server, tmp_path, monkeypatch):
    """The registry's download path with a test-only data set served locally."""
    import numpy as np

    from vislab.data import datasets as ds
    from vislab.data.idx import write_idx
    url, root = server
    write_idx(root / "train-images-idx3-ubyte.gz", np.zeros((3, 28, 28), np.uint8))
    write_idx(root / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2], np.uint8))
    write_idx(root / "t10k-images-idx3-ubyte.gz", np.zeros((1, 28, 28), np.uint8))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.array([1], np.uint8))
    files = tuple(ds.RemoteFile(n, f"{url}/{n}", hashlib.sha256((root / n).read_bytes()).hexdigest())
                  for n in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))
    info = ds.DatasetInfo("test_remote", ("a", "b", "c"), 1, 28, files=files,
                          reader=ds._idx_reader("test_remote", ("a", "b", "c")))
    monkeypatch.setitem(ds._DATASETS, "test_remote", info)
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path / "data"))
    with pytest.raises(UserError, match="not found") as e:
        ds.load_split("test_remote", "train")
    # the `--set KEY=VALUE` the message names turns the download on, as training reads the config
    cfg = Config()
    apply_override(cfg, re.search(r"--set (\S+)", str(e.value)).group(1))
    data = ds.load_split("test_remote", "train", cfg.data.root, cfg.data.download)
    assert data.labels.tolist() == [0, 1, 2]
    assert (tmp_path / "data" / "test_remote" / "t10k-labels-idx1-ubyte.gz").exists()
