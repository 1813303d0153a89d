"""Reconstructions: :func:`plot_reconstructions` draws originals above their reconstructions (images)
or one bar chart per sample (tabular data).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from latentforge.errors import DataError
from latentforge.report._figure import (
    DPI, PathLike, _check_destination, _feature_labels, _figure, _finish, _num_samples, _per_feature_units,
    _positive_int, _to_numpy,
)
from latentforge.report.grids import _draw_mosaic, to_display_images

_MAX_TABULAR_FEATURES = 12


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
