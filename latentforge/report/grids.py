"""Image grids: :func:`to_display_images` (any array of images to what matplotlib shows, in ``[0, 1]``),
:func:`plot_image_grid` (a mosaic of images; tabular rows as a heat map) and the mosaic helpers the
reconstructions and TensorBoard share.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from latentforge.errors import DataError
from latentforge.report._figure import (
    DPI, GREY_CMAP, PathLike, _channels_last, _check_destination, _check_sample_shape, _feature_labels,
    _figure, _finish, _infer_flat_shape, _num_samples, _per_feature_units, _positive_int, _to_numpy,
)

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
