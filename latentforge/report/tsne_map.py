"""The map of the codings: :func:`plot_tsne` draws a 2-D t-SNE of the codes (computed by
:mod:`latentforge.report.embedding`, the last map kept for the same codes), coloured by label, with
image thumbnails spread over it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from latentforge.errors import DataError
from latentforge.report._figure import (
    DPI, GREY_CMAP, PathLike, _check_destination, _figure, _finish, _num_samples, _positive_int, _to_numpy,
)
from latentforge.report.grids import to_display_images

#: Minimum distance between two t-SNE thumbnails in coordinates scaled to ``[0, 1]``: the chapter
#: accepts a point when its *squared* distance to every placed thumbnail exceeds 0.02.
THUMB_MIN_DIST = math.sqrt(0.02)

_MAX_LEGEND_CLASSES = 20
_THUMB_EDGE_PT = 1.5  # frame line width of a t-SNE thumbnail, in points


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
