"""Training history: :func:`plot_history` draws the loss curves (and the other per-epoch metrics) of a
run, one line style per split.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from latentforge.errors import DataError
from latentforge.report._figure import DPI, PathLike, _check_destination, _figure, _finish

_MARKER_MAX_POINTS = 20
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
