"""Training commands: ``train`` (``train classifier`` included, and ``--nproc``), ``train-classifier``
(the same classifier training under its older name) and ``demo``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from .app import app
from .common import _INVOCATION, ClassesOpt, DataOpt, ExcludeClassesOpt, LabelsOpt, _heldout, _load, _overrides

_TRAIN_HELP = (
    "Train MODEL on --data into a run folder (checkpoint, run.json, history.json).\n\n"
    "Without --lr, --set optimizer=NAME (other than the model's own) uses that optimizer's customary lr "
    "(1e-3 for adam, adamw, nadam, rmsprop). A loss that diverges (far above its first epoch's) stops "
    "the run with exit 2, keeping the last good checkpoint (--set divergence_policy=off to go on).\n\n"
    "\b\nExamples:\n"
    "  latentforge train stacked-ae --data digits --epochs 5 --out runs/sae\n"
    "  latentforge train vae --data mnist --set coding_size=2 --out runs/vae\n"
    "  latentforge train stacked-ae --data my.csv --out runs/tab      # a table: standardised per column\n"
    "  latentforge train stacked-ae --set optimizer=adam --data digits  # Adam's lr 1e-3\n"
    "  latentforge train stacked-ae --data digits --out runs/sae --epochs 40 --resume\n"
    "  latentforge train stacked-ae --data digits --dry-run           # check a command line in seconds")
#: engine settings and environment variables, shown after the options
_TRAIN_ENV = (
    "Engine settings (how steps run, not what they compute; README, \"Speed\"): --precision, "
    "--set compile=true, --set threads=N, --set batch_split=N, --set fused_step=false, "
    "--set cuda_graphs=true (CUDA graphs are off by default until verified on a GPU with "
    "bench/gpu_check.py); run.json records them (config.engine, hardware). "
    "Environment: LATENTFORGE_THREADS=N forces N intra-op threads and LATENTFORGE_BATCH_SPLIT=N the number "
    "of sub-batches (1: off) where the config does not set them.")


@app.command("train", help=_TRAIN_HELP, epilog=_TRAIN_ENV)
def train_cmd(
    model: str = typer.Argument(..., help="Registry name, e.g. stacked-ae (see `latentforge models`)."),
    data: str = DataOpt,
    labels: Optional[Path] = LabelsOpt,
    classes: Optional[str] = ClassesOpt,
    exclude_classes: Optional[str] = ExcludeClassesOpt,
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="Epochs (default: the model's)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Batch size (default: the model's)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: the model's)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (same seed -> same weights on CPU)."),
    sets: list[str] = typer.Option([], "--set", "-s", help="Config override key=value (repeatable), "
                                   "e.g. --set hidden_sizes=200,100 --set optimizer=adam."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Config file (.toml, .yaml, .json)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/MODEL-TIMESTAMP)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    greedy: bool = typer.Option(False, "--greedy", help="Greedy layer-wise training (stacked-ae, tied-ae)."),
    finetune_epochs: Optional[int] = typer.Option(None, "--finetune-epochs",
                                                  help="With --greedy: fine-tune the whole stack for N epochs."),
    labeled: Optional[int] = typer.Option(None, "--labeled", help="classifier: train on N labelled samples "
                                          "(stratified, seeded); the held-out validation split stays."),
    encoder_from: Optional[Path] = typer.Option(None, "--encoder-from", help="classifier: start from the encoder "
                                                "of this autoencoder run (stacked-ae, tied-ae, denoising-ae...)."),
    freeze_epochs: Optional[int] = typer.Option(None, "--freeze-epochs", help="classifier: keep the encoder "
                                                "frozen for the first E epochs, then fine-tune."),
    valid_fraction: Optional[float] = typer.Option(None, "--valid-fraction",
                                                   help="Held-out share for validation (default 0.1; 0 = none)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N samples (N >= 1; without it, all of them)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="A quick check: 1 epoch on at most 256 samples."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress",
                                            help="Progress bar (default: on a terminal, not under CI)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="32 (default), bf16 or 16-mixed "
                                            "(autocast; a GradScaler for 16-mixed)."),
    nan_policy: Optional[str] = typer.Option(None, "--nan-policy", help="On a NaN/Inf loss: stop (default: keep "
                                             "the last good checkpoint and exit), skip (drop that batch's "
                                             "update) or raise (stop at once with a traceback-free error)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also write TensorBoard scalars and image "
                                     "grids to RUN_DIR/tensorboard (needs the tensorboard package)."),
    nproc: Optional[int] = typer.Option(None, "--nproc", min=1, help="Train with N processes "
                                        "(DistributedDataParallel via torchrun: gloo on CPU, nccl on GPU)."),
) -> None:
    """Train MODEL on --data into a run folder (the command's help: ``_TRAIN_HELP``)."""
    from ..errors import ConfigError
    from ..models import get_model_class
    from ..train import train
    get_model_class(model)  # an unknown model is reported before any data is read
    pretraining = {"--labeled": labeled, "--encoder-from": encoder_from, "--freeze-epochs": freeze_epochs}
    used = [flag for flag, v in pretraining.items() if v is not None]
    if used and model != "classifier":
        raise ConfigError(f"{', '.join(used)}: only for `train classifier` (pretraining a classifier)")
    if greedy and model == "classifier":
        raise ConfigError("--greedy: the classifier has no layer-wise stages (pretrain an AE with --greedy, "
                          "then use --encoder-from)")
    if dry_run:
        epochs = 1
        limit = min(limit, 256) if limit is not None else 256
    values = _overrides(sets, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, finetune_epochs=finetune_epochs,
                        precision=precision, nan_policy=nan_policy)
    from ..train import distributed as ddp
    if nproc is not None and ddp.launched():
        raise ConfigError("--nproc: this process was started by torchrun already (WORLD_SIZE is set); "
                          "drop --nproc")
    if model == "classifier" and (ddp.launched() or (nproc or 1) > 1):
        raise ConfigError("train classifier: multi-process training is not supported; train it in one process")
    if nproc is not None and nproc > 1:
        _launch_processes(model, nproc, device, values, config)
        return
    ds = _load(data, labels, limit, classes, exclude_classes)
    if model == "classifier":
        run = _train_classifier(ds, labeled=labeled, encoder_from=encoder_from, freeze_epochs=freeze_epochs, out=out,
                                overrides=values, config_file=config, valid_fraction=valid_fraction, resume=resume,
                                progress=progress, device=device, overwrite=overwrite, tensorboard=tensorboard)
    else:
        run = train(model, ds, out=out, overrides=values, config_file=config, resume=resume, greedy=greedy, labels=labels,
                    valid_fraction=valid_fraction, progress=progress, device=device, overwrite=overwrite,
                    tensorboard=tensorboard)
    last = run.history[-1] if run.history else {}
    shown = " ".join(f"{k}={v:.4f}" for k, v in last.items()
                     if k.endswith(("loss", "accuracy")) and isinstance(v, float))
    if ddp.info().main:
        print(f"trained {model} -> {run.run_dir} ({shown})")


def _train_classifier(ds, **options: Any):
    """What ``train classifier`` and ``train-classifier`` both run: the classifier's training
    (:func:`latentforge.train.pretraining.train_classifier`) on data in memory."""
    from ..data.large import StreamingDataset
    from ..train.pretraining import train_classifier
    if isinstance(ds, StreamingDataset):
        ds = ds.materialize()           # the classifier's pretraining paths work in memory
    return train_classifier(ds, **options)


def _launch_processes(model: str, nproc: int, device: str, values: dict[str, Any], config: Optional[Path]) -> None:
    """``train --nproc N``: check what can be checked here, then run this same command in N
    processes through torchrun (127.0.0.1, a free port); rank 0 reports."""
    import torch

    from ..errors import ConfigError, TrainingError
    from ..train import distributed as ddp
    from ..train.run import resolve_config, resolve_device
    resolve_config(model, config_file=config, overrides=values)     # a bad --set fails once, here
    dev = resolve_device(device)
    if dev.type == "mps":
        raise ConfigError("--nproc: multi-process training does not support --device mps")
    if dev.type == "cuda" and nproc > torch.cuda.device_count():
        raise ConfigError(f"--nproc {nproc}: only {torch.cuda.device_count()} GPU(s) here (one process per GPU)")
    rc = ddp.launch(ddp.strip_nproc(_INVOCATION or sys.argv[1:]), nproc)
    if rc in (2, 130):                 # the processes have said why (one line each, or once for all)
        raise typer.Exit(rc)
    if rc:
        raise TrainingError(f"training with {nproc} processes failed (exit status {rc}); see the messages above")


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
    values = _overrides(sets, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    ds = _load(data, labels, limit, classes, exclude_classes)
    run = _train_classifier(ds, labeled=labeled, encoder_from=encoder_from, freeze_epochs=freeze_epochs, out=out,
                            overrides=values, config_file=config, valid_fraction=valid_fraction, resume=resume,
                            progress=progress, device=device, overwrite=overwrite)
    last = run.history[-1] if run.history else {}
    shown = " ".join(f"{k}={v:.4f}" for k, v in last.items()
                     if k.endswith(("loss", "accuracy")) and isinstance(v, float))
    print(f"trained classifier -> {run.run_dir} ({shown})")



@app.command("demo")
def demo_cmd(out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run folder for the demo."),
             epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="Epochs (default: the chapter's 20)."),
             data: str = typer.Option("digits", "--data", "-d", help="Data (default: the bundled digits)."),
             progress: Optional[bool] = typer.Option(None, "--progress/--no-progress")) -> None:
    """Train the chapter's stacked autoencoder on the bundled digits and draw its figures."""
    from ..report import plot_history, plot_reconstructions, plot_tsne
    from ..train import train
    ds = _load(data)
    run = train("stacked-ae", ds, out=out, overrides={"epochs": epochs}, progress=progress, overwrite=True)
    held = _heldout(run, data, None)
    figs = {"reconstructions": out / "reconstructions.png", "t-SNE map": out / "tsne.png",
            "loss curves": out / "history.png"}
    plot_reconstructions(held.x[:10], run.reconstruct(held.x[:10]), figs["reconstructions"],
                         sample_shape=ds.sample_shape, title="stacked-ae: held-out reconstructions")
    plot_tsne(run.encode(held.x), figs["t-SNE map"], labels=held.y, images=held.x,
              sample_shape=ds.sample_shape, class_names=ds.class_names, seed=run.config.seed)
    plot_history(run.history, figs["loss curves"], title=f"stacked-ae on {data}")
    last = run.history[-1]
    print(f"demo run: {run.run_dir}  (held-out BCE {last.get('valid_bce', last['train_loss']):.4f} "
          f"after {last['epoch']} epochs)")
    for what, path in figs.items():
        print(f"  {what:<16} {path}")
    from ..report.page import build_report
    print(f"report: {build_report(run.run_dir, data, seed=run.config.seed)}")   # same seed: it reuses tsne.png's map
