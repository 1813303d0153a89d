"""What the commands share: the data options, loading data for a command, checked output paths,
JSON printing and the arguments of this invocation."""
from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import DataError

_INVOCATION: list[str] = []      # this invocation's arguments (``train --nproc`` relaunches them)

DataOpt = typer.Option("digits", "--data", "-d", help="Data source: a built-in name (digits, mnist, fashion-mnist, "
                       "kmnist, cifar10) or a path (IDX file/folder, .npy, .npz, .csv, image folder).")
LabelsOpt = typer.Option(None, "--labels", help="Labels file for the data (IDX, .npy or one int per line); "
                         "IDX labels beside the images are found automatically.")
ClassesOpt = typer.Option(None, "--classes", help="Keep only the samples with these labels, e.g. 0,3,7 (class "
                          "names work too); after --limit. A run records it in run.json and --resume keeps it.")
ExcludeClassesOpt = typer.Option(None, "--exclude-classes", help="Drop the samples with these labels, e.g. 9 "
                                 "(the opposite of --classes).")


def save_array(path: Path, arr) -> Path:
    """Write a .npy file atomically; DataError naming the path if it cannot be written."""
    import numpy as np
    from ..io import atomic_write_bytes

    path = Path(path)
    if path.suffix != ".npy":
        raise DataError(f"{path}: output must be a .npy file")
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr))
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:
        raise DataError(f"{path}: cannot write: {e.strerror or e}") from None
    return path


def _out_dir_ok(path: Path) -> None:
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise DataError(f"{path}: cannot write: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DataError(f"{path}: cannot write: folder {parent} is not writable")


def _npy_out(path: Path) -> None:
    """Check an output .npy path before any work: the suffix and a writable folder."""
    if Path(path).suffix != ".npy":
        raise DataError(f"{path}: output must be a .npy file")
    _out_dir_ok(path)


def _load_stream(source: str, labels: Optional[Path] = None, classes: Optional[str] = None,
                 exclude_classes: Optional[str] = None):
    """Like ``_load``, but a ``.npy`` file is read in chunks as needed (any size, bounded memory)."""
    p = Path(source)
    if p.suffix.lower() != ".npy" or not p.is_file() or classes is not None or exclude_classes is not None:
        return _load(source, labels, classes=classes, exclude_classes=exclude_classes)
    from ..data import Dataset
    from ..data.readers import NpyStream, read_labels
    x = NpyStream(p)
    return Dataset(x=x, y=read_labels(labels) if labels is not None else None, name=source,   # type: ignore[arg-type]
                   sample_shape=x.sample_shape, is_image=x.is_image)


def _load(source: str, labels: Optional[Path] = None, limit: Optional[int] = None,
          classes: Optional[str] = None, exclude_classes: Optional[str] = None):
    """The data of ``--data``/``--labels``: its first ``limit`` samples, then the class filter."""
    from ..data import load_data
    if limit is not None and limit < 1:        # refused before any data is read
        raise DataError(f"--limit {limit}: must be >= 1 (leave --limit out to use all the data)")
    ds = load_data(source, labels=labels)
    for note in getattr(ds, "notes", None) or []:       # which .npz arrays, grey promoted to colour
        print(f"note: {note}", file=sys.stderr)
    if limit is not None:
        ds = ds.subset(slice(0, limit))
    return ds.filter_classes(classes, exclude_classes)


def _overrides(sets: list[str], **flags: Any) -> dict[str, Any]:
    from ..config import parse_set_items
    values: dict[str, Any] = parse_set_items(sets or [])
    values.update({k: v for k, v in flags.items() if v is not None})
    return values


def _heldout(run, source: Optional[str], labels: Optional[Path], classes: Optional[str] = None,
             exclude_classes: Optional[str] = None):
    """The run's held-out split when ``source`` is the run's own data, else all of ``source``."""
    return run.data_splits(source, labels, classes=classes, exclude_classes=exclude_classes)[2]


def _print_json(obj: Any) -> None:
    from ..io import json_default as _json_default
    print(json.dumps(obj, indent=2, default=_json_default))
