"""Readers that turn files on disk into a :class:`Dataset`.

Supported sources (see :func:`latentforge.data.sources.load_path`):

* **IDX** files (the MNIST format), plain or gzip-compressed, e.g.
  ``train-images-idx3-ubyte.gz``. Labels are found beside the images file by the standard
  name (``images-idx3`` -> ``labels-idx1``) unless given explicitly.
* A **folder of IDX files**: the ``train-`` pair for split ``"train"``, the ``t10k-``/``test-``
  pair for split ``"test"``; a folder with exactly one images file uses that one.
* **.npy**: images ``(N, H, W)`` or ``(N, C, H, W)`` with ``C`` in 1, 3 or 4, or tabular
  ``(N, D)``.
* **.npz**: the data array is named ``x``/``X``/``images``/``data``/``features``/``inputs``/
  ``x_train``/``X_train`` (or is the only array); labels, if any, are named ``y``/``Y``/
  ``labels``/``label``/``targets``/``target``/``classes``/``y_train``. Which arrays were used
  is said in :attr:`Dataset.notes` (the command line prints it).
* **CSV** (``.csv``/``.tsv``/``.txt``) of numbers, with an optional header row. A label column
  is recognised only by its header name (``label``, ``labels``, ``y``, ``target``, ``class``).
* A **folder of images** (PNG/JPEG/BMP/GIF/WebP, read with Pillow). Sub-folders are classes,
  labelled in alphabetical order; a flat folder has no labels. All images must have the same
  size. Greyscale images give one channel, everything else three (RGB; alpha is dropped); a
  folder that mixes both is promoted to RGB (said once, in :attr:`Dataset.notes`).

Value rules, applied to every source:

* Integer data (``uint8`` and friends) must lie in ``[0, 255]`` and is scaled to ``[0, 1]``
  by dividing by 255. Integer values outside ``[0, 255]`` raise :class:`DataError`: cast such
  data to float first if the raw values are meant.
* Floating-point data is kept as it is (tabular data may have any range), cast to float32.
* NaN or Inf anywhere raises :class:`DataError` naming the count and the first index.
* Labels must be integers >= 0; floats that are whole numbers are accepted.

Every problem with the input is reported as a :class:`~latentforge.errors.DataError` with one
line naming the file and the problem.
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import math
import os
import re
import struct
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from latentforge.errors import ConfigError, DataError

__all__ = [
    "Dataset",
    "IMAGE_EXTENSIONS",
    "NpyStream",
    "check_samples_shape",
    "LABEL_COLUMN_NAMES",
    "read_path",
    "make_dataset",
    "parse_csv_text",
    "parse_idx",
    "read_cifar10_binary",
    "read_csv",
    "read_idx",
    "read_image_folder",
    "read_labels",
    "read_npy",
    "read_npz",
    "to_float32",
    "to_labels",
    "train_valid_split",
]

#: File extensions recognised as images inside an image folder (compared lower-case).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})

#: Header names that mark the label column of a CSV file (compared case-insensitively).
LABEL_COLUMN_NAMES = ("label", "labels", "y", "target", "class")

#: Array names looked up in an ``.npz`` file, in order of preference.
NPZ_DATA_KEYS = ("x", "X", "images", "data", "features", "inputs", "x_train", "X_train")
NPZ_LABEL_KEYS = ("y", "Y", "labels", "label", "targets", "target", "classes", "y_train")

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
SPLITS = ("train", "test")

_GZIP_MAGIC = b"\x1f\x8b"


# --------------------------------------------------------------------------------------------
# The Dataset container
# --------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Dataset:
    """An in-memory dataset.

    Attributes:
        x: float32 samples. Images are canonical ``(N, C, H, W)``; tabular data is ``(N, D)``.
        y: int64 labels of shape ``(N,)``, or ``None``.
        name: the source as given (a path or a built-in dataset name).
        sample_shape: the per-sample shape as read from the source, e.g. ``(28, 28)`` for
            ``(N, 28, 28)`` input, ``(3, 32, 32)``, or ``(D,)`` for tabular data.
        is_image: whether ``x`` holds images.
        class_names: names of the classes (index = label), e.g. the sub-folder names of an
            image folder; ``None`` when unknown.
        feature_names: names of the columns of tabular data (a CSV's header); ``None`` when
            unknown.
        notes: what reading the source decided that a user should hear (which ``.npz`` arrays
            were used, greyscale images promoted to colour); the command line prints them.
        class_filter: the class filter this dataset went through (``{"classes": [0, 3, 7]}`` or
            ``{"exclude_classes": [9]}``, see :meth:`filter_classes`); ``None`` when unfiltered.
    """

    x: np.ndarray
    y: np.ndarray | None
    name: str
    sample_shape: tuple
    is_image: bool
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    class_filter: dict | None = None

    def __post_init__(self) -> None:
        if self.y is not None and len(self.y) != len(self.x):
            raise DataError(
                f"{self.name}: {len(self.x)} samples but {len(self.y)} labels"
            )
        self.sample_shape = tuple(int(s) for s in self.sample_shape)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        labels = "no labels" if self.y is None else f"{len(np.unique(self.y))} classes"
        kind = "images" if self.is_image else "tabular"
        return (
            f"Dataset(name={self.name!r}, n={len(self)}, x={self.x.dtype}{tuple(self.x.shape)}, "
            f"{kind}, sample_shape={self.sample_shape}, {labels})"
        )

    @property
    def in_unit_interval(self) -> bool:
        """True when every value of ``x`` lies in ``[0, 1]`` (vacuously true when empty)."""
        if self.x.size == 0:
            return True
        return bool(self.x.min() >= 0.0 and self.x.max() <= 1.0)

    def subset(self, idx) -> "Dataset":
        """Return the rows ``idx`` (integer indices, a boolean mask or a slice) as a new Dataset.

        All other fields (name, sample shape, class names) are kept.
        """
        if not isinstance(idx, slice):
            idx = np.asarray(idx)
            if idx.ndim == 0:
                idx = idx.reshape(1)
        return Dataset(
            x=self.x[idx],
            y=None if self.y is None else self.y[idx],
            name=self.name,
            sample_shape=self.sample_shape,
            is_image=self.is_image,
            class_names=None if self.class_names is None else list(self.class_names),
            feature_names=None if self.feature_names is None else list(self.feature_names),
            notes=list(self.notes),
            class_filter=self.class_filter,
        )

    def filter_classes(self, classes=None, exclude=None) -> "Dataset":
        """Only the samples labelled ``classes`` (e.g. ``[0, 3, 7]`` or ``"0,3,7"``; class names
        work too), or all but those labelled ``exclude``; see :mod:`latentforge.data.classes`.

        Raises DataError for data without labels, a label no sample has, or nothing left.
        """
        from .classes import filter_classes
        return filter_classes(self, classes, exclude)


def train_valid_split(
    ds: Dataset, valid_fraction: float = 0.1, seed: int = 0
) -> tuple[Dataset, Dataset | None]:
    """Split ``ds`` into a training and a validation part by a seeded random permutation.

    The validation part holds ``round(len(ds) * valid_fraction)`` samples chosen with
    ``numpy.random.default_rng(seed)``; both parts keep the original sample order.

    Returns:
        ``(train, valid)``; ``valid`` is ``None`` when ``valid_fraction`` is 0 (or rounds to
        zero samples), in which case ``train`` is ``ds`` itself.

    Raises:
        ConfigError: ``valid_fraction`` is not a number in ``[0, 1)``.
        DataError: the split would leave no training samples.
    """
    if isinstance(valid_fraction, bool) or not isinstance(valid_fraction, (int, float)):
        raise ConfigError(f"valid_fraction must be a number in [0, 1), got {valid_fraction!r}")
    if not (0.0 <= float(valid_fraction) < 1.0):
        raise ConfigError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")
    n = len(ds)
    n_valid = int(round(n * float(valid_fraction)))
    if n_valid == 0:
        return ds, None
    if n - n_valid < 1:
        raise DataError(
            f"{ds.name}: a validation fraction of {valid_fraction} of {n} samples leaves no "
            "training samples"
        )
    perm = np.random.default_rng(seed).permutation(n)
    valid_idx = np.sort(perm[:n_valid])
    train_idx = np.sort(perm[n_valid:])
    return ds.subset(train_idx), ds.subset(valid_idx)


# --------------------------------------------------------------------------------------------
# Value checks and conversions shared by every reader
# --------------------------------------------------------------------------------------------
def _first_index(mask: np.ndarray) -> tuple[int, ...] | int:
    """The index of the first True in ``mask`` (a plain int for 1-D arrays)."""
    flat = int(np.argmax(mask.reshape(-1)))
    index = tuple(int(i) for i in np.unravel_index(flat, mask.shape))
    return index[0] if len(index) == 1 else index


def to_float32(arr: np.ndarray, source: str) -> np.ndarray:
    """Convert sample values to float32 following the module's value rules.

    * integers must lie in ``[0, 255]`` and are divided by 255;
    * booleans become 0.0/1.0;
    * floats are cast as they are, after checking that there is no NaN/Inf and that every
      value fits in float32.

    Raises:
        DataError: integers outside ``[0, 255]``, NaN/Inf values, values too large for
            float32, or a dtype that is not numeric.
    """
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(np.float32)
    if kind in "iu":
        if arr.size:
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi > 255:
                bad = (arr < 0) | (arr > 255)
                raise DataError(
                    f"{source}: integer values must lie in [0, 255] (8-bit pixels) but range "
                    f"from {lo} to {hi} (first at index {_first_index(bad)}); "
                    "store the data as float to use raw values"
                )
        out = arr.astype(np.float32)
        out /= np.float32(255.0)
        return out
    if kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            bad = ~finite
            raise DataError(
                f"{source}: {int(bad.sum())} NaN/Inf value(s), the first at index "
                f"{_first_index(bad)}"
            )
        with np.errstate(over="ignore"):
            out = arr.astype(np.float32)
        if out.size and not np.isfinite(out).all():
            bad = ~np.isfinite(out)
            raise DataError(
                f"{source}: {int(bad.sum())} value(s) too large for float32, the first at "
                f"index {_first_index(bad)}"
            )
        return out
    raise DataError(f"{source}: unsupported data type {arr.dtype} (expected numbers)")


def to_labels(arr: np.ndarray, source: str) -> np.ndarray:
    """Validate labels and return them as a 1-D int64 array.

    Accepts a 1-D array (or an ``(N, 1)`` column) of integers >= 0, booleans, or floats that
    are whole numbers >= 0.

    Raises:
        DataError: wrong shape, negative, fractional or non-finite values, or a non-numeric
            dtype.
    """
    arr = np.asarray(arr)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(f"{source}: labels must be a 1-D array, got shape {arr.shape}")
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(np.int64)
    if kind in "iu":
        if arr.size:
            if int(arr.min()) < 0:
                raise DataError(
                    f"{source}: labels must be >= 0, found {int(arr.min())} at index "
                    f"{_first_index(arr < 0)}"
                )
            if int(arr.max()) > np.iinfo(np.int64).max:
                raise DataError(f"{source}: label {int(arr.max())} is too large")
        return arr.astype(np.int64)
    if kind == "f":
        if arr.size:
            finite = np.isfinite(arr)
            if not finite.all():
                raise DataError(
                    f"{source}: {int((~finite).sum())} NaN/Inf label(s), the first at index "
                    f"{_first_index(~finite)}"
                )
            frac = arr != np.floor(arr)
            if frac.any():
                i = _first_index(frac)
                raise DataError(
                    f"{source}: labels must be whole numbers, found {arr[i]!r} at index {i}"
                )
            if arr.min() < 0:
                raise DataError(
                    f"{source}: labels must be >= 0, found {arr.min():g} at index "
                    f"{_first_index(arr < 0)}"
                )
            if arr.max() >= 2.0**62:
                raise DataError(f"{source}: label {arr.max():g} is too large")
        return arr.astype(np.int64)
    raise DataError(f"{source}: unsupported label type {arr.dtype} (expected integers)")


def check_samples_shape(shape: tuple[int, ...], source: str) -> None:
    """DataError unless ``shape`` is samples: ``(N, D)``, ``(N, H, W)`` or ``(N, C, H, W)``
    with ``C`` in 1, 3 or 4, ``N >= 1`` and no empty dimension."""
    ndim = len(shape)
    if ndim == 0 or shape[0] == 0:
        raise DataError(f"{source}: the data is empty (no samples)")
    if ndim == 1:
        raise DataError(
            f"{source}: holds a 1-D array of {shape[0]} values (labels?); expected images "
            "(N, H, W) / (N, C, H, W) or a table (N, D)"
        )
    if ndim > 4:
        raise DataError(
            f"{source}: array of shape {shape} has {ndim} dimensions; expected images "
            "(N, H, W) / (N, C, H, W) or a table (N, D)"
        )
    if ndim == 4 and shape[1] not in (1, 3, 4):
        raise DataError(
            f"{source}: 4-D array of shape {shape} must be (N, C, H, W) with C in 1, 3 or 4; "
            "transpose channels-last data with .transpose(0, 3, 1, 2)"
        )
    if 0 in shape[1:]:
        raise DataError(f"{source}: samples of shape {shape[1:]} are empty")


def make_dataset(
    arr: np.ndarray,
    labels: np.ndarray | None,
    *,
    name: str,
    source: str,
    labels_source: str | None = None,
    class_names: Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
) -> Dataset:
    """Validate a raw sample array (and labels) and wrap it into a :class:`Dataset`.

    ``arr`` is ``(N, D)`` tabular, ``(N, H, W)`` greyscale images or ``(N, C, H, W)`` images
    with ``C`` in 1, 3 or 4. Values are converted by :func:`to_float32`, labels by
    :func:`to_labels`.

    Args:
        arr: the samples as read.
        labels: the labels as read, or ``None``.
        name: the dataset name to record (the source as the user gave it).
        source: the file the samples came from, for error messages.
        labels_source: the file the labels came from, for error messages.
        class_names: optional class names (index = label).
    """
    arr = np.asarray(arr)
    shape = tuple(int(s) for s in arr.shape)
    check_samples_shape(shape, source)

    x = to_float32(arr, source)
    sample_shape = shape[1:]
    is_image = arr.ndim >= 3
    if arr.ndim == 3:
        x = x.reshape(shape[0], 1, shape[1], shape[2])
    x = np.ascontiguousarray(x)

    y = None
    if labels is not None:
        lsrc = labels_source or source
        y = to_labels(labels, lsrc)
        if len(y) != shape[0]:
            if labels_source and labels_source != source:
                raise DataError(
                    f"{source} holds {shape[0]} samples but {labels_source} holds "
                    f"{len(y)} labels"
                )
            raise DataError(f"{source}: {shape[0]} samples but {len(y)} labels")
    return Dataset(
        x=x,
        y=y,
        name=name,
        sample_shape=sample_shape,
        is_image=is_image,
        class_names=None if class_names is None else list(class_names),
        feature_names=(list(feature_names) if feature_names is not None and arr.ndim == 2
                       and len(feature_names) == shape[1] else None),
    )


# --------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------
def _read_bytes(path: Path, source: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{source}: cannot read ({e.strerror or e})") from e


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
    return parse_idx(_maybe_gunzip(_read_bytes(p, source), p, source), source)


def _is_idx_name(name: str) -> bool:
    return _IDX_NAME.search(name) is not None


def _idx_rank(name: str) -> int | None:
    m = _IDX_NAME.search(name)
    return int(m.group(1)) if m else None


def _looks_like_idx(path: Path) -> bool:
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
        if entry.name.startswith(".") or not entry.is_file() or not _is_idx_name(entry.name):
            continue
        rank = _idx_rank(entry.name)
        if rank is None or rank < 2 or "labels" in entry.name.lower():
            continue
        base = entry.name[:-3] if entry.name.lower().endswith(".gz") else entry.name
        if base not in found or not entry.name.lower().endswith(".gz"):
            found[base] = entry
    return sorted(found.values())


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


# --------------------------------------------------------------------------------------------
# NumPy
# --------------------------------------------------------------------------------------------
def read_npy(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.npy`` file (pickled object arrays are refused).

    Raises:
        DataError: unreadable, corrupt or object-dtype file.
    """
    source = str(path)
    try:
        arr = np.load(Path(path), allow_pickle=False)
    except Exception as e:  # OSError, ValueError, EOFError, and from a corrupt header SyntaxError/TokenError
        raise DataError(f"{source}: cannot read .npy file ({type(e).__name__}: {e})") from e
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{source}: not a .npy array file")
    return arr


class NpyStream:
    """A ``.npy`` file of samples read in row chunks, never whole (bounded memory for any size).

    Behaves like the float32 ``x`` of a :class:`Dataset` for batched inference: ``len``,
    ``shape`` (``(N, 1, H, W)`` for ``(N, H, W)`` files), ``ndim``, ``dtype``, slicing rows
    (``stream[i:j]`` reads and converts those rows only) and ``min()``/``max()``. The same
    value rules as :func:`to_float32` apply; they are checked in one chunked pass when the
    file is opened, so a bad value is reported before any output is written.

    Raises:
        DataError: unreadable, truncated or pickled file, Fortran order, a shape that is not
            samples, or bad values (naming the first bad index).
    """

    def __init__(self, path: str | os.PathLike, chunk_bytes: int = 8 << 20):
        self.path = Path(path)
        self.source = source = str(path)
        try:
            with open(self.path, "rb") as f:
                version = np.lib.format.read_magic(f)
                reader = {(1, 0): np.lib.format.read_array_header_1_0,
                          (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if reader is None:
                    raise ValueError(f"unsupported .npy format version {version}")
                raw_shape, fortran, dtype = reader(f)
                self.offset = f.tell()
            size = self.path.stat().st_size
        except OSError as e:
            raise DataError(f"{source}: cannot read ({e.strerror or e})") from e
        except Exception as e:  # ValueError, EOFError, and from a corrupt header SyntaxError/TokenError
            raise DataError(f"{source}: cannot read .npy file ({type(e).__name__}: {e})") from e
        if dtype.hasobject:
            raise DataError(f"{source}: holds Python objects (a pickle); only numeric arrays are read")
        shape = tuple(int(d) for d in raw_shape)
        if fortran and len(shape) > 1:
            raise DataError(f"{source}: Fortran-ordered array; save it in C order (np.ascontiguousarray)")
        self.raw_dtype = dtype
        expected = self.offset + math.prod(shape) * dtype.itemsize
        if size != expected:
            raise DataError(f"{source}: header says {shape} {dtype} = {expected - self.offset} bytes but "
                            f"the file holds {size - self.offset} (truncated?)")
        check_samples_shape(shape, source)
        if dtype.kind not in "biuf":
            raise DataError(f"{source}: unsupported data type {dtype} (expected numbers)")
        self.raw_shape = shape
        self.sample_shape = shape[1:]
        self.is_image = len(shape) >= 3
        self.shape = (shape[0], 1, *shape[1:]) if len(shape) == 3 else shape
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)
        self.row_bytes = math.prod(shape[1:]) * dtype.itemsize
        self.rows_per_chunk = max(1, chunk_bytes // max(1, self.row_bytes))
        self._lo, self._hi = self._validate()

    def __len__(self) -> int:
        return self.shape[0]

    def _raw(self, start: int, stop: int) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(self.offset + start * self.row_bytes)
            count = (stop - start) * math.prod(self.raw_shape[1:])
            arr = np.fromfile(f, dtype=self.raw_dtype, count=count)
        if arr.size != count:
            raise DataError(f"{self.source}: the file changed while being read")
        return arr.reshape((stop - start,) + self.raw_shape[1:])

    def _validate(self) -> tuple[float, float]:
        lo, hi = math.inf, -math.inf
        for start in range(0, len(self), self.rows_per_chunk):
            stop = min(len(self), start + self.rows_per_chunk)
            try:
                chunk = to_float32(self._raw(start, stop), self.source)
            except DataError:   # name the index in the whole file, not in the chunk
                raw = self._raw(start, stop)
                bad = ((raw < 0) | (raw > 255)) if raw.dtype.kind in "iu" else ~np.isfinite(raw.astype(np.float32))
                if raw.dtype.kind not in "iuf" or not bad.any():
                    raise
                i = _first_index(bad)
                i = (start + i[0], *i[1:]) if isinstance(i, tuple) else start + i
                what = "integer value outside [0, 255]" if raw.dtype.kind in "iu" else "NaN/Inf (or too large) value"
                raise DataError(f"{self.source}: {what} {raw[np.unravel_index(int(np.argmax(bad.reshape(-1))), bad.shape)].item()!r} "
                                f"at index {i}" + ("; store the data as float to use raw values" if raw.dtype.kind in "iu" else "")
                                ) from None
            if chunk.size:
                lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
        return lo, hi

    def min(self) -> float:
        return self._lo

    def max(self) -> float:
        return self._hi

    def __getitem__(self, idx) -> np.ndarray:
        if not isinstance(idx, slice):
            raise TypeError("NpyStream supports row slices only")
        start, stop, step = idx.indices(len(self))
        if step != 1:
            raise TypeError("NpyStream supports contiguous row slices only")
        stop = max(start, stop)
        return to_float32(self._raw(start, stop), self.source).reshape((stop - start,) + self.shape[1:])


def read_npz(path: str | os.PathLike, notes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the data array (and labels, if present) from a ``.npz`` file.

    The data array is the first of :data:`NPZ_DATA_KEYS` present, or the only array in the
    file. Labels are the first of :data:`NPZ_LABEL_KEYS` present. ``notes`` (a list) gets one
    line saying which arrays were used (and which were not).

    Raises:
        DataError: unreadable/corrupt file, or no recognisable data array.
    """
    source = str(path)
    try:
        with np.load(Path(path), allow_pickle=False) as npz:
            keys = list(npz.files)
            data_key = next((k for k in NPZ_DATA_KEYS if k in keys), None)
            if data_key is None and len(keys) == 1:
                data_key = keys[0]
            if data_key is None:
                listed = ", ".join(keys) if keys else "none"
                raise DataError(
                    f"{source}: no data array named {'/'.join(NPZ_DATA_KEYS)} "
                    f"(arrays: {listed})"
                )
            x = npz[data_key]
            label_key = next((k for k in NPZ_LABEL_KEYS if k in keys and k != data_key), None)
            y = npz[label_key] if label_key is not None else None
            unused = [k for k in keys if k not in (data_key, label_key)]
            usual = data_key in ("x", "X") and label_key in (None, "y", "Y") and not unused
            if notes is not None and not usual:          # x/y alone need no word
                notes.append(
                    f"{source}: data from array {data_key!r} {tuple(x.shape)}, "
                    + (f"labels from {label_key!r}" if label_key is not None else
                       f"no labels (no array named {'/'.join(NPZ_LABEL_KEYS)})")
                    + (f"; ignored {', '.join(map(repr, unused))}" if unused else ""))
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, SyntaxError,
            tokenize.TokenError, TypeError, MemoryError, OverflowError) as e:   # a corrupt member's header
        raise DataError(f"{source}: cannot read .npz file ({type(e).__name__}: {e})") from e
    except AttributeError as e:  # np.load returned a plain array: not a zip archive
        raise DataError(f"{source}: not a .npz archive") from e
    return x, y


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------
def _parse_number(cell: str) -> float:
    """``float(cell)`` without Python's extras (underscores); raises ValueError."""
    if "_" in cell:
        raise ValueError(cell)
    return float(cell)


def _is_number(cell: str) -> bool:
    try:
        _parse_number(cell)
    except ValueError:
        return False
    return True


def _decode_text(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{source}: not UTF-8 text (bad byte at offset {e.start})") from e


def _sniff_delimiter(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            for delim in (",", "\t", ";"):
                if delim in line:
                    return delim
            return ","
    return ","


def parse_csv_text(
    text: str, source: str = "<text>"
) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """Parse CSV text of numbers.

    The delimiter is a comma, tab or semicolon (whichever the first line uses). Blank lines
    are skipped. The first row is a header if any of its cells is not a number; a label column
    is taken only from a header cell named ``label``/``labels``/``y``/``target``/``class``.

    Returns:
        ``(data, labels, header)``: a float64 ``(N, D)`` array of the feature columns, the raw
        label column (float64) or ``None``, and the header cells or ``None``.

    Raises:
        DataError: no data rows, ragged rows, a non-numeric or empty cell, several label
            columns, or no feature column.
    """
    if "\x00" in text:
        raise DataError(f"{source}: contains NUL bytes; not a text CSV file")
    delimiter = _sniff_delimiter(text)
    rows: list[tuple[int, list[str]]] = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        for row in reader:
            if row and any(cell.strip() for cell in row):
                rows.append((reader.line_num, row))
    except csv.Error as e:
        raise DataError(f"{source}: malformed CSV ({e})") from e
    if not rows:
        raise DataError(f"{source}: the data is empty (no rows)")

    header: list[str] | None = None
    first_line, first = rows[0]
    if not all(_is_number(cell) for cell in first):
        header = [cell.strip() for cell in first]
        rows = rows[1:]
        if not rows:
            raise DataError(f"{source}: the data is empty (a header row but no data rows)")
    width = len(header) if header is not None else len(rows[0][1])
    width_from = "the header has" if header is not None else f"line {rows[0][0]} has"

    label_col: int | None = None
    if header is not None:
        matches = [i for i, h in enumerate(header) if h.lower() in LABEL_COLUMN_NAMES]
        if len(matches) > 1:
            raise DataError(
                f"{source}: several label columns ("
                + ", ".join(repr(header[i]) for i in matches)
                + "); keep one"
            )
        label_col = matches[0] if matches else None
        if label_col is not None and width == 1:
            raise DataError(f"{source}: only a label column, no feature columns")

    data = np.empty((len(rows), width), dtype=np.float64)
    for r, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(
                f"{source}: line {line} has {len(row)} fields but {width_from} {width}"
            )
        try:
            data[r] = [_parse_number(cell) for cell in row]
        except ValueError:
            for c, cell in enumerate(row):
                if not _is_number(cell):
                    col = f" ({header[c]!r})" if header is not None else ""
                    what = "an empty cell" if not cell.strip() else f"{cell.strip()!r}"
                    raise DataError(
                        f"{source}: line {line}, column {c + 1}{col}: {what} is not a number"
                    ) from None
            raise  # pragma: no cover - every cell parsed on its own

    labels = None
    if label_col is not None:
        labels = data[:, label_col].copy()
        data = np.delete(data, label_col, axis=1)
    return data, labels, header


def read_csv(
    path: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """Read a CSV file of numbers; see :func:`parse_csv_text` for the rules and result."""
    source = str(path)
    return parse_csv_text(_decode_text(_read_bytes(Path(path), source), source), source)


# --------------------------------------------------------------------------------------------
# Labels files
# --------------------------------------------------------------------------------------------
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
    if _is_idx_name(p.name) or suffix == ".gz" or _looks_like_idx(p):
        return to_labels(read_idx(p), source)

    text = _decode_text(_read_bytes(p, source), source)
    values: list[float] = []
    seen_data = False
    for line_no, line in enumerate(text.splitlines(), start=1):
        cell = line.strip()
        if not cell:
            continue
        if any(d in cell for d in (",", "\t", ";")) or len(cell.split()) > 1:
            raise DataError(f"{source}: line {line_no}: expected one label per line")
        try:
            values.append(_parse_number(cell))
        except ValueError:
            if not seen_data and not values:
                seen_data = True  # a header line
                continue
            raise DataError(f"{source}: line {line_no}: {cell!r} is not a number") from None
        seen_data = True
    if not values:
        raise DataError(f"{source}: no labels in the file")
    return to_labels(np.asarray(values, dtype=np.float64), source)


# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------
def _is_image_file(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, sorted, skipping hidden files and folders."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            p = Path(dirpath) / fname
            if _is_image_file(p) and p.is_file():
                found.append(p)
    return found


_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def _decode_image(path: Path) -> np.ndarray:
    """Decode one image into ``(C, H, W)``: uint8 for 8-bit images, float32 in ``[0, 1]``
    for 16-bit ones, float32 as stored for 32-bit float images. C is 1 or 3."""
    from PIL import Image  # imported lazily: only image folders need Pillow

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("1", "L", "LA"):
                arr = np.asarray(im.convert("L"), dtype=np.uint8)[None]
            elif mode.startswith("I"):
                raw = np.asarray(im)
                arr = (raw.astype(np.float64) / 65535.0).astype(np.float32)[None]
            elif mode == "F":
                arr = np.asarray(im, dtype=np.float32)[None]
            else:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError ...)
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
    return np.ascontiguousarray(arr)


def read_image_folder(
    folder: str | os.PathLike, notes: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """Read a folder of images.

    Sub-folders (searched recursively, hidden ones skipped) are classes, labelled by the
    alphabetical order of their names; sub-folders without images are ignored. A flat folder
    gives unlabelled data. Hidden files and files whose extension is not one of
    ``IMAGE_EXTENSIONS`` are skipped; an image file that cannot be decoded is an error.

    Returns:
        ``(images, labels, class_names)`` with images float32 in ``[0, 1]`` (for 8/16-bit
        files), shaped ``(N, H, W)`` when all images are greyscale, else ``(N, 3, H, W)``.

    Raises:
        DataError: no images, images of different sizes, both top-level images and class
            sub-folders, or an undecodable image.
    """
    root = Path(folder)
    source = str(folder)
    try:
        entries = sorted(e for e in root.iterdir() if not e.name.startswith("."))
    except OSError as e:
        raise DataError(f"{source}: cannot list folder ({e.strerror or e})") from e
    top_images = [e for e in entries if _is_image_file(e) and e.is_file()]
    classes: list[tuple[str, list[Path]]] = []
    for sub in (e for e in entries if e.is_dir()):
        files = _images_under(sub)
        if files:
            classes.append((sub.name, files))
    if classes and top_images:
        raise DataError(
            f"{source}: holds both images ({top_images[0].name}, ...) and class sub-folders "
            f"({classes[0][0]}, ...); use one layout"
        )
    if classes:
        files = [f for _, fs in classes for f in fs]
        labels: np.ndarray | None = np.concatenate(
            [np.full(len(fs), i, dtype=np.int64) for i, (_, fs) in enumerate(classes)]
        )
        class_names: list[str] | None = [name for name, _ in classes]
    elif top_images:
        files, labels, class_names = top_images, None, None
    else:
        exts = "/".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise DataError(f"{source}: no images ({exts}) or IDX files in the folder")

    decoded: list[np.ndarray] = []
    size: tuple[int, int] | None = None
    for f in files:
        img = _decode_image(f)
        hw = (int(img.shape[1]), int(img.shape[2]))
        if size is None:
            size = hw
            first = f
        elif hw != size:
            raise DataError(
                f"{f}: image is {hw[1]}x{hw[0]} but {first.name} is {size[1]}x{size[0]}; all "
                "images must have the same size"
            )
        decoded.append(img)
    assert size is not None
    channels = max(img.shape[0] for img in decoded)
    n_grey = sum(img.shape[0] == 1 for img in decoded)
    if channels > 1 and n_grey and notes is not None:
        notes.append(f"{source}: {n_grey} of {len(decoded)} images are greyscale and the others colour: "
                     "the greyscale ones were promoted to RGB (3 channels)")
    out = np.empty((len(decoded), channels, size[0], size[1]), dtype=np.float32)
    for i, img in enumerate(decoded):
        out[i] = img * np.float32(1.0 / 255.0) if img.dtype == np.uint8 else img
    if channels == 1:
        out = out[:, 0]
    return out, labels, class_names


# --------------------------------------------------------------------------------------------
# CIFAR-10 binary batches
# --------------------------------------------------------------------------------------------
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
        raw = _read_bytes(Path(path), source)
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


# --------------------------------------------------------------------------------------------
# Dispatch on a path
# --------------------------------------------------------------------------------------------
def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


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
        elif _is_idx_name(p.name) or suffix == ".gz" or _looks_like_idx(p):
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
