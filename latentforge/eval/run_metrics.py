"""The numbers that judge a trained run, as a JSON-ready dict (``latentforge evaluate``, the report).

* Autoencoders (``Capability.RECONSTRUCTS``), on the held-out split: reconstruction BCE / MSE /
  PSNR / SSIM; with labels, the linear-probe and k-NN accuracy of the codings (trained on the
  training split's codes); for linear AEs the principal angles to PCA's subspace; for models with
  a likelihood (VAEs) the importance-weighted NLL.
* Generative models (``Capability.SAMPLES``: GANs, DDPM, VAEs): N generated samples against N real
  ones in the feature space of the domain feature network: FID, KID, precision/recall,
  density/coverage, class-mode coverage and the IS-style score.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..data import train_valid_split
from ..errors import ConfigError, DataError
from ..models.capabilities import Capability, data_labels, has
from .continuous import continuous_metrics, nll_units
from .features import describe, embed, feature_network_for
from .generative import generative_metrics
from .metrics import reconstruction_metrics
from .representation import is_linear_autoencoder, knn_accuracy, linear_probe_accuracy, subspace_report

GENERATIVE_DEFAULT_N = 10_000   # real and generated samples for the generative metrics, by default
PROBE_MAX_TRAIN = 10_000        # training codes for the linear probe and the k-NN vote, at most
KNN_K = 5


def finite_all(v: Any) -> Any:
    """NaN/Inf -> None everywhere in a JSON-like value (JSON has no NaN)."""
    if isinstance(v, dict):
        return {key: finite_all(x) for key, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite_all(x) for x in v]
    return v if not isinstance(v, float) or math.isfinite(v) else None


def _probe_split(ds, train, test, seed: int):
    """Training and test parts for the probes: the run's split, else a seeded 80/20 split of ``ds``."""
    if train is not None:
        return train, test
    if len(ds) < 5:
        return None, None
    return train_valid_split(ds, 0.2, seed=seed)


def _subsample(n_max: int, n: int, seed: int):
    if n <= n_max:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, n_max, replace=False))


def draw_samples(run, n: int, seed: int, batch_size: int, label_pool=None):
    """``n`` samples of a generative run in [0, 1], shaped like its data; conditional models get
    labels drawn from ``label_pool`` (the real data's labels), else uniformly over their classes."""
    model = run.model
    gen = torch.Generator().manual_seed(seed)
    labels = None
    if Capability.CONDITIONAL in model.capabilities:
        rng = np.random.default_rng(seed)
        if label_pool is not None and len(label_pool):
            labels = rng.choice(np.asarray(label_pool), n)
        else:
            labels = rng.integers(0, int(model.config.n_classes), n)
    model.eval()
    parts = []
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            m = min(batch_size, n - i)
            lab = torch.as_tensor(labels[i:i + m], dtype=torch.long) if labels is not None else None
            parts.append(model.sample(m, labels=lab, generator=gen).float().cpu().numpy())
    images = np.concatenate(parts).astype(np.float32)
    if getattr(model, "needs_unit_interval", True):      # images; continuous data keeps its own units
        images = np.clip(images, 0.0, 1.0)
    return images.reshape((n, *model.input_shape))


