"""The run report's page: :func:`build_report` writes ``RUN_DIR/report.html`` (``latentforge report
RUN_DIR``) from the sections of :mod:`latentforge.report.sections`, with its header, the CSS and
the page assembly (:func:`_page`, shared with :mod:`latentforge.report.compare`).
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

from .._version import __version__
from ..errors import CheckpointError, LatentforgeError
from ..models import get_model_class
from ..train import load_run
from ..io import atomic_write_bytes
from .sections import SECTIONS, Section, _Ctx, _e, _read_json, load_heldout

REPORT_HTML = "report.html"


# ------------------------------------------------------------------------------------ report
def build_report(run_dir: str | Path, data: str | None = None, *, out: str | Path | None = None,
                 seed: int = 0, classes=None, exclude_classes=None) -> Path:
    """Write the run's report (default ``RUN_DIR/report.html``) and return its path.

    ``data``: the data for the data-dependent sections (default: the run's own source, held-out
    split); when it cannot be loaded those sections show a note instead.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    out = Path(out) if out is not None else run_dir / REPORT_HTML
    summary = _read_json(run_dir / "run.json") or {}
    history = run.history or _read_json(run_dir / "history.json") or []
    ctx = _Ctx(run=run, summary=summary, history=history, seed=seed)
    try:
        ctx.data = load_heldout(run, data, classes, exclude_classes)
        from ..train.run import same_source
        ctx.data_is_heldout = data is None or same_source(data, run.data_info.get("source"))
    except (LatentforgeError, OSError) as e:
        ctx.data_note = f"data not available: {e}"
    sections = []
    for make in SECTIONS:
        try:
            sec = make(ctx)
        except LatentforgeError as e:        # one figure that cannot be drawn does not sink the page
            sec = Section(make.__name__.strip("_").removesuffix("_section"), make.__name__.strip("_")
                          .removesuffix("_section").replace("_", " ").capitalize(), note=f"not drawn: {e}")
        if sec is not None:
            sections.append(sec)
    left_out = [f"{sec.title.split(':')[0]} ({sec.note})" if sec.note != ctx.data_note else sec.title.split(":")[0]
                for sec in sections if not sec.body and sec.note]
    banner = ctx.data_note
    if left_out:                 # say which sections are missing and why, at the top
        banner = "left out of this report: " + "; ".join(left_out) + (f" — {banner}" if banner else "")
    page = _page(title=f"{run.name} — latentforge report", header=_header(ctx), sections=sections,
                 banner=banner)
    try:
        atomic_write_bytes(out, page.encode("utf-8"))
    except OSError as e:
        raise CheckpointError(f"{out}: cannot write: {e.strerror or e}") from None
    return out



