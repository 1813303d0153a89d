"""``latentforge evaluate``: the numbers that judge a trained model, as JSON.

    latentforge evaluate RUN [--data SRC] [--n N] [--features RUN_DIR] [--json metrics.json]

* Autoencoders (anything with ``reconstruct``), on the held-out split: reconstruction BCE / MSE /
  PSNR / SSIM; with labels, the linear-probe and k-NN accuracy of the codings (trained on the
  training split's codes); for linear AEs the principal angles to PCA's subspace; for VAEs the
  importance-weighted NLL.
* Generative models (anything with ``sample``: GANs, DDPM, VAEs): N generated samples against N real
  ones in the feature space of the domain feature network (``--features``, else the one cached for
  the data, trained on first use): FID, KID, precision/recall, density/coverage, class-mode
  coverage and the IS-style score. Not comparable to published (Inception) FIDs.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from ..cli import ClassesOpt, ExcludeClassesOpt, LabelsOpt, _out_dir_ok, _print_json, app
from ..errors import ConfigError, DataError

# the helpers shared with generate/interpolate come from .generative, imported where used: generative
# imports cli, which imports every command module (this one too) while generative is half-loaded


def _is_conditional(model) -> bool:
    from .generative import _is_conditional as is_conditional
    return is_conditional(model)

GENERATIVE_DEFAULT_N = 10_000   # real and generated samples for the generative metrics, by default
PROBE_MAX_TRAIN = 10_000        # training codes for the linear probe and the k-NN vote, at most
KNN_K = 5


def _finite_all(v: Any) -> Any:
    """NaN/Inf -> None everywhere in a JSON-like value (JSON has no NaN)."""
    from .generative import _finite
    if isinstance(v, dict):
        return {key: _finite_all(x) for key, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite_all(x) for x in v]
    return _finite(v)


def _splits(run, source: Optional[str], labels: Optional[Path], classes: Optional[str] = None,
            exclude_classes: Optional[str] = None):
    """(all of the data, its training part, its held-out part, split name): see ``Run.data_splits``
    (for other data than the run's, the probes use a seeded 80/20 split)."""
    return run.data_splits(source, labels, classes=classes, exclude_classes=exclude_classes)


def _probe_split(ds, train, test, seed: int):
    """Training and test parts for the probes: the run's split, else a seeded 80/20 split of ``ds``."""
    if train is not None:
        return train, test
    from ..data import train_valid_split
    if len(ds) < 5:
        return None, None
    return train_valid_split(ds, 0.2, seed=seed)


def _subsample(n_max: int, n: int, seed: int):
    import numpy as np
    if n <= n_max:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, n_max, replace=False))


def draw_samples(run, n: int, seed: int, batch_size: int, label_pool=None):
    """``n`` samples of a generative run in [0, 1], shaped like its data; conditional models get
    labels drawn from ``label_pool`` (the real data's labels), else uniformly over their classes."""
    import numpy as np
    import torch
    model = run.model
    gen = torch.Generator().manual_seed(seed)
    labels = None
    if _is_conditional(model):
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
    images = np.clip(np.concatenate(parts), 0.0, 1.0).astype(np.float32)
    return images.reshape((n, *model.input_shape))


