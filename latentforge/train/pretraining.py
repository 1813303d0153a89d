"""Unsupervised pretraining (SPEC 5 and the chapter's first exercise): train an autoencoder on all
the (unlabelled) images, reuse its encoder in a classifier trained on a few labels, compare with the
same classifier trained from scratch.

Public API::

    from latentforge.train.pretraining import train_classifier, labeled_subset, predict, pretraining_experiment

    run = train_classifier("mnist", labeled=500, encoder_from="runs/ae", freeze_epochs=5, out="runs/clf")
    labels = predict(run, x)                       # int64 class indices
    result = pretraining_experiment("mnist", labeled=500, ae="stacked-ae", seeds=3)

``train_classifier`` with ``labeled=N`` trains on N labelled samples drawn (stratified, seeded)
from the training part of the data; the held-out validation split is the one an ordinary run
would hold out (``train_valid_split(data, valid_fraction, seed)``), so ``latentforge info`` and
the plots find it again. Without ``labeled`` it is an ordinary :func:`latentforge.train.train` run.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from .._version import __version__
from ..config import config_to_dict, load_config_file, make_config
from ..data import Dataset, load_data, train_valid_split
from ..errors import ConfigError, DataError
from ..models import get_model_class, make_model_config
from ..models.capabilities import Capability
from ..models.classifier import Classifier, ClassifierConfig, dense_encoder_spec, init_from_autoencoder
from .run import Run, describe_data, load_run, prepare_run_dir, resolve_config, resolve_device, train
from .summary import hardware, run_summary, write_run_files
from .trainer import Trainer

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


# ------------------------------------------------------------------------------------ data
def n_classes_of(ds) -> int:
    """Number of classes of a labelled dataset: its class names, else the largest label + 1."""
    k = int(ds.y.max()) + 1 if ds.y is not None and len(ds.y) else 0
    return max(k, len(ds.class_names or []), 2)


def labeled_subset(ds, n: int, seed: int = 0):
    """``n`` samples of ``ds`` chosen at random per class, in proportion to the class sizes
    (largest remainders; every class present in ``ds`` gets at least one). Seeded; the rows keep
    their original order."""
    if ds.y is None:
        raise DataError(f"{ds.name}: --labeled needs labelled data and this data has no labels")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"--labeled {n!r}: must be a positive number of samples")
    classes, counts = np.unique(ds.y, return_counts=True)
    if n > len(ds):
        raise DataError(f"--labeled {n}: larger than the {len(ds)} training samples of {ds.name}")
    if n < len(classes):
        raise ConfigError(f"--labeled {n}: fewer than the {len(classes)} classes of {ds.name} "
                          f"(at least one sample per class is needed)")
    # proportional allocation with at least one per class, then largest remainders
    share = counts / counts.sum() * (n - len(classes))
    alloc = 1 + np.minimum(np.floor(share).astype(int), counts - 1)
    rest = n - int(alloc.sum())
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    while rest > 0:
        for k in order:
            if rest and alloc[k] < counts[k]:
                alloc[k] += 1
                rest -= 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(ds.y == c), size=int(a), replace=False) for c, a in zip(classes, alloc)]
    return ds.subset(np.sort(np.concatenate(picked)))


# ------------------------------------------------------------------------------------ training
def _prepare_run_dir(out: str | Path | None, name: str, overwrite: bool) -> Path:
    return prepare_run_dir(out, name, overwrite=overwrite)[0]


def fit_model(name: str, config, train_ds, valid_ds=None, *, data_info: dict[str, Any] | None = None,
              out: str | Path | None = None, save: bool = True, setup: Callable[[Any], None] | None = None,
              extra_meta: dict[str, Any] | None = None, overwrite: bool = False, progress: bool | None = None,
              log: Log | None = None, device: str = "auto", desc: str = "train",
              callbacks: Iterable[Callable[[Any, dict[str, Any]], None]] = ()) -> Run:
    """Train registered model ``name`` with ``config`` on ``train_ds``, validating on ``valid_ds``.

    Like :func:`latentforge.train.train` but with the split given (labelled subsets, a fixed test
    split). ``setup(model)`` runs after the model is built, before ``prepare`` (e.g. copying a
    pretrained encoder). With ``save`` the run folder (``out``, default runs/NAME-TIMESTAMP) gets
    the usual checkpoint, run.json and history.json; without, the model is trained in memory and
    the returned Run has ``run_dir`` None.
    """
    log = log if log is not None else _stderr
    cls = get_model_class(name)
    dev = resolve_device(device)
    if config.input_shape is None:
        config.input_shape = list(train_ds.x.shape[1:])
        config.validate()
    if config.batch_size > len(train_ds):
        raise ConfigError(f"config field 'batch_size' = {config.batch_size}: larger than the "
                          f"{len(train_ds)} training samples")
    labelled = Capability.CONDITIONAL in cls.capabilities
    if labelled and train_ds.y is None:
        raise DataError(f"{train_ds.name}: model {name!r} needs labels and this data has none")
    torch.manual_seed(config.seed)
    net = cls(config)
    net.check_data(train_ds.x, train_ds.name)
    if labelled and hasattr(net, "check_labels"):
        net.check_labels(train_ds.y, f"{train_ds.name} labels")
        if valid_ds is not None and valid_ds.y is not None:
            net.check_labels(valid_ds.y, f"{valid_ds.name} labels")
    if setup is not None:
        setup(net)
    if data_info is None:
        data_info = {"source": train_ds.name, "n_train": len(train_ds),
                     "n_valid": len(valid_ds) if valid_ds is not None else 0,
                     "sample_shape": list(train_ds.sample_shape), "is_image": train_ds.is_image}
    run_dir = _prepare_run_dir(out, name, overwrite) if save else None   # validated: from here on, write

    net.to(dev)
    x = torch.from_numpy(train_ds.x)
    xv = torch.from_numpy(valid_ds.x) if valid_ds is not None and len(valid_ds) else None
    y = torch.from_numpy(train_ds.y) if labelled else None
    yv = torch.from_numpy(valid_ds.y) if labelled and xv is not None and valid_ds.y is not None else None
    if labelled and xv is not None and yv is None:
        xv = None
    net.prepare(x.to(dev))
    meta = {"model": name, "config": config_to_dict(config), "data": data_info, **(extra_meta or {})}
    t0 = time.perf_counter()
    trainer = Trainer(net, config, run_dir=run_dir, checkpoint_meta=meta, progress=progress, log=log,
                      device=dev, desc=desc, callbacks=callbacks)
    trainer.fit(x, xv, y, yv)
    seconds = time.perf_counter() - t0
    meta["trainer"] = {"epoch": trainer.state.epoch, "history": trainer.state.history}
    if run_dir is not None:
        trainer.save()
        write_run_files(run_dir, trainer, run_summary(name, config, data_info, trainer, net, dev, seconds,
                                                      **(extra_meta or {})))
    net.eval()
    return Run(run_dir=run_dir, name=name, model=net, meta=meta)  # type: ignore[arg-type]


def _encoder_values(ae_model, values: dict[str, Any], what: str) -> dict[str, Any]:
    """The classifier config values that rebuild ``ae_model``'s encoder; ConfigError on conflicts."""
    spec = dense_encoder_spec(ae_model, what)
    if values.get("arch", "dense") != "dense":
        raise ConfigError(f"{what}: a pretrained encoder is dense; arch={values['arch']!r} cannot take it")
    for key, val in spec.items():
        given = values.get(key)
        if given is not None and key != "arch":
            coerced = getattr(make_config(ClassifierConfig, {key: given}, validate=False), key)
            if coerced != val:
                raise ConfigError(f"{what}: the autoencoder's encoder has {key} = {val!r}, which the "
                                  f"classifier must keep; drop the {key} = {given!r} override")
    return {**values, **spec}