def autoencoder_metrics(run, ds, train, test, n: Optional[int], k: int, seed: int, batch_size: int) -> dict[str, Any]:
    """Reconstruction (and SSIM), IW-NLL for VAEs, probes of the codings, principal angles for linear AEs."""
    model = run.model
    x, y = test.x, test.y
    if n is not None:
        x, y = x[:n], (y[:n] if y is not None else None)
    if len(x) == 0:
        raise DataError(f"{test.name}: no samples to evaluate")
    model.check_data(x, test.name)
    cond = data_labels(model, test, run.name)
    cond = cond[:len(x)] if cond is not None else None
    result: dict[str, Any] = {"n": int(len(x))}
    recon = run.batched(model.reconstruct, x, batch_size, y=cond)
    result.update(reconstruction_metrics(x, recon.reshape(x.shape)))
    tabular = continuous_metrics(model, x, recon)      # standardised units, vs the per-column mean
    if tabular:
        result.pop("psnr", None), result.pop("psnr_data_range", None)   # one range for unrelated columns
        result.update(tabular)
    if Capability.LIKELIHOOD in model.capabilities:
        gen = torch.Generator().manual_seed(seed)
        ll = run.batched(lambda xb, **kw: model.log_likelihood(xb, k=k, generator=gen, **kw), x,
                         max(1, min(batch_size, 65536 // k)), y=cond)
        result["iw_nll"] = float(-ll.mean())
        result["iw_nll_k"] = k
        result["iw_nll_units"] = nll_units(model)

    rep: dict[str, Any] = {}
    ptrain, ptest = _probe_split(ds, train, test, seed)
    if Capability.ENCODES in model.capabilities and ptrain is not None and ptrain.y is not None and ptest.y is not None:
        idx = _subsample(PROBE_MAX_TRAIN, len(ptrain), seed)
        xtr, ytr = ptrain.x[idx], ptrain.y[idx]
        xte, yte = (ptest.x, ptest.y) if n is None else (ptest.x[:n], ptest.y[:n])
        ctr = run.encode(xtr, batch_size, progress=False, y=ytr).reshape(len(xtr), -1)
        cte = run.encode(xte, batch_size, progress=False, y=yte).reshape(len(xte), -1)
        rep.update(n_train=int(len(xtr)), n_test=int(len(xte)), code_size=int(ctr.shape[1]))
        if len(set(ytr.tolist())) >= 2:
            rep["linear_probe_accuracy"] = linear_probe_accuracy(ctr, ytr, cte, yte)
            rep["knn_accuracy"] = knn_accuracy(ctr, ytr, cte, yte, KNN_K)
            rep["knn_k"] = min(KNN_K, len(xtr))
    if is_linear_autoencoder(model):
        basis_data = (ptrain if ptrain is not None else test).x
        rep.update(subspace_report(model, basis_data[_subsample(PROBE_MAX_TRAIN, len(basis_data), seed)]))
    if rep:
        result["representation"] = rep
    return result


def generative_section(run, ds, n: Optional[int], features: Optional[Path], seed: int, batch_size: int,
                       device: str, log: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Generated vs real samples in the domain feature network's feature space (``log``: where the
    line naming the feature network goes; default stderr)."""
    model = run.model
    n_gen = min(GENERATIVE_DEFAULT_N, len(ds)) if n is None else n
    n_real = min(n_gen, len(ds))
    if n_real < 6 or n_gen < 6:
        raise DataError(f"{ds.name}: the generative metrics need at least 6 real and generated samples "
                        f"(got {n_real} real, -n {n_gen})")
    model.check_data(ds.x[:1], ds.name)
    fnet, source = feature_network_for(ds, features, device=device)
    info = describe(fnet, source, labels=ds.y)
    acc = info["valid_accuracy"]
    (log or _stderr)(f"features: {source} feature network {fnet.run_dir} ({info['feature_size']} features, "
                     + (f"held-out accuracy {acc:.3f})" if isinstance(acc, float) else "trained without labels)"))
    if info.get("warning"):
        (log or _stderr)(f"warning: {info['warning']}")
    t0 = time.perf_counter()
    idx = _subsample(n_real, len(ds), seed)
    real = ds.x[idx]
    fake = draw_samples(run, n_gen, seed, batch_size, label_pool=ds.y if Capability.CONDITIONAL in model.capabilities else None)
    t_sample = time.perf_counter() - t0
    fr, pr = embed(fnet, real)
    ff, pf = embed(fnet, fake)
    t1 = time.perf_counter()
    out: dict[str, Any] = {"n_real": int(n_real), "n_generated": int(n_gen), "trusted": info.get("trusted")}
    out.update(generative_metrics(fr, ff, pr, pf, seed=seed))
    if pf is None:
        out["class_metrics"] = "unavailable: the feature network was trained without labels"
    out["seconds_sampling"] = round(t_sample, 3)
    out["seconds_metrics"] = round(time.perf_counter() - t1, 3)
    out["features"] = info
    return out


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def evaluate_run(run, data: Optional[str] = None, labels: Optional[Path] = None, *, n: Optional[int] = None,
                 features: Optional[Path] = None, k: int = 100, seed: int = 0, batch_size: int = 4096,
                 device: str = "cpu", log: Optional[Callable[[str], None]] = None,
                 splits: Optional[tuple] = None) -> dict[str, Any]:
    """Every metric that applies to ``run`` (a :class:`latentforge.Run`) on ``data`` (default: the
    run's own source; its held-out split for the autoencoder metrics), NaN/Inf as None.

    ``splits``: ``(data, training part, held-out part, split name)`` chosen by the caller (e.g.
    a class filter); default ``run.data_splits(data, labels)``."""
    if n is not None and n < 1:
        raise ConfigError(f"-n {n}: must be >= 1")
    if k < 1:
        raise ConfigError(f"--k {k}: must be >= 1")
    model = run.model
    is_ae = has(model, Capability.RECONSTRUCTS)
    is_gen = has(model, Capability.SAMPLES)
    if not (is_ae or is_gen):
        raise ConfigError(f"{run.run_dir}: {run.name} is neither an autoencoder (no reconstruct()) nor a "
                          f"generative model (no sample())")
    ds, train, test, split = splits if splits is not None else run.data_splits(data, labels)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"run_dir": str(run.run_dir), "model": run.name, "data": ds.name}
    if is_ae:
        result["split"] = split
        result.update(autoencoder_metrics(run, ds, train, test, n, k, seed, batch_size))
    if is_gen:
        result["generative"] = generative_section(run, ds, n, features, seed, batch_size, device, log=log)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return finite_all(result)


__all__ = ["GENERATIVE_DEFAULT_N", "PROBE_MAX_TRAIN", "KNN_K", "draw_samples", "autoencoder_metrics",
           "generative_section", "evaluate_run", "finite_all"]
