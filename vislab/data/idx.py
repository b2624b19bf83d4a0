"""The IDX format of MNIST, Fashion-MNIST and EMNIST (gzipped or raw).

Header: two zero bytes, a type code, the number of dimensions, then one big-endian uint32 per
dimension, then the data in C order.  Type codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from vislab.errors import UserError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into an array; corrupt files raise :class:`UserError`."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}; check the path") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise UserError(f"{path} is a truncated or corrupt gzip file ({e}); "
                            "download or copy it again") from None
    return parse_idx(raw, path)


def parse_idx(raw: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an IDX file."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise UserError(f"{name} is not an IDX file (bad magic number {raw[:4].hex()}); "
                        "give the MNIST-style *-ubyte(.gz) file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{name}: IDX header is truncated; the file is damaged")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise UserError(f"{name}: IDX data has {len(raw) - header} bytes but its header "
                        f"{shape} needs {expected}; the file is truncated or damaged")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def type_code(dtype: np.dtype | type) -> int | None:
    """The IDX type code of ``dtype`` (either byte order), or ``None`` if IDX cannot store it."""
    native = np.dtype(dtype).newbyteorder("=")
    return next((code for code, d in _DTYPES.items() if np.dtype(d).newbyteorder("=") == native), None)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as IDX (gzipped when ``path`` ends in ``.gz``); used by tests and exports."""
    arr = np.ascontiguousarray(array)
    code = type_code(arr.dtype)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    big = arr.astype(arr.dtype.newbyteorder(">"), copy=False)   # IDX is big-endian; bytes as they are
    data = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, ">u4").tobytes() + big.tobytes()
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)