def train_classifier(data, labeled: int | None = None, encoder_from: str | Path | None = None,
                     freeze_epochs: int | None = None, *, out: str | Path | None = None,
                     overrides: dict[str, Any] | None = None, config_file: str | Path | None = None,
                     valid_fraction: float | None = None, labels: str | Path | None = None,
                     resume: bool = False, progress: bool | None = None, log: Log | None = None,
                     device: str = "auto", overwrite: bool = False, tensorboard: bool = False) -> Run:
    """Train the classifier on ``data``, optionally on ``labeled`` samples only and from the encoder
    of the autoencoder run ``encoder_from`` (frozen for ``freeze_epochs``, then fine-tuned).

    ``n_classes`` defaults to the data's number of classes. The encoder's sizes, activation and
    input normalisation come from the AE's config (overriding them otherwise is a ConfigError).
    Everything is validated before anything is written. ``tensorboard`` also logs each epoch's
    scalars to ``RUN_DIR/tensorboard``.
    """

    log = log if log is not None else _stderr
    values = {k: v for k, v in (overrides or {}).items() if v is not None}
    file_values = load_config_file(config_file) if config_file is not None else {}
    if encoder_from is None:
        encoder_from = values.get("encoder_from") or file_values.get("encoder_from") or None
    if freeze_epochs is not None:
        if isinstance(freeze_epochs, bool) or freeze_epochs < 0:
            raise ConfigError(f"--freeze-epochs {freeze_epochs!r}: must be >= 0")
        values["freeze_epochs"] = freeze_epochs
    if resume and labeled is not None:
        raise ConfigError("--resume is not supported with --labeled (a classifier on a few labels trains in "
                          "seconds): start a new run")

    ds = data if isinstance(data, Dataset) else load_data(data, labels=labels)
    if ds.y is None:
        raise DataError(f"{ds.name}: the classifier needs labels and this data has none (give --labels FILE)")
    if "n_classes" not in values and "n_classes" not in file_values:
        values["n_classes"] = n_classes_of(ds)

    ae_run: Run | None = None
    if encoder_from is not None:
        what = f"--encoder-from {encoder_from}"
        ae_run = load_run(encoder_from)
        values = _encoder_values(ae_run.model, values, f"{what} ({ae_run.name})")
        values["encoder_from"] = str(encoder_from)

    if labeled is None:
        if not resume:
            # validate the copy (and the labels) before `train` writes the run folder
            probe_cfg = resolve_config("classifier", config_file=config_file, overrides=values)
            probe_cfg.input_shape = list(ds.x.shape[1:])
            probe = Classifier(probe_cfg)
            probe.check_labels(ds.y, f"{ds.name} labels")
            if ae_run is not None:
                init_from_autoencoder(probe, ae_run)
        return train("classifier", ds, out=out, overrides=values, config_file=config_file, resume=resume,
                     valid_fraction=valid_fraction, progress=progress, log=log, device=device, overwrite=overwrite,
                     tensorboard=tensorboard)

    config = resolve_config("classifier", config_file=config_file, overrides=values)
    config.input_shape = list(ds.x.shape[1:])
    vf = 0.1 if valid_fraction is None else valid_fraction
    pool, valid = train_valid_split(ds, vf, seed=config.seed)   # the held-out split an ordinary run holds out
    if labeled > len(pool):
        raise DataError(f"--labeled {labeled}: larger than the {len(pool)} training samples of {ds.name}"
                        + (f" ({len(ds)} less the {len(valid)} held out for validation)" if valid is not None else ""))
    sub = labeled_subset(pool, labeled, seed=config.seed)
    info = describe_data(ds, sub, valid, vf, labeled=labeled, n_pool=len(pool))
    setup = (lambda net: init_from_autoencoder(net, ae_run)) if ae_run is not None else None
    extra = {"pretraining": _provenance(ae_run)} if ae_run is not None else None
    callbacks = []
    if tensorboard:                      # a run on a labelled subset never resumes: a fresh log
        from ..report.tensorboard import TensorBoardLogger
        callbacks.append(TensorBoardLogger(valid if valid is not None else sub, seed=config.seed, fresh=True))
    return fit_model("classifier", config, sub, valid, data_info=info, out=out, setup=setup, extra_meta=extra,
                     overwrite=overwrite, progress=progress, log=log, device=device, callbacks=callbacks)