def autoencoder_metrics(run, ds, train, test, n: Optional[int], k: int, seed: int, batch_size: int) -> dict[str, Any]:
    """Reconstruction (and SSIM), IW-NLL for VAEs, probes of the codings, principal angles for linear AEs."""
    import torch
    from ..eval import reconstruction_metrics
    from ..eval.representation import (is_linear_autoencoder, knn_accuracy, linear_probe_accuracy,
                                       subspace_report)
    model = run.model
    x, y = test.x, test.y
    if n is not None:
        x, y = x[:n], (y[:n] if y is not None else None)
    if len(x) == 0:
        raise DataError(f"{test.name}: no samples to evaluate")
    model.check_data(x, test.name)
    from .generative import _data_labels
    cond = _data_labels(model, test, run.name)
    cond = cond[:len(x)] if cond is not None else None
    result: dict[str, Any] = {"n": int(len(x))}
    recon = run.batched(model.reconstruct, x, batch_size, y=cond)
    result.update(reconstruction_metrics(x, recon.reshape(x.shape)))
    if callable(getattr(model, "log_likelihood", None)):
        gen = torch.Generator().manual_seed(seed)
        ll = run.batched(lambda xb, **kw: model.log_likelihood(xb, k=k, generator=gen, **kw), x,
                         max(1, min(batch_size, 65536 // k)), y=cond)
        result["iw_nll"] = float(-ll.mean())
        result["iw_nll_k"] = k
        result["iw_nll_units"] = "nats per image (Bernoulli likelihood summed over the values)"

    rep: dict[str, Any] = {}
    ptrain, ptest = _probe_split(ds, train, test, seed)
    if callable(getattr(model, "encode", None)) and ptrain is not None and ptrain.y is not None and ptest.y is not None:
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
                       device: str) -> dict[str, Any]:
    """Generated vs real samples in the domain feature network's feature space."""
    from ..eval.features import describe, embed, feature_network_for
    from ..eval.generative import generative_metrics
    model = run.model
    n_gen = min(GENERATIVE_DEFAULT_N, len(ds)) if n is None else n
    n_real = min(n_gen, len(ds))
    if n_real < 6 or n_gen < 6:
        raise DataError(f"{ds.name}: the generative metrics need at least 6 real and generated samples "
                        f"(got {n_real} real, -n {n_gen})")
    model.check_data(ds.x[:1], ds.name)
    fnet, source = feature_network_for(ds, features, device=device)
    info = describe(fnet, source)
    acc = info["valid_accuracy"]
    print(f"features: {source} feature network {fnet.run_dir} ({info['feature_size']} features, "
          + (f"held-out accuracy {acc:.3f})" if isinstance(acc, float) else "trained without labels)"),
          file=sys.stderr)
    t0 = time.perf_counter()
    idx = _subsample(n_real, len(ds), seed)
    real = ds.x[idx]
    fake = draw_samples(run, n_gen, seed, batch_size, label_pool=ds.y if _is_conditional(model) else None)
    t_sample = time.perf_counter() - t0
    fr, pr = embed(fnet, real)
    ff, pf = embed(fnet, fake)
    t1 = time.perf_counter()
    out: dict[str, Any] = {"n_real": int(n_real), "n_generated": int(n_gen)}
    out.update(generative_metrics(fr, ff, pr, pf, seed=seed))
    if pf is None:
        out["class_metrics"] = "unavailable: the feature network was trained without labels"
    out["seconds_sampling"] = round(t_sample, 3)
    out["seconds_metrics"] = round(time.perf_counter() - t1, 3)
    out["features"] = info
    return out


@app.command("evaluate")
def evaluate_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder of an autoencoder or a generative model."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data to evaluate on (default: the run's "
                                       "source; the run's own source: its held-out split for the AE metrics)."),
    labels: Optional[Path] = LabelsOpt,
    classes: Optional[str] = ClassesOpt,
    exclude_classes: Optional[str] = ExcludeClassesOpt,
    n: Optional[int] = typer.Option(None, "-n", "--n", help="Use only the first N held-out samples (AE metrics) "
                                    f"and N real vs N generated samples (generative; default min({GENERATIVE_DEFAULT_N:,}, "
                                    "data size))."),
    features: Optional[Path] = typer.Option(None, "--features", help="The feature network (a run of `latentforge "
                                            "train features`) for the generative metrics; default: the one "
                                            "cached for the data, trained on first use."),
    k: int = typer.Option(100, "--k", help="Importance samples per image for the VAE's NLL estimate."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics to this JSON file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the importance samples, the generated samples and subsets."),
    batch_size: int = typer.Option(4096, "--batch-size", "-b", min=1),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Judge a trained model: reconstruction, codings and NLL of autoencoders; FID, KID,
    precision/recall, density/coverage, mode coverage and IS of generative models."""
    if n is not None and n < 1:
        raise ConfigError(f"-n {n}: must be >= 1")
    if k < 1:
        raise ConfigError(f"--k {k}: must be >= 1")
    if json_out is not None:
        _out_dir_ok(json_out)

    from ..train import load_run
    run = load_run(run_dir, device)
    model = run.model
    is_ae = callable(getattr(model, "reconstruct", None))
    is_gen = callable(getattr(model, "sample", None))
    if not (is_ae or is_gen):
        raise ConfigError(f"{run_dir}: {run.name} is neither an autoencoder (no reconstruct()) nor a generative "
                          f"model (no sample())")
    ds, train, test, split = _splits(run, data, labels, classes, exclude_classes)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"run_dir": str(run.run_dir), "model": run.name, "data": ds.name}
    if is_ae:
        result["split"] = split
        result.update(autoencoder_metrics(run, ds, train, test, n, k, seed, batch_size))
    if is_gen:
        result["generative"] = generative_section(run, ds, n, features, seed, batch_size, device)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    result = _finite_all(result)
    if json_out is not None:
        from ..train.checkpoint import atomic_write_json
        try:
            atomic_write_json(json_out, result)
        except OSError as e:
            raise DataError(f"{json_out}: cannot write: {e.strerror or e}") from None
    _print_json(result)
