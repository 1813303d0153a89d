"""The run report's sections and what they share: the context of one run (:class:`_Ctx`),
the section builders (:data:`SECTIONS`, in page order) and the small HTML helpers.

Figures are drawn by :mod:`latentforge.report.plots` and embedded as base64 PNG data URIs, so a
page is a single file that opens anywhere, offline. Each section applies to the models that have
what it needs (``reconstruct``, ``sample``, ``encode``/``decode``, a GAN's ``latent``...); the
sections that need data are skipped, with a note, when the data cannot be loaded (the report never
downloads anything: a built-in dataset that is not cached counts as unavailable).
"""
from __future__ import annotations

import base64
import html
import json
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError, LatentforgeError
from ..eval import reconstruction_metrics
from ..eval.continuous import continuous_metrics
from ..models import get_model_class
from ..models.capabilities import Capability, has
from ..models.interpolation import interpolate_codes
from .metrics_table import fmt_number as _fmt
from .plots import plot_history, plot_image_grid, plot_reconstructions, plot_tsne
from .tensorboard import TB_DIR, read_images

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




def _short(source: Any) -> str:
    s = str(source or "?")
    return Path(s).name if "/" in s else s



def _kv_table(d: dict[str, Any], cls: str = "kv") -> str:
    return f'<table class="{cls}">' + "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>"
                                            for k, v in d.items()) + "</table>"