def _provenance(ae_run: Run) -> dict[str, Any]:
    info = ae_run.data_info
    return {"encoder_from": str(ae_run.run_dir.resolve()) if ae_run.run_dir is not None else None,
            "ae_model": ae_run.name, "ae_data": info.get("source"), "ae_fingerprint": info.get("fingerprint"),
            "ae_epochs": ae_run.meta.get("trainer", {}).get("epoch")}


# ------------------------------------------------------------------------------------ inference
def predict(run: Run, x: np.ndarray, *, proba: bool = False, batch_size: int = 4096,
            progress: bool | None = None) -> np.ndarray:
    """Class indices (int64, (N,)) or probabilities (float32, (N, n_classes)) for ``x``."""
    model = run.model
    if Capability.CLASSIFIES not in model.capabilities:
        raise ConfigError(f"model {run.name!r} is not a classifier: it has no predict() "
                          f"(train one with `latentforge train-classifier`)")
    model.check_data(x)
    p = run.batched(model.predict_proba, x, batch_size, progress, "predict")
    if proba:
        return p.astype(np.float32).reshape(len(x), -1)
    return p.reshape(len(x), -1).argmax(1).astype(np.int64)


def accuracy(run: Run, ds) -> float:
    if ds.y is None:
        raise DataError(f"{ds.name}: no labels to measure accuracy against")
    return float((predict(run, ds.x) == ds.y).mean()) if len(ds) else math.nan


