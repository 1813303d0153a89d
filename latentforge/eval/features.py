"""The domain feature network of the generative metrics: train it, cache it per dataset, embed with it.

``latentforge evaluate`` uses the network given with ``--features RUN_DIR`` (a run of the
``features`` model, :mod:`latentforge.models.features`), or else the one cached for the data in
``<data cache>/features/<fingerprint>-r<recipe>/`` (the data cache is ``$LATENTFORGE_DATA``, by
default ``~/.cache/latentforge``), training and caching it on first use. The fingerprint is the
hash of the data's values that runs record, so any change of the data gets a network of its own;
``RECIPE`` changes whenever the default recipe does.
"""
from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import data_cache_dir
from ..errors import CheckpointError, ConfigError, DataError
from ..models.features import FeatureNetConfig
from ..train import load_run, train
from ..train.run import fingerprint

#: bumped whenever the default feature network (architecture, training) changes
RECIPE = 1
FEATURES_MODEL = "features"


def feature_cache_dir() -> Path:
    """Where cached feature networks live: ``<data cache>/features``."""
    return data_cache_dir() / "features"


def cached_features_path(ds) -> Path:
    """The cache folder of ``ds``'s feature network (keyed by the data's fingerprint)."""
    return feature_cache_dir() / f"{fingerprint(ds.x)}-r{RECIPE}"


def feature_overrides(ds, **overrides: Any) -> dict[str, Any]:
    """The config values for ``ds``: ``n_classes`` from its labels, a batch no larger than its
    training split, then ``overrides``."""
    values: dict[str, Any] = {}
    if ds.y is not None and len(ds.y):
        values["n_classes"] = max(2, int(ds.y.max()) + 1)
    n_train = len(ds) - int(round(len(ds) * 0.1))                 # the 10% validation split
    values["batch_size"] = max(1, min(FeatureNetConfig.batch_size, n_train))   # small data: smaller batches
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


def train_feature_network(ds, out: str | Path, *, overrides: dict[str, Any] | None = None, device: str = "auto",
                          progress: bool | None = None, log: Callable[[str], None] | None = None,
                          overwrite: bool = False):
    """Train the feature network on ``ds`` (labels when it has them) into the run folder ``out``."""
    return train(FEATURES_MODEL, ds, out=out, overrides=feature_overrides(ds, **(overrides or {})),
                 valid_fraction=0.1, progress=progress, log=log or (lambda m: None), device=device,
                 overwrite=overwrite)


def load_feature_network(run_dir: str | Path, ds=None, device: str = "cpu"):
    """Load a ``features`` run; with ``ds``, check that it embeds samples shaped like ``ds``'s."""
    run = load_run(run_dir, device)
    if run.name != FEATURES_MODEL:
        raise ConfigError(f"--features {run_dir}: a {run.name!r} run, not a feature network "
                          f"(train one with `latentforge train features --data SRC`)")
    if ds is not None:
        try:
            run.model.check_data(ds.x[:1], ds.name)
        except DataError:
            raise DataError(f"--features {run_dir}: built for samples of shape {list(run.model.input_shape)}, "
                            f"but {ds.name} has {list(ds.x.shape[1:])}") from None
    return run


def feature_network_for(ds, features: str | Path | None = None, *, device: str = "cpu",
                        log: Callable[[str], None] | None = None):
    """The feature network for ``ds`` and where it came from: ``(run, "given" | "cache" | "trained")``.

    Without ``features`` the cached one is loaded, or trained and cached (atomically: a network
    trained at the same time by another process is kept, this one dropped).
    """
    log = log or (lambda m: print(m, file=sys.stderr))
    if features is not None:
        return load_feature_network(features, ds, device), "given"
    path = cached_features_path(ds)
    if (path / "checkpoint.safetensors").exists():
        try:
            return load_feature_network(path, ds, device), "cache"
        except (CheckpointError, DataError, ConfigError) as e:
            log(f"cached feature network {path} is unusable ({e}); training a new one")
            shutil.rmtree(path, ignore_errors=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{path.parent}: cannot create the feature-network cache: {e.strerror or e} "
                        f"(set $LATENTFORGE_DATA, or give --features RUN_DIR)") from None
    tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:8]}"
    log(f"training the feature network for {ds.name} (once per dataset; cached in {path})")
    try:
        train_feature_network(ds, tmp, device=device, progress=False)
        try:
            os.replace(tmp, path)
        except OSError:
            if not (path / "checkpoint.safetensors").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_feature_network(path, ds, device), "trained"