def _header(ctx: _Ctx) -> str:
    run, info = ctx.run, ctx.run.data_info
    doc = (get_model_class(run.name).__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    shape = "×".join(str(d) for d in info.get("sample_shape") or [])
    data = f"{info.get('source', '?')} — {info.get('n_train', '?'):,} training" if isinstance(
        info.get("n_train"), int) else str(info.get("source", "?"))
    if info.get("n_valid"):
        data += f" + {info['n_valid']:,} held-out"
    if shape:
        data += f" samples of {shape}"
    date = ctx.summary.get("updated")
    if date is None:
        date = _dt.datetime.fromtimestamp((run.run_dir / "checkpoint.safetensors").stat().st_mtime).isoformat(
            timespec="seconds")
    meta = [("data", data), ("trained", str(date).replace("T", " ")),
            ("report", _dt.datetime.now().strftime("%Y-%m-%d %H:%M")), ("latentforge", __version__)]
    folder = f' <span class="run">{_e(run.run_dir.name)}</span>' if run.run_dir.name != run.name else ""
    return (f'<h1>{_e(run.name)}{folder}</h1>'
            f'<p class="doc">{_e(doc)}</p><dl class="meta">'
            + "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in meta) + "</dl>")


# ------------------------------------------------------------------------------------ page
CSS = """
:root { --fg:#1f2430; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7f9; --card:#fff; --accent:#2f6fde; --hl:#fff7d6; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color:var(--fg); background:var(--bg); }
header { background:linear-gradient(135deg,#1e2a4a,#2f6fde); color:#fff; padding:28px 0 22px; }
.wrap { max-width:1120px; margin:0 auto; padding:0 24px; }
h1 { margin:0 0 6px; font-size:28px; font-weight:650; letter-spacing:-0.01em; }
h1 .run { font-size:15px; font-weight:400; opacity:.75; margin-left:10px; }
header .doc { margin:0 0 14px; opacity:.9; max-width:900px; }
dl.meta { display:flex; flex-wrap:wrap; gap:8px 28px; margin:0; }
dl.meta div { display:flex; gap:8px; } dl.meta dt { opacity:.7; } dl.meta dd { margin:0; font-weight:500; }
nav { position:sticky; top:0; z-index:5; background:rgba(255,255,255,.95); border-bottom:1px solid var(--line);
      backdrop-filter:blur(4px); }
nav .wrap { display:flex; flex-wrap:wrap; gap:4px 18px; padding-top:10px; padding-bottom:10px; }
nav a { color:var(--fg); text-decoration:none; font-size:14px; } nav a:hover { color:var(--accent); }
main { padding:20px 0 40px; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:18px 22px;
          margin:0 0 18px; box-shadow:0 1px 2px rgba(0,0,0,.03); }
h2 { margin:0 0 12px; font-size:19px; font-weight:620; }
.note { color:var(--muted); font-size:13.5px; margin:10px 0 0; padding:2px 0 2px 10px;
        border-left:3px solid #c7d2e4; }
.banner { background:#fff4e5; border:1px solid #f5c98b; color:#7a4a05; border-radius:8px; padding:10px 14px;
          margin:0 0 18px; }
figure { margin:0; text-align:center; }
figure img { max-width:min(100%, 760px); height:auto; border-radius:4px; }
figure.wide img { width:100%; max-width:900px; }
figcaption { color:var(--muted); font-size:13px; margin-top:6px; }
.gallery { display:grid; grid-template-columns:repeat(auto-fill, minmax(300px, 1fr)); gap:14px; }
.gallery.wide-items { grid-template-columns:repeat(auto-fill, minmax(440px, 1fr)); }
.gallery img { image-rendering:pixelated; }
table { border-collapse:collapse; font-size:14px; }
th, td { text-align:left; padding:5px 12px 5px 0; border-bottom:1px solid var(--line); vertical-align:top; }
td.num { font-variant-numeric:tabular-nums; text-align:right; }
table.metrics { min-width:60%; } table.metrics th { font-weight:500; font-family:ui-monospace, Menlo, monospace;
  font-size:13px; }
table.metrics thead th, table.compare thead th { font-family:inherit; color:var(--muted); font-weight:600;
  font-size:12.5px; text-transform:uppercase; letter-spacing:.03em; }
.cols { display:grid; grid-template-columns:repeat(auto-fit, minmax(330px, 1fr)); gap:0 28px; }
table.config { width:100%; } table.config th { font-family:ui-monospace, Menlo, monospace; font-weight:500;
  font-size:13px; width:220px; }
table.config td { font-family:ui-monospace, Menlo, monospace; font-size:13px; }
tr.changed td, tr.changed th { background:var(--hl); }
.default { color:var(--muted); font-family:inherit; font-size:12px; }
table.kv.compact { margin-top:14px; } table.kv.compact th { color:var(--muted); font-weight:500; width:220px; }
.muted { color:var(--muted); }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(160px, 1fr)); gap:12px; }
.card { border:1px solid var(--line); border-radius:8px; padding:10px 14px; background:#fbfcfe; }
.card .k { color:var(--muted); font-size:12.5px; text-transform:uppercase; letter-spacing:.03em; }
.card .v { font-size:18px; font-weight:600; margin-top:2px; word-break:break-word; }
.scroll { overflow-x:auto; }
table.compare td.best { font-weight:700; color:#0b6b2e; }
table.compare th, table.compare td { white-space:nowrap; padding-right:22px; }
table.compare tbody th { font-family:ui-monospace, Menlo, monospace; font-weight:500; font-size:13px; }
table.compare thead th { text-transform:none; font-size:14px; color:var(--fg); text-align:right; }
table.compare td:not(.num) { text-align:right; }
footer { color:var(--muted); font-size:12.5px; text-align:center; padding:0 0 30px; }
"""


def _page(title: str, header: str, sections: list[Section], banner: str | None = None) -> str:
    nav = "".join(f'<a href="#{_e(s.key)}">{_e(s.title.split(":")[0])}</a>' for s in sections)
    body = "".join(
        f'<section id="{_e(s.key)}"><h2>{_e(s.title)}</h2>{s.body}'
        + (f'<p class="note">{_e(s.note)}</p>' if s.note else "") + "</section>" for s in sections)
    ban = f'<div class="banner">{_e(banner)}</div>' if banner else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            f'<header><div class="wrap">{header}</div></header>'
            f'<nav><div class="wrap">{nav}</div></nav>'
            f'<main><div class="wrap">{ban}{body}</div></main>'
            f'<footer>written by latentforge {_e(__version__)} — a single self-contained file</footer>'
            "</body></html>\n")