# ------------------------------------------------------------------------------------ the exercise
def pretraining_experiment(data, *, labeled: int = 500, ae: str = "stacked-ae", seeds: int = 3,
                           ae_epochs: int | None = None, epochs: int | None = None, freeze_epochs: int = 10,
                           test_fraction: float = 0.2, ae_overrides: dict[str, Any] | None = None,
                           overrides: dict[str, Any] | None = None, out: str | Path | None = None,
                           labels: str | Path | None = None, base_seed: int = 0, progress: bool | None = None,
                           log: Log | None = None, device: str = "auto") -> dict[str, Any]:
    """The chapter's exercise: for each seed, train ``ae`` on every training image (no labels),
    then the same classifier on ``labeled`` labelled images from scratch and from the AE's encoder
    (frozen for ``freeze_epochs``, then fine-tuned; the same total ``epochs``); report the accuracy
    on a fixed held-out test split (``test_fraction`` of the data, the same for every seed).

    ``out``: keep every run there (``seed-K/ae``, ``seed-K/scratch``, ``seed-K/pretrained``);
    without it everything stays in memory. Returns the results as a dict (JSON-ready).
    """

    log = log if log is not None else _stderr
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"--seeds {seeds!r}: must be >= 1")
    for flag, val in (("--ae-epochs", ae_epochs), ("--epochs", epochs)):
        if val is not None and val < 1:
            raise ConfigError(f"{flag} {val}: must be >= 1")
    if freeze_epochs < 0:
        raise ConfigError(f"--freeze-epochs {freeze_epochs}: must be >= 0")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"--test-fraction {test_fraction}: must be in (0, 1)")
    ds = data if isinstance(data, Dataset) else load_data(data, labels=labels)
    if ds.y is None:
        raise DataError(f"{ds.name}: the experiment needs labels (for the classifier and the test accuracy) "
                        f"and this data has none (give --labels FILE)")

    # validate everything before the first epoch
    ae_cls = get_model_class(ae)
    ae_values = {k: v for k, v in (ae_overrides or {}).items() if v is not None}
    if ae_epochs is not None:
        ae_values["epochs"] = ae_epochs
    ae_cfg0 = make_model_config(ae, ae_values)
    ae_cfg0.input_shape = list(ds.x.shape[1:])
    probe_ae = ae_cls(ae_cfg0)
    clf_values = {k: v for k, v in (overrides or {}).items() if v is not None}
    clf_values.setdefault("n_classes", n_classes_of(ds))
    if epochs is not None:
        clf_values["epochs"] = epochs
    clf_values = _encoder_values(probe_ae, clf_values, f"--ae {ae}")
    clf_cfg0 = make_model_config("classifier", {**clf_values, "freeze_epochs": freeze_epochs})
    if freeze_epochs > clf_cfg0.epochs:
        raise ConfigError(f"--freeze-epochs {freeze_epochs}: more than the classifier's {clf_cfg0.epochs} epochs")
    clf_cfg0.input_shape = list(ds.x.shape[1:])
    Classifier(clf_cfg0).check_labels(ds.y, f"{ds.name} labels")
    pool, test = train_valid_split(ds, test_fraction, seed=base_seed)   # fixed for every seed
    assert test is not None
    if labeled > len(pool):
        raise DataError(f"--labeled {labeled}: larger than the {len(pool)} training samples of {ds.name} "
                        f"({len(ds)} less the {len(test)} of the test split)")
    labeled_subset(pool, labeled, seed=0)   # checks n against the classes
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise DataError(f"{out}: exists and is not a folder")
    probe_ae.check_data(pool.x, ds.name)

    unlabelled = Dataset(x=pool.x, y=None, name=ds.name, sample_shape=ds.sample_shape, is_image=ds.is_image,
                         class_names=ds.class_names)

    def quiet(msg: str) -> None:
        pass
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for i in range(seeds):
        seed = base_seed + i
        sdir = (out / f"seed-{seed}") if out is not None else None
        t0 = time.perf_counter()
        ae_cfg = make_model_config(ae, {**ae_values, "seed": seed})
        ae_info = describe_data(ds, unlabelled, None, 0.0, role="unlabelled training images", test_fraction=test_fraction,
                             test_seed=base_seed)
        ae_run = fit_model(ae, ae_cfg, unlabelled, None, data_info=ae_info, out=sdir / "ae" if sdir else None,
                           save=sdir is not None, overwrite=True, progress=progress, log=quiet, device=device,
                           desc=f"seed {seed} {ae}")
        ae_loss = ae_run.history[-1]["train_loss"] if ae_run.history else math.nan
        t_ae = time.perf_counter() - t0
        sub = labeled_subset(pool, labeled, seed=seed)
        # valid_fraction None: the validation set is the experiment's test split (test_seed, not the run's seed)
        info = describe_data(ds, sub, test, None, labeled=labeled, n_pool=len(pool), test_fraction=test_fraction,
                          test_seed=base_seed, role="validation = the experiment's test split")
        row: dict[str, Any] = {"seed": seed, "ae_loss": ae_loss, "ae_seconds": t_ae}
        for variant in ("scratch", "pretrained"):
            t1 = time.perf_counter()
            cfg_values = {**clf_values, "seed": seed, "freeze_epochs": freeze_epochs if variant == "pretrained" else 0}
            if variant == "pretrained" and ae_run.run_dir is not None:
                cfg_values["encoder_from"] = str(ae_run.run_dir)
            cfg = make_model_config("classifier", cfg_values)
            setup = (lambda net, ae=ae_run: init_from_autoencoder(net, ae.model)) if variant == "pretrained" else None
            run = fit_model("classifier", cfg, sub, test, data_info=info, setup=setup,
                            out=sdir / variant if sdir else None, save=sdir is not None, overwrite=True,
                            extra_meta={"pretraining": _provenance(ae_run)} if variant == "pretrained" else None,
                            progress=progress, log=quiet, device=device, desc=f"seed {seed} {variant}")
            acc = accuracy(run, test)
            row[variant] = acc
            row[f"{variant}_seconds"] = time.perf_counter() - t1
            row[f"{variant}_history"] = [h.get("valid_accuracy") for h in run.history]
        log(f"seed {seed}: {ae} loss {ae_loss:.4f} ({t_ae:.1f}s); test accuracy scratch {row['scratch']:.4f}, "
            f"pretrained {row['pretrained']:.4f}")
        rows.append(row)

    def stats(key: str) -> dict[str, Any]:
        vals = np.array([r[key] for r in rows], dtype=float)
        return {"accuracy": vals.tolist(), "mean": float(vals.mean()),
                "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}

    summary = {"scratch": stats("scratch"), "pretrained": stats("pretrained")}
    gains = np.array([r["pretrained"] - r["scratch"] for r in rows])
    return {
        "experiment": "pretraining", "data": ds.name, "n_samples": len(ds), "n_pool": len(pool), "n_test": len(test),
        "labeled": labeled, "ae": ae, "seeds": [r["seed"] for r in rows],
        "settings": {"ae_config": {k: v for k, v in config_to_dict(make_model_config(ae, ae_values)).items()
                                   if k != "input_shape"},
                     "classifier_config": {k: v for k, v in config_to_dict(clf_cfg0).items() if k != "input_shape"},
                     "test_fraction": test_fraction, "test_seed": base_seed},
        "results": summary,
        "gain": {"mean": float(gains.mean()), "std": float(gains.std(ddof=1)) if len(gains) > 1 else 0.0,
                 "wins": int((gains > 0).sum())},
        "per_seed": rows, "seconds": time.perf_counter() - t_start, "out": str(out) if out is not None else None,
        "hardware": hardware(resolve_device(device)), "version": __version__,
    }


def format_table(result: dict[str, Any]) -> str:
    """The experiment's result as a small text table (accuracy in %, mean ± std over seeds)."""
    r = result["results"]
    n = len(result["seeds"])
    lines = [f"{result['ae']} pretraining, {result['labeled']} labels, {result['n_test']} test images "
             f"({result['data']}), {n} seed{'s' if n > 1 else ''}",
             f"{'classifier':<12} {'test accuracy':>20}   per seed"]
    for key in ("scratch", "pretrained"):
        s = r[key]
        per = " ".join(f"{100 * a:.2f}" for a in s["accuracy"])
        lines.append(f"{key:<12} {100 * s['mean']:>10.2f} ± {100 * s['std']:<6.2f}%   {per}")
    g = result["gain"]
    lines.append(f"{'gain':<12} {100 * g['mean']:>+10.2f} ± {100 * g['std']:<6.2f}%   "
                 f"pretrained better in {g['wins']}/{n} seeds; {result['seconds']:.0f}s")
    return "\n".join(lines)
