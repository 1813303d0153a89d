"""``latentforge score``: one anomaly score per sample (higher = more anomalous).

    latentforge score RUN --data D --out scores.npy [--method M] [--threshold-at 0.95 | --contamination 0.05]

The methods a run can score with depend on its model (``latentforge.eval.anomaly.capabilities``):
reconstruction error (autoencoders), negative ELBO and importance-weighted NLL (VAEs), the
discriminator (GANs), the denoising error (DDPM), the distance to the k nearest training codings
(any encoder) and the classifier's confidence. With a threshold the scores also become 0/1 flags,
the threshold being that quantile of the scores of the run's own normal data (its held-out split),
recorded in ``RUN/anomaly.json``. When the data has labels and the run was trained on some classes
only (``--classes`` / ``--exclude-classes``), the samples of the other classes are the known
anomalies: the command reports the AUROC and average precision and draws ``RUN/anomaly-roc.png``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import ConfigError
from .app import app
from .common import ClassesOpt, ExcludeClassesOpt, LabelsOpt, _load, _npy_out, save_array


def _known_anomalies(run, ds):
    """0/1 labels (1 = a class the run was not trained on) when the data's labels tell, else None."""
    import numpy as np
    recorded = run.data_info.get("class_filter")
    if not recorded or ds.y is None:
        return None
    if recorded.get("classes") is not None:
        normal = np.isin(ds.y, recorded["classes"])
    else:
        normal = ~np.isin(ds.y, recorded["exclude_classes"])
    labels = (~normal).astype(np.uint8)
    return labels if 0 < labels.sum() < len(labels) else None


def _trained_rows(run, ds, filtered: bool):
    """Boolean mask of the rows of ``ds`` the run trained on (its own, unfiltered source), else None:
    those are left out of the AUROC (the run's held-out normal samples and every anomaly stay)."""
    import numpy as np

    from ..data import Dataset, train_valid_split
    from ..data.classes import apply_recorded
    info = run.data_info
    if filtered or ds.name != info.get("source") or not info.get("class_filter"):
        return None
    index = Dataset(x=np.arange(len(ds), dtype=np.float32)[:, None], y=ds.y, name=ds.name, sample_shape=(1,),
                    is_image=False, class_names=ds.class_names)
    normal = apply_recorded(index, info["class_filter"])
    train, _valid = train_valid_split(normal, info.get("valid_fraction") or 0.0, seed=run.config.seed)
    mask = np.zeros(len(ds), bool)
    mask[train.x[:, 0].astype(np.int64)] = True
    return mask


_SCORE_HELP = (
    "Anomaly scores of --data under a trained model: one per sample, higher = more anomalous.\n\n"
    "Methods by model: reconstruction (autoencoders: per-value BCE or MSE, as the loss), elbo and iw-nll "
    "(VAEs), discriminator (GANs), denoising (DDPM: noise-prediction error at 10/25/50 % of the schedule), "
    "knn (anything with an encoder: mean distance to the --neighbors nearest codings of the run's training "
    "split) and confidence (classifiers: 1 - the largest class probability).\n\n"
    "--threshold-at Q (or --contamination C) also writes 0/1 flags, the threshold being the Q quantile of the "
    "scores of the run's own held-out split, recorded in RUN/anomaly.json. When the run was trained with "
    "--classes / --exclude-classes and the data has labels, the other classes are known anomalies: the "
    "AUROC is printed and RUN/anomaly-roc.png drawn (the report shows both).")


