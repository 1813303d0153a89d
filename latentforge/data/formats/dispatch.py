"""Read a file or folder into an in-memory :class:`~latentforge.data.dataset.Dataset`: pick the
reader by what the path is (a folder of IDX files or of images) or by its suffix (see
:mod:`latentforge.data.formats` for the formats)."""
from __future__ import annotations

import os
from pathlib import Path

from latentforge.errors import DataError

from ..dataset import Dataset, check_split, make_dataset
from .csv import LABEL_COLUMN_NAMES, read_csv
from .idx import SPLIT_TOKENS, idx_images_in, is_idx_name, labels_beside, looks_like_idx, read_idx
from .images import IMAGE_EXTENSIONS, read_image_folder
from .labels import read_labels
from .npy import read_npy, read_npz

__all__ = ["read_path"]


def _pick_idx_split(folder: Path, images: list[Path], split: str, source: str) -> Path:
    if len(images) == 1:
        return images[0]
    pattern = SPLIT_TOKENS[split]
    matches = [p for p in images if pattern.search(p.name)]
    names = ", ".join(p.name for p in images)
    if not matches:
        raise DataError(f"{source}: no IDX images file for split {split!r} among: {names}")
    if len(matches) > 1:
        raise DataError(
            f"{source}: several IDX images files for split {split!r}: "
            + ", ".join(p.name for p in matches)
        )
    return matches[0]


def read_path(
    path: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    *,
    split: str = "train",
) -> Dataset:
    """Read a dataset held in memory from a file or folder (see the module docstring for the
    formats; :func:`latentforge.data.sources.load_path` streams the sources too large for memory).

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
    feature_names: list[str] | None = None
    labels_source: str | None = None
    notes: list[str] = []
    y = None

    if p.is_dir():
        idx_images = idx_images_in(p)
        if idx_images:
            chosen = _pick_idx_split(p, idx_images, split, name)
            source = str(chosen)
            arr = read_idx(chosen)
            beside = labels_beside(chosen)
            if labels is None and beside is not None:
                y, labels_source = read_labels(beside), str(beside)
        else:
            source = name
            arr, y, class_names = read_image_folder(p, notes)
    elif p.is_file():
        source = name
        suffix = p.suffix.lower()
        if suffix == ".npy":
            arr = read_npy(p)
        elif suffix == ".npz":
            arr, y = read_npz(p, notes)
        elif suffix in (".csv", ".tsv", ".txt"):
            arr, y, header = read_csv(p)
            if header is not None:
                feature_names = [h for h in header if h.lower() not in LABEL_COLUMN_NAMES]
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
    ds = make_dataset(
        arr, y, name=name, source=source, labels_source=labels_source, class_names=class_names,
        feature_names=feature_names,
    )
    ds.notes = notes
    return ds
