"""One entry point for a file or folder of data: :func:`load_path` picks the reader by format
(streamed sources through :mod:`.large`, the others through :mod:`.readers`)."""
from __future__ import annotations

import os
import tokenize
from pathlib import Path

from ..errors import DataError
from .large import open_large
from .readers import (IMAGE_EXTENSIONS, Dataset, check_split, idx_images_in, is_idx_name, labels_beside,
                      looks_like_idx, make_dataset, pick_idx_split, read_csv, read_idx, read_image_folder,
                      read_labels, read_npy, read_npz)


def load_path(
    path: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    *,
    split: str = "train",
) -> Dataset:
    """Load a dataset from a file or folder (see the module docstring for the formats).

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
    p = Path(path).expanduser()
    class_names: list[str] | None = None
    labels_source: str | None = None
    y = None

    try:   # a .npy too large for memory, or a folder of shards: streamed
        large = open_large(p, labels, name=name, split=split)
    except (SyntaxError, tokenize.TokenError, TypeError, OverflowError, MemoryError) as e:
        # a corrupt .npy header (numpy parses it as a Python literal) -- found by tests/test_fuzz.py
        raise DataError(f"{name}: cannot read .npy file ({type(e).__name__}: {e})") from e
    if large is not None:
        return large

    if p.is_dir():
        idx_images = idx_images_in(p)
        if idx_images:
            chosen = pick_idx_split(p, idx_images, split, name)
            source = str(chosen)
            arr = read_idx(chosen)
            beside = labels_beside(chosen)
            if labels is None and beside is not None:
                y, labels_source = read_labels(beside), str(beside)
        else:
            source = name
            arr, y, class_names = read_image_folder(p)
    elif p.is_file():
        source = name
        suffix = p.suffix.lower()
        if suffix == ".npy":
            arr = read_npy(p)
        elif suffix == ".npz":
            arr, y = read_npz(p)
        elif suffix in (".csv", ".tsv", ".txt"):
            arr, y, _ = read_csv(p)
        elif is_idx_name(p.name) or suffix == ".gz" or looks_like_idx(p):
            arr = read_idx(p)
            beside = labels_beside(p)
            if labels is None and beside is not None:
                y, labels_source = read_labels(beside), str(beside)
        elif suffix in IMAGE_EXTENSIONS:
            raise DataError(
                f"{name}: a single image is not a dataset; give the folder that holds the images"
            )
        else:
            raise DataError(
                f"{name}: unsupported file type (expected IDX, .gz, .npy, .npz, .csv, or a "
                "folder of images / IDX files)"
            )
    elif p.exists():
        raise DataError(f"{name}: not a regular file or folder")
    else:
        raise DataError(f"{name}: no such file or folder")

    if labels is not None:
        y, labels_source = read_labels(labels), str(labels)
        class_names = None
    return make_dataset(
        arr, y, name=name, source=source, labels_source=labels_source, class_names=class_names
    )


__all__ = ["load_path"]
