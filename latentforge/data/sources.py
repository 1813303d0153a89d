"""One entry point for a file or folder of data: :func:`load_path` streams what is too large for
memory (:mod:`.large`) and reads the rest into memory (:func:`.formats.dispatch.read_path`)."""
from __future__ import annotations

import os
import tokenize
from pathlib import Path

from ..errors import DataError
from .large import open_large
from .dataset import Dataset, check_split
from .formats.dispatch import read_path


def load_path(
    path: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    *,
    split: str = "train",
) -> Dataset:
    """Load a dataset from a file or folder (see :mod:`latentforge.data.formats` for the formats):
    a ``.npy`` too large for memory, or a folder of shards, is streamed; the rest is read.

    Args:
        path: the file or folder.
        labels: an optional labels file (IDX, ``.npy``, or one integer per line); it
            replaces any labels found in or beside the source.
        split: ``"train"`` or ``"test"``; chooses the pair in a folder of IDX files and is
            ignored by single-file sources.

    Raises:
        DataError: the path does not exist, its format is not supported, or its content is
            invalid.
        ConfigError: ``split`` is not ``"train"`` or ``"test"``.
    """
    check_split(split)
    name = str(path)
    try:
        large = open_large(Path(path).expanduser(), labels, name=name, split=split)
    except (SyntaxError, tokenize.TokenError, TypeError, OverflowError, MemoryError) as e:
        # a corrupt .npy header (numpy parses it as a Python literal) -- found by tests/test_fuzz.py
        raise DataError(f"{name}: cannot read .npy file ({type(e).__name__}: {e})") from e
    if large is not None:
        return large
    return read_path(path, labels, split=split)


__all__ = ["load_path"]
