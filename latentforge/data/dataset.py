"""The in-memory :class:`Dataset`, the seeded train/valid split, and the value and shape checks
every reader shares (the readers themselves live in :mod:`latentforge.data.formats`).

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

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from latentforge.errors import ConfigError, DataError

__all__ = [
    "Dataset",
    "SPLITS",
    "check_samples_shape",
    "check_split",
    "first_index",
    "make_dataset",
    "to_float32",
    "to_labels",
    "train_valid_split",
]

#: The splits a source may hold (a folder of IDX files, the built-in datasets).
SPLITS = ("train", "test")


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
def first_index(mask: np.ndarray) -> tuple[int, ...] | int:
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
                    f"from {lo} to {hi} (first at index {first_index(bad)}); "
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
                f"{first_index(bad)}"
            )
        with np.errstate(over="ignore"):
            out = arr.astype(np.float32)
        if out.size and not np.isfinite(out).all():
            bad = ~np.isfinite(out)
            raise DataError(
                f"{source}: {int(bad.sum())} value(s) too large for float32, the first at "
                f"index {first_index(bad)}"
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
                    f"{first_index(arr < 0)}"
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
                    f"{first_index(~finite)}"
                )
            frac = arr != np.floor(arr)
            if frac.any():
                i = first_index(frac)
                raise DataError(
                    f"{source}: labels must be whole numbers, found {arr[i]!r} at index {i}"
                )
            if arr.min() < 0:
                raise DataError(
                    f"{source}: labels must be >= 0, found {arr.min():g} at index "
                    f"{first_index(arr < 0)}"
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
# Split names
# --------------------------------------------------------------------------------------------
def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
