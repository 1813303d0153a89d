"""Figures for latentforge reports: reconstructions, sample grids, t-SNE maps and loss curves.

Every public function here is a pure function of numpy arrays (torch tensors are accepted too and
converted with ``.detach().cpu().numpy()``); none of them touches a model. Each one draws a single
matplotlib figure with the headless ``Agg`` backend and returns it as a
:class:`matplotlib.figure.Figure` (a notebook shows it inline); given a ``path``, it also writes
it as a PNG *atomically* (to a hidden temporary file in the destination folder, then
``os.replace``). The figures are not registered with pyplot: nothing needs closing.

Problems a caller can fix raise :class:`latentforge.errors.DataError` with a one-line message:
malformed arrays, mismatched lengths, too few points, and an output path that cannot be written
(``"<path>: cannot write: <reason>"``).

Image conventions (see :func:`to_display_images`): pixel values are expected in ``[0, 1]`` and are
clipped to that range (integer arrays, e.g. raw ``uint8`` pixels, are divided by 255 first); data
produced in ``[-1, 1]`` (a ``tanh`` generator) should be mapped with ``(x + 1) / 2`` by the caller.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

# Headless rendering. Only pick the backend when nobody has imported pyplot yet, so that importing
# latentforge inside a notebook or GUI session does not hijack the user's interactive backend.
if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.offsetbox import AnnotationBbox, OffsetImage  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from latentforge.errors import DataError  # noqa: E402
from latentforge.io import atomic_write_bytes  # noqa: E402

__all__ = [
    "to_display_images",
    "plot_reconstructions",
    "plot_image_grid",
    "plot_tsne",
    "plot_history",
]

PathLike = str | os.PathLike[str]

#: Resolution of saved figures (dots per inch), unless a grid needs more to show every pixel.
DPI = 100
#: Smallest side (in pixels) for which a flat vector of ``side**2`` values is taken to be an image;
#: below that (e.g. 4 or 9 tabular features) it is treated as tabular data.
MIN_IMAGE_SIDE = 8
#: Minimum distance between two t-SNE thumbnails in coordinates scaled to ``[0, 1]``: the chapter
#: accepts a point when its *squared* distance to every placed thumbnail exceeds 0.02.
THUMB_MIN_DIST = math.sqrt(0.02)
#: Colour map for single-channel images (true intensities: 0 black, 1 white).
GREY_CMAP = "gray"

_CHANNELS = (1, 3, 4)
_MAX_TABULAR_FEATURES = 12
_MAX_LEGEND_CLASSES = 20
_MARKER_MAX_POINTS = 20
_THUMB_EDGE_PT = 1.5  # frame line width of a t-SNE thumbnail, in points
_SPLIT_PREFIXES = {
    "train": "-",
    "training": "-",
    "valid": "--",
    "val": "--",
    "validation": "--",
    "test": ":",
    "eval": ":",
}
_BOOKKEEPING_KEYS = {
    "epoch", "epochs", "step", "steps", "iter", "iters", "iteration", "iterations",
    "global_step", "batch", "batches",
}
_BOOKKEEPING_TOKENS = {
    "epoch", "step", "time", "times", "timestamp", "seconds", "second", "sec", "secs", "s",
    "elapsed", "duration", "wall", "eta", "lr", "throughput", "ms",
}


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
# public: array conversion
# --------------------------------------------------------------------------------------------- #
def to_display_images(x: Any, sample_shape: Sequence[int] | None = None) -> np.ndarray | None:
    """Convert a batch of images to an array ``imshow`` can draw, values clipped to ``[0, 1]``.

    Accepted layouts:

    * ``(N, D)`` flat vectors, with ``sample_shape`` ``(H, W)``, ``(C, H, W)`` or ``(D,)``;
      without ``sample_shape`` (or with ``(D,)``) the shape is inferred: ``D = s*s`` is a grey
      ``s x s`` image and ``D = 3*s*s`` a colour one, for ``s >= MIN_IMAGE_SIDE``;
    * ``(N, H, W)`` grey images;
    * ``(N, C, H, W)`` with ``C`` in 1/3/4 (``(N, H, W, C)`` is accepted too).

    When ``sample_shape`` is given it wins: any input with ``prod(sample_shape)`` values per sample
    is reshaped to it. ``(C, H, W)`` sample shapes may also be written ``(H, W, C)``.

    Integer arrays (raw ``uint8`` pixels) are divided by 255; everything is then clipped to
    ``[0, 1]``.

    Returns:
        ``(N, H, W)`` float32 for grey images, ``(N, H, W, C)`` float32 for RGB/RGBA, or None for
        tabular data that is not an image (flat vectors whose length is no square image size).

    Raises:
        DataError: not numeric, NaN/Inf, no samples, or a shape that fits none of the above.
    """
    arr = _to_numpy(x, "images")
    shape = _check_sample_shape(sample_shape)
    n = _num_samples(arr, "images")
    per_sample = int(np.prod(arr.shape[1:]))

    if shape is not None:
        needed = int(np.prod(shape))
        if per_sample != needed:
            raise DataError(
                f"images: {per_sample} values per sample (shape {arr.shape}) do not fit "
                f"sample_shape {shape} ({needed} values)"
            )
        if len(shape) == 1:
            if arr.ndim > 2:  # explicitly shaped images described as flat: trust the array
                shape = arr.shape[1:]
            else:
                inferred = _infer_flat_shape(per_sample)
                if inferred is None:
                    return None
                shape = inferred
        arr = arr.reshape((n, *shape))
    elif arr.ndim == 2:
        inferred = _infer_flat_shape(per_sample)
        if inferred is None:
            return None
        arr = arr.reshape((n, *inferred))

    if arr.ndim == 4:
        arr = _channels_last(arr, "images")
    elif arr.ndim != 3:
        raise DataError(
            f"images: expected (N, D), (N, H, W) or (N, C, H, W), got shape {arr.shape}"
        )

    out = arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        out /= 255.0
    np.clip(out, 0.0, 1.0, out=out)
    return out


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


# --------------------------------------------------------------------------------------------- #
# image grids
# --------------------------------------------------------------------------------------------- #
def _mosaic(images: np.ndarray, nrows: int, ncols: int, pad: int) -> np.ndarray:
    """Tile ``images`` (N,H,W[,C]) row by row into one array with white ``pad``-pixel gutters."""
    h, w = images.shape[1:3]
    canvas = np.ones(
        (nrows * h + (nrows - 1) * pad, ncols * w + (ncols - 1) * pad, *images.shape[3:]),
        dtype=np.float32,
    )
    for i in range(min(len(images), nrows * ncols)):
        r, c = divmod(i, ncols)
        y, x = r * (h + pad), c * (w + pad)
        canvas[y:y + h, x:x + w] = images[i]
    return canvas


def _draw_mosaic(fig: Figure, images: np.ndarray, nrows: int, ncols: int,
                 row_labels: Sequence[str] | None, title: str | None) -> float:
    """Draw ``images`` as an ``nrows x ncols`` grid on ``fig``; return the dpi to save with."""
    h, w = images.shape[1:3]
    pad = max(1, round(max(h, w) / 14))
    canvas = _mosaic(images, nrows, ncols, pad)
    cell_in = min(1.0, max(0.25, 12.0 / max(nrows, ncols)))
    fig.set_size_inches(ncols * cell_in * w / max(h, w) + (1.2 if row_labels else 0.2),
                        nrows * cell_in * h / max(h, w) + (0.5 if title else 0.2))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0) if not row_labels else (0.15, 0.0, 0.85, 1.0))
    if canvas.ndim == 2:
        ax.imshow(canvas, cmap=GREY_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([])
    if row_labels:
        ax.set_yticks([r * (h + pad) + (h - 1) / 2 for r in range(nrows)])
        ax.set_yticklabels([str(lab) for lab in row_labels])
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)
    # enough dots per inch for every image pixel to get at least one screen pixel
    return float(min(300, max(DPI, math.ceil(max(h, w) / cell_in))))


def _grid_shape(n: int, nrows: Any, ncols: Any) -> tuple[int, int]:
    """Resolve the grid layout for ``n`` items from optional ``nrows``/``ncols``."""
    if nrows is not None:
        nrows = _positive_int(nrows, "nrows")
    if ncols is not None:
        ncols = _positive_int(ncols, "ncols")
    if nrows is None and ncols is None:
        ncols = math.ceil(math.sqrt(n))
        nrows = math.ceil(n / ncols)
    elif nrows is None:
        nrows = math.ceil(n / ncols)
    elif ncols is None:
        ncols = math.ceil(n / nrows)
    return nrows, ncols


def plot_image_grid(images: Any, path: PathLike | None = None, *, nrows: int | None = None,
                    ncols: int | None = None, sample_shape: Sequence[int] | None = None,
                    title: str | None = None,
                    row_labels: Sequence[str] | None = None,
                    feature_names: Sequence[str] | None = None) -> Figure:
    """Save a grid of samples (generated images, interpolations, ...) as a PNG.

    Images fill the grid row by row. Without ``nrows``/``ncols`` the grid is as square as
    possible; with one of them the other follows from the number of images; with both, only the
    first ``nrows * ncols`` images are shown. ``row_labels`` (one per grid row) are written to the
    left of the rows, e.g. the two end points of each interpolation.

    Tabular data that is not an image (see :func:`to_display_images`) is drawn as a heat map
    instead: one line per sample, one column per feature, with the grid rows as labelled blocks.

    Args:
        images: a batch in any layout :func:`to_display_images` accepts.
        path: destination PNG file (its folder must exist); None: draw only, save nothing.
        nrows, ncols: grid layout (positive ints).
        sample_shape: shape of one sample when ``images`` is flat.
        title: optional figure title.
        row_labels: optional labels, exactly one per grid row.

    Returns:
        the matplotlib ``Figure`` (shown inline by a notebook; ``fig.savefig(...)`` saves it).

    Raises:
        DataError: bad images or layout, wrong number of ``row_labels``, or ``path`` unwritable.
    """
    dest = _check_destination(path) if path is not None else None
    arr = _to_numpy(images, "images")
    n = _num_samples(arr, "images")
    nrows, ncols = _grid_shape(n, nrows, ncols)
    shown = min(n, nrows * ncols)
    if row_labels is not None:
        row_labels = list(row_labels)
        if len(row_labels) != nrows:
            raise DataError(
                f"row_labels: got {len(row_labels)} label(s) for a grid of {nrows} row(s)"
            )
    disp = to_display_images(arr[:shown], sample_shape)
    with _figure() as fig:
        if disp is None:
            _draw_tabular_heatmap(fig, arr[:shown].reshape(shown, -1).astype(np.float64),
                                  ncols, row_labels, title, feature_names)
            dpi: float = DPI
        else:
            dpi = _draw_mosaic(fig, disp, nrows, ncols, row_labels, title)
        return _finish(fig, dest, dpi)


def _draw_tabular_heatmap(fig: Figure, data: np.ndarray, ncols: int,
                          row_labels: Sequence[str] | None, title: str | None,
                          feature_names: Sequence[str] | None = None) -> None:
    """Draw tabular samples as a heat map, grid rows of ``ncols`` samples as labelled blocks.
    Columns whose scales differ by more than 10x are shown standardised (per column), and the
    columns are named when ``feature_names`` are given."""
    n, d = data.shape
    shown, _, standardised = _per_feature_units(data, data)
    nblocks = math.ceil(n / ncols)
    names = _feature_labels(d, feature_names)
    named = feature_names is not None and len(feature_names) == d
    longest = max(len(name) for name in names) if named else 0
    fig.set_size_inches(min(16.0, 3.0 + (0.3 if named else 0.35) * d),
                        min(14.0, 1.5 + 0.25 * n + 0.07 * longest))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(shown, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="standardised value (per feature)" if standardised else "value")
    ax.set_xlabel("feature")
    if named and d <= 60:
        ax.set_xticks(np.arange(d))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for b in range(1, nblocks):
        ax.axhline(b * ncols - 0.5, color="white", linewidth=2)
    if row_labels:
        ax.set_yticks([b * ncols + (min(ncols, n - b * ncols) - 1) / 2 for b in range(nblocks)])
        ax.set_yticklabels([str(lab) for lab in row_labels[:nblocks]])
    else:
        ax.set_ylabel("sample")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        ax.set_title(title)


# --------------------------------------------------------------------------------------------- #
# reconstructions
# --------------------------------------------------------------------------------------------- #
def plot_reconstructions(originals: Any, reconstructions: Any, path: PathLike | None = None, *,
                         n: int = 10, sample_shape: Sequence[int] | None = None,
                         title: str | None = None,
                         feature_names: Sequence[str] | None = None) -> Figure:
    """Save the originals-vs-reconstructions figure as a PNG.

    For images this is the classic two-row grid: the first ``n`` originals on top, their
    reconstructions below, no axes. For tabular data that is not an image, each of the first
    ``n`` samples gets a small bar chart comparing its first features (at most 10), original next
    to reconstruction, all on one value scale.

    Args:
        originals: batch of inputs, any layout :func:`to_display_images` accepts.
        reconstructions: the model's outputs for them, same length and values per sample.
        path: destination PNG file (its folder must exist); None: draw only, save nothing.
        n: number of samples (columns) to show; fewer if the batch is smaller.
        sample_shape: shape of one sample when the arrays are flat.
        title: optional figure title.

    Returns:
        the matplotlib ``Figure`` (shown inline by a notebook; ``fig.savefig(...)`` saves it).

    Raises:
        DataError: mismatched lengths or sample sizes, bad arrays, ``n < 1``, or ``path``
            unwritable.
    """
    dest = _check_destination(path) if path is not None else None
    n = _positive_int(n, "n")
    orig = _to_numpy(originals, "originals")
    recon = _to_numpy(reconstructions, "reconstructions")
    n_orig, n_recon = _num_samples(orig, "originals"), _num_samples(recon, "reconstructions")
    if n_orig != n_recon:
        raise DataError(
            f"originals and reconstructions differ in length: {n_orig} vs {n_recon}"
        )
    d_orig, d_recon = int(np.prod(orig.shape[1:])), int(np.prod(recon.shape[1:]))
    if d_orig != d_recon:
        raise DataError(
            f"originals and reconstructions differ in values per sample: shape {orig.shape} "
            f"vs {recon.shape}"
        )
    n = min(n, n_orig)
    orig, recon = orig[:n], recon[:n]
    disp_o = to_display_images(orig, sample_shape)
    disp_r = to_display_images(recon, sample_shape)
    with _figure() as fig:
        if disp_o is None or disp_r is None:
            _draw_tabular_reconstructions(fig, orig.reshape(n, -1).astype(np.float64),
                                          recon.reshape(n, -1).astype(np.float64), title, feature_names)
            dpi: float = DPI
        else:
            if disp_o.shape[1:] != disp_r.shape[1:]:
                raise DataError(
                    f"originals and reconstructions give images of different shapes: "
                    f"{disp_o.shape[1:]} vs {disp_r.shape[1:]}"
                )
            dpi = _draw_mosaic(fig, np.concatenate([disp_o, disp_r]), 2, n,
                               ["original", "reconstruction"], title)
        return _finish(fig, dest, dpi)


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


def _draw_tabular_reconstructions(fig: Figure, orig: np.ndarray, recon: np.ndarray,
                                  title: str | None, feature_names: Sequence[str] | None = None) -> None:
    """One horizontal bar chart per sample: the first features (at most 12, named), original vs
    reconstruction on a shared scale (standardised per feature when the columns' scales differ)."""
    n, d = orig.shape
    k = min(d, _MAX_TABULAR_FEATURES)
    names = _feature_labels(d, feature_names)[:k]
    orig_k, recon_k, standardised = _per_feature_units(orig[:, :k], recon[:, :k])
    ncols = min(n, 5)
    nrows = math.ceil(n / ncols)
    label_in = min(2.6, 0.25 + 0.08 * max(len(name) for name in names))
    fig.set_size_inches(label_in + ncols * 2.3, 1.0 + nrows * (0.45 + 0.25 * k))
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    ys = np.arange(k)
    height = 0.4
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_visible(False)
            continue
        ax.barh(ys - height / 2, orig_k[i], height, color="tab:blue", label="original")
        ax.barh(ys + height / 2, recon_k[i], height, color="tab:orange", label="reconstruction")
        ax.axvline(0.0, color="black", linewidth=0.6)
        ax.set_yticks(ys)
        ax.set_yticklabels(names, fontsize=9)
        if i == 0:                          # shared y axis: the first feature on top, for all
            ax.invert_yaxis()
        ax.set_title(f"sample {i}", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", linewidth=0.3, alpha=0.5)
    for ax in axes[-1]:
        ax.set_xlabel("standardised value" if standardised else "value", fontsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8, ncols=2)
    heading = title or "original vs reconstruction"
    if d > k:
        heading += f" (first {k} of {d} features)"
    fig.suptitle(heading, x=0.02, ha="left", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_size_inches()[1]))


# --------------------------------------------------------------------------------------------- #
# t-SNE
# --------------------------------------------------------------------------------------------- #
def _choose_thumbnail_points(xy_normalised: Any, min_dist: float) -> np.ndarray:
    """Greedily pick points whose thumbnails will not crowd each other.

    Points are visited in order; a point is accepted when its Euclidean distance to every
    already-accepted point is strictly greater than ``min_dist``. The result is therefore a
    maximal set: every rejected point lies within ``min_dist`` of some accepted one.

    Args:
        xy_normalised: ``(N, 2)`` coordinates, normally scaled to ``[0, 1]``.
        min_dist: the distance threshold (the chapter's 0.02 on squared distances is
            ``sqrt(0.02)``).

    Returns:
        Indices of the accepted points, ascending, as an int array.
    """
    xy = np.asarray(xy_normalised, dtype=np.float64)
    if xy.ndim != 2:
        raise DataError(f"thumbnail positions: expected shape (N, 2), got {xy.shape}")
    if not (math.isfinite(min_dist) and min_dist >= 0):
        raise DataError(f"min_dist must be a finite number >= 0, got {min_dist!r}")
    placed = np.empty_like(xy)
    chosen: list[int] = []
    for i, point in enumerate(xy):
        if chosen:
            dist = np.sqrt(((placed[:len(chosen)] - point) ** 2).sum(axis=1))
            if dist.min() <= min_dist:
                continue
        placed[len(chosen)] = point
        chosen.append(i)
    return np.asarray(chosen, dtype=np.intp)


def _normalise_xy(xy: np.ndarray) -> np.ndarray:
    """Scale each column to ``[0, 1]``; a constant column goes to 0.5."""
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = hi - lo
    out = np.where(span > 0, (xy - lo) / np.where(span > 0, span, 1.0), 0.5)
    return out.astype(np.float64)


_EMBEDDED: dict[tuple, tuple[np.ndarray, str]] = {}   # the last t-SNE map, by (codes' digest, seed, perplexity)


def _embed_2d(codes: np.ndarray, seed: int, perplexity: float) -> tuple[np.ndarray, str]:
    """Map codes to 2-D: as they are if already 2-D, else t-SNE. Returns (xy, method name).
    The last map is kept: the same codes mapped again (``demo``'s figure, then its report) cost
    nothing the second time."""
    if codes.shape[1] == 2:
        return codes.astype(np.float64), "latent"
    import hashlib
    key = (hashlib.sha1(np.ascontiguousarray(codes).tobytes()).hexdigest(), codes.shape, codes.dtype.str,
           seed, float(perplexity))
    if key not in _EMBEDDED:
        _EMBEDDED.clear()
        _EMBEDDED[key] = _tsne(codes, seed, perplexity)
    xy, method = _EMBEDDED[key]
    return xy.copy(), method


def _tsne(codes: np.ndarray, seed: int, perplexity: float) -> tuple[np.ndarray, str]:
    """t-SNE through the shared mapping code (:mod:`latentforge.report.embedding`: openTSNE)."""
    from latentforge.report.embedding import embed  # imported lazily: openTSNE is slow to import

    result = embed(codes, "tsne", seed=seed, perplexity=perplexity)
    if result.method == "identical":
        return np.zeros((len(codes), 2)), "identical codes"
    return np.asarray(result.xy, dtype=np.float64), "t-SNE"


class _LabelColours:
    """Colours (and legend or colour bar) for the labels of a scatter plot."""

    def __init__(self, labels: np.ndarray | None, class_names: Any) -> None:
        self.labels = labels
        self.categorical = True
        self.classes: np.ndarray = np.empty(0)
        self.index: np.ndarray | None = None
        if labels is None:
            return
        self.classes, self.index = np.unique(labels, return_inverse=True)
        numeric = np.issubdtype(labels.dtype, np.number)
        if len(self.classes) > _MAX_LEGEND_CLASSES or (
            numeric and np.issubdtype(labels.dtype, np.floating)
            and not np.all(np.mod(self.classes, 1) == 0)
            and len(self.classes) > 10
        ):
            self.categorical = False
        if self.categorical:
            self.names = [self._name(c, class_names) for c in self.classes]
            self.cmap = matplotlib.colormaps["tab10" if len(self.classes) <= 10 else "tab20"]
            self.norm = None
        else:
            self.cmap = matplotlib.colormaps["viridis"]
            values = labels.astype(np.float64) if numeric else self.index.astype(np.float64)
            self.values = values
            self.norm = Normalize(float(values.min()), float(values.max()))

    @staticmethod
    def _name(label: Any, class_names: Any) -> str:
        """Display name of one label value."""
        value = label.item() if isinstance(label, np.generic) else label
        if class_names is None:
            return str(value)
        if isinstance(class_names, Mapping):
            return str(class_names.get(value, value))
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or not 0 <= value < len(class_names):
            raise DataError(
                f"class_names has {len(class_names)} entries but there is a label {value!r}; "
                f"labels must be integers 0..{len(class_names) - 1} (or pass a dict)"
            )
        return str(class_names[value])

    def colour(self, i: int) -> Any:
        """RGBA colour of point ``i``."""
        if self.labels is None or self.index is None:
            return "black"
        if self.categorical:
            return self.cmap(int(self.index[i]) % self.cmap.N)
        return self.cmap(self.norm(self.values[i]))

    def scatter(self, fig: Figure, ax: Any, xy: np.ndarray, size: float) -> None:
        """Draw the points, with a legend (few classes) or a colour bar (many / continuous)."""
        if self.labels is None or self.index is None:
            ax.scatter(xy[:, 0], xy[:, 1], s=size, color="tab:blue", alpha=0.8, linewidths=0)
            return
        if self.categorical:
            for k, name in enumerate(self.names):
                mask = self.index == k
                ax.scatter(xy[mask, 0], xy[mask, 1], s=size, color=self.cmap(k % self.cmap.N),
                           alpha=0.8, linewidths=0, label=name)
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, markerscale=2,
                      frameon=False, title="class")
        else:
            sc = ax.scatter(xy[:, 0], xy[:, 1], s=size, c=self.values, cmap=self.cmap,
                            norm=self.norm, alpha=0.8, linewidths=0)
            fig.colorbar(sc, ax=ax, label="label", fraction=0.046, pad=0.02)


