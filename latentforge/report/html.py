"""The run report and the run comparison: self-contained HTML pages.

:func:`build_report` writes ``RUN_DIR/report.html`` (``latentforge report RUN_DIR``): the config,
the loss curves, reconstructions, samples and their evolution over epochs, interpolations, the
t-SNE map of the codings, a metrics table and the hardware, time and throughput of the run.
:func:`build_compare` puts several runs side by side (``latentforge compare``): one metrics table
and every run's loss curves on one plot.

Figures are drawn by :mod:`latentforge.report.plots` and embedded as base64 PNG data URIs, so a
page is a single file that opens anywhere, offline. Each section applies to the models that have
what it needs (``reconstruct``, ``sample``, ``encode``/``decode``, a GAN's ``latent``...); the
sections that need data are skipped, with a note, when the data cannot be loaded (the report never
downloads anything: a built-in dataset that is not cached counts as unavailable).
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..errors import CheckpointError, ConfigError, LatentforgeError
from ..eval import reconstruction_metrics
from ..eval.continuous import continuous_metrics
from ..models import get_model_class
from ..models.capabilities import Capability, has
from ..models.interpolation import interpolate_codes
from ..train import load_run
from ..io import atomic_write_bytes
from .plots import plot_history, plot_image_grid, plot_reconstructions, plot_tsne
from .tensorboard import TB_DIR, read_images

REPORT_HTML = "report.html"
METRICS_JSON = "metrics.json"      # what `latentforge evaluate RUN --json RUN/metrics.json` writes
RECON_N = 10                       # reconstructions shown
SAMPLES_N = 64                     # samples shown (8 x 8; conditional models: 8 per class)
TABULAR_RECON_N = 3                # tabular reconstructions: one bar chart per sample
EVOLUTION_MAX = 8                  # per-epoch sample grids shown (evenly spaced, first and last kept)
INTERP_PAIRS, INTERP_STEPS = 5, 8
TSNE_POINTS = 1000                 # codings mapped with t-SNE
METRIC_SAMPLES = 2000              # held-out samples for the metrics computed here
IW_NLL_SAMPLES, IW_NLL_K = 500, 50


# ------------------------------------------------------------------------------------ figures
def render_png(draw: Callable[[Path], Any]) -> bytes:
    """PNG bytes of a figure: ``draw(path)`` is any :mod:`~latentforge.report.plots` function."""
    with tempfile.TemporaryDirectory(prefix="latentforge-report-") as tmp:
        path = Path(tmp) / "figure.png"
        draw(path)
        return path.read_bytes()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(png: bytes, caption: str, alt: str | None = None, cls: str = "") -> str:
    return (f'<figure class="{cls}"><img src="{data_uri(png)}" alt="{_e(alt or caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _fmt(v: Any) -> str:
    """A value as shown in tables (``metrics_table.fmt_number``: 21,140; 0.1234; never -0)."""
    from .metrics_table import fmt_number
    return fmt_number(v)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(s, 60)
    return f"{int(m)} min {s:.0f} s" if m < 60 else f"{int(m // 60)} h {int(m % 60)} min"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from None


# ------------------------------------------------------------------------------------ context
@dataclass
class Section:
    key: str
    title: str
    body: str = ""
    note: str | None = None          # shown instead of (or under) the body: why something is missing


@dataclass
class _Ctx:
    run: Any                         # latentforge.train.Run
    summary: dict[str, Any]          # run.json
    history: list[dict[str, Any]]
    data: Any = None                 # the held-out Dataset, or None
    data_note: str | None = None
    data_is_heldout: bool = True     # the data is the run's own held-out split
    seed: int = 0

    @property
    def model(self):
        return self.run.model

    @property
    def sample_shape(self):
        s = self.run.data_info.get("sample_shape")
        return tuple(s) if s else None

    def has(self, *caps: Capability) -> bool:
        """Whether the model declares every one of ``caps``."""
        return has(self.model, *caps)

    @property
    def conditional(self) -> bool:
        return self.has(Capability.CONDITIONAL)

    @property
    def is_classifier(self) -> bool:
        return self.has(Capability.CLASSIFIES)

    def labels_for(self, ds) -> np.ndarray | None:
        """The data's labels where the model needs them (conditional models), else None."""
        if not self.conditional:
            return None
        if ds.y is None:
            raise ConfigError(f"{self.run.name} is conditional and the data has no labels")
        return ds.y

    def class_labels(self, n_per_class: int) -> torch.Tensor:
        k = int(self.model.config.n_classes)
        return torch.arange(k).repeat_interleave(n_per_class).to(self.run.device)


