"""The ``latentforge`` command line.

Every mistake a user can make (unknown model or dataset, a bad file, a bad ``--set``) ends with
one line on stderr and exit status 2; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ._version import __version__
from .errors import DataError, LatentforgeError

app = typer.Typer(
    name="latentforge", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Autoencoders, VAEs, GANs and diffusion models of the classic chapter: train, inspect, reuse.\n\n"
         "Start with `latentforge demo`, `latentforge models` and `latentforge train stacked-ae --data digits`.",
    context_settings={"help_option_names": ["-h", "--help"]})
plot_app = typer.Typer(help="Figures of a run: reconstructions, t-SNE map of the codings, loss curves.",
                       no_args_is_help=True)
app.add_typer(plot_app, name="plot")

_DEBUG = False
_INVOCATION: list[str] = []      # this invocation's arguments (``train --nproc`` relaunches them)


def _err(msg: str) -> None:
    print(f"latentforge: error: {msg}", file=sys.stderr)


def _version(value: bool) -> None:
    if value:
        print(f"latentforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    global _DEBUG
    _DEBUG = _DEBUG or debug


# ------------------------------------------------------------------------------------ helpers
DataOpt = typer.Option("digits", "--data", "-d", help="Data source: a built-in name (digits, mnist, fashion-mnist, "
                       "kmnist, cifar10) or a path (IDX file/folder, .npy, .npz, .csv, image folder).")
LabelsOpt = typer.Option(None, "--labels", help="Labels file for the data (IDX, .npy or one int per line); "
                         "IDX labels beside the images are found automatically.")
ClassesOpt = typer.Option(None, "--classes", help="Keep only the samples with these labels, e.g. 0,3,7 (class "
                          "names work too); after --limit. A run records it in run.json and --resume keeps it.")
ExcludeClassesOpt = typer.Option(None, "--exclude-classes", help="Drop the samples with these labels, e.g. 9 "
                                 "(the opposite of --classes).")


def save_array(path: Path, arr) -> Path:
    """Write a .npy file atomically; DataError naming the path if it cannot be written."""
    import numpy as np
    from .train.checkpoint import atomic_write_bytes

    path = Path(path)
    if path.suffix != ".npy":
        raise DataError(f"{path}: output must be a .npy file")
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr))
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:
        raise DataError(f"{path}: cannot write: {e.strerror or e}") from None
    return path


def _out_dir_ok(path: Path) -> None:
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise DataError(f"{path}: cannot write: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DataError(f"{path}: cannot write: folder {parent} is not writable")


def _npy_out(path: Path) -> None:
    """Check an output .npy path before any work: the suffix and a writable folder."""
    if Path(path).suffix != ".npy":
        raise DataError(f"{path}: output must be a .npy file")
    _out_dir_ok(path)


def _load_stream(source: str, labels: Optional[Path] = None, classes: Optional[str] = None,
                 exclude_classes: Optional[str] = None):
    """Like ``_load``, but a ``.npy`` file is read in chunks as needed (any size, bounded memory)."""
    p = Path(source)
    if p.suffix.lower() != ".npy" or not p.is_file() or classes is not None or exclude_classes is not None:
        return _load(source, labels, classes=classes, exclude_classes=exclude_classes)
    from .data import Dataset
    from .data.readers import NpyStream, read_labels
    x = NpyStream(p)
    return Dataset(x=x, y=read_labels(labels) if labels is not None else None, name=source,   # type: ignore[arg-type]
                   sample_shape=x.sample_shape, is_image=x.is_image)


def _load(source: str, labels: Optional[Path] = None, limit: Optional[int] = None,
          classes: Optional[str] = None, exclude_classes: Optional[str] = None):
    """The data of ``--data``/``--labels``: its first ``limit`` samples, then the class filter."""
    from .data import load_data
    if limit is not None and limit < 1:        # refused before any data is read
        raise DataError(f"--limit {limit}: must be >= 1 (leave --limit out to use all the data)")
    ds = load_data(source, labels=labels)
    for note in getattr(ds, "notes", None) or []:       # which .npz arrays, grey promoted to colour
        print(f"note: {note}", file=sys.stderr)
    if limit is not None:
        ds = ds.subset(slice(0, limit))
    return ds.filter_classes(classes, exclude_classes)


def _overrides(sets: list[str], **flags: Any) -> dict[str, Any]:
    from .config import parse_set_items
    values: dict[str, Any] = parse_set_items(sets or [])
    values.update({k: v for k, v in flags.items() if v is not None})
    return values


def _heldout(run, source: Optional[str], labels: Optional[Path], classes: Optional[str] = None,
             exclude_classes: Optional[str] = None):
    """The run's held-out split when ``source`` is the run's own data, else all of ``source``."""
    return run.data_splits(source, labels, classes=classes, exclude_classes=exclude_classes)[2]


def _print_json(obj: Any) -> None:
    from .train.checkpoint import _json_default
    print(json.dumps(obj, indent=2, default=_json_default))


# ------------------------------------------------------------------------------------ commands
@app.command("models")
def models_cmd(as_json: bool = typer.Option(False, "--json", help="Print the registry as JSON.")) -> None:
    """List the registered models and their chapter defaults."""
    from dataclasses import fields
    from .models import get_model_class, model_names
    rows = []
    for name in model_names():      # built-in, then registered and installed plugins
        cls = get_model_class(name)
        doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())    # the first paragraph, whole
        defaults = {f.name: f.default if not callable(f.default_factory) else f.default_factory()  # type: ignore[misc]
                    for f in fields(cls.config_class) if f.name not in ("input_shape", "engine")}
        rows.append({"name": name, "description": doc, "defaults": defaults})
    if as_json:
        _print_json(rows)
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['description']}")


@app.command("datasets")
def datasets_cmd(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the built-in datasets and what is in the cache ($LATENTFORGE_DATA)."""
    from .data import data_cache_dir, list_datasets
    rows = list_datasets()
    if as_json:
        _print_json(rows)
        return
    print(f"cache: {data_cache_dir()}")
    for r in rows:
        state = "cached" if r.get("cached") else ("bundled" if r["name"] == "digits" else "not downloaded")
        print(f"{r['name']:<14} {state:<15} {r.get('description', '')}")


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
    from .errors import ConfigError
    from .models import get_model_class
    from .train import train
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
    from .train import distributed as ddp
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
        from .data.large import StreamingDataset
        from .train.pretraining import train_classifier
        if isinstance(ds, StreamingDataset):
            ds = ds.materialize()           # the classifier's pretraining paths work in memory
        run = train_classifier(ds, labeled=labeled, encoder_from=encoder_from, freeze_epochs=freeze_epochs, out=out,
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


def _launch_processes(model: str, nproc: int, device: str, values: dict[str, Any], config: Optional[Path]) -> None:
    """``train --nproc N``: check what can be checked here, then run this same command in N
    processes through torchrun (127.0.0.1, a free port); rank 0 reports."""
    import torch

    from .errors import ConfigError, TrainingError
    from .train import distributed as ddp
    from .train.run import resolve_config, resolve_device
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


@app.command("encode")
def encode_cmd(run_dir: Path = typer.Argument(..., help="A run folder."),
               data: str = typer.Option(..., "--data", "-d", help="Data source to encode."),
               labels: Optional[Path] = LabelsOpt,
               classes: Optional[str] = ClassesOpt,
               exclude_classes: Optional[str] = ExcludeClassesOpt,
               out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output .npy of codes (N, coding_size)."),
               batch_size: int = typer.Option(4096, "--batch-size", "-b", min=1),
               binary: bool = typer.Option(False, "--binary", help="Round sigmoid codes to 0/1 hashes "
                                           "(uint8; hashing-ae, sparse-ae)."),
               projector: Optional[Path] = typer.Option(None, "--projector", help="Also write the codes, the "
                                                        "labels and a sprite of the images in TensorBoard's "
                                                        "projector format to this folder "
                                                        "(`tensorboard --logdir DIR`, tab Projector)."),
               device: str = typer.Option("cpu", "--device")) -> None:
    """Encode data into codes with a trained model."""
    from .errors import ConfigError
    from .models.capabilities import Capability
    from .train import load_run
    if out is None and projector is None:
        raise ConfigError("encode: give --out FILE.npy and/or --projector DIR")
    if out is not None:
        _npy_out(out)
    run = load_run(run_dir, device)
    if binary and Capability.UNIT_CODES not in run.model.capabilities:
        raise ConfigError(f"--binary: {run.name} codes are not sigmoid codings in [0, 1] (use hashing-ae)")
    ds = _load_stream(data, labels, classes, exclude_classes)
    codes = run.encode(ds.x, batch_size, y=ds.y, out=out, binary=binary, source=ds.name)
    if out is not None:
        print(f"wrote {out} {codes.shape}")
    if projector is not None:
        from .report.projector import write_projector
        done = write_projector(projector, codes, labels=ds.y, images=ds.x if ds.is_image else None,
                               sample_shape=ds.sample_shape, class_names=ds.class_names)
        print(f"wrote {projector} (TensorBoard projector, {done['n']} codings; tensorboard --logdir {projector})")
        if done["note"]:
            print(f"note: {done['note']}")


@app.command("decode")
def decode_cmd(run_dir: Path = typer.Argument(..., help="A run folder."),
               codes: Path = typer.Option(..., "--codes", help=".npy of codes (N, coding_size)."),
               out: Path = typer.Option(..., "--out", "-o", help="Output .npy of images."),
               batch_size: int = typer.Option(4096, "--batch-size", "-b", min=1),
               device: str = typer.Option("cpu", "--device")) -> None:
    """Decode codes into data (images in [0,1] for sigmoid models), shaped like the training samples."""
    import numpy as np
    from .train import load_run
    _out_dir_ok(out)
    run = load_run(run_dir, device)
    try:
        z = np.load(codes, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{codes}: cannot read codes: {e}") from None
    size = getattr(run.config, "coding_size", None)
    if z.ndim != 2 or (size is not None and z.shape[1] != size) or not np.issubdtype(z.dtype, np.number):
        raise DataError(f"{codes}: codes must be a numeric (N, {size}) array, got {z.dtype} {z.shape}")
    if not np.isfinite(z).all():
        raise DataError(f"{codes}: codes hold NaN/Inf values")
    images = run.decode(z.astype(np.float32), batch_size)
    shape = run.data_info.get("sample_shape")
    if shape:
        images = images.reshape((len(images), *shape))
    save_array(out, images)
    print(f"wrote {out} {images.shape}")


@app.command("reconstruct")
def reconstruct_cmd(run_dir: Path = typer.Argument(..., help="A run folder."),
                    data: str = typer.Option(..., "--data", "-d", help="Data source to reconstruct."),
                    labels: Optional[Path] = LabelsOpt,
                    classes: Optional[str] = ClassesOpt,
                    exclude_classes: Optional[str] = ExcludeClassesOpt,
                    out: Path = typer.Option(..., "--out", "-o", help="Output .npy, same shape as the input."),
                    batch_size: int = typer.Option(4096, "--batch-size", "-b", min=1),
                    device: str = typer.Option("cpu", "--device")) -> None:
    """Reconstruct data through a trained autoencoder (output shaped like the input)."""
    from .train import load_run
    _npy_out(out)
    run = load_run(run_dir, device)
    ds = _load_stream(data, labels, classes, exclude_classes)
    rec = run.reconstruct(ds.x, batch_size, y=ds.y, out=out, row_shape=tuple(ds.sample_shape), source=ds.name)
    print(f"wrote {out} {rec.shape}")


@app.command("info")
def info_cmd(run_dir: Path = typer.Argument(..., help="A run folder."),
             as_json: bool = typer.Option(False, "--json", help="Print the run as JSON instead: model, config, "
                                          "parameter count, epochs done, last metrics, data.")) -> None:
    """Show a run: model, data, epochs, last losses and a layer table (name, output shape, parameters),
    like Keras' model.summary(); --json for everything as JSON."""
    from .train import load_run
    run = load_run(run_dir)
    hist = run.history
    info = {"run_dir": str(run.run_dir), "model": run.name, "version": run.meta.get("version"),
            "config": run.meta.get("config"),
            "params": sum(p.numel() for p in run.model.parameters()),
            "epochs_done": run.meta.get("trainer", {}).get("epoch", 0),
            "metrics": hist[-1] if hist else {}, "data": run.data_info}
    if run.meta.get("greedy"):
        info["greedy"] = {"stages": run.meta["greedy"].get("stages")}
    extra = getattr(run.model, "info_metrics", None)
    if callable(extra):   # model-specific figures on the held-out data (e.g. sparse-ae's activations)
        try:
            info.update(extra(_heldout(run, None, None).x))
        except DataError as e:
            info["info_metrics"] = f"unavailable: {e}"
    if as_json:
        _print_json(info)
        return
    from .report.metrics_table import fmt_number
    from .report.summary import format_table, layer_table
    data = run.data_info
    shape = "x".join(str(d) for d in data.get("sample_shape") or [])
    print(f"run:    {run.run_dir}")
    print(f"model:  {run.name} ({info['params']:,} parameters)")
    print(f"data:   {data.get('source', '?')} ({data.get('n_train', '?')} training + {data.get('n_valid', 0)} "
          f"held-out samples of {shape})")
    last = info["metrics"]
    losses = "  ".join(f"{k}={fmt_number(v)}" for k, v in last.items() if k.endswith("loss"))
    print(f"epochs: {info['epochs_done']}" + (f"  (last: {losses})" if losses else ""))
    for k, v in info.items():
        if k not in ("run_dir", "model", "version", "config", "params", "epochs_done", "metrics", "data"):
            print(f"{k}: {v if isinstance(v, str) else json.dumps(v, default=str)}")
    print()
    print(format_table(layer_table(run.model)))
    print("(--json: config, data and metrics as JSON)")


@plot_app.command("reconstructions")
def plot_reconstructions_cmd(run_dir: Path = typer.Argument(..., help="A run folder."),
                             data: Optional[str] = typer.Option(None, "--data", "-d",
                                                                help="Data (default: the run's held-out split)."),
                             labels: Optional[Path] = LabelsOpt,
                             classes: Optional[str] = ClassesOpt,
                             exclude_classes: Optional[str] = ExcludeClassesOpt,
                             out: Path = typer.Option(..., "--out", "-o", help="Output PNG."),
                             n: int = typer.Option(10, "--n", min=1, help="Images to show.")) -> None:
    """The chapter's grid: originals over their reconstructions."""
    from .report import plot_reconstructions
    from .train import load_run
    _out_dir_ok(out)
    run = load_run(run_dir)
    ds = _heldout(run, data, labels, classes, exclude_classes)
    x = ds.x[:n]
    y = ds.y[:n] if ds.y is not None else None
    plot_reconstructions(x, run.reconstruct(x, y=y, source=ds.name), out, n=n, sample_shape=ds.sample_shape,
                         title=f"{run.name}: reconstructions", feature_names=run.data_info.get("feature_names"))
    print(f"wrote {out}")


@plot_app.command("tsne")
def plot_tsne_cmd(run_dir: Path = typer.Argument(..., help="A run folder."),
                  data: Optional[str] = typer.Option(None, "--data", "-d", help="Data (default: the run's held-out split)."),
                  labels: Optional[Path] = LabelsOpt,
                  classes: Optional[str] = ClassesOpt,
                  exclude_classes: Optional[str] = ExcludeClassesOpt,
                  out: Path = typer.Option(..., "--out", "-o", help="Output PNG."),
                  max_points: int = typer.Option(20000, "--max-points", min=0,
                                                 help="Map a random subsample of at most N points, for speed "
                                                 "(openTSNE: about 80 CPU seconds for 20,000; 0: every point).")
                  ) -> None:
    """t-SNE map of the codings (openTSNE), coloured by label, with image thumbnails."""
    from .report import plot_tsne
    from .train import load_run
    _out_dir_ok(out)
    run = load_run(run_dir)
    ds = _heldout(run, data, labels, classes, exclude_classes)
    codes = run.encode(ds.x, y=ds.y, source=ds.name)
    plot_tsne(codes, out, labels=ds.y, images=ds.x if ds.is_image else None, sample_shape=ds.sample_shape,
              class_names=ds.class_names, seed=run.config.seed, max_points=max_points or None)
    print(f"wrote {out}")


@plot_app.command("history")
def plot_history_cmd(run_dir: Path = typer.Argument(..., help="A run folder."),
                     out: Path = typer.Option(..., "--out", "-o", help="Output PNG.")) -> None:
    """Loss curves (train and validation) of a run."""
    from .report import plot_history
    from .train import load_run
    _out_dir_ok(out)
    run = load_run(run_dir)
    if not run.history:
        raise DataError(f"{run_dir}: the run has no history yet")
    history = run.history
    if run.meta.get("greedy"):                   # history.json: every greedy stage, then the fine-tuning
        from .train.summary import history_records
        history = history_records(run.meta["greedy"], run.history)
    plot_history(history, out, title=f"{run.name}: {run.data_info.get('source', '')}")
    print(f"wrote {out}")


@app.command("demo")
def demo_cmd(out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run folder for the demo."),
             epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="Epochs (default: the chapter's 20)."),
             data: str = typer.Option("digits", "--data", "-d", help="Data (default: the bundled digits)."),
             progress: Optional[bool] = typer.Option(None, "--progress/--no-progress")) -> None:
    """Train the chapter's stacked autoencoder on the bundled digits and draw its figures."""
    from .report import plot_history, plot_reconstructions, plot_tsne
    from .train import train
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
    from .report.page import build_report
    print(f"report: {build_report(run.run_dir, data, seed=run.config.seed)}")   # same seed: it reuses tsne.png's map


def _flags_without_type() -> None:
    """Show on/off flags (--resume, --dry-run, --help...) without a ``<bool>`` type in the help: they
    take no value. (typer prints every option's type; a flag's says nothing.)"""
    try:
        from typer.core import TyperOption
    except ImportError:          # another typer: its own help layout
        return
    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else shown(self, ctx)
    TyperOption.display_type_rich = display_type_rich


_flags_without_type()


def _load_command_modules() -> None:
    """Register the commands defined in ``latentforge/commands/*.py`` (one module per group)."""
    import importlib
    import pkgutil

    from . import commands
    for mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        importlib.import_module(f"{commands.__name__}.{mod}")


_load_command_modules()


def _click_exceptions():
    """click's exception module (typer >= 0.2x vendors click as ``typer._click``)."""
    try:
        from typer._click import exceptions
    except ImportError:   # older typer depends on click itself
        from click import exceptions  # type: ignore[no-redef]
    return exceptions


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: run the CLI, turning user errors into one line on stderr and exit status 2.

    Usage errors (unknown command or option, a bad value for a typed option) are also one line
    and exit status 2 (typer runs in non-standalone mode so that they reach this function).
    """
    global _DEBUG
    if "torch" not in sys.modules:      # OpenMP reads it once, when PyTorch loads (see engine/threads.py)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = list(sys.argv[1:] if argv is None else argv)
    _INVOCATION[:] = args
    _DEBUG = "--debug" in args or bool(os.environ.get("LATENTFORGE_DEBUG"))
    ex = _click_exceptions()
    try:
        rc = app(args=args, prog_name="latentforge", standalone_mode=False)
        if rc == 130:                                   # Ctrl-C outside training (typer's Exit(130))
            _err("interrupted")
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except ex.NoArgsIsHelpError as e:                   # `latentforge`, `latentforge plot`: the help
        e.show()
        sys.exit(e.exit_code)
    except ex.ClickException as e:                      # unknown command/option, bad option value
        where = e.ctx.command_path if getattr(e, "ctx", None) is not None else "latentforge"
        _err(" ".join(f"{e.format_message()} (see `{where} --help`)".split()))
        sys.exit(e.exit_code)
    except typer.Abort:
        _err("aborted")
        sys.exit(1)
    except LatentforgeError as e:
        if _DEBUG:
            raise
        if getattr(e, "collective", False):      # every process raised it: process 0 reports it
            from .train.distributed import report_once
            msg = str(e)
            report_once(lambda: _err(msg))
        else:
            _err(str(e))
        sys.exit(getattr(e, "exit_code", 2))     # errors.Interrupted (Ctrl-C in training): 130
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(130)
    except OSError as e:
        if _DEBUG:
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        _err(f"{where}{e.strerror or e}")
        sys.exit(2)