def describe(run, source: str, labels: np.ndarray | None = None) -> dict[str, Any]:
    """What the metrics' JSON says about the feature network: where it is, and its own quality
    on its held-out split (accuracy with labels, else the reconstruction MSE of its normalised
    input, where predicting the mean scores 1), with :func:`assess`'s verdict."""
    info = run.data_info
    last = run.history[-1] if run.history else {}
    out = {"run_dir": str(run.run_dir), "source": source, "data": info.get("source"),
           "fingerprint": info.get("fingerprint"), "trained_with_labels": bool(info.get("labels")),
           "feature_size": int(run.config.feature_size),
           "n_classes": int(run.config.n_classes) if info.get("labels") else None,
           "valid_accuracy": last.get("valid_accuracy"), "valid_mse": last.get("valid_mse"),
           "epochs": len(run.history)}
    if labels is not None and len(labels) and out["trained_with_labels"]:
        # chance on the data at hand: its classes, and the share of its most common one
        _, counts = np.unique(np.asarray(labels), return_counts=True)
        out["n_classes"] = int(len(counts))
        out["chance_accuracy"] = float(counts.max() / counts.sum())
    out.update(assess(out))
    return out


#: a feature network is trusted when its held-out accuracy clears chance by this share of the way
#: to 1 (3 classes: 0.5; 10 classes: 0.325), or, without labels, when it reconstructs its
#: normalised input with less than this MSE (predicting the mean scores 1)
TRUST_ACCURACY_MARGIN = 0.25
TRUST_MAX_MSE = 0.5


def assess(info: dict[str, Any]) -> dict[str, Any]:
    """``trusted`` (bool or None when unknown), ``chance_accuracy`` and a ``warning`` (None when
    trusted) for a feature network described by :func:`describe`."""
    acc, k, mse = info.get("valid_accuracy"), info.get("n_classes"), info.get("valid_mse")
    fix = ("train a better one (`latentforge train features --data SRC --epochs 30 --out FEATURES`: "
           "more epochs or more data) and pass it with `--features FEATURES`")
    if info.get("trained_with_labels") and isinstance(acc, float) and k:
        chance = info.get("chance_accuracy") or 1.0 / k
        bar = chance + TRUST_ACCURACY_MARGIN * (1 - chance)
        if acc >= bar:
            return {"trusted": True, "chance_accuracy": chance, "warning": None}
        return {"trusted": False, "chance_accuracy": chance,
                "warning": f"the feature network is near chance (held-out accuracy {acc:.3f}, chance "
                           f"{chance:.3f} for {k} classes, needs {bar:.3f}): its features cannot tell the "
                           f"classes apart, so FID, KID, precision/recall and mode coverage are not to be "
                           f"trusted; {fix}"}
    if isinstance(mse, float):
        if mse < TRUST_MAX_MSE:
            return {"trusted": True, "chance_accuracy": None, "warning": None}
        return {"trusted": False, "chance_accuracy": None,
                "warning": f"the feature network (trained without labels) reconstructs its held-out input "
                           f"poorly (MSE {mse:.3f}; predicting the mean scores 1, needs < {TRUST_MAX_MSE}): "
                           f"the generative metrics are not to be trusted; {fix}"}
    return {"trusted": None, "chance_accuracy": None,
            "warning": "the feature network's held-out quality is unknown (no validation split): "
                       "the generative metrics cannot be vouched for"}


def embed(run, x: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray | None]:
    """Features (N, feature_size) of ``x`` and, for a network trained with labels, the class
    probabilities (N, n_classes) (None otherwise)."""
    model = run.model
    out = run.batched(model.features_and_proba, x, batch_size)
    f = int(model.config.feature_size)
    probs = out[:, f:].astype(np.float64) if run.data_info.get("labels") else None
    return out[:, :f].astype(np.float64), probs
