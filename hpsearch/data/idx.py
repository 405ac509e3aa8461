"""Reading and writing IDX files (the MNIST / Fashion-MNIST format), raw or ``.gz`` / ``.xz`` compressed.

Format (LeCun et al.): two zero bytes, a type code (0x08 = uint8), the number of dimensions, then one
big-endian uint32 per dimension and the data.
"""

from __future__ import annotations

import gzip
import lzma
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from hpsearch.errors import DataError


def _open(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".xz":
        return lzma.open(path, "rb")
    return open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """Returns the uint8 array stored in the IDX file ``path``; a damaged file raises DataError naming it."""
    path = Path(path)
    try:
        with _open(path) as f:
            raw = f.read()
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DataError(f"{path}: IDX type 0x{raw[2]:02x} is not supported (only 0x08, uint8)")
    ndim = raw[3]
    if ndim < 1 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated (header)")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    expected = math.prod(shape)  # exact: np.prod wraps around int64 for a garbled header
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != expected:
        raise DataError(f"{path} is truncated or padded: {data.size} bytes of data, header says {expected}")
    return data.reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Writes a uint8 array as an IDX file (compressed by the path's suffix)."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    if path.suffix == ".xz":
        data = lzma.compress(header + array.tobytes(), preset=9 | lzma.PRESET_EXTREME)
    elif path.suffix == ".gz":
        data = gzip.compress(header + array.tobytes())
    else:
        data = header + array.tobytes()
    path.write_bytes(data)
