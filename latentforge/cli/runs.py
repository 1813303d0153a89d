"""Commands on the registry and on run folders: ``models``, ``datasets``, ``info``, and applying a
run to data: ``encode``, ``decode``, ``reconstruct``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import DataError
from .app import app
from .common import (
    ClassesOpt,
    ExcludeClassesOpt,
    LabelsOpt,
    _heldout,
    _load_stream,
    _npy_out,
    _out_dir_ok,
    _print_json,
    save_array,
)


@app.command("models")
def models_cmd(as_json: bool = typer.Option(False, "--json", help="Print the registry as JSON.")) -> None:
    """List the registered models and their chapter defaults."""
    from dataclasses import fields
    from ..models import get_model_class, model_names
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
    from ..data import data_cache_dir, list_datasets
    rows = list_datasets()
    if as_json:
        _print_json(rows)
        return
    print(f"cache: {data_cache_dir()}")
    for r in rows:
        state = "cached" if r.get("cached") else ("bundled" if r["name"] == "digits" else "not downloaded")
        print(f"{r['name']:<14} {state:<15} {r.get('description', '')}")


@app.command("info")
def info_cmd(run_dir: Path = typer.Argument(..., help="A run folder."),
             as_json: bool = typer.Option(False, "--json", help="Print the run as JSON instead: model, config, "
                                          "parameter count, epochs done, last metrics, data.")) -> None:
    """Show a run: model, data, epochs, last losses and a layer table (name, output shape, parameters),
    like Keras' model.summary(); --json for everything as JSON."""
    from ..train import load_run
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
    from ..report.metrics_table import fmt_number
    from ..report.summary import format_table, layer_table
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
    from ..errors import ConfigError
    from ..models.capabilities import Capability
    from ..train import load_run
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
        from ..report.projector import write_projector
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
    from ..train import load_run
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
    from ..train import load_run
    _npy_out(out)
    run = load_run(run_dir, device)
    ds = _load_stream(data, labels, classes, exclude_classes)
    rec = run.reconstruct(ds.x, batch_size, y=ds.y, out=out, row_shape=tuple(ds.sample_shape), source=ds.name)
    print(f"wrote {out} {rec.shape}")