@app.command("score", help=_SCORE_HELP)
def score_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder (trained on normal data)."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data to score (default: the run's own source, "
                                       "all of it)."),
    labels: Optional[Path] = LabelsOpt,
    classes: Optional[str] = ClassesOpt,
    exclude_classes: Optional[str] = ExcludeClassesOpt,
    out: Path = typer.Option(..., "--out", "-o", help="Output .npy: one float64 score per sample (N,), "
                             "higher = more anomalous."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="reconstruction, elbo, iw-nll, "
                                         "discriminator, denoising, knn or confidence (default: the model's "
                                         "first; see `latentforge score --help`)."),
    threshold_at: Optional[float] = typer.Option(None, "--threshold-at", help="Flag samples scoring above this "
                                                 "quantile (e.g. 0.95) of the run's normal data's scores; writes "
                                                 "the 0/1 flags and records the threshold in RUN/anomaly.json."),
    contamination: Optional[float] = typer.Option(None, "--contamination", help="Expected share of anomalies: "
                                                  "the same as --threshold-at 1-C."),
    flags_out: Optional[Path] = typer.Option(None, "--flags", help="Output .npy of the 0/1 flags (uint8; default "
                                             "OUT with -flags before .npy)."),
    k: int = typer.Option(100, "--k", help="Importance samples per image for iw-nll."),
    neighbors: int = typer.Option(5, "--neighbors", help="Nearest training codings for knn."),
    error: Optional[str] = typer.Option(None, "--error", help="reconstruction: bce or mse (default: the "
                                        "model's loss)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random draws (elbo, iw-nll, denoising)."),
    batch_size: int = typer.Option(512, "--batch-size", "-b", min=1),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Anomaly scores of --data under a trained model (the command's help: ``_SCORE_HELP``)."""
    import numpy as np

    from ..eval import anomaly as an
    from ..train import load_run
    _npy_out(out)
    quantile = an.check_quantile(threshold_at, contamination)
    if flags_out is None and quantile is not None:
        flags_out = out.with_name(out.stem + "-flags.npy")
    if flags_out is not None:
        if quantile is None:
            raise ConfigError("--flags: give --threshold-at or --contamination to turn scores into flags")
        _npy_out(flags_out)
    if error is not None and error not in ("bce", "mse"):
        raise ConfigError(f"--error {error!r}: expected bce or mse")
    run = load_run(run_dir, device)
    method = an.check_method(run.model, method)
    if error is not None and method != "reconstruction":
        raise ConfigError(f"--error: only for --method reconstruction (not {method})")
    src = data or run.data_info.get("source")
    if src is None:
        raise ConfigError(f"{run_dir}: the run does not record its data; give --data")
    ds = _load(src, labels, classes=classes, exclude_classes=exclude_classes)
    opts: dict[str, Any] = dict(method=method, k=k, n_neighbors=neighbors, error=error, seed=seed,
                                batch_size=batch_size)
    scores = an.anomaly_scores(run, ds.x, y=ds.y, **opts)
    save_array(out, scores)
    msg = f"wrote {out} ({len(scores)} {method} scores: median {np.median(scores):.4g}, max {np.max(scores):.4g})"
    if len(scores) == 0:
        msg = f"wrote {out} (no samples)"
    print(msg)

    entry: dict[str, Any] | None = None
    if quantile is not None:
        cal, described = an.calibration_data(run)
        normal = an.anomaly_scores(run, cal.x, y=cal.y, **opts)
        threshold = an.fit_threshold(normal, quantile)
        flagged = an.flags(scores, threshold)
        save_array(flags_out, flagged)
        entry = {"method": method, "threshold": threshold, "quantile": quantile, "calibration": described,
                 "options": {k_: v for k_, v in opts.items() if k_ != "batch_size" and v is not None},
                 "normal_scores": an.summarize(normal)}
        print(f"threshold {threshold:.4g} (the {quantile:g} quantile of the scores of the {described}); "
              f"{int(flagged.sum())} of {len(flagged)} samples flagged ({100 * flagged.mean() if len(flagged) else 0:.1f} %) "
              f"-> {flags_out}")
    known = _known_anomalies(run, ds)
    trained = _trained_rows(run, ds, classes is not None or exclude_classes is not None)
    if known is not None and trained is not None:
        known = None if not (known[~trained] == 0).any() else known
    if known is not None:
        kept = ~trained if trained is not None else np.ones(len(known), bool)
        known, scored = known[kept], scores[kept]
        from ..data.classes import describe_filter
        auroc, ap = an.roc_auc(known, scored), an.average_precision(known, scored)
        fpr, tpr = an.roc_curve(known, scored)
        evaluation = {"data": ds.name, "normal": describe_filter(run.data_info.get("class_filter")),
                      "n_normal": int((known == 0).sum()), "n_anomalies": int(known.sum()),
                      "left_out": "the samples the run trained on" if trained is not None else None,
                      "auroc": auroc, "average_precision": ap, "roc": {"fpr": fpr, "tpr": tpr}}
        entry = dict(entry or an.load_thresholds(run.run_dir)["methods"].get(method) or {"method": method})
        entry["evaluation"] = evaluation
        from ..report.anomaly import plot_roc_curves
        png = plot_roc_curves({f"{method} (AUROC {auroc:.3f})": (fpr, tpr)}, run.run_dir / an.ANOMALY_ROC_PNG,
                              title=f"{run.name}, normal: {evaluation['normal']}")
        print(f"known anomalies (labels outside the run's {evaluation['normal']}): AUROC {auroc:.4f}, "
              f"average precision {ap:.4f} on {len(known)} samples"
              f"{' (not those the run trained on)' if trained is not None else ''}; ROC curve -> {png}")
    if entry is not None:
        print(f"recorded in {an.save_threshold(run.run_dir, method, entry)}")
