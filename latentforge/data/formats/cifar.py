"""CIFAR-10 binary batch files (the built-in ``cifar10`` dataset reads them)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from latentforge.errors import DataError

from .common import read_bytes

__all__ = ["read_cifar10_binary"]

_CIFAR_RECORD = 1 + 3 * 32 * 32


def read_cifar10_binary(paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10 binary batch files (records of 1 label byte + 3072 bytes CHW).

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and uint8 ``(N,)``.

    Raises:
        DataError: a file is unreadable, not a whole number of records, or holds a label
            outside 0..9.
    """
    xs, ys = [], []
    for path in paths:
        source = str(path)
        raw = read_bytes(Path(path), source)
        if len(raw) == 0 or len(raw) % _CIFAR_RECORD:
            raise DataError(
                f"{source}: {len(raw)} bytes is not a whole number of {_CIFAR_RECORD}-byte "
                "CIFAR-10 records"
            )
        records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
        labels = records[:, 0]
        if labels.max() > 9:
            raise DataError(
                f"{source}: label {int(labels.max())} at record "
                f"{int(np.argmax(labels > 9))} is not a CIFAR-10 class (0..9)"
            )
        xs.append(records[:, 1:].reshape(-1, 3, 32, 32))
        ys.append(labels)
    if not xs:
        raise DataError("CIFAR-10: no batch files given")
    return np.concatenate(xs), np.concatenate(ys)
