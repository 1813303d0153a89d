"""Anomaly scores: one number per sample, higher = more anomalous.

    >>> from latentforge.eval.anomaly import anomaly_scores
    >>> s = anomaly_scores(run, x)                       # the model's default method
    >>> s = anomaly_scores(run, x, method="knn")         # distance to the k nearest training codings

What a model can score with (see :func:`capabilities`):

============== ============================================================================
reconstruction any autoencoder: the per-value reconstruction error, BCE or MSE as the model's
               loss (``error=`` picks one), averaged over the sample's values
elbo           VAEs: the negative ELBO (in nats per image, averaged over a few draws of z)
iw-nll         VAEs: the importance-weighted NLL (``k`` importance samples; the ELBO at k = 1)
discriminator  GANs: minus the discriminator's logit (it scores real-looking data high)
denoising      DDPM: the noise-prediction error at a few noise levels (each a fixed share of the
               schedule), averaged over the levels and a few noise draws
knn            any encoder (and the classifier's features): the mean Euclidean distance to the
               ``n_neighbors`` nearest codings of the training data (``reference``)
confidence     classifiers: one minus the largest class probability (Hendrycks & Gimpel, 2017),
               for normal data made of several labelled classes
============== ============================================================================

Scores of different methods (or models) live on different scales; :func:`standardize` puts them on
the scale of the normal data (robust z-scores against the scores of normal reference samples), which
is what :func:`combine` averages, and :func:`percentile_of` says where a score falls among the
normal data's. :func:`fit_threshold` turns the normal data's scores into a threshold for 0/1 flags,
:func:`save_threshold` / :func:`load_thresholds` keep it in the run folder (``anomaly.json``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from ..models.capabilities import Capability, capabilities_of

METHODS: dict[str, str] = {
    "reconstruction": "reconstruction error, per-value BCE or MSE as the model's loss (autoencoders)",
    "elbo": "negative ELBO (VAEs)",
    "iw-nll": "importance-weighted negative log-likelihood (VAEs)",
    "discriminator": "minus the discriminator's logit (GANs)",
    "denoising": "noise-prediction error at a few noise levels (DDPM)",
    "knn": "mean distance to the k nearest training codings (any encoder)",
    "confidence": "one minus the largest class probability (classifiers)",
}
ANOMALY_JSON = "anomaly.json"
ANOMALY_ROC_PNG = "anomaly-roc.png"
DEFAULT_K = 100                          # importance samples for iw-nll
ELBO_DRAWS = 8                           # draws of z for the ELBO estimate
DENOISING_LEVELS = (0.1, 0.25, 0.5)      # shares of the diffusion schedule
DENOISING_DRAWS = 2
N_NEIGHBORS = 5
MAX_REFERENCE = 20_000                   # reference codings kept for knn, at most


# ------------------------------------------------------------------------------------ capabilities
def capabilities(model) -> list[str]:
    """The anomaly scores ``model`` supports, its default first, from its declared capabilities."""
    caps = capabilities_of(model)
    if Capability.CLASSIFIES in caps:           # distances between its features beat its confidence
        return ["knn", "confidence"]
    out: list[str] = []
    if Capability.RECONSTRUCTS in caps:
        out.append("reconstruction")
    if Capability.LIKELIHOOD in caps and Capability.GAUSSIAN_LATENT in caps:
        out += ["iw-nll", "elbo"]
    if Capability.ENCODES in caps:
        out.append("knn")
    if Capability.ADVERSARIAL in caps:
        out.append("discriminator")
    if Capability.DENOISES in caps:
        out.append("denoising")
    return out


def _is_classifier(model) -> bool:
    return Capability.CLASSIFIES in capabilities_of(model)


def default_method(model) -> str:
    caps = capabilities(model)
    if not caps:
        raise ConfigError(f"model {getattr(model, 'name', type(model).__name__)!r} has no anomaly score "
                          f"(methods: {', '.join(METHODS)})")
    return caps[0]


def check_method(model, method: str | None) -> str:
    """``method`` (or the model's default), checked against what the model can do."""
    name = getattr(model, "name", type(model).__name__)
    if method is None:
        return default_method(model)
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: unknown; methods: {', '.join(METHODS)}")
    caps = capabilities(model)
    if method not in caps:
        raise ConfigError(f"--method {method}: model {name!r} cannot score by {METHODS[method]}; "
                          f"it can: {', '.join(caps) or 'none'}")
    return method


# ------------------------------------------------------------------------------------ batched helpers
def _unwrap(model_or_run):
    """(model, run or None)."""
    model = getattr(model_or_run, "model", None)
    if model is not None and hasattr(model_or_run, "run_dir"):
        return model, model_or_run
    return model_or_run, None


def _batched(model, fn: Callable[..., torch.Tensor], x, y, batch_size: int) -> np.ndarray:
    """``fn(xb, yb)`` over batches of ``x`` in eval and inference mode, as a float64 (N,) array."""
    params = list(model.parameters()) or list(model.buffers())
    device = params[0].device if params else torch.device("cpu")
    dtype = params[0].dtype if params and params[0].is_floating_point() else torch.float32
    was = model.training
    model.eval()
    out = np.empty(len(x), np.float64)
    try:
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                xb = torch.as_tensor(np.ascontiguousarray(x[i:i + batch_size])).to(device=device, dtype=dtype)
                yb = None if y is None else torch.as_tensor(np.asarray(y[i:i + batch_size])).to(device)
                out[i:i + len(xb)] = fn(xb, yb).double().cpu().numpy()
    finally:
        model.train(was)
    return out


def _kw(model, yb) -> dict:
    return {"y": yb} if (Capability.CONDITIONAL in capabilities_of(model)) else {}


# ------------------------------------------------------------------------------------ the scores
def reconstruction_error(model, xb: torch.Tensor, yb=None, error: str | None = None) -> torch.Tensor:
    """Per-sample mean reconstruction error of one batch: BCE or MSE (default: the model's loss)."""
    error = error or getattr(model.config, "loss", "mse")
    if error not in ("bce", "mse"):
        raise ConfigError(f"error {error!r}: expected bce or mse")
    return per_sample_error(xb, model.reconstruct(xb, **_kw(model, yb)), error)


def per_sample_error(x: torch.Tensor, recon: torch.Tensor, error: str) -> torch.Tensor:
    """Each sample's mean BCE (``recon`` clamped to [1e-7, 1 - 1e-7]) or MSE, in the inputs' dtype."""
    rec, flat = recon.reshape(len(recon), -1), x.reshape(len(x), -1)
    if error == "bce":
        r = rec.clamp(1e-7, 1 - 1e-7)
        return -(flat * r.log() + (1 - flat) * (1 - r).log()).mean(1)
    return (rec - flat).square().mean(1)


def negative_elbo(model, xb, yb=None, generator=None, draws: int = ELBO_DRAWS) -> torch.Tensor:
    """The VAE's negative ELBO per sample (the k = 1 bound averaged over ``draws`` draws of z)."""
    total = torch.zeros(len(xb), dtype=torch.float64, device=xb.device)
    for _ in range(draws):
        total += -model.log_likelihood(xb, k=1, generator=generator, **_kw(model, yb)).double()
    return total / draws


def iw_nll(model, xb, yb=None, generator=None, k: int = DEFAULT_K) -> torch.Tensor:
    """The VAE's importance-weighted NLL per sample (k importance samples)."""
    return -model.log_likelihood(xb, k=k, generator=generator, **_kw(model, yb))


def discriminator_score(model, xb, yb=None) -> torch.Tensor:
    """Minus the GAN discriminator's logit: real-looking data scores low."""
    return -model.discriminator(model.to_internal(xb), yb if Capability.CONDITIONAL in capabilities_of(model) else None)


def denoising_error(model, xb, yb=None, generator=None, levels: Sequence[float] = DENOISING_LEVELS,
                    draws: int = DENOISING_DRAWS) -> torch.Tensor:
    """DDPM: the mean squared error of the predicted noise at ``levels`` (shares of the schedule)."""
    return model.denoising_error(xb, tuple(levels), draws, generator)


def _codes(model, x, y, batch_size: int) -> torch.Tensor:
    """Flat codings (classifier: its features) of ``x`` as a float32 CPU tensor."""
    classifier = _is_classifier(model)
    enc = model.features if classifier else model.encode
    parts = []
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    dtype = params[0].dtype if params else torch.float32
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                xb = torch.as_tensor(np.ascontiguousarray(x[i:i + batch_size])).to(device=device, dtype=dtype)
                kw = {} if classifier else _kw(model, None if y is None else
                                               torch.as_tensor(np.asarray(y[i:i + batch_size])).to(device))
                parts.append(enc(xb, **kw).reshape(len(xb), -1).float().cpu())
    finally:
        model.train(was)
    return torch.cat(parts) if parts else torch.zeros(0, 1)


def knn_distance(codes: torch.Tensor, reference: torch.Tensor, n_neighbors: int = N_NEIGHBORS,
                 exclude_self: bool = False, metric: str = "euclidean", chunk: int = 2048) -> np.ndarray:
    """Mean distance of each row of ``codes`` to its ``n_neighbors`` nearest rows of ``reference``
    (``metric``: ``euclidean``, or ``cosine``: Euclidean between unit-length rows); ``exclude_self``
    drops the nearest one (``codes`` is ``reference``)."""
    if len(reference) == 0:
        raise DataError("knn: no reference codings (the training data is empty)")
    if metric not in ("euclidean", "cosine"):
        raise ConfigError(f"metric {metric!r}: expected euclidean or cosine")
    if metric == "cosine":
        codes, reference = F.normalize(codes.double(), dim=1), F.normalize(reference.double(), dim=1)
    k = min(n_neighbors + int(exclude_self), len(reference))
    out = []
    for i in range(0, len(codes), chunk):
        d = torch.cdist(codes[i:i + chunk].double(), reference.double())
        near = d.topk(k, dim=1, largest=False).values
        if exclude_self and k > 1:
            near = near[:, 1:]
        out.append(near.mean(1))
    return torch.cat(out).numpy() if out else np.zeros(0)


def _reference_data(run, reference):
    """The data ``knn`` measures distances to: ``reference`` if given, else the run's training split."""
    if reference is not None:
        return (reference.x, reference.y) if hasattr(reference, "x") else (reference, None)
    if run is None:
        raise ConfigError("knn: give reference= (the normal training data) to score a bare model")
    ds, train, _test, _split = run.data_splits(download=False)
    part = train if train is not None else ds
    return part.x, part.y


def anomaly_scores(model_or_run, x, method: str | None = None, *, y=None, reference=None, k: int = DEFAULT_K,
                   n_neighbors: int = N_NEIGHBORS, error: str | None = None, seed: int = 0,
                   batch_size: int = 512, exclude_self: bool = False, metric: str | None = None) -> np.ndarray:
    """One anomaly score per sample of ``x`` (higher = more anomalous), float64 of shape (N,).

    ``model_or_run``: a trained model or a :class:`~latentforge.train.Run`. ``method``: one of
    :data:`METHODS` the model supports (default: its first, see :func:`capabilities`). ``y``: labels,
    for conditional models. ``reference``: the normal data for ``knn`` (an array or a Dataset;
    default for a run: its training split). ``k``: importance samples (``iw-nll``); ``error``:
    ``bce`` or ``mse`` for ``reconstruction`` (default: the model's loss); ``seed``: the draws of
    ``elbo`` / ``iw-nll`` / ``denoising``; ``exclude_self``: ``x`` is the reference itself (knn
    then skips each sample's own coding); ``metric``: knn's distance, ``euclidean`` or ``cosine``
    (default: cosine between a classifier's features, whose length grows with its confidence;
    Euclidean between an autoencoder's codings).
    """
    model, run = _unwrap(model_or_run)
    method = check_method(model, method)
    if len(x) == 0:
        return np.zeros(0)
    if hasattr(model, "check_data"):
        model.check_data(x, "data")
    if (Capability.CONDITIONAL in capabilities_of(model)) and y is None and method not in ("knn", "confidence"):
        raise DataError(f"model {getattr(model, 'name', '?')!r} is conditional: its scores need the data's labels")
    gen = torch.Generator().manual_seed(int(seed))
    if method == "reconstruction":
        return _batched(model, lambda xb, yb: reconstruction_error(model, xb, yb, error), x, y, batch_size)
    if method == "elbo":
        return _batched(model, lambda xb, yb: negative_elbo(model, xb, yb, gen), x, y, batch_size)
    if method == "iw-nll":
        if int(k) < 1:
            raise ConfigError(f"--k {k}: must be >= 1")
        bs = max(1, min(batch_size, 65536 // int(k)))
        return _batched(model, lambda xb, yb: iw_nll(model, xb, yb, gen, int(k)), x, y, bs)
    if method == "discriminator":
        return _batched(model, lambda xb, yb: discriminator_score(model, xb, yb), x, y, batch_size)
    if method == "denoising":
        return _batched(model, lambda xb, yb: denoising_error(model, xb, yb, gen), x, y, min(batch_size, 128))
    if method == "confidence":
        return _batched(model, lambda xb, yb: 1.0 - model.predict_proba(xb).max(1).values, x, None, batch_size)
    # knn
    if int(n_neighbors) < 1:
        raise ConfigError(f"--neighbors {n_neighbors}: must be >= 1")
    rx, ry = _reference_data(run, reference)
    if len(rx) > MAX_REFERENCE:
        idx = np.sort(np.random.default_rng(seed).choice(len(rx), MAX_REFERENCE, replace=False))
        rx, ry = rx[idx], (ry[idx] if ry is not None else None)
    cond = (Capability.CONDITIONAL in capabilities_of(model))
    ref = _codes(model, rx, ry if cond else None, batch_size)
    codes = ref if exclude_self else _codes(model, x, y if cond else None, batch_size)
    if metric is None:
        metric = "cosine" if _is_classifier(model) else "euclidean"
    return knn_distance(codes, ref, int(n_neighbors), exclude_self=exclude_self, metric=metric)


# ------------------------------------------------------------------------------------ normalisation
def standardize(scores, reference) -> np.ndarray:
    """Robust z-scores: ``(scores - median) / (1.4826 * MAD)`` of the ``reference`` scores (those of
    normal data), so that scores of different methods or models can be averaged."""
    ref = np.asarray(reference, np.float64)
    med = float(np.median(ref))
    mad = 1.4826 * float(np.median(np.abs(ref - med)))
    if not mad > 0:
        mad = float(np.std(ref)) or 1.0
    return (np.asarray(scores, np.float64) - med) / mad


def combine(score_sets: Sequence, references: Sequence) -> np.ndarray:
    """The mean of several scores of the same samples, each standardised against its reference."""
    if not score_sets:
        raise ConfigError("combine: no scores")
    return np.mean([standardize(s, r) for s, r in zip(score_sets, references)], axis=0)


def percentile_of(scores, reference) -> np.ndarray:
    """Where each score falls among the ``reference`` (normal) scores, in [0, 100]: 99 means that
    99 % of the normal data scores lower."""
    ref = np.sort(np.asarray(reference, np.float64))
    if len(ref) == 0:
        raise DataError("percentile_of: no reference scores")
    return 100.0 * np.searchsorted(ref, np.asarray(scores, np.float64), side="right") / len(ref)


# ------------------------------------------------------------------------------------ thresholds
def check_quantile(threshold_at: float | None, contamination: float | None) -> float | None:
    """The quantile of the normal scores to flag above: ``threshold_at`` or ``1 - contamination``."""
    if threshold_at is not None and contamination is not None:
        raise ConfigError("--threshold-at and --contamination: give one of them (contamination c is "
                          "--threshold-at 1-c)")
    if contamination is not None:
        if not 0.0 < contamination < 1.0:
            raise ConfigError(f"--contamination {contamination}: must be in (0, 1)")
        return 1.0 - float(contamination)
    if threshold_at is not None and not 0.0 < threshold_at < 1.0:
        raise ConfigError(f"--threshold-at {threshold_at}: must be in (0, 1), e.g. 0.95")
    return threshold_at


def fit_threshold(normal_scores, quantile: float) -> float:
    """The ``quantile`` of the normal data's scores: a sample scoring above it is flagged."""
    s = np.asarray(normal_scores, np.float64)
    if len(s) == 0:
        raise DataError("no normal samples to set the threshold with")
    return float(np.quantile(s, quantile))


def flags(scores, threshold: float) -> np.ndarray:
    """0/1 (uint8): 1 where the score is above the threshold."""
    return (np.asarray(scores) > threshold).astype(np.uint8)


def summarize(scores) -> dict[str, float]:
    s = np.asarray(scores, np.float64)
    q = np.quantile(s, [0.05, 0.25, 0.5, 0.75, 0.95]) if len(s) else [math.nan] * 5
    return {"n": len(s), "mean": float(s.mean()) if len(s) else math.nan,
            "std": float(s.std()) if len(s) else math.nan, "min": float(s.min()) if len(s) else math.nan,
            "max": float(s.max()) if len(s) else math.nan,
            **{f"q{int(p * 100):02d}": float(v) for p, v in zip((0.05, 0.25, 0.5, 0.75, 0.95), q)}}


def load_thresholds(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``anomaly.json`` (``{"methods": {method: {...}}}``), empty when there is none."""
    import json
    path = Path(run_dir) / ANOMALY_JSON
    if not path.is_file():
        return {"methods": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("methods"), dict):
        raise DataError(f"{path}: not an anomaly file (no 'methods' table)")
    return data


def save_threshold(run_dir: str | Path, method: str, entry: dict[str, Any]) -> Path:
    """Record ``entry`` (threshold, quantile, calibration data, score summary...) for ``method``
    in the run's ``anomaly.json`` (other methods' entries are kept)."""
    from ..io import atomic_write_json
    data = load_thresholds(run_dir)
    data["methods"][method] = entry
    path = Path(run_dir) / ANOMALY_JSON
    try:
        atomic_write_json(path, data)
    except OSError as e:
        raise DataError(f"{path}: cannot write: {e.strerror or e}") from None
    return path


def calibration_data(run):
    """The normal data a run's threshold is set on: its held-out split (normal samples the model did
    not fit), else its training data; returns ``(dataset, description)``."""
    ds, _train, test, split = run.data_splits(download=False)
    if split == "held-out":
        return test, f"held-out split of {ds.name} ({len(test)} samples)"
    return ds, f"training data {ds.name} ({len(ds)} samples)"


def anomaly_percentiles(run, x, method: str | None = None, **opts) -> np.ndarray:
    """Where each sample of ``x`` falls among the run's own normal data, in [0, 100]: the
    percentile of its anomaly score among the scores of the run's held-out split (see
    :func:`calibration_data`). 99 means "more anomalous than 99 % of the normal data"."""
    cal, _ = calibration_data(run)
    method = check_method(run.model, method)
    ref = anomaly_scores(run, cal.x, method, y=cal.y, **opts)
    return percentile_of(anomaly_scores(run, x, method, **opts), ref)


# ------------------------------------------------------------------------------------ evaluation
def roc_auc(labels, scores) -> float:
    """Area under the ROC curve of ``scores`` for 0/1 ``labels`` (1 = anomaly); NaN with one class."""
    from sklearn.metrics import roc_auc_score
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels, scores))


def average_precision(labels, scores) -> float:
    from sklearn.metrics import average_precision_score
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return math.nan
    return float(average_precision_score(labels, scores))


def roc_curve(labels, scores, max_points: int = 200) -> tuple[list[float], list[float]]:
    """False- and true-positive rates of the ROC curve, thinned to about ``max_points`` points."""
    from sklearn.metrics import roc_curve as sk_roc
    fpr, tpr, _ = sk_roc(np.asarray(labels), np.asarray(scores))
    if len(fpr) > max_points:
        idx = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[idx], tpr[idx]
    return [round(float(v), 5) for v in fpr], [round(float(v), 5) for v in tpr]


__all__ = ["METHODS", "ANOMALY_JSON", "ANOMALY_ROC_PNG", "capabilities", "default_method", "check_method",
           "anomaly_scores", "reconstruction_error", "negative_elbo", "iw_nll", "discriminator_score",
           "denoising_error", "per_sample_error", "knn_distance", "standardize", "combine", "percentile_of", "check_quantile",
           "fit_threshold", "flags", "summarize", "load_thresholds", "save_threshold", "calibration_data",
           "anomaly_percentiles",
           "roc_auc", "average_precision", "roc_curve"]
