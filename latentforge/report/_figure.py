"""What every report figure shares: the headless backend choice, input checks and array shapes, the
figure factory and the atomic PNG writer (:func:`_finish`, through :mod:`latentforge.io`), the
resolution and colour map, and the per-feature labels and units of tabular data.

Problems a caller can fix raise :class:`latentforge.errors.DataError` with a one-line message.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib

# Headless rendering. Only pick the backend when nobody has imported pyplot yet, so that importing
# latentforge inside a notebook or GUI session does not hijack the user's interactive backend.
if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from latentforge.errors import DataError  # noqa: E402
from latentforge.io import atomic_write_bytes  # noqa: E402

PathLike = str | os.PathLike[str]

#: Resolution of saved figures (dots per inch), unless a grid needs more to show every pixel.
DPI = 100
#: Smallest side (in pixels) for which a flat vector of ``side**2`` values is taken to be an image;
#: below that (e.g. 4 or 9 tabular features) it is treated as tabular data.
MIN_IMAGE_SIDE = 8
#: Colour map for single-channel images (true intensities: 0 black, 1 white).
GREY_CMAP = "gray"

_CHANNELS = (1, 3, 4)


# --------------------------------------------------------------------------------------------- #
# input validation
# --------------------------------------------------------------------------------------------- #
def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a finite numeric numpy array, or raise :class:`DataError`."""
    if x is None:
        raise DataError(f"{name}: expected an array, got None")
    detach = getattr(x, "detach", None)
    if callable(detach):  # a torch tensor: leave autograd and the GPU behind
        x = detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{name}: cannot be read as a numeric array ({exc})") from None
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"{name}: expected real numbers, got values of type {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and arr.size and not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise DataError(f"{name}: contains {bad} NaN or infinite value(s)")
    return arr


def _check_sample_shape(sample_shape: Any) -> tuple[int, ...] | None:
    """Validate ``sample_shape`` (None or 1-3 positive ints) and return it as a tuple."""
    if sample_shape is None:
        return None
    try:
        shape = tuple(sample_shape)
    except TypeError:
        raise DataError(f"sample_shape must be a tuple of ints, got {sample_shape!r}") from None
    if not 1 <= len(shape) <= 3 or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise DataError(
            f"sample_shape must be (D,), (H, W) or (C, H, W) with positive ints, got {shape!r}"
        )
    return tuple(int(d) for d in shape)


def _positive_int(value: Any, name: str) -> int:
    """Return ``value`` as an int if it is a positive integer, else raise :class:`DataError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _num_samples(arr: np.ndarray, name: str) -> int:
    """Return the batch size of ``arr`` (first axis), requiring at least one sample."""
    if arr.ndim < 2:
        raise DataError(
            f"{name}: expected a batch of samples with shape (N, ...), got shape {arr.shape}"
        )
    if arr.shape[0] == 0:
        raise DataError(f"{name}: no samples (shape {arr.shape})")
    return int(arr.shape[0])


def _square_side(d: int) -> int | None:
    """Return ``s`` if ``d == s * s`` with ``s >= MIN_IMAGE_SIDE``, else None."""
    side = math.isqrt(d)
    return side if side * side == d and side >= MIN_IMAGE_SIDE else None


def _infer_flat_shape(d: int) -> tuple[int, ...] | None:
    """Guess the image shape of a flat vector of ``d`` values; None for tabular data.

    ``d = s*s`` gives a grey ``(s, s)`` image, ``d = 3*s*s`` a colour ``(3, s, s)`` image (the
    PyTorch channel-first layout, e.g. 3072 for CIFAR-10), both only for ``s >= MIN_IMAGE_SIDE``.
    """
    side = _square_side(d)
    if side is not None:
        return (side, side)
    if d % 3 == 0 and (side := _square_side(d // 3)) is not None:
        return (3, side, side)
    return None


def _channels_last(arr: np.ndarray, what: str) -> np.ndarray:
    """Turn a 4-D batch (channel-first or channel-last) into (N,H,W) or (N,H,W,C)."""
    if arr.shape[1] in _CHANNELS:
        arr = np.moveaxis(arr, 1, -1)
    elif arr.shape[-1] not in _CHANNELS:
        raise DataError(
            f"{what}: expected (N, C, H, W) or (N, H, W, C) with C in 1/3/4, got shape "
            f"{arr.shape}"
        )
    return arr[..., 0] if arr.shape[-1] == 1 else arr



# --------------------------------------------------------------------------------------------- #
# saving
# --------------------------------------------------------------------------------------------- #
def _check_destination(path: PathLike) -> Path:
    """Fail fast (before any expensive drawing) when ``path`` obviously cannot be written."""
    try:
        dest = Path(path)
    except TypeError:
        raise DataError(f"output path must be a str or os.PathLike, got {path!r}") from None
    parent = dest.parent
    if not parent.exists():
        raise DataError(f"{dest}: cannot write: directory {parent} does not exist")
    if not parent.is_dir():
        raise DataError(f"{dest}: cannot write: {parent} is not a directory")
    if dest.is_dir():
        raise DataError(f"{dest}: cannot write: it is a directory")
    return dest


def _save_figure(fig: Figure, dest: Path, *, dpi: float = DPI) -> Path:
    """Write ``fig`` to ``dest`` as a PNG (atomically, :mod:`latentforge.io`); OSError as :class:`DataError`."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1, facecolor="white")
    try:
        atomic_write_bytes(dest, buf.getvalue())
    except OSError as exc:
        raise DataError(f"{dest}: cannot write: {exc.strerror or exc}") from exc
    return dest


@contextlib.contextmanager
def _figure(**kwargs: Any) -> Iterator[Figure]:
    """A new figure that is not registered with pyplot: nothing to close, no leak in loops, and
    a notebook shows it when a plot function returns it."""
    yield Figure(**kwargs)


def _finish(fig: Figure, dest: Path | None, dpi: float) -> Figure:
    """Set the figure's resolution (every image pixel gets a screen pixel), save it when a
    destination was given, and return it."""
    fig.set_dpi(dpi)
    if dest is not None:
        _save_figure(fig, dest, dpi=dpi)
    return fig



def _feature_labels(d: int, feature_names: Sequence[str] | None) -> list[str]:
    """Column labels: the names given (a CSV's header), else ``0``, ``1``, ..."""
    if feature_names is not None and len(feature_names) == d:
        return [str(name) for name in feature_names]
    return [str(j) for j in range(d)]


def _per_feature_units(orig: np.ndarray, recon: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Columns whose spreads differ by more than 10x are shown standardised (by the originals'
    mean and spread per column), else one small column would be a flat line beside a large one."""
    spread = orig.std(0) if len(orig) > 1 else np.abs(orig[0])
    spread = np.where(spread > 0, spread, np.maximum(np.abs(orig).max(0), 1.0))
    if spread.max() <= 10 * spread.min():
        return orig, recon, False
    mean = orig.mean(0)
    return (orig - mean) / spread, (recon - mean) / spread, True
