"""NumPy files: ``.npy`` read whole (:func:`read_npy`) or in row chunks (:class:`NpyStream`),
and ``.npz`` archives (the data array and the labels found by name)."""
from __future__ import annotations

import math
import os
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from latentforge.errors import DataError

from ..dataset import check_samples_shape, first_index, to_float32

__all__ = ["NPZ_DATA_KEYS", "NPZ_LABEL_KEYS", "NpyStream", "read_npy", "read_npz"]

#: Array names looked up in an ``.npz`` file, in order of preference.
NPZ_DATA_KEYS = ("x", "X", "images", "data", "features", "inputs", "x_train", "X_train")
NPZ_LABEL_KEYS = ("y", "Y", "labels", "label", "targets", "target", "classes", "y_train")


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
                i = first_index(bad)
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
