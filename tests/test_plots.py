"""Tests for latentforge.report.plots: PNG output, input handling, thumbnails and errors."""
from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.offsetbox import AnnotationBbox  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

from matplotlib.figure import Figure  # noqa: E402

from latentforge.errors import DataError  # noqa: E402
from latentforge.report import grids, history, plots, reconstructions, tsne_map  # noqa: E402
from latentforge.report import to_display_images  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _saving(fn, path_pos: int):
    """``fn`` (a plot function, which returns a Figure) as the file-writing tests call it: the
    returned value checked to be a Figure, then the path it was asked to save to."""
    def call(*args, **kwargs):
        fig = fn(*args, **kwargs)
        assert isinstance(fig, Figure)
        return Path(args[path_pos] if len(args) > path_pos else kwargs["path"])
    return call


plot_reconstructions = _saving(plots.plot_reconstructions, 2)
plot_image_grid = _saving(plots.plot_image_grid, 1)
plot_tsne = _saving(plots.plot_tsne, 1)
plot_history = _saving(plots.plot_history, 1)


# ------------------------------------------------------------------------------------------- #
# helpers and fixtures
# ------------------------------------------------------------------------------------------- #
def assert_png(path: Path, min_width: int = 100, min_height: int = 50) -> np.ndarray:
    """Check ``path`` is a real, non-blank PNG of at least the given size; return its pixels."""
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    height, width = pixels.shape[:2]
    assert width >= min_width and height >= min_height, pixels.shape
    assert float(np.ptp(pixels[..., :3])) > 0.1, "image is a single colour"
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    return pixels


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def grey(rng: np.random.Generator) -> np.ndarray:
    """(N, 28, 28) images with a bright square on a dark background."""
    x = rng.random((12, 28, 28)) * 0.3
    x[:, 8:20, 8:20] += 0.6
    return x.astype(np.float32)


@pytest.fixture
def colour(rng: np.random.Generator) -> np.ndarray:
    return rng.random((12, 3, 32, 32)).astype(np.float32)


