"""Classifier commands: ``train-classifier``, ``predict`` and ``experiment pretraining`` (SPEC 5,
the chapter's first exercise: unsupervised pretraining with few labels)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..cli import ClassesOpt, ExcludeClassesOpt, LabelsOpt, _load, _out_dir_ok, _overrides, _print_json, app, save_array
from ..errors import ConfigError, DataError


def _experiment_app() -> typer.Typer:
    """The ``experiment`` group, shared with any other module that adds experiments to it."""
    for info in app.registered_groups:
        if info.name == "experiment" and info.typer_instance is not None:
            return info.typer_instance
    group = typer.Typer(help="Reproduce the chapter's experiments and exercises end to end.", no_args_is_help=True)
    app.add_typer(group, name="experiment")
    return group


experiment_app = _experiment_app()


@app.command("train-classifier")
def train_classifier_cmd(
    data: str = typer.Option("digits", "--data", "-d", help="Labelled data source (built-in name or path)."),
    labels: Optional[Path] = LabelsOpt,
    classes: Optional[str] = ClassesOpt,
    exclude_classes: Optional[str] = ExcludeClassesOpt,
    labeled: Optional[int] = typer.Option(None, "--labeled", help="Train on N labelled samples only (stratified, "
                                          "seeded); the held-out validation split stays. Default: all labels."),
    encoder_from: Optional[Path] = typer.Option(None, "--encoder-from", help="Start from the encoder of this "
                                                "autoencoder run (stacked-ae, tied-ae, denoising-ae, sparse-ae...)."),
    freeze_epochs: Optional[int] = typer.Option(None, "--freeze-epochs", help="Keep the encoder frozen for the "
                                                "first E epochs, then fine-tune everything."),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="Epochs (default 30)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Batch size (default 32)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default 1e-3, Nadam)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (also picks the labelled subset)."),
    sets: list[str] = typer.Option([], "--set", "-s", help="Config override key=value (repeatable), e.g. "
                                   "--set arch=conv --set head_hidden_sizes=64."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Config file (.toml, .yaml, .json)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/classifier-TIMESTAMP)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (not with --labeled)."),
    valid_fraction: Optional[float] = typer.Option(None, "--valid-fraction",
                                                   help="Held-out share for validation (default 0.1)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N samples."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
) -> None:
    """Train the classifier (optionally on a few labels, from a pretrained autoencoder's encoder)."""
    from ..train.pretraining import train_classifier
    values = _overrides(sets, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    ds = _load(data, labels, limit, classes, exclude_classes)
    run = train_classifier(ds, labeled=labeled, encoder_from=encoder_from, freeze_epochs=freeze_epochs, out=out,
                           overrides=values, config_file=config, valid_fraction=valid_fraction, resume=resume,
                           progress=progress, device=device, overwrite=overwrite)
    last = run.history[-1] if run.history else {}
    shown = " ".join(f"{k}={v:.4f}" for k, v in last.items()
                     if k.endswith(("loss", "accuracy")) and isinstance(v, float))
    print(f"trained classifier -> {run.run_dir} ({shown})")


@app.command("predict")
def predict_cmd(run_dir: Path = typer.Argument(..., help="A classifier run folder."),
                data: str = typer.Option(..., "--data", "-d", help="Data source to classify."),
                labels: Optional[Path] = LabelsOpt,
                classes: Optional[str] = ClassesOpt,
                exclude_classes: Optional[str] = ExcludeClassesOpt,
                out: Path = typer.Option(..., "--out", "-o", help="Output .npy: int64 labels (N,), or with "
                                         "--proba float32 probabilities (N, n_classes)."),
                proba: bool = typer.Option(False, "--proba", help="Write class probabilities instead of labels."),
                batch_size: int = typer.Option(4096, "--batch-size", "-b", min=1),
                device: str = typer.Option("cpu", "--device")) -> None:
    """Classify data with a trained classifier; prints the accuracy when the data has labels."""
    import numpy as np

    from ..models.capabilities import Capability
    from ..train import load_run
    from ..train.pretraining import predict
    _out_dir_ok(out)
    if out.suffix != ".npy":
        raise DataError(f"{out}: output must be a .npy file")
    run = load_run(run_dir, device)
    if Capability.CLASSIFIES not in run.model.capabilities:
        raise ConfigError(f"{run_dir}: model {run.name!r} is not a classifier (predict needs a classifier run)")
    ds = _load(data, labels, classes=classes, exclude_classes=exclude_classes)
    result = predict(run, ds.x, proba=proba, batch_size=batch_size)
    save_array(out, result)
    msg = f"wrote {out} {result.shape}"
    if ds.y is not None:
        pred = result.argmax(1) if proba else result
        msg += f"; accuracy {float(np.mean(pred == ds.y)):.4f} on {len(ds)} labelled samples"
    print(msg)


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

    from ..train.checkpoint import _json_default, atomic_write_bytes
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


__all__ = ["experiment_app", "train_classifier_cmd", "predict_cmd", "pretraining_cmd"]
