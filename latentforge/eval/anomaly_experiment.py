"""``latentforge experiment anomaly``: one detector per normal class, scored on a held-out split.

Protocols (Ruff et al., ICML 2018, "Deep One-Class Classification", for ``one-class``):

* ``one-class``: the normal data is one class; every other class is an anomaly.
* ``leave-one-out``: the normal data is every class but one; that one is the anomaly.

The data is split once (``test_fraction``, seeded, the same for every detector and seed); each
detector trains on the normal samples of the training part only, and is judged on the whole test
part by AUROC and average precision (anomaly = positive). Every method a model supports is scored
(``latentforge.eval.anomaly``), then combined: over seeds (the seed ensemble: the mean of the
seeds' scores, each standardised against its own training scores) and over methods (the
detector's ``ensemble`` row).

The per-model defaults for anomaly work (:data:`DETECTORS`) were chosen on mnist-4k (bench/README.md):
a conv AE with a small bottleneck (32-16-8 filters: a 3x3x8 code) trained with Adam, whose best
score is the distance to the nearest training codings; the chapter's VAE, whose reconstruction
error (MSE) beats its IW-NLL here; and, when the normal data has several labelled classes
(``leave-one-out``), a small conv classifier of the normal classes, whose confidence and feature
distances spot a class it never saw. Epochs follow the size of the normal data (about
:data:`EPOCH_SAMPLES` samples seen per detector, within the model's bounds).
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data import train_valid_split
from ..errors import ConfigError, DataError
from ..models import get_model_class
from ..train.adversarial import AdversarialTrainer
from ..train.run import resolve_config, resolve_device
from ..train.trainer import Trainer
from . import anomaly as an

PROTOCOLS = ("one-class", "leave-one-out")
#: published Deep SVDD (one-class) AUROCs on MNIST, per digit 0-9 (Ruff et al., 2018, Table 1)
DEEP_SVDD_MNIST = (98.0, 99.7, 91.7, 91.9, 94.9, 88.5, 98.3, 94.6, 93.9, 96.5)
DEEP_SVDD_MEAN = 94.8
DEEP_SVDD_TRAIN_PER_CLASS = 6000          # MNIST's ~6,000 training images per digit
EPOCH_SAMPLES = 12_000                   # samples a detector sees in training (epochs = this / n, bounded)


@dataclass
class Detector:
    """How a model is trained and scored for anomaly work."""

    overrides: dict[str, Any]
    methods: list[str]                     # scored, in this order; the first is the model's default
    epochs: tuple[int, int] = (5, 40)      # bounds of the epochs chosen from the data's size
    score_opts: dict[str, dict[str, Any]] = field(default_factory=dict)
    needs_classes: int = 1                 # normal classes needed (the classifier: 2)


DETECTORS: dict[str, Detector] = {
    "conv-ae": Detector({"filters": [32, 16, 8], "optimizer": "adam", "lr": 1e-3, "batch_size": 32},
                        ["knn", "reconstruction"], score_opts={"reconstruction": {"error": "mse"}}),
    "vae": Detector({"batch_size": 32}, ["reconstruction", "iw-nll", "knn"], epochs=(10, 100),
                    score_opts={"reconstruction": {"error": "mse"}, "iw-nll": {"k": 50}}),
    "stacked-ae": Detector({"optimizer": "adam", "lr": 1e-3, "batch_size": 32}, ["reconstruction", "knn"],
                           score_opts={"reconstruction": {"error": "mse"}}),
    "classifier": Detector({"arch": "conv", "batch_size": 32}, ["knn", "confidence"], epochs=(5, 20),
                           needs_classes=2),
}


def detector_for(model: str) -> Detector:
    """The anomaly defaults of ``model``; another registered model gets its own config and every
    score it supports."""
    if model in DETECTORS:
        return DETECTORS[model]
    cls = get_model_class(model)
    if cls.uses_labels:
        raise ConfigError(f"--models {model}: a conditional model needs the label of what it scores; "
                          f"use an unconditional one")
    return Detector({}, [], epochs=(1, 1000))       # the model's own config; every score it supports


def _epochs(det: Detector, n: int, model: str, fixed: int | None) -> int:
    if fixed is not None:
        return fixed
    lo, hi = det.epochs
    return int(min(hi, max(lo, round(EPOCH_SAMPLES / max(1, n)))))


def fit_detector(model: str, x: np.ndarray, y: np.ndarray | None, seed: int, *, epochs: int | None = None,
                 overrides: dict[str, Any] | None = None, device: str = "cpu", progress: bool | None = False,
                 log: Callable[[str], None] | None = None):
    """Train ``model`` on the normal samples ``x`` (``y``: their labels, for the classifier) in
    memory with its anomaly defaults; returns the trained model (eval mode)."""
    det = detector_for(model)
    cls = get_model_class(model)
    values = {**det.overrides, **(overrides or {}), "seed": int(seed)}
    fixed = (overrides or {}).get("epochs", epochs)
    if fixed is not None or model in DETECTORS:     # other models keep their own epochs unless told
        values["epochs"] = _epochs(det, len(x), model, fixed)
    yt = None
    if model == "classifier":
        if y is None:
            raise DataError("the classifier detector needs the normal data's labels")
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ConfigError("the classifier detector needs at least 2 normal classes (protocol leave-one-out)")
        values["n_classes"] = len(classes)
        yt = torch.as_tensor(y_idx, dtype=torch.long)
    values["batch_size"] = min(int(values.get("batch_size", 32)), len(x))
    config = resolve_config(model, overrides=values)
    config.input_shape = list(x.shape[1:])
    dev = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = cls(config)
        net.check_data(x, "normal data")
        xt = torch.from_numpy(np.ascontiguousarray(x))
        net.to(dev)
        net.prepare(xt.to(dev))
        trainer_cls = AdversarialTrainer if getattr(net, "adversarial", False) else Trainer
        trainer = trainer_cls(net, config, run_dir=None, progress=progress, log=log or (lambda m: None),
                              device=dev, desc=f"{model} seed {seed}")
        trainer.fit(xt, None, yt, None)
    return net.eval()


def _stats(values: list[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if not math.isnan(x)], np.float64)
    if len(v) == 0:
        return {"mean": math.nan, "std": math.nan}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def anomaly_experiment(ds, *, protocol: str = "one-class", models: list[str] | None = None, seeds: int = 1,
                       normal: list[int] | None = None, test_fraction: float = 0.2, epochs: int | None = None,
                       overrides: dict[str, dict[str, Any]] | None = None, device: str = "cpu",
                       progress: bool | None = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the protocol on ``ds`` (labelled); returns the results (see :func:`format_table`).

    ``normal``: the classes that take the normal role in turn (default: every class of the data);
    ``overrides``: per model, config values on top of its anomaly defaults.
    """
    log = log if log is not None else (lambda m: print(m, file=sys.stderr))
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    if ds.y is None:
        raise DataError(f"{ds.name}: the anomaly experiment needs labelled data (give --labels)")
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: must be >= 1")
    models = list(models or ["conv-ae"])
    dets = {m: detector_for(m) for m in models}
    present = sorted(int(c) for c in np.unique(ds.y))
    if len(present) < 2:
        raise DataError(f"{ds.name}: the anomaly experiment needs at least 2 classes (has {present})")
    roles = present if normal is None else list(normal)
    missing = [c for c in roles if c not in present]
    if missing:
        raise DataError(f"--normal {','.join(map(str, missing))}: no sample of {ds.name} has this label "
                        f"(labels {', '.join(map(str, present))})")
    train, test = train_valid_split(ds, test_fraction, seed=0)
    if test is None:
        raise ConfigError(f"--test-fraction {test_fraction}: leaves no test samples")
    names = ds.class_names
    t0, c0 = time.perf_counter(), time.process_time()
    rows: dict[str, dict[str, Any]] = {}          # detector row ("model:method") -> per class
    curves: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    n_normal_train: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for c in roles:
        cname = names[c] if names and c < len(names) else str(c)
        in_train = np.isin(train.y, [c]) if protocol == "one-class" else ~np.isin(train.y, [c])
        is_anom = (~np.isin(test.y, [c])) if protocol == "one-class" else np.isin(test.y, [c])
        xn, yn = train.x[in_train], train.y[in_train]
        n_normal_train[str(c)] = len(xn)
        label = is_anom.astype(np.uint8)
        curves[cname] = {}
        default_z: dict[str, list[np.ndarray]] = {}
        for model in models:
            det = dets[model]
            if len(np.unique(yn)) < det.needs_classes:
                skipped[model] = f"needs {det.needs_classes} normal classes ({protocol} has {len(np.unique(yn))})"
                continue
            per_method: dict[str, list[np.ndarray]] = {}
            refs: dict[str, list[np.ndarray]] = {}
            methods = list(det.methods)
            for seed in range(seeds):
                ts = time.perf_counter()
                net = fit_detector(model, xn, yn, seed, epochs=epochs, overrides=(overrides or {}).get(model),
                                   device=device, progress=progress)
                methods = methods or an.capabilities(net)
                for method in methods:
                    opts = dict(det.score_opts.get(method, {}))
                    s_test = an.anomaly_scores(net, test.x, method, reference=xn, seed=seed, **opts)
                    s_ref = an.anomaly_scores(net, xn, method, reference=xn, seed=seed, exclude_self=True, **opts)
                    per_method.setdefault(method, []).append(s_test)
                    refs.setdefault(method, []).append(s_ref)
                    row = rows.setdefault(f"{model}:{method}", {"model": model, "method": method, "classes": {}})
                    row["classes"].setdefault(cname, {"auroc": [], "ap": []})
                    row["classes"][cname]["auroc"].append(an.roc_auc(label, s_test))
                    row["classes"][cname]["ap"].append(an.average_precision(label, s_test))
                shown = ", ".join(f"{m} {rows[f'{model}:{m}']['classes'][cname]['auroc'][-1]:.3f}"
                                  for m in methods)
                log(f"{'normal' if protocol == 'one-class' else 'left out'} {cname}: {model} seed {seed} ({len(xn)} training images, "
                    f"{time.perf_counter() - ts:.1f}s): AUROC {shown}")
            # seed ensembles, and the detector's ensemble over its methods
            ens_scores = []
            for method in methods:
                z = [an.standardize(s, r) for s, r in zip(per_method[method], refs[method])]
                mean_z = np.mean(z, axis=0)
                ens_scores.append(mean_z)
                row = rows[f"{model}:{method}"]["classes"][cname]
                row["seed_ensemble_auroc"] = an.roc_auc(label, mean_z)
                row["seed_ensemble_ap"] = an.average_precision(label, mean_z)
            combined = np.mean(ens_scores, axis=0)
            erow = rows.setdefault(f"{model}:ensemble", {"model": model, "method": "ensemble", "classes": {}})
            erow["classes"][cname] = {"auroc": [], "ap": [], "seed_ensemble_auroc": an.roc_auc(label, combined),
                                      "seed_ensemble_ap": an.average_precision(label, combined)}
            for seed in range(seeds):        # per seed: its methods combined
                zs = np.mean([an.standardize(per_method[m][seed], refs[m][seed]) for m in methods], axis=0)
                erow["classes"][cname]["auroc"].append(an.roc_auc(label, zs))
                erow["classes"][cname]["ap"].append(an.average_precision(label, zs))
            # the figure: each model's default score (its first method), seeds averaged
            curves[cname][f"{model}:{methods[0]}"] = an.roc_curve(label, ens_scores[0])
            default_z[model] = [an.standardize(per_method[methods[0]][k], refs[methods[0]][k])
                                for k in range(seeds)]
        if len(default_z) > 1:           # the models together: their default scores averaged
            arow = rows.setdefault("models:ensemble", {"model": "+".join(default_z), "method": "ensemble",
                                                       "classes": {}})
            both = np.mean([np.mean(z, axis=0) for z in default_z.values()], axis=0)
            arow["classes"][cname] = {
                "auroc": [an.roc_auc(label, np.mean([z[k] for z in default_z.values()], axis=0))
                          for k in range(seeds)],
                "seed_ensemble_auroc": an.roc_auc(label, both), "seed_ensemble_ap": an.average_precision(label, both)}
            arow["classes"][cname]["ap"] = [an.average_precision(label, np.mean([z[k] for z in default_z.values()],
                                                                                axis=0)) for k in range(seeds)]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    table = []
    for key, row in rows.items():
        cls_stats = {}
        for cname, v in row["classes"].items():
            cls_stats[cname] = {"auroc": _stats(v["auroc"]), "average_precision": _stats(v["ap"]),
                                "seed_ensemble_auroc": v.get("seed_ensemble_auroc"),
                                "seed_ensemble_average_precision": v.get("seed_ensemble_ap")}
        per_seed_means = [float(np.nanmean([row["classes"][c]["auroc"][s] for c in row["classes"]]))
                          for s in range(seeds)]
        table.append({"detector": key, "model": row["model"], "method": row["method"], "classes": cls_stats,
                      "mean_auroc": _stats(per_seed_means),
                      "mean_average_precision": _stats([float(np.nanmean([row["classes"][c]["ap"][s]
                                                                          for c in row["classes"]]))
                                                        for s in range(seeds)]),
                      "mean_seed_ensemble_auroc": float(np.nanmean([v["seed_ensemble_auroc"]
                                                                    for v in cls_stats.values()]))})
    table.sort(key=lambda r: -r["mean_auroc"]["mean"])
    class_names = [names[c] if names and c < len(names) else str(c) for c in roles]
    result: dict[str, Any] = {
        "experiment": "anomaly", "protocol": protocol, "data": ds.name, "n": len(ds), "n_train": len(train),
        "n_test": len(test), "test_fraction": test_fraction, "seeds": seeds, "models": models,
        "classes": class_names, "normal_train_images": n_normal_train,
        "detectors": {m: {"defaults": dets[m].overrides,
                          "methods": sorted({r["method"] for r in rows.values() if r["model"] == m}),
                          "epochs": {str(c): _epochs(dets[m], n, m, epochs) for c, n in n_normal_train.items()}}
                      for m in models if m not in skipped},
        "skipped": skipped, "table": table, "roc": curves,
        "best": table[0]["detector"] if table else None,
        "seconds_wall": round(wall, 1), "seconds_cpu": round(cpu, 1),
        "threads": torch.get_num_threads(),
    }
    if protocol == "one-class" and _is_mnist_like(ds):
        result["published"] = {"name": "Deep SVDD (Ruff et al., ICML 2018), one-class MNIST",
                               "auroc": dict(zip([str(i) for i in range(10)], DEEP_SVDD_MNIST)),
                               "mean": DEEP_SVDD_MEAN, "train_images_per_class": DEEP_SVDD_TRAIN_PER_CLASS}
    return result