def load_heldout(run, source: str | None = None, classes=None, exclude_classes=None):
    """The run's held-out split when ``source`` is the run's own data (default), else all of
    ``source`` (``classes`` / ``exclude_classes``: a class filter). Never downloads: an uncached
    built-in dataset raises DataError."""
    return run.data_splits(source, download=False, classes=classes, exclude_classes=exclude_classes)[2]


# ------------------------------------------------------------------------------------ sections
def _run_section(ctx: _Ctx) -> Section:
    """Hardware, time and throughput of the run."""
    s, h = ctx.summary, ctx.summary.get("hardware") or {}
    hist = ctx.history
    per_s = [r["samples_per_s"] for r in hist if isinstance(r.get("samples_per_s"), (int, float))]
    secs = [r["seconds"] for r in hist if isinstance(r.get("seconds"), (int, float))]
    epochs_done = s.get("epochs_done", ctx.run.meta.get("trainer", {}).get("epoch", len(hist)))
    planned = ctx.run.config.epochs
    device = h.get("gpu") or h.get("device", "—")
    cards = [
        ("Parameters", _fmt(sum(p.numel() for p in ctx.model.parameters()))),
        ("Epochs", f"{epochs_done}" + (f" / {planned}" if planned and planned != epochs_done else "")),
        ("Training time", _duration(s.get("train_seconds", sum(secs) if secs else None))),
        ("Throughput", f"{statistics.median(per_s):,.0f} samples/s" if per_s else "—"),
        ("Time per epoch", _duration(statistics.median(secs)) if secs else "—"),
        ("Device", device),
    ]
    body = '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div></div>' for k, v in cards
    ) + "</div>"
    rows = {"device": h.get("device"), "gpu": h.get("gpu"), "cpu": h.get("cpu"), "cpu cores": h.get("cpu_count"),
            "torch threads": h.get("threads"), "batch split (threads per step)": h.get("batch_split"),
            "platform": h.get("platform"), "python": h.get("python"),
            "torch": h.get("torch"), "latentforge": s.get("version", ctx.run.meta.get("version")),
            "wall time (last invocation)": _duration(s["wall_seconds"]) if "wall_seconds" in s else None,
            "run folder": str(ctx.run.run_dir.resolve())}
    body += _kv_table({k: v for k, v in rows.items() if v is not None}, cls="kv compact")
    note = None if h else "run.json has no hardware record (the run was interrupted or is still training)"
    return Section("run", "Run: hardware, time, throughput", body, note)


def _config_section(ctx: _Ctx) -> Section:
    cfg = ctx.run.meta.get("config") or {}
    defaults: dict[str, Any] = {}
    for f in fields(get_model_class(ctx.run.name).config_class):
        if f.default is not MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
            defaults[f.name] = asdict(value) if is_dataclass(value) else value   # the engine section
    rows = []
    for k, v in cfg.items():
        changed = k in defaults and k != "input_shape" and _norm(defaults[k]) != _norm(v)
        title = f' title="default: {_e(_fmt(defaults[k]))}"' if changed else ""
        rows.append(f'<tr class="{"changed" if changed else ""}"><th>{_e(k)}</th><td{title}>{_e(_fmt(v))}'
                    + (f' <span class="default">(default {_e(_fmt(defaults[k]))})</span>' if changed else "")
                    + "</td></tr>")
    half = (len(rows) + 1) // 2
    body = (f'<div class="cols"><table class="kv config">{"".join(rows[:half])}</table>'
            f'<table class="kv config">{"".join(rows[half:])}</table></div>')
    greedy = ctx.run.meta.get("greedy")
    if greedy:
        body += (f'<p class="muted">Greedy layer-wise pretraining: {_e(greedy.get("stages"))} stages, '
                 f"then fine-tuning.</p>")
    return Section("config", "Config", body, "highlighted rows differ from the model's chapter defaults")


