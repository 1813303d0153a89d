"""Labels files: IDX, ``.npy``/``.npz``, or text with one integer per line."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from latentforge.errors import DataError

from ..dataset import to_labels
from .common import decode_text, read_bytes
from .csv import parse_number
from .idx import is_idx_name, looks_like_idx, read_idx
from .npy import read_npy, read_npz

__all__ = ["read_labels"]


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read labels from an IDX file, a ``.npy`` file, or a text/CSV file with one integer per
    line (a non-numeric first line is taken as a header). Returns int64 ``(N,)``.

    Raises:
        DataError: unreadable file, bad format, or invalid label values.
    """
    p = Path(path)
    source = str(path)
    if not p.is_file():
        raise DataError(f"{source}: labels file not found")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return to_labels(read_npy(p), source)
    if suffix == ".npz":
        x, y = read_npz(p)
        return to_labels(y if y is not None else x, source)
    if is_idx_name(p.name) or suffix == ".gz" or looks_like_idx(p):
        return to_labels(read_idx(p), source)

    text = decode_text(read_bytes(p, source), source)
    values: list[float] = []
    seen_data = False
    for line_no, line in enumerate(text.splitlines(), start=1):
        cell = line.strip()
        if not cell:
            continue
        if any(d in cell for d in (",", "\t", ";")) or len(cell.split()) > 1:
            raise DataError(f"{source}: line {line_no}: expected one label per line")
        try:
            values.append(parse_number(cell))
        except ValueError:
            if not seen_data and not values:
                seen_data = True  # a header line
                continue
            raise DataError(f"{source}: line {line_no}: {cell!r} is not a number") from None
        seen_data = True
    if not values:
        raise DataError(f"{source}: no labels in the file")
    return to_labels(np.asarray(values, dtype=np.float64), source)
