"""The ``experiment`` group: the chapter's exercise of unsupervised pretraining (``experiment
pretraining``, SPEC 5) and the anomaly tables (``experiment anomaly``: one-class, Ruff et al., 2018,
and leave-one-out).

    latentforge experiment pretraining --data D --labeled 500 --seeds 3
    latentforge experiment anomaly --data D --protocol one-class|leave-one-out --models conv-ae,vae --seeds 3

The anomaly experiment writes ``results.json``, ``results.md`` and ``roc.png`` (ROC curves per
normal class) into --out.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError, DataError
from .app import experiment_app
from .common import ClassesOpt, ExcludeClassesOpt, LabelsOpt, _load, _out_dir_ok, _overrides, _print_json


@experiment_app.command("pretraining")
def pretraining_cmd(
    data: str = typer.Option("digits", "--data", "-d", help="Labelled data source (labels are used only for the "
                             "classifier's few labelled samples and the test accuracy)."),
    labels: Optional[Path] = LabelsOpt,
    classes: Optional[str] = ClassesOpt,
    exclude_classes: Optional[str] = ExcludeClassesOpt,
    labeled: int = typer.Option(500, "--labeled", help="Labelled training samples for the classifiers."),
    ae: str = typer.Option("stacked-ae", "--ae", help="The autoencoder to pretrain (a dense one: stacked-ae, "
                           "tied-ae, denoising-ae, sparse-ae)."),
    seeds: int = typer.Option(3, "--seeds", help="Repetitions (seeds 0..N-1): AE, labelled subset and inits."),
    ae_epochs: Optional[int] = typer.Option(None, "--ae-epochs", help="AE epochs (default: the AE's own)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="Classifier epochs, frozen ones included "
                                         "(default 30)."),
    freeze_epochs: int = typer.Option(10, "--freeze-epochs", help="Epochs the pretrained encoder stays frozen."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Classifier learning rate (default 1e-3, Nadam)."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Fixed held-out test split (same for all seeds)."),
    sets: list[str] = typer.Option([], "--set", "-s", help="Classifier config override key=value (repeatable)."),
    ae_sets: list[str] = typer.Option([], "--ae-set", help="AE config override key=value (repeatable), "
                                      "e.g. --ae-set noise=dropout."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N samples."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Keep every run here (seed-K/ae, seed-K/scratch, "
                                       "seed-K/pretrained); default: train in memory."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON to this file "
                                            "('-' prints JSON instead of the table)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
) -> None:
    """The chapter's exercise: pretrain an AE on all images, then compare a few-label classifier from scratch with one from its encoder.

    For each seed: the AE trains on every training image (no labels); the classifier trains on
    --labeled samples from scratch, and from the AE's encoder (frozen for --freeze-epochs, then
    fine-tuned); both are scored on a fixed test split. Prints accuracy mean ± std over seeds."""
    import json

    from ..io import atomic_write_bytes
    from ..io import json_default as _json_default
    from ..train.pretraining import format_table, pretraining_experiment
    if json_out is not None and str(json_out) != "-":
        _out_dir_ok(json_out)
    ds = _load(data, labels, limit, classes, exclude_classes)
    result = pretraining_experiment(ds, labeled=labeled, ae=ae, seeds=seeds, ae_epochs=ae_epochs, epochs=epochs,
                                    freeze_epochs=freeze_epochs, test_fraction=test_fraction,
                                    ae_overrides=_overrides(ae_sets), overrides=_overrides(sets, lr=lr), out=out,
                                    progress=progress, device=device)
    if json_out is not None and str(json_out) == "-":
        _print_json(result)
        return
    print(format_table(result))
    if json_out is not None:
        try:
            atomic_write_bytes(json_out, (json.dumps(result, indent=2, default=_json_default) + "\n").encode())
        except OSError as e:
            raise DataError(f"{json_out}: cannot write: {e.strerror or e}") from None
        print(f"wrote {json_out}")



_HELP = ("One detector per normal class, scored on a held-out split: per-class AUROC (mean ± std over seeds), "
         "average precision, and for one-class MNIST the published Deep SVDD AUROCs beside them.\n\n"
         "one-class: the normal data is one class, every other class is an anomaly (Ruff et al., ICML 2018); "
         "leave-one-out: the normal data is every class but one. Each detector trains on the normal samples of "
         "a fixed split (1 - --test-fraction) with its anomaly defaults and is judged on the rest. Writes "
         "results.json, results.md and roc.png into --out.")


@experiment_app.command("anomaly", help=_HELP)
def anomaly_experiment_cmd(
    data: str = typer.Option("digits", "--data", "-d", help="Labelled data (built-in name or path)."),
    labels: Optional[Path] = LabelsOpt,
    classes: Optional[str] = ClassesOpt,
    exclude_classes: Optional[str] = ExcludeClassesOpt,
    protocol: str = typer.Option("one-class", "--protocol", "-p", help="one-class: the normal data is one class, "
                                 "the others are anomalies (Ruff et al., 2018); leave-one-out: the normal data "
                                 "is every class but one."),
    models: str = typer.Option("conv-ae", "--models", "-m", help="Comma-separated detectors: conv-ae, vae, "
                               "stacked-ae, classifier (leave-one-out only) or any unconditional model "
                               "(with its own config)."),
    seeds: int = typer.Option(1, "--seeds", help="Repetitions per detector (seeds 0..N-1); the table shows mean "
                              "± std and the seed ensemble."),
    normal: Optional[str] = typer.Option(None, "--normal", help="Only these classes take the normal (one-class) "
                                         "or left-out (leave-one-out) role, e.g. 3,9 (default: every class)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="Epochs of every detector (default: about "
                                         "12,000 samples seen, within each model's bounds)."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="The fixed held-out test split."),
    sets: list[str] = typer.Option([], "--set", "-s", help="Config override MODEL.key=value (repeatable), e.g. "
                                   "--set conv-ae.filters=32,16,4."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N samples."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for results.json, results.md and "
                                       "roc.png (default runs/anomaly-PROTOCOL-TIMESTAMP)."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON instead of the table."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N, mps or auto."),
    progress: Optional[bool] = typer.Option(False, "--progress/--no-progress", help="Progress bars of training."),
) -> None:
    """The anomaly experiment (the command's help: ``_HELP``)."""
    import datetime as dt

    from ..data.classes import parse_class_list
    from ..eval.anomaly_experiment import DETECTORS, anomaly_experiment, format_table
    from ..io import atomic_write_bytes, atomic_write_json
    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        raise ConfigError("--models: give at least one model, e.g. conv-ae,vae")
    per_model: dict[str, dict] = {}
    for item in _overrides(sets).items():
        key, value = item
        model, dot, field = key.partition(".")
        if not dot or model not in names:
            raise ConfigError(f"--set {key}: expected MODEL.key=value with MODEL one of {', '.join(names)}")
        per_model.setdefault(model, {})[field] = value
    roles = parse_class_list(normal, "--normal")
    if roles is not None and any(isinstance(r, str) for r in roles):
        raise ConfigError(f"--normal {normal}: expected labels such as 3,9")
    if out is None:
        out = Path("runs") / f"anomaly-{protocol}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    ds = _load(data, labels, limit, classes, exclude_classes)
    result = anomaly_experiment(ds, protocol=protocol, models=names, seeds=seeds, normal=roles,
                                test_fraction=test_fraction, epochs=epochs, overrides=per_model, device=device,
                                progress=progress)
    result["defaults_note"] = {m: DETECTORS[m].overrides for m in names if m in DETECTORS}
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "results.json", result)
        atomic_write_bytes(out / "results.md", (f"# Anomaly detection, {protocol}\n\n"
                                               + format_table(result, markdown=True)).encode())
    except OSError as e:
        raise DataError(f"{out}: cannot write: {e.strerror or e}") from None
    from ..report.anomaly import plot_roc_grid
    roc = plot_roc_grid({f"normal {c}" if protocol == "one-class" else f"left out {c}": curves
                         for c, curves in result["roc"].items()}, out / "roc.png",
                        title=f"{protocol} on {Path(str(ds.name)).name}: ROC curves (seeds averaged)")
    if json_out:
        _print_json(result)
        return
    print(format_table(result))
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {roc}")
