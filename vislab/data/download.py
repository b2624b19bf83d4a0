"""Checksummed downloads: the bytes are streamed to a temporary file beside the target, their
SHA-256 is checked, and only then is the file renamed into place.  A wrong checksum or a broken
connection leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request

from vislab.errors import UserError


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: str | os.PathLike, sha256: str, timeout: float = 60.0) -> str:
    """Fetch ``url`` to ``dest`` if ``sha256`` matches; return the path.  An existing ``dest``
    with the right checksum is kept as it is."""
    dest = os.fspath(dest)
    if os.path.exists(dest) and sha256_file(dest) == sha256:
        return dest
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=os.path.dirname(dest) or ".")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while block := resp.read(1 << 20):
                h.update(block)
                out.write(block)
        if h.hexdigest() != sha256:
            raise UserError(f"checksum mismatch for {url}: got {h.hexdigest()}, expected {sha256}; "
                            "the server sent a different file: try another mirror or place the file "
                            f"at {dest} yourself")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"cannot download {url} ({e}); check the network or place the file at "
                        f"{dest} yourself") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest
