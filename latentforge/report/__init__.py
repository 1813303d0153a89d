"""Report figures for latentforge: reconstructions, sample grids, t-SNE maps and loss curves.

All plotting functions take numpy arrays, write a PNG atomically with matplotlib's headless Agg
backend, and raise :class:`latentforge.errors.DataError` for bad inputs or unwritable paths.
"""
from __future__ import annotations

from latentforge.report.plots import (
    plot_history,
    plot_image_grid,
    plot_reconstructions,
    plot_tsne,
    to_display_images,
)

__all__ = [
    "to_display_images",
    "plot_reconstructions",
    "plot_image_grid",
    "plot_tsne",
    "plot_history",
]
