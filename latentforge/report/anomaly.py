"""Figures and the report section of anomaly detection: ROC curves, and a run's ``anomaly.json``.

* :func:`plot_roc_curves`: one panel of ROC curves (``latentforge score`` draws a run's own).
* :func:`plot_roc_grid`: one panel per normal class, a curve per detector (``experiment anomaly``).
* :func:`anomaly_section_html`: the report's "Anomaly detection" section body, or ``None`` when the
  run folder holds no ``anomaly.json``.
"""
from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .metrics_table import fmt_number


CURVE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _panel(ax, curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str, legend: bool) -> None:
    ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=0.8, ls="--")
    for i, (label, (fpr, tpr)) in enumerate(curves.items()):
        ax.plot(fpr, tpr, lw=1.4, color=CURVE_COLOURS[i % len(CURVE_COLOURS)], label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    if legend:
        ax.legend(fontsize=7, loc="lower right")


def plot_roc_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], out: str | Path,
                    title: str = "ROC curve") -> Path:
    """One panel: a ROC curve per entry of ``curves`` (label -> (false-, true-positive rates))."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4.2, 4.2))
    ax = fig.add_subplot()
    _panel(ax, curves, title, legend=True)
    ax.set_xlabel("false-positive rate (normal samples flagged)", fontsize=8)
    ax.set_ylabel("true-positive rate (anomalies flagged)", fontsize=8)
    from ._figure import _save_figure          # the figures' one PNG writer (atomic, DataError)
    return _save_figure(fig, Path(out), dpi=100)


def plot_roc_grid(panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]], out: str | Path,
                  title: str = "") -> Path:
    """A grid of panels (panel title -> its curves), e.g. one per normal class, one curve per detector."""
    from matplotlib.figure import Figure
    n = max(1, len(panels))
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.5 * cols, 2.6 * rows + 0.6))
    for i, (name, curves) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        _panel(ax, curves, name, legend=False)
        if i % cols == 0:
            ax.set_ylabel("true-positive rate", fontsize=7)
        if i >= (rows - 1) * cols:
            ax.set_xlabel("false-positive rate", fontsize=7)
    labels = list(next(iter(panels.values()), {}).keys())
    if labels:
        handles = [fig.axes[0].lines[j + 1] for j in range(len(labels))]
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8,
                   bbox_to_anchor=(0.5, -0.02))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    from ._figure import _save_figure          # the figures' one PNG writer (atomic, DataError)
    return _save_figure(fig, Path(out), dpi=100)


def _fmt(v: Any) -> str:
    return html.escape(fmt_number(v))


def anomaly_section_html(run_dir: str | Path, figure_html) -> str | None:
    """The body of the report's anomaly section: per method, the threshold and (when the scored
    data had known anomalies) the AUROC, average precision and ROC figure. ``None`` without
    ``RUN_DIR/anomaly.json``. ``figure_html(png_bytes, caption)`` renders a figure."""
    from ..eval.anomaly import ANOMALY_JSON, ANOMALY_ROC_PNG
    path = Path(run_dir) / ANOMALY_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        methods = data["methods"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"<p>{html.escape(str(path))}: unreadable</p>"
    rows = []
    for method, e in methods.items():
        ev = e.get("evaluation") or {}
        rows.append("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in (
            method, e.get("threshold", "—"), e.get("quantile", "—"), e.get("calibration", "—"),
            ev.get("auroc", "—"), ev.get("average_precision", "—"),
            f"{ev.get('n_anomalies')} / {ev.get('n_normal')}" if ev else "—")) + "</tr>")
    body = ('<table class="metrics"><thead><tr><th>method</th><th>threshold</th><th>quantile</th>'
            '<th>set on</th><th>AUROC</th><th>avg. precision</th><th>anomalies / normal</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")
    png = Path(run_dir) / ANOMALY_ROC_PNG
    if png.is_file():
        body += figure_html(png.read_bytes(), "ROC curve of the last `latentforge score` on data with known "
                                              "anomalies (labels outside the run's classes)")
    return body


__all__ = ["plot_roc_curves", "plot_roc_grid", "anomaly_section_html"]