def _norm(v: Any) -> Any:
    return json.dumps(v, sort_keys=True, default=str)


def _dedupe_losses(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop ``train_loss``/``valid_loss`` where they repeat another ``*_loss`` series (a GAN's
    ``train_loss`` is its ``train_g_loss``), so no curve is drawn twice."""
    keys = {k for r in history for k in r}
    drop = set()
    for total in ("train_loss", "valid_loss"):
        prefix = total.split("_")[0] + "_"
        for k in keys - {total}:
            if k.startswith(prefix) and k.endswith("_loss") and all(r.get(k) == r.get(total) for r in history):
                drop.add(total)
    return [{k: v for k, v in r.items() if k not in drop} for r in history]


def _curves_section(ctx: _Ctx) -> Section:
    if not ctx.history:
        return Section("curves", "Loss curves", note="the run has no history yet")
    hist = _dedupe_losses(ctx.history)
    title = f"{ctx.run.name} on {_short(ctx.run.data_info.get('source'))}"
    png = render_png(lambda p: plot_history(hist, p, title=title))
    gan = any(k.endswith("_d_loss") for r in hist for k in r)
    caption = ("discriminator (d_loss) and generator (g_loss) losses; d_real / d_fake: D's mean output on real "
               "and generated images" if gan else "training (solid) and validation (dashed) losses per epoch")
    return Section("curves", "Loss curves", _figure(png, caption, cls="wide"))


def _metrics_section(ctx: _Ctx) -> Section:
    """One row per metric with its source; bookkeeping in a table of its own (metrics_table.py)."""
    from .metrics_table import split_metrics
    computed: list[tuple[str, Any, str]] = []
    notes = []
    if ctx.data is not None:
        try:
            computed = _computed_metrics(ctx)
        except LatentforgeError as e:
            notes.append(f"metrics on the data could not be computed: {e}")
    elif ctx.data_note:
        notes.append("no metrics on held-out data: data not available")
    saved = _read_json(ctx.run.run_dir / METRICS_JSON)
    rows, books, extra = split_metrics(ctx.history[-1] if ctx.history else None, computed,
                                       saved if isinstance(saved, dict) else None)
    notes = extra + notes
    if not isinstance(saved, dict):
        notes.append(f"more metrics (FID, KID, precision/recall...): `latentforge evaluate {ctx.run.run_dir} "
                     f"--json {ctx.run.run_dir / METRICS_JSON}`, then report again")
    body = ('<table class="metrics"><thead><tr><th>metric</th><th>value</th><th>source</th></tr></thead><tbody>'
            + "".join(f"<tr><th>{_e(k)}</th><td class=num>{_e(_fmt(v))}</td><td class=muted>{_e(s)}</td></tr>"
                      for k, v, s in rows) + "</tbody></table>")
    if books:
        body += ('<details class="books"><summary>How they were computed (bookkeeping)</summary>'
                 '<table class="metrics"><tbody>'
                 + "".join(f"<tr><th>{_e(k)}</th><td class=num>{_e(_fmt(v))}</td></tr>" for k, v, _ in books)
                 + "</tbody></table></details>")
    return Section("metrics", "Metrics", body, "; ".join(notes) or None)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _computed_metrics(ctx: _Ctx) -> list[tuple[str, Any, str]]:
    """Cheap metrics on (at most METRIC_SAMPLES of) the held-out data."""
    ds, run, model = ctx.data, ctx.run, ctx.model
    n = min(len(ds), METRIC_SAMPLES)
    x, y = ds.x[:n], (ds.y[:n] if ds.y is not None else None)
    src = f"{n} held-out samples" if ctx.data_is_heldout else f"{n} samples of {_short(ds.name)}"
    rows: list[tuple[str, Any, str]] = []
    if ctx.is_classifier:
        if y is not None:
            pred = run.batched(model.predict_proba, x, 4096).reshape(n, -1).argmax(1)
            rows.append(("accuracy", float((pred == y).mean()), src))
        return rows
    if ctx.has(Capability.RECONSTRUCTS):
        model.check_data(x, ds.name)
        cond = ctx.labels_for(ds)
        recon = run.reconstruct(x, y=cond[:n] if cond is not None else None)
        tabular = continuous_metrics(model, x, recon)     # per-feature scaled: standardised units
        rows += [(k, v, src) for k, v in {**reconstruction_metrics(x, recon.reshape(x.shape)), **tabular}.items()
                 if v is not None and k != "psnr_data_range" and not (tabular and k == "psnr")]
    if ctx.has(Capability.LIKELIHOOD):
        m = min(n, IW_NLL_SAMPLES)
        gen = torch.Generator().manual_seed(ctx.seed)
        cond = ctx.labels_for(ds)
        ll = run.batched(lambda xb, **kw: model.log_likelihood(xb, k=IW_NLL_K, generator=gen, **kw), x[:m],
                         max(1, 65536 // IW_NLL_K), y=cond[:m] if cond is not None else None)
        from ..eval.continuous import nll_units
        rows.append(("iw_nll", float(-ll.mean()), f"{m} held-out samples, k={IW_NLL_K}; "
                                                   f"{nll_units(model).split(':')[0]}"))
    return rows


def _reconstructions_section(ctx: _Ctx) -> Section | None:
    if not ctx.has(Capability.RECONSTRUCTS) or ctx.is_classifier:
        return None
    if ctx.data is None:
        return Section("reconstructions", "Reconstructions", note=ctx.data_note)
    ds = ctx.data
    n = RECON_N if ds.is_image else TABULAR_RECON_N          # bar charts: few, large enough to read
    x = ds.x[:n]
    cond = ctx.labels_for(ds)
    recon = ctx.run.reconstruct(x, y=cond[:n] if cond is not None else None)
    png = render_png(lambda p: plot_reconstructions(x, recon, p, n=n, sample_shape=ds.sample_shape,
                                                    title=f"{ctx.run.name}: reconstructions",
                                                    feature_names=ctx.run.data_info.get("feature_names")))
    caption = (f"the first {len(x)} held-out samples (top) and their reconstructions (bottom)" if ds.is_image else
               f"the first {len(x)} held-out samples: original (blue) and reconstructed (orange) values")
    return Section("reconstructions", "Reconstructions", _figure(png, caption, cls="" if ds.is_image else "wide"))


def _samples_section(ctx: _Ctx) -> Section | None:
    if not ctx.has(Capability.SAMPLES):
        return None
    gen = torch.Generator().manual_seed(ctx.seed)
    kwargs: dict[str, Any] = {}
    if ctx.conditional:
        labels = ctx.class_labels(8)
        names = ctx.run.data_info.get("class_names")
        k = int(ctx.model.config.n_classes)
        kwargs = {"ncols": 8, "row_labels": [names[i] if names and i < len(names) else str(i) for i in range(k)]}
    else:
        labels = None
    with torch.no_grad():
        images = ctx.model.sample(len(labels) if labels is not None else SAMPLES_N, labels,
                                  generator=gen).float().cpu().numpy()
    if getattr(ctx.model, "needs_unit_interval", True):     # continuous data keeps its own units
        images = np.clip(images, 0.0, 1.0)
    png = render_png(lambda p: plot_image_grid(images, p, sample_shape=ctx.sample_shape,
                                               title=f"{ctx.run.name}: {len(images)} samples",
                                               feature_names=ctx.run.data_info.get("feature_names"), **kwargs))
    what = "one row per class" if ctx.conditional else f"seed {ctx.seed}"
    return Section("samples", "Samples", _figure(png, f"{len(images)} new samples from the final model ({what})"))


def _evolution_section(ctx: _Ctx) -> Section | None:
    grids = _saved_grids(ctx.run.run_dir)
    if not grids:
        if not ctx.has(Capability.SAMPLES):
            return None
        return Section("evolution", "Samples over epochs",
                       note="no per-epoch sample grids were saved: generative models save them to "
                            "RUN_DIR/samples/ (config sample_every, 0 = never)")
    shown = _evenly(grids, EVOLUTION_MAX)
    wide = "" if ctx.run.data_info.get("is_image", True) else " wide-items"   # tabular heat maps: 2 a row
    body = (f'<div class="gallery{wide}">' + "".join(_figure(png, f"epoch {epoch}") for epoch, png in shown)
            + "</div>")
    note = f"{len(shown)} of the {len(grids)} saved grids" if len(shown) < len(grids) else None
    return Section("evolution", "Samples over epochs", body, note)


def _saved_grids(run_dir: Path) -> list[tuple[int, bytes]]:
    """Per-epoch sample grids: RUN_DIR/samples/epoch_NNN.png, else the TensorBoard ``samples`` images."""
    grids = []
    for p in sorted((run_dir / "samples").glob("epoch_*.png")):
        try:
            grids.append((int(p.stem.split("_")[-1]), p.read_bytes()))
        except ValueError:
            continue
    if grids:
        return sorted(grids)
    return sorted(read_images(run_dir / TB_DIR, "samples"), key=lambda g: g[0])


def _evenly(items: list, k: int) -> list:
    if len(items) <= k:
        return items
    idx = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in idx]


def _interpolations_section(ctx: _Ctx) -> Section | None:
    model = ctx.model
    # Gaussian codes (VAEs) and GAN latents are interpolated along great circles
    gaussian = ctx.has(Capability.GAUSSIAN_LATENT) or ctx.has(Capability.ADVERSARIAL)
    method = "slerp" if gaussian else "linear"
    rng = np.random.default_rng(ctx.seed)
    soft = None
    if ctx.has(Capability.ENCODES, Capability.DECODES) and not ctx.is_classifier:           # autoencoders: between real images
        if ctx.data is None:
            return Section("interpolations", "Interpolations", note=ctx.data_note)
        ds = ctx.data
        if len(ds) < 2:
            return Section("interpolations", "Interpolations", note="fewer than 2 held-out samples")
        idx = np.stack([rng.choice(len(ds), 2, replace=False) for _ in range(INTERP_PAIRS)]).ravel()
        cond = ctx.labels_for(ds)
        codes = ctx.run.batched(model.encode, ds.x[idx], 4096, y=cond[idx] if cond is not None else None)
        if cond is not None:                   # the class moves from one end point's to the other's
            eye = np.eye(int(model.config.n_classes))
            w = np.linspace(0.0, 1.0, INTERP_STEPS)[:, None]
            soft = np.concatenate([(1 - w) * eye[cond[idx[2 * i]]] + w * eye[cond[idx[2 * i + 1]]]
                                   for i in range(INTERP_PAIRS)])
        name = (lambda j: str(ds.y[j])) if ds.y is not None else (lambda j: f"#{j}")
        row_labels = [f"{name(idx[2 * i])}→{name(idx[2 * i + 1])}" for i in range(INTERP_PAIRS)]
        caption = f"{method} interpolation between the codings of pairs of held-out samples"
    elif ctx.has(Capability.ADVERSARIAL, Capability.DECODES):                                    # GANs: between random latents
        gen = torch.Generator().manual_seed(ctx.seed)
        codes = model.latent(2 * INTERP_PAIRS, gen, device="cpu").numpy()
        row_labels = [f"pair {i + 1}" for i in range(INTERP_PAIRS)]
        caption = f"{method} interpolation between pairs of random latent vectors"
    else:
        return None
    code_shape = codes.shape[1:]
    flat = codes.reshape(len(codes), -1)
    path = np.concatenate([interpolate_codes(flat[2 * i], flat[2 * i + 1], INTERP_STEPS, method)
                           for i in range(INTERP_PAIRS)])
    z = torch.as_tensor(path.reshape((-1, *code_shape)), dtype=torch.float32).to(ctx.run.device)
    model.eval()
    with torch.no_grad():
        if soft is not None:
            images = model.decode(z, y=torch.as_tensor(soft, dtype=torch.float32).to(ctx.run.device))
        elif ctx.conditional:                 # a conditional GAN: one class per row
            k = int(model.config.n_classes)
            labels = (torch.arange(INTERP_PAIRS) % k).repeat_interleave(INTERP_STEPS).to(ctx.run.device)
            images = model.decode(z, labels)
            row_labels = [f"class {i % k}" for i in range(INTERP_PAIRS)]
        else:
            images = model.decode(z)
    images = images.float().cpu().numpy()
    if getattr(model, "needs_unit_interval", True):          # continuous data keeps its own units
        images = np.clip(images, 0.0, 1.0)
    png = render_png(lambda p: plot_image_grid(images, p, nrows=INTERP_PAIRS, ncols=INTERP_STEPS,
                                               sample_shape=ctx.sample_shape, row_labels=row_labels,
                                               title=f"{ctx.run.name}: {method} interpolation",
                                               feature_names=ctx.run.data_info.get("feature_names")))
    return Section("interpolations", "Interpolations", _figure(png, caption))


def _tsne_section(ctx: _Ctx) -> Section | None:
    model = ctx.model
    if ctx.is_classifier and callable(getattr(ctx.model, "features", None)):
        what, fn = "penultimate features", model.features
    elif ctx.has(Capability.ENCODES) and not ctx.has(Capability.ADVERSARIAL):
        what, fn = "codings", model.encode
    else:
        return None
    title = f"t-SNE map of the {what}"
    if ctx.data is None:
        return Section("tsne", title, note=ctx.data_note)
    ds = ctx.data
    if len(ds) < 5:
        return Section("tsne", title, note=f"only {len(ds)} samples (t-SNE needs at least 5)")
    n = min(len(ds), TSNE_POINTS)
    x = ds.x[:n]
    cond = None if ctx.is_classifier else ctx.labels_for(ds)
    codes = ctx.run.batched(fn, x, 4096, y=cond[:n] if cond is not None else None)
    y = ds.y[:n] if ds.y is not None else None
    png = render_png(lambda p: plot_tsne(codes, p, labels=y, images=x if ds.is_image else None,
                                         sample_shape=ds.sample_shape, class_names=ds.class_names,
                                         seed=ctx.seed, max_points=TSNE_POINTS))
    thumbs = " with thumbnails of the digits" if ds.is_image else ""
    return Section("tsne", title, _figure(png, f"{n} held-out samples, coloured by label{thumbs}", cls="wide"))


def _anomaly_section(ctx: _Ctx) -> Section | None:
    """Thresholds, AUROC and ROC curve recorded by `latentforge score` (RUN_DIR/anomaly.json)."""
    from .anomaly import anomaly_section_html
    body = anomaly_section_html(ctx.run.run_dir, lambda png, caption: _figure(png, caption))
    return Section("anomaly", "Anomaly detection", body) if body is not None else None


#: the report's sections, in page order; each returns None where it does not apply to the model
SECTIONS: list[Callable[[_Ctx], Section | None]] = [
    _run_section, _metrics_section, _curves_section, _reconstructions_section, _samples_section,
    _evolution_section, _interpolations_section, _tsne_section, _anomaly_section, _config_section,
]


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


def _short(source: Any) -> str:
    s = str(source or "?")
    return Path(s).name if "/" in s else s


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


def _kv_table(d: dict[str, Any], cls: str = "kv") -> str:
    return f'<table class="{cls}">' + "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>"
                                            for k, v in d.items()) + "</table>"


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
        row.update({k: v for k, v in _flatten(metrics).items()
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
