"""The run report and the run comparison: self-contained HTML pages.

:func:`build_report` writes ``RUN_DIR/report.html`` (``latentforge report RUN_DIR``): the config,
the loss curves, reconstructions, samples and their evolution over epochs, interpolations, the
t-SNE map of the codings, a metrics table and the hardware, time and throughput of the run.
:func:`build_compare` puts several runs side by side (``latentforge compare``): one metrics table
and every run's loss curves on one plot.

The code lives in three modules, one job each; this module re-exports their public names:
:mod:`latentforge.report.sections` (the run's context and the section builders),
:mod:`latentforge.report.page` (the header, the CSS, the page assembly and :func:`build_report`) and
:mod:`latentforge.report.compare` (:func:`build_compare`).
"""
from __future__ import annotations

from .compare import HIGHER_BETTER, LOWER_BETTER, build_compare
from .page import CSS, REPORT_HTML, build_report
from .sections import (
    EVOLUTION_MAX,
    IW_NLL_K,
    IW_NLL_SAMPLES,
    METRIC_SAMPLES,
    METRICS_JSON,
    RECON_N,
    SAMPLES_N,
    SECTIONS,
    TABULAR_RECON_N,
    TSNE_POINTS,
    Section,
    data_uri,
    load_heldout,
    render_png,
)

__all__ = [
    "build_report", "build_compare", "load_heldout", "render_png", "data_uri", "Section", "SECTIONS",
    "REPORT_HTML", "METRICS_JSON", "CSS", "LOWER_BETTER", "HIGHER_BETTER", "RECON_N", "SAMPLES_N",
    "TABULAR_RECON_N", "EVOLUTION_MAX", "TSNE_POINTS", "METRIC_SAMPLES", "IW_NLL_SAMPLES", "IW_NLL_K",
]