@pytest.fixture
def captured_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Figures the plotting functions draw, kept for inspection after saving."""
    figures: list = []
    real_finish = plots._finish

    def finish(fig, dest, dpi):
        figures.append(fig)
        return real_finish(fig, dest, dpi)

    for module in (grids, reconstructions, tsne_map, history):     # each figure module saves with _finish
        monkeypatch.setattr(module, "_finish", finish)
    return figures


# ------------------------------------------------------------------------------------------- #
# to_display_images
# ------------------------------------------------------------------------------------------- #
class TestToDisplayImages:
    def test_grey_batch_kept(self, grey: np.ndarray) -> None:
        out = to_display_images(grey)
        assert out.shape == (12, 28, 28) and out.dtype == np.float32
        np.testing.assert_allclose(out, np.clip(grey, 0, 1))

    @pytest.mark.parametrize("shape", [(28, 28), (1, 28, 28), (784,), None])
    def test_flat_with_or_without_sample_shape(self, grey: np.ndarray, shape) -> None:
        out = to_display_images(grey.reshape(12, 784), shape)
        assert out.shape == (12, 28, 28)
        np.testing.assert_allclose(out, grey)

    def test_channel_first_colour(self, colour: np.ndarray) -> None:
        out = to_display_images(colour)
        assert out.shape == (12, 32, 32, 3)
        np.testing.assert_allclose(out, colour.transpose(0, 2, 3, 1))

    def test_channel_last_colour_and_flat_colour(self, colour: np.ndarray) -> None:
        hwc = colour.transpose(0, 2, 3, 1)
        assert to_display_images(hwc).shape == (12, 32, 32, 3)
        flat = colour.reshape(12, -1)
        np.testing.assert_allclose(to_display_images(flat, (3, 32, 32)), hwc)
        np.testing.assert_allclose(to_display_images(flat), hwc)  # 3072 = 3*32*32 inferred

    def test_single_channel_and_rgba(self, rng: np.random.Generator) -> None:
        assert to_display_images(rng.random((4, 1, 16, 16))).shape == (4, 16, 16)
        assert to_display_images(rng.random((4, 4, 16, 16))).shape == (4, 16, 16, 4)

    def test_clipping_and_uint8(self) -> None:
        x = np.array([[[-1.0, 0.5], [2.0, 1.0]]])
        np.testing.assert_allclose(to_display_images(x), [[[0.0, 0.5], [1.0, 1.0]]])
        raw = np.full((2, 8, 8), 255, dtype=np.uint8)
        np.testing.assert_allclose(to_display_images(raw), 1.0)

    @pytest.mark.parametrize("d", [3, 4, 10, 50])
    def test_tabular_returns_none(self, rng: np.random.Generator, d: int) -> None:
        x = rng.normal(size=(5, d))
        assert to_display_images(x) is None
        assert to_display_images(x, (d,)) is None

    @pytest.mark.parametrize(
        "x, shape",
        [
            (np.zeros((4, 784)), (27, 27)),  # wrong size
            (np.zeros((4, 2, 28, 28)), None),  # 2 channels
            (np.zeros(10), None),  # no batch axis
            (np.zeros((0, 28, 28)), None),  # empty
            (np.zeros((2, 2, 2, 2, 2)), None),  # 5-D
            (np.full((2, 8, 8), np.nan), None),  # NaN
            (np.array([["a", "b"]]), None),  # not numbers
            (np.zeros((4, 784)), (0, 784)),  # bad sample_shape
            (np.zeros((4, 784)), (1, 1, 28, 28)),  # too many dims
        ],
    )
    def test_bad_inputs(self, x: np.ndarray, shape) -> None:
        with pytest.raises(DataError):
            to_display_images(x, shape)


# ------------------------------------------------------------------------------------------- #
# plot_reconstructions
# ------------------------------------------------------------------------------------------- #
class TestPlotReconstructions:
    def test_grey(self, tmp_path: Path, grey: np.ndarray) -> None:
        out = plot_reconstructions(grey, grey * 0.8, tmp_path / "rec.png", n=8, title="AE")
        assert out == tmp_path / "rec.png"
        pixels = assert_png(out, min_width=400, min_height=80)
        assert pixels.shape[1] > 2 * pixels.shape[0]  # a wide 2 x n grid

    def test_flat_with_sample_shape(self, tmp_path: Path, grey: np.ndarray) -> None:
        flat = grey.reshape(12, 784)
        assert_png(plot_reconstructions(flat, flat, str(tmp_path / "flat.png"),
                                        sample_shape=(28, 28)))

    def test_colour(self, tmp_path: Path, colour: np.ndarray) -> None:
        pixels = assert_png(plot_reconstructions(colour, colour[::-1], tmp_path / "c.png"))
        rgb = pixels[..., :3]
        assert float(np.abs(rgb[..., 0] - rgb[..., 1]).max()) > 0.1  # really in colour

    def test_tabular(self, tmp_path: Path, rng: np.random.Generator) -> None:
        x = rng.normal(size=(20, 3))
        assert_png(plot_reconstructions(x, x + 0.1, tmp_path / "tab.png", n=6),
                   min_width=300, min_height=200)

    def test_tabular_many_features_and_tiny_batch(self, tmp_path: Path,
                                                  rng: np.random.Generator) -> None:
        x = rng.normal(size=(2, 37))
        assert_png(plot_reconstructions(x, -x, tmp_path / "tab37.png"))

    def test_torch_tensors_accepted(self, tmp_path: Path, grey: np.ndarray) -> None:
        torch = pytest.importorskip("torch")
        t = torch.tensor(grey, requires_grad=True)
        assert_png(plot_reconstructions(t, t * 0.5, tmp_path / "torch.png"))

    def test_overwrites_existing_file(self, tmp_path: Path, grey: np.ndarray) -> None:
        dest = tmp_path / "again.png"
        dest.write_bytes(b"old")
        assert_png(plot_reconstructions(grey, grey, dest))

    def test_mismatched_lengths(self, tmp_path: Path, grey: np.ndarray) -> None:
        with pytest.raises(DataError, match="differ in length: 12 vs 11"):
            plot_reconstructions(grey, grey[:11], tmp_path / "x.png")
        assert not list(tmp_path.iterdir())

    def test_mismatched_sample_sizes(self, tmp_path: Path, grey: np.ndarray) -> None:
        with pytest.raises(DataError, match="values per sample"):
            plot_reconstructions(grey, grey[:, :14], tmp_path / "x.png")

    def test_bad_n(self, tmp_path: Path, grey: np.ndarray) -> None:
        with pytest.raises(DataError, match="n must be a positive integer"):
            plot_reconstructions(grey, grey, tmp_path / "x.png", n=0)


# ------------------------------------------------------------------------------------------- #
# plot_image_grid
# ------------------------------------------------------------------------------------------- #
class TestPlotImageGrid:
    def test_grey_square_grid(self, tmp_path: Path, grey: np.ndarray) -> None:
        assert_png(plot_image_grid(grey, tmp_path / "g.png", title="samples"))

    def test_flat_with_layout_and_row_labels(self, tmp_path: Path, grey: np.ndarray) -> None:
        flat = grey.reshape(12, 784)
        out = plot_image_grid(flat, tmp_path / "interp.png", nrows=2, sample_shape=(28, 28),
                              row_labels=["3 -> 8", "1 -> 7"])
        pixels = assert_png(out)
        assert pixels.shape[1] > pixels.shape[0]  # 2 rows x 6 columns: wider than tall

    def test_colour(self, tmp_path: Path, colour: np.ndarray) -> None:
        assert_png(plot_image_grid(colour, tmp_path / "c.png", ncols=4))

    def test_explicit_grid_smaller_than_batch(self, tmp_path: Path, grey: np.ndarray) -> None:
        assert_png(plot_image_grid(grey, tmp_path / "g.png", nrows=2, ncols=2))

    def test_tabular_heatmap(self, tmp_path: Path, rng: np.random.Generator) -> None:
        assert_png(plot_image_grid(rng.normal(size=(9, 3)), tmp_path / "t.png", ncols=3,
                                   row_labels=["a", "b", "c"]))

    def test_row_labels_must_match_rows(self, tmp_path: Path, grey: np.ndarray) -> None:
        with pytest.raises(DataError, match="row_labels"):
            plot_image_grid(grey, tmp_path / "g.png", nrows=3, row_labels=["a", "b"])

    @pytest.mark.parametrize("kwargs", [{"nrows": 0}, {"ncols": -1}, {"ncols": 2.5}])
    def test_bad_layout(self, tmp_path: Path, grey: np.ndarray, kwargs: dict) -> None:
        with pytest.raises(DataError):
            plot_image_grid(grey, tmp_path / "g.png", **kwargs)


# ------------------------------------------------------------------------------------------- #
# thumbnails and t-SNE
# ------------------------------------------------------------------------------------------- #
def greedy_reference(xy: np.ndarray, min_dist: float) -> list[int]:
    """Plain-Python version of the chapter's greedy placement."""
    chosen: list[int] = []
    for i, p in enumerate(xy):
        if all(math.dist(p, xy[j]) > min_dist for j in chosen):
            chosen.append(i)
    return chosen


