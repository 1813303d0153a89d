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

The figures live in one module each, with what they share in :mod:`latentforge.report._figure`:
:mod:`~latentforge.report.grids` (:func:`to_display_images`, :func:`plot_image_grid`),
:mod:`~latentforge.report.reconstructions`, :mod:`~latentforge.report.tsne_map` (the map; the t-SNE
itself is :mod:`latentforge.report.embedding`) and :mod:`~latentforge.report.history` (loss curves).
This module re-exports their names.
"""
from __future__ import annotations

# the constants and the private helpers are re-exported too: TensorBoard and the tests import them from here
from latentforge.report._figure import DPI, GREY_CMAP, MIN_IMAGE_SIDE, PathLike, _finish  # noqa: F401
from latentforge.report.grids import _mosaic, plot_image_grid, to_display_images  # noqa: F401
from latentforge.report.history import plot_history
from latentforge.report.reconstructions import plot_reconstructions
from latentforge.report.tsne_map import THUMB_MIN_DIST, _choose_thumbnail_points, _tsne, plot_tsne  # noqa: F401

__all__ = [
    "to_display_images",
    "plot_reconstructions",
    "plot_image_grid",
    "plot_tsne",
    "plot_history",
]
