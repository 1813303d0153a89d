"""IDX files (the MNIST format), plain or gzip-compressed, and finding them in a folder: the
labels file beside an images file (``images-idx3`` -> ``labels-idx1``) and the ``train-`` /
``t10k-`` (``test-``) images files by split."""
from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from latentforge.errors import DataError

from .common import read_bytes

__all__ = [
    "IDX_DTYPES",
    "SPLIT_TOKENS",
    "idx_images_in",
    "is_idx_name",
    "labels_beside",
    "looks_like_idx",
    "parse_idx",
    "read_idx",
]

# IDX type code -> (big-endian numpy dtype, human name).
IDX_DTYPES: dict[int, tuple[str, str]] = {
    0x08: (">u1", "uint8"),
    0x09: (">i1", "int8"),
    0x0B: (">i2", "int16"),
    0x0C: (">i4", "int32"),
    0x0D: (">f4", "float32"),
    0x0E: (">f8", "float64"),
}

# "train-images-idx3-ubyte", "emnist-digits-test-labels-idx1-ubyte.gz", ...
_IDX_NAME = re.compile(r"idx(\d+)-ubyte(\.gz)?$", re.IGNORECASE)
SPLIT_TOKENS = {
    "train": re.compile(r"(?:^|[-_.])train(?:[-_.]|$)", re.IGNORECASE),
    "test": re.compile(r"(?:^|[-_.])(?:t10k|test)(?:[-_.]|$)", re.IGNORECASE),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _maybe_gunzip(raw: bytes, path: Path, source: str) -> bytes:
    """Decompress ``raw`` when the file is gzip (by magic bytes or a ``.gz`` suffix)."""
    if raw[:2] != _GZIP_MAGIC and path.suffix.lower() != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{source}: corrupt or truncated gzip data ({e})") from e


def parse_idx(buf: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file into a native-endian numpy array.

    The header is validated: the first two bytes must be 0, the type code one of 0x08
    (uint8), 0x09 (int8), 0x0B (int16), 0x0C (int32), 0x0D (float32), 0x0E (float64), at
    least one dimension, and the dimensions times the item size must equal the number of
    data bytes exactly.

    Raises:
        DataError: any violation, naming ``source``.
    """
    n = len(buf)
    if n < 4:
        raise DataError(
            f"{source}: too short for an IDX file ({n} bytes; the magic number alone is 4)"
        )
    if buf[0] != 0 or buf[1] != 0:
        raise DataError(
            f"{source}: not an IDX file (magic number {bytes(buf[:4]).hex()} must start "
            "with two zero bytes)"
        )
    code = buf[2]
    if code not in IDX_DTYPES:
        raise DataError(
            f"{source}: unknown IDX data type code 0x{code:02X} (expected 08, 09, 0B, 0C, "
            "0D or 0E)"
        )
    ndim = buf[3]
    if ndim == 0:
        raise DataError(f"{source}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if n < header:
        raise DataError(
            f"{source}: truncated IDX header ({ndim} dimensions need {header} bytes, the "
            f"file holds {n})"
        )
    dims = struct.unpack(f">{ndim}I", bytes(buf[4:header]))
    dtype, type_name = IDX_DTYPES[code]
    itemsize = np.dtype(dtype).itemsize
    expected = math.prod(dims) * itemsize
    actual = n - header
    if expected != actual:
        dims_text = "x".join(str(d) for d in dims)
        what = dims_text if itemsize == 1 else f"{dims_text} {type_name}"
        raise DataError(
            f"{source}: header says {what} = {expected} bytes but the file holds {actual}"
        )
    # A zero dimension makes any size "match"; numpy still refuses absurd shapes like 0x2^31x2^31.
    if math.prod(d for d in dims if d) * itemsize > np.iinfo(np.intp).max:
        raise DataError(f"{source}: IDX dimensions {'x'.join(map(str, dims))} are too large")
    arr = np.frombuffer(buf, dtype=dtype, count=math.prod(dims), offset=header)
    return arr.reshape(dims).astype(np.dtype(dtype).newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain, or gzip-compressed when it ends in ``.gz`` or starts with the
    gzip magic bytes) and return its array.

    Raises:
        DataError: unreadable file, corrupt/truncated gzip, or an invalid IDX header/size.
    """
    p = Path(path)
    source = str(path)
    return parse_idx(_maybe_gunzip(read_bytes(p, source), p, source), source)


def is_idx_name(name: str) -> bool:
    return _IDX_NAME.search(name) is not None


def _idx_rank(name: str) -> int | None:
    m = _IDX_NAME.search(name)
    return int(m.group(1)) if m else None


def looks_like_idx(path: Path) -> bool:
    """Sniff the first bytes: an IDX magic number, or gzip (assumed to wrap IDX)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    if head[:2] == _GZIP_MAGIC:
        return True
    return len(head) == 4 and head[0] == 0 and head[1] == 0 and head[2] in IDX_DTYPES


def labels_beside(images: Path) -> Path | None:
    """The standard labels file for an IDX images file (``images-idx3`` -> ``labels-idx1``),
    preferring the same compression; ``None`` if there is none."""
    name = images.name
    if not re.search(r"images-idx\d", name, re.IGNORECASE):
        return None
    base = re.sub(r"images-idx\d", "labels-idx1", name, flags=re.IGNORECASE)
    other = base[:-3] if base.lower().endswith(".gz") else base + ".gz"
    for candidate in (images.with_name(base), images.with_name(other)):
        if candidate.is_file():
            return candidate
    return None


def idx_images_in(folder: Path) -> list[Path]:
    """IDX files in ``folder`` that hold samples (rank >= 2, not labels), one per base name
    (an uncompressed copy is preferred over the ``.gz``)."""
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file() or not is_idx_name(entry.name):
            continue
        rank = _idx_rank(entry.name)
        if rank is None or rank < 2 or "labels" in entry.name.lower():
            continue
        base = entry.name[:-3] if entry.name.lower().endswith(".gz") else entry.name
        if base not in found or not entry.name.lower().endswith(".gz"):
            found[base] = entry
    return sorted(found.values())