class TestChooseThumbnailPoints:
    @pytest.mark.parametrize("min_dist", [0.05, plots.THUMB_MIN_DIST, 0.3])
    def test_separated_and_greedy_maximal(self, rng: np.random.Generator,
                                          min_dist: float) -> None:
        xy = rng.random((800, 2))
        chosen = plots._choose_thumbnail_points(xy, min_dist)
        assert chosen[0] == 0 and np.all(np.diff(chosen) > 0)
        for a, b in itertools.combinations(chosen, 2):
            assert math.dist(xy[a], xy[b]) > min_dist
        # maximal: every rejected point is within min_dist of a point chosen before it
        chosen_set = set(chosen.tolist())
        for i in range(len(xy)):
            if i not in chosen_set:
                earlier = chosen[chosen < i]
                assert np.min(np.linalg.norm(xy[earlier] - xy[i], axis=1)) <= min_dist
        assert chosen.tolist() == greedy_reference(xy, min_dist)

    def test_chapter_threshold_is_squared_002(self) -> None:
        assert plots.THUMB_MIN_DIST ** 2 == pytest.approx(0.02)

    def test_edge_cases(self) -> None:
        assert plots._choose_thumbnail_points(np.empty((0, 2)), 0.1).tolist() == []
        dupes = np.zeros((5, 2))
        assert plots._choose_thumbnail_points(dupes, 0.1).tolist() == [0]
        assert plots._choose_thumbnail_points(dupes, 0.0).tolist() == [0]
        line = np.array([[0.0, 0], [0.1, 0], [0.2, 0], [0.35, 0]])
        assert plots._choose_thumbnail_points(line, 0.15).tolist() == [0, 2]


