"""The run comparison (``latentforge compare``): :func:`build_compare` puts several runs side by
side, one metrics table and every run's loss curves on one plot, in a self-contained HTML page.
"""
from __future__ import annotations

import datetime as _dt
import math
import statistics
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import CheckpointError, ConfigError
from ..io import atomic_write_bytes
from .metrics_table import flatten
from .page import REPORT_HTML, _page
from .plots import plot_history
from .sections import (METRICS_JSON, Section, _dedupe_losses, _e, _figure, _fmt, _read_json, _short,
                       render_png)

# ------------------------------------------------------------------------------------ compare
LOWER_BETTER = ("loss", "bce", "mse", "nll", "fid", "kid", "fd")
HIGHER_BETTER = ("accuracy", "psnr", "ssim", "precision", "recall", "density", "coverage", "is", "score")


def build_compare(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Write a page comparing runs: one metrics table and every run's loss curves on one plot."""
    if len(run_dirs) < 2:
        raise ConfigError(f"compare needs at least 2 run folders, got {len(run_dirs)}")
    runs = [_run_summary(Path(d)) for d in run_dirs]
    labels = _unique_labels([r["dir"] for r in runs])
    merged: list[dict[str, Any]] = []
    for label, r in zip(labels, runs):
        hist = _dedupe_losses(r["history"]) if r["history"] else []
        for rec in hist:
            merged.append({"epoch": rec.get("epoch"),
                           **{f"{k} [{label}]": v for k, v in rec.items() if k.endswith("loss")}})
    note = ("bold: the best value of a row (lower for losses, errors and distances; higher for accuracy, "
            "PSNR, precision/recall, coverage); losses are ranked only among runs whose loss (row `loss`) is "
            "the same quantity")
    if len({r["row"]["data"] for r in runs}) > 1:
        note += "; careful: the runs were trained on different data"
    sections = [Section("table", "Runs side by side", _compare_table(runs, labels), note)]
    if merged:
        png = render_png(lambda p: plot_history(merged, p, title=f"{len(runs)} runs: losses per epoch"))
        sections.append(Section("curves", "Loss curves", _figure(
            png, "one colour per run and loss; training solid, validation dashed", cls="wide")))
    out = Path(out)
    reports = []
    for label, r in zip(labels, runs):
        rep = Path(r["dir"]) / REPORT_HTML
        if rep.exists():
            reports.append(f'<li><a href="{_e(_relative(rep, out.parent))}">{_e(label)}</a></li>')
    if reports:
        sections.append(Section("reports", "Run reports", f"<ul>{''.join(reports)}</ul>"))
    header = (f"<h1>Comparing {len(runs)} runs</h1><p class=doc>"
              + ", ".join(f"{_e(lab)} ({_e(r['model'])})" for lab, r in zip(labels, runs)) + "</p>"
              f'<dl class="meta"><div><dt>report</dt><dd>{_dt.datetime.now():%Y-%m-%d %H:%M}</dd></div>'
              f"<div><dt>latentforge</dt><dd>{_e(__version__)}</dd></div></dl>")
    page = _page(title=f"latentforge: comparing {len(runs)} runs", header=header, sections=sections)
    try:
        atomic_write_bytes(out, page.encode("utf-8"))
    except OSError as e:
        raise CheckpointError(f"{out}: cannot write: {e.strerror or e}") from None
    return out


def _relative(path: Path, start: Path) -> str:
    import os
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:          # another drive (Windows)
        return path.resolve().as_uri()


def _unique_labels(dirs: list[Path]) -> list[str]:
    names = [d.name or str(d) for d in dirs]
    if len(set(names)) == len(names):
        return names
    return [str(d) for d in dirs]


def _run_summary(run_dir: Path) -> dict[str, Any]:
    """What compare needs of a run, from its JSON files (no model is loaded)."""
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    summary = _read_json(run_dir / "run.json")
    if not isinstance(summary, dict):
        raise CheckpointError(f"{run_dir}: not a finished run folder (no run.json)")
    history = _read_json(run_dir / "history.json") or []
    metrics = _read_json(run_dir / METRICS_JSON)
    per_s = [r["samples_per_s"] for r in history if isinstance(r.get("samples_per_s"), (int, float))]
    row: dict[str, Any] = {
        "model": summary.get("model", "?"), "data": _short((summary.get("data") or {}).get("source")),
        "epochs": summary.get("epochs_done", len(history)), "params": summary.get("params"),
        "train time (s)": summary.get("train_seconds", summary.get("seconds")),
        "samples/s": statistics.median(per_s) if per_s else None,
        "device": (summary.get("hardware") or {}).get("gpu") or (summary.get("hardware") or {}).get("device"),
    }
    last = _dedupe_losses(history)[-1] if history else {}
    from .metrics_table import loss_kind
    row["loss"] = loss_kind(summary, history)          # what train_loss measures: ranked only among equals
    row.update({k: v for k, v in last.items() if k.startswith(("train_", "valid_")) and isinstance(v, (int, float))})
    if isinstance(metrics, dict):
        from .metrics_table import is_bookkeeping
        row.update({k: v for k, v in flatten(metrics).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and not is_bookkeeping(k)})
    return {"dir": run_dir, "model": row["model"], "row": row, "history": history}


def _direction(col: str) -> int:
    """-1 if lower is better, +1 if higher is better, 0 if neither (per the column's name)."""
    c = col.lower()
    tokens = set(c.replace(".", "_").replace(" ", "_").split("_"))
    if c.startswith(("train_", "valid_")) and ("d_real" in c or "d_fake" in c):
        return 0
    if tokens & set(LOWER_BETTER):
        return -1
    if tokens & set(HIGHER_BETTER):
        return 1
    return 0


def _compare_table(runs: list[dict[str, Any]], labels: list[str]) -> str:
    cols: list[str] = []
    for r in runs:
        cols += [c for c in r["row"] if c not in cols]
    best: dict[tuple[str, str], float] = {}       # (column, loss kind) -> best value among like runs
    for c in cols:
        d = _direction(c)
        like = c.endswith("loss")                   # losses: only between runs whose loss is the same quantity
        groups: dict[str, list[float]] = {}
        for r in runs:
            v = r["row"].get(c)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                groups.setdefault(r["row"].get("loss", "") if like else "", []).append(v)
        for kind, vals in groups.items():
            if d and len(vals) > 1:
                best[(c, kind)] = min(vals) if d < 0 else max(vals)
    head = "<tr><th></th>" + "".join(f"<th>{_e(label)}</th>" for label in labels) + "</tr>"
    body = ""
    for c in cols:                         # one row per field, one column per run
        cells = []
        for r in runs:
            v = r["row"].get(c)
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            kind = r["row"].get("loss", "") if c.endswith("loss") else ""
            cls = ("num" if number else "") + (" best" if (c, kind) in best and v == best[(c, kind)] else "")
            cells.append(f'<td class="{cls.strip()}">{_e(_fmt(v))}</td>')
        body += f"<tr><th>{_e(c)}</th>{''.join(cells)}</tr>"
    return f'<div class="scroll"><table class="compare"><thead>{head}</thead><tbody>{body}</tbody></table></div>'