def plot_tsne(codes: Any, path: PathLike | None = None, *, labels: Any = None, images: Any = None,
              sample_shape: Sequence[int] | None = None,
              class_names: Sequence[str] | Mapping[Any, str] | None = None, seed: int = 0,
              max_points: int | None = 5000, perplexity: float = 30.0,
              thumb_zoom: float | None = None, title: str | None = None) -> Figure:
    """Save a 2-D map of latent codes (t-SNE), coloured by label, with image thumbnails.

    The codes (``(N, K)``; higher-rank codes are flattened per sample) are subsampled to
    ``max_points`` with ``seed`` (``None``: every point), embedded with openTSNE through
    :func:`latentforge.report.embedding.embed` (PCA initialisation, ``random_state=seed``; skipped
    when ``K == 2``; ``perplexity`` is clamped to ``(n - 1) / 3`` for small ``n``), scaled to
    ``[0, 1]`` and scattered, coloured by ``labels`` with ``tab10`` and a legend (a colour bar for many or continuous labels). With ``images``, thumbnails are
    placed greedily so that no two centres are closer than ``THUMB_MIN_DIST`` (the chapter's
    0.02 on squared distances); by default the thumbnails are sized from that distance and the
    axes size so that they cannot overlap (an explicit ``thumb_zoom`` overrides this).

    Args:
        codes: ``(N, K)`` latent codes.
        path: destination PNG file (its folder must exist); None: draw only, save nothing.
        labels: optional ``N`` class labels (ints, strings or floats).
        images: optional ``N`` inputs matching the codes, any layout
            :func:`to_display_images` accepts.
        sample_shape: shape of one image when ``images`` is flat.
        class_names: names for integer labels (a sequence indexed by label, or a dict).
        seed: seed for subsampling and t-SNE.
        max_points: subsample size cap (at least 5; ``None``: no cap).
        perplexity: t-SNE perplexity (> 0).
        thumb_zoom: thumbnail scale factor (display pixels per image pixel at 72 dpi).
        title: optional axes title (default names the method, plus the subsample size).

    Returns:
        the matplotlib ``Figure`` (shown inline by a notebook; ``fig.savefig(...)`` saves it).

    Raises:
        DataError: fewer than 5 points, mismatched lengths, bad arguments, images that are not
            images, or ``path`` unwritable.
    """
    dest = _check_destination(path) if path is not None else None
    arr = _to_numpy(codes, "codes")
    n_total = _num_samples(arr, "codes")
    arr = arr.reshape(n_total, -1)
    if n_total < 5:
        raise DataError(f"codes: t-SNE plot needs at least 5 points, got {n_total}")
    max_points = n_total if max_points is None else _positive_int(max_points, "max_points")
    if max_points < 5:
        raise DataError(f"max_points must be at least 5, got {max_points}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(perplexity, bool) or not isinstance(perplexity, (int, float, np.number)) \
            or not (math.isfinite(perplexity) and perplexity > 0):
        raise DataError(f"perplexity must be a positive number, got {perplexity!r}")
    if thumb_zoom is not None and not (
        isinstance(thumb_zoom, (int, float, np.number)) and math.isfinite(thumb_zoom)
        and thumb_zoom > 0
    ):
        raise DataError(f"thumb_zoom must be a positive number, got {thumb_zoom!r}")

    label_arr: np.ndarray | None = None
    if labels is not None:
        detach = getattr(labels, "detach", None)
        try:
            label_arr = np.asarray(detach().cpu().numpy() if callable(detach) else labels)
        except (ValueError, TypeError) as exc:
            raise DataError(f"labels: cannot be read as an array ({exc})") from None
        if label_arr.ndim == 2 and label_arr.shape[1] == 1:
            label_arr = label_arr[:, 0]
        if label_arr.ndim != 1 or len(label_arr) != n_total:
            raise DataError(
                f"labels: expected {n_total} labels (one per code), got shape {label_arr.shape}"
            )
        if label_arr.dtype == object:
            label_arr = label_arr.astype(str)
        if np.issubdtype(label_arr.dtype, np.floating) and not np.isfinite(label_arr).all():
            raise DataError("labels: contain NaN or infinite values")
    image_arr: np.ndarray | None = None
    if images is not None:
        image_arr = _to_numpy(images, "images")
        if _num_samples(image_arr, "images") != n_total:
            raise DataError(
                f"images: expected {n_total} images (one per code), got {len(image_arr)}"
            )

    rng = np.random.default_rng(int(seed))
    keep = (np.sort(rng.choice(n_total, size=max_points, replace=False))
            if n_total > max_points else np.arange(n_total))
    arr = arr[keep]
    if label_arr is not None:
        label_arr = label_arr[keep]
    colours = _LabelColours(label_arr, class_names)

    xy, method = _embed_2d(arr, int(seed), float(perplexity))
    xy = _normalise_xy(xy)

    thumbs: np.ndarray | None = None
    chosen = np.empty(0, dtype=np.intp)
    if image_arr is not None:
        chosen = _choose_thumbnail_points(xy, THUMB_MIN_DIST)
        thumbs = to_display_images(image_arr[keep[chosen]], sample_shape)
        if thumbs is None:
            raise DataError(
                f"images: shape {image_arr.shape} is not image data; pass sample_shape or "
                f"leave images out"
            )

    margin = 0.5 * THUMB_MIN_DIST / math.sqrt(2.0) + 0.02
    with _figure(figsize=(10, 8), dpi=DPI) as fig:
        ax = fig.add_subplot(1, 1, 1)
        colours.scatter(fig, ax, xy, size=10.0 if len(xy) <= 2000 else 4.0)
        ax.set_xlim(-margin, 1 + margin)
        ax.set_ylim(-margin, 1 + margin)
        ax.set_xticks([])
        ax.set_yticks([])
        axis_name = "latent dim" if method == "latent" else "t-SNE"
        ax.set_xlabel(f"{axis_name} 1")
        ax.set_ylabel(f"{axis_name} 2")
        default_title = {
            "latent": "latent codes (2-D)",
            "t-SNE": "t-SNE of latent codes",
            "identical codes": "latent codes (all identical)",
        }[method]
        ax.set_title(_title_with_count(title or default_title, len(xy), n_total))

        if thumbs is not None:
            zoom = thumb_zoom if thumb_zoom is not None else _auto_thumb_zoom(
                fig, ax, thumbs.shape[1:3], 1.0 + 2 * margin)
            for j, i in enumerate(chosen):
                image = thumbs[j]
                box = OffsetImage(image, zoom=zoom, interpolation="nearest",
                                  cmap=GREY_CMAP if image.ndim == 2 else None,
                                  norm=Normalize(0.0, 1.0) if image.ndim == 2 else None)
                ax.add_artist(AnnotationBbox(
                    box, (float(xy[i, 0]), float(xy[i, 1])), pad=0.0, zorder=3,
                    bboxprops={"edgecolor": colours.colour(int(i)), "lw": _THUMB_EDGE_PT},
                ))
        return _finish(fig, dest, DPI)



def _title_with_count(title: str, shown: int, total: int) -> str:
    """Append ``(shown of total points)`` to ``title`` when the data was subsampled."""
    return f"{title} ({shown} of {total} points)" if shown < total else title


def _auto_thumb_zoom(fig: Figure, ax: Any, image_hw: tuple[int, int], data_span: float) -> float:
    """Zoom that keeps thumbnails at least ``THUMB_MIN_DIST`` apart from overlapping.

    Two axis-aligned squares of side ``s`` whose centres are more than ``s * sqrt(2)`` apart
    cannot overlap, so each framed thumbnail is made at most ``THUMB_MIN_DIST / sqrt(2)`` data
    units wide (measured on the shorter side of the axes), minus its frame.
    """
    pos = ax.get_position()
    width_in, height_in = fig.get_size_inches()
    px_per_unit = min(pos.width * width_in, pos.height * height_in) * fig.dpi / data_span
    side_px = 0.9 * THUMB_MIN_DIST / math.sqrt(2.0) * px_per_unit
    side_px -= 2 * _THUMB_EDGE_PT * fig.dpi / 72.0 + 2.0
    return max(side_px, 1.0) * 72.0 / fig.dpi / max(image_hw)


# --------------------------------------------------------------------------------------------- #
# training history
# --------------------------------------------------------------------------------------------- #
def _is_number(value: Any) -> bool:
    """True for real numbers (Python, numpy or 0-d arrays/tensors), never for bools."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, float, np.integer, np.floating)):
        return True
    item = getattr(value, "item", None)
    shape = getattr(value, "shape", None)
    if callable(item) and shape is not None and tuple(shape) in ((), (1,)):
        try:
            return _is_number(item())
        except (TypeError, ValueError, RuntimeError):
            return False
    return False


def _as_float(value: Any) -> float:
    """Float value of a number accepted by :func:`_is_number`; infinities become NaN (gaps)."""
    out = float(value.item() if hasattr(value, "item") else value)
    return out if math.isfinite(out) else math.nan


def _is_bookkeeping(key: str) -> bool:
    """True for epoch counters, timings, throughput and learning-rate keys (not plotted)."""
    k = key.lower()
    if k in _BOOKKEEPING_KEYS or "learning_rate" in k or "per_s" in k or "per_sec" in k:
        return True
    return any(tok in _BOOKKEEPING_TOKENS for tok in re.split(r"[^a-z0-9]+", k) if tok)


def _collect_series(history: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Turn either history form into ``{key: (epochs, values)}`` for every numeric series."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    if isinstance(history, Mapping):
        if not history:
            raise DataError("history is empty")
        epochs_raw = history.get("epoch")
        epochs = ([_as_float(e) for e in epochs_raw]
                  if isinstance(epochs_raw, (Sequence, np.ndarray))
                  and not isinstance(epochs_raw, (str, bytes))
                  and all(_is_number(e) for e in epochs_raw) else None)
        for key, values in history.items():
            if not isinstance(key, str) or key == "epoch":
                continue
            if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
                continue
            pairs = [
                (epochs[i] if epochs is not None and len(epochs) == len(values) else i + 1.0,
                 _as_float(v))
                for i, v in enumerate(values) if _is_number(v)
            ]
            if pairs:
                series[key] = ([p[0] for p in pairs], [p[1] for p in pairs])
    elif isinstance(history, Sequence) and not isinstance(history, (str, bytes)):
        if not history:
            raise DataError("history is empty")
        for i, record in enumerate(history):
            if not isinstance(record, Mapping):
                raise DataError(
                    f"history[{i}]: expected a dict of per-epoch values, got "
                    f"{type(record).__name__}"
                )
            epoch = record.get("epoch")
            x = _as_float(epoch) if _is_number(epoch) else i + 1.0
            for key, value in record.items():
                if isinstance(key, str) and key != "epoch" and _is_number(value):
                    xs, ys = series.setdefault(key, ([], []))
                    xs.append(x)
                    ys.append(_as_float(value))
    else:
        raise DataError(
            f"history: expected a dict of lists or a list of dicts, got {type(history).__name__}"
        )
    return {
        key: (np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
        for key, (xs, ys) in series.items()
        if np.isfinite(ys).any()
    }


def _style(key: str) -> tuple[str, str]:
    """(base name, line style) of a series: ``valid_loss`` -> (``loss``, dashed)."""
    head, sep, rest = key.partition("_")
    if sep and rest and head.lower() in _SPLIT_PREFIXES:
        return rest, _SPLIT_PREFIXES[head.lower()]
    return key, "-"


def _draw_series(ax: Any, series: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Plot series on ``ax``: one colour per base name, line style per split, markers if short."""
    colour_of: dict[str, Any] = {}
    cycle = matplotlib.colormaps["tab10"]
    for key, (xs, ys) in series.items():
        base, style = _style(key)
        colour = colour_of.setdefault(base, cycle(len(colour_of) % cycle.N))
        few = len(xs) <= _MARKER_MAX_POINTS
        ax.plot(xs, ys, linestyle=style, color=colour, label=key,
                marker="o" if few else None, markersize=4 if len(xs) > 1 else 6)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_history(history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, Any]],
                 path: PathLike | None = None, *, title: str | None = None) -> Figure:
    """Save training curves as a PNG.

    Accepts ``{"train_loss": [...], "valid_loss": [...], ...}`` (x is ``history["epoch"]`` when
    present with the same length, else 1, 2, ...) or a list of per-epoch dicts such as
    ``[{"epoch": 1, "train_loss": 0.3, "valid_loss": 0.31}, ...]`` (a key missing from some
    epochs just leaves a gap). Every numeric series with "loss" in its name goes on the first
    axes (log scale when positive and spanning more than two decades); the other numeric series,
    except bookkeeping such as epoch counters, timings (``seconds``, ``time``), throughput
    (``samples_per_s``) and learning rate (``lr``), go on a second axes below. ``train_*`` /
    ``valid_*`` / ``test_*`` variants of one quantity share a colour and differ in line style;
    short histories (a single epoch included) are drawn with markers.

    Returns:
        the matplotlib ``Figure`` (shown inline by a notebook; ``fig.savefig(...)`` saves it).

    Raises:
        DataError: empty or malformed history, nothing numeric to plot, or ``path`` unwritable.
    """
    dest = _check_destination(path) if path is not None else None
    series = _collect_series(history)
    losses = {k: v for k, v in series.items() if "loss" in k.lower()}
    others = {k: v for k, v in series.items() if k not in losses and not _is_bookkeeping(k)}
    # a loss made of one part (e.g. train_bce == train_loss) would only repeat the loss panel
    others = {k: v for k, v in others.items()
              if not any(np.array_equal(np.asarray(v, float), np.asarray(lv, float), equal_nan=True)
                         for lv in losses.values())}
    groups = [(name, group) for name, group in (("loss", losses), ("metric", others)) if group]
    if not groups:
        raise DataError(
            f"history: no numeric series to plot (keys: {', '.join(map(str, series)) or 'none'})"
        )
    with _figure(figsize=(8, 3.6 * len(groups) + 0.6), dpi=DPI) as fig:
        axes = fig.subplots(len(groups), 1, sharex=True, squeeze=False)[:, 0]
        for ax, (name, group) in zip(axes, groups):
            _draw_series(ax, group)
            ax.set_ylabel(name)
            if name == "loss":
                values = np.concatenate([ys[np.isfinite(ys)] for _, ys in group.values()])
                if values.min() > 0 and values.max() / values.min() > 100:
                    ax.set_yscale("log")
        axes[-1].set_xlabel("epoch")
        xs = np.unique(np.concatenate([x for x, _ in series.values()]))
        if len(xs) == 1:  # one epoch: centre it, with integer ticks around it
            axes[-1].set_xlim(xs[0] - 1, xs[0] + 1)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return _finish(fig, dest, DPI)