@pytest.fixture
def clusters(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three clusters of 8-D codes, their labels and matching 28x28 images."""
    labels = np.repeat(np.arange(3), 25)
    codes = rng.normal(size=(75, 8)) + labels[:, None] * 5.0
    images = rng.random((75, 28, 28)) * 0.2
    for k in range(3):
        images[labels == k, 4 + 6 * k:10 + 6 * k, :] = 1.0
    return codes, labels, images


class TestPlotTsne:
    def test_labels_and_thumbnails(self, tmp_path: Path, clusters, captured_figures) -> None:
        codes, labels, images = clusters
        out = plot_tsne(codes, tmp_path / "tsne.png", labels=labels, images=images,
                        class_names=["zero", "one", "two"])
        assert_png(out, min_width=500, min_height=400)
        (fig,) = captured_figures
        ax = fig.axes[0]
        boxes = [a for a in ax.artists if isinstance(a, AnnotationBbox)]
        assert len(boxes) >= 3
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["zero", "one", "two"]
        canvas = FigureCanvasAgg(fig)  # the closed figure lost its canvas; draw it again
        canvas.draw()
        renderer = canvas.get_renderer()
        extents = [b.get_window_extent(renderer) for b in boxes]
        for e1, e2 in itertools.combinations(extents, 2):
            overlap_w = min(e1.x1, e2.x1) - max(e1.x0, e2.x0)
            overlap_h = min(e1.y1, e2.y1) - max(e1.y0, e2.y0)
            assert overlap_w <= 0 or overlap_h <= 0, "thumbnails overlap"

    def test_flat_colour_images_and_subsampling(self, tmp_path: Path, rng, captured_figures,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
        codes = rng.normal(size=(120, 2))

        def no_tsne(*args, **kwargs):
            raise AssertionError("t-SNE must be skipped for 2-D codes")

        monkeypatch.setattr("sklearn.manifold.TSNE", no_tsne)
        images = rng.random((120, 3 * 16 * 16))
        out = plot_tsne(codes, tmp_path / "2d.png", labels=rng.integers(0, 15, 120),
                        images=images, sample_shape=(3, 16, 16), max_points=50, seed=3)
        assert_png(out)
        ax = captured_figures[0].axes[0]
        assert sum(len(c.get_offsets()) for c in ax.collections) == 50

    def test_small_n_clamps_perplexity(self, tmp_path: Path, rng) -> None:
        assert_png(plot_tsne(rng.normal(size=(6, 5)), tmp_path / "six.png", perplexity=30.0))

    def test_continuous_labels_get_colourbar(self, tmp_path: Path, rng,
                                             captured_figures) -> None:
        plot_tsne(rng.normal(size=(40, 2)), tmp_path / "c.png", labels=rng.normal(size=40))
        assert len(captured_figures[0].axes) == 2  # scatter + colour bar

    def test_identical_codes_do_not_crash(self, tmp_path: Path) -> None:
        assert_png(plot_tsne(np.ones((10, 4)), tmp_path / "same.png", labels=np.arange(10) % 2))

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"codes": np.zeros((4, 3))}, "at least 5 points"),
            ({"labels": np.zeros(9)}, "labels"),
            ({"images": np.zeros((9, 28, 28))}, "images"),
            ({"images": np.zeros((10, 3))}, "not image data"),
            ({"labels": np.arange(10), "class_names": ["a", "b"]}, "class_names"),
            ({"perplexity": 0.0}, "perplexity"),
            ({"max_points": 3}, "max_points"),
            ({"codes": np.full((10, 3), np.nan)}, "NaN"),
        ],
    )
    def test_bad_inputs(self, tmp_path: Path, rng, kwargs: dict, match: str) -> None:
        args = {"codes": rng.normal(size=(10, 3))} | kwargs
        codes = args.pop("codes")
        with pytest.raises(DataError, match=match):
            plot_tsne(codes, tmp_path / "bad.png", **args)


# ------------------------------------------------------------------------------------------- #
# plot_history
# ------------------------------------------------------------------------------------------- #
class TestPlotHistory:
    def test_dict_of_lists(self, tmp_path: Path, captured_figures) -> None:
        history = {"train_loss": [0.9, 0.5, 0.3, 0.2], "valid_loss": [1.0, 0.6, 0.4, 0.35]}
        assert_png(plot_history(history, tmp_path / "h.png", title="AE"))
        (fig,) = captured_figures
        assert len(fig.axes) == 1
        assert {line.get_label() for line in fig.axes[0].lines} == {"train_loss", "valid_loss"}

    def test_list_of_records_with_metrics(self, tmp_path: Path, captured_figures) -> None:
        history = [
            {"epoch": e, "train_loss": 1 / e, "valid_loss": 1.2 / e, "train_bce": 0.5 / e,
             "kl": 0.1 * e, "seconds": 12.0, "samples_per_s": 900.0, "lr": 1e-3,
             "note": "text"}
            for e in range(1, 6)
        ]
        assert_png(plot_history(history, tmp_path / "h.png"))
        (fig,) = captured_figures
        assert len(fig.axes) == 2
        loss_labels = {line.get_label() for line in fig.axes[0].lines}
        other_labels = {line.get_label() for line in fig.axes[1].lines}
        assert loss_labels == {"train_loss", "valid_loss"}
        assert other_labels == {"train_bce", "kl"}
        np.testing.assert_array_equal(fig.axes[0].lines[0].get_xdata(), [1, 2, 3, 4, 5])

    def test_single_epoch_draws_markers(self, tmp_path: Path, captured_figures) -> None:
        assert_png(plot_history([{"epoch": 1, "train_loss": 0.3, "valid_loss": 0.31}],
                                tmp_path / "one.png"))
        for line in captured_figures[0].axes[0].lines:
            assert line.get_marker() == "o"

    def test_missing_keys_and_nan(self, tmp_path: Path) -> None:
        history = [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": float("nan"),
                                                     "valid_loss": 0.4},
                   {"epoch": 3, "train_loss": 0.3, "valid_loss": 0.35}]
        assert_png(plot_history(history, tmp_path / "gaps.png"))

    @pytest.mark.parametrize(
        "history",
        [{}, [], [{"epoch": 1, "seconds": 3.0}], [1, 2, 3], "train_loss", {"train_loss": "x"}],
    )
    def test_bad_history(self, tmp_path: Path, history) -> None:
        with pytest.raises(DataError):
            plot_history(history, tmp_path / "bad.png")


# ------------------------------------------------------------------------------------------- #
# unwritable destinations
# ------------------------------------------------------------------------------------------- #
def _calls(tmp_dest: Path, grey: np.ndarray, rng: np.random.Generator) -> list:
    return [
        lambda: plot_reconstructions(grey, grey, tmp_dest),
        lambda: plot_image_grid(grey, tmp_dest),
        lambda: plot_tsne(rng.normal(size=(10, 2)), tmp_dest),
        lambda: plot_history({"train_loss": [1.0, 0.5]}, tmp_dest),
    ]


@pytest.mark.parametrize("which", range(4))
def test_missing_directory(tmp_path: Path, grey: np.ndarray, rng, which: int) -> None:
    dest = tmp_path / "no" / "such" / "dir" / "fig.png"
    with pytest.raises(DataError, match=r"fig\.png: cannot write: .*does not exist"):
        _calls(dest, grey, rng)[which]()


def test_parent_is_a_file(tmp_path: Path, grey: np.ndarray) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="cannot write"):
        plot_image_grid(grey, tmp_path / "file" / "fig.png")


def test_destination_is_a_directory(tmp_path: Path, grey: np.ndarray) -> None:
    (tmp_path / "fig.png").mkdir()
    with pytest.raises(DataError, match="cannot write"):
        plot_image_grid(grey, tmp_path / "fig.png")


def test_os_error_while_writing_is_wrapped(tmp_path: Path, grey: np.ndarray,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    dest = tmp_path / "fig.png"
    with pytest.raises(DataError, match=r"fig\.png: cannot write: Permission denied"):
        plot_image_grid(grey, dest)
    assert not list(tmp_path.iterdir()), "temporary file not cleaned up"


def test_saved_file_permissions_follow_umask(tmp_path: Path, grey: np.ndarray) -> None:
    old = os.umask(0o022)
    try:
        out = plot_image_grid(grey, tmp_path / "perm.png")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644


def test_tsne_map_is_reused_for_the_same_codes(tmp_path, monkeypatch):
    """demo draws tsne.png and then its report maps the same codes: t-SNE runs once."""
    import latentforge.report.plots as P
    calls = []
    real = P._tsne
    monkeypatch.setattr(tsne_map, "_tsne", lambda *a: calls.append(1) or real(*a))
    codes = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    P.plot_tsne(codes, tmp_path / "a.png", seed=3)
    P.plot_tsne(codes.copy(), tmp_path / "b.png", seed=3)
    assert len(calls) == 1 and (tmp_path / "a.png").exists() and (tmp_path / "b.png").exists()
    P.plot_tsne(codes, tmp_path / "c.png", seed=4)                 # another seed: a new map
    P.plot_tsne(codes + 1e-3, tmp_path / "d.png", seed=4)          # other codes: a new map
    assert len(calls) == 3


# ------------------------------------------------------------------------------------------- #
# figures for notebooks: returned, saved only when asked
# ------------------------------------------------------------------------------------------- #
def test_every_plot_returns_a_figure_and_saves_only_with_a_path(tmp_path, grey, rng, monkeypatch):
    monkeypatch.chdir(tmp_path)
    figs = [plots.plot_reconstructions(grey, grey * 0.5),
            plots.plot_image_grid(grey),
            plots.plot_tsne(rng.normal(size=(20, 2))),
            plots.plot_history({"train_loss": [1.0, 0.5]})]
    assert all(isinstance(f, Figure) for f in figs)
    assert not list(tmp_path.iterdir())                    # nothing written without a path
    assert all(f.axes for f in figs)                        # something was drawn
    figs[0].savefig(tmp_path / "later.png")                 # and the figure can still be saved
    assert_png(tmp_path / "later.png")
    import matplotlib.pyplot as plt
    assert not any(f in [plt.figure(n) for n in plt.get_fignums()] for f in figs)   # not held by pyplot


def test_tabular_plots_use_the_column_names(rng):
    x = np.column_stack([rng.normal(size=8) * 1000, rng.normal(size=8) * 0.01, rng.normal(size=8)])
    names = ["area", "smoothness", "texture"]
    fig = plots.plot_reconstructions(x, x * 0.9, feature_names=names)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == names
    assert "standardised" in fig.axes[-1].get_xlabel() or any(
        "standardised" in ax.get_xlabel() for ax in fig.axes)   # columns 1e5 apart: per-feature units
    grid = plots.plot_image_grid(x, feature_names=names)
    assert [t.get_text() for t in grid.axes[0].get_xticklabels()] == names