def _is_mnist_like(ds) -> bool:
    return tuple(ds.sample_shape)[-2:] == (28, 28) and set(int(v) for v in np.unique(ds.y)) <= set(range(10))


def _cell(st: dict[str, float], pct: bool = True) -> str:
    m, s = st["mean"], st["std"]
    if math.isnan(m):
        return "—"
    f = 100.0 if pct else 1.0
    return f"{m * f:.1f}±{s * f:.1f}" if s else f"{m * f:.1f}"


def format_table(result: dict[str, Any], markdown: bool = False) -> str:
    """The per-class AUROC table (in %, mean ± std over seeds), the seed ensemble and the average
    precision, with the published Deep SVDD row for one-class MNIST."""
    classes = result["classes"]
    pub = result.get("published")
    head = ["detector"] + classes + ["mean", "seed ens.", "AP"]
    lines = []
    for row in result["table"]:
        cells = [row["detector"]] + [_cell(row["classes"][c]["auroc"]) if c in row["classes"] else "—"
                                     for c in classes]
        cells += [_cell(row["mean_auroc"]), f"{100 * row['mean_seed_ensemble_auroc']:.1f}",
                  _cell(row["mean_average_precision"])]
        lines.append(cells)
    if pub:
        lines.append(["Deep SVDD (published)"] + [f"{pub['auroc'].get(c, math.nan):.1f}" for c in classes]
                     + [f"{pub['mean']:.1f}", "", ""])
    n_imgs = result["normal_train_images"]
    per = int(np.median(list(n_imgs.values()))) if n_imgs else 0
    note = (f"{result['protocol']} on {result['data']}: AUROC in % (anomaly = positive) on the {result['n_test']} "
            f"test images, mean ± std over {result['seeds']} seed(s); 'seed ens.': the seeds' scores averaged; "
            f"AP: average precision (mean over classes). Normal training images per detector: about {per}.")
    if pub:
        note += (f" Deep SVDD trained on about {pub['train_images_per_class']:,} images per class; this data has "
                 f"about {per} ({pub['train_images_per_class'] // max(1, per)}x fewer).")
    if result.get("skipped"):
        note += " Skipped: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items()) + "."
    note += f" Took {result['seconds_wall']:.0f} s wall, {result['seconds_cpu']:.0f} s CPU."
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        out += ["| " + " | ".join(c for c in cells) + " |" for cells in lines]
        return "\n".join(out) + "\n\n" + note + "\n"
    widths = [max(len(str(r[i])) for r in [head] + lines) for i in range(len(head))]

    def fmt(cells) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head)] + [fmt(c) for c in lines] + ["", note])


__all__ = ["PROTOCOLS", "DETECTORS", "DEEP_SVDD_MNIST", "Detector", "detector_for", "fit_detector",
           "anomaly_experiment", "format_table"]
