"""``latentforge predict``: a trained classifier's labels or probabilities for data (SPEC 5; the
classifier trains with ``train classifier``, the pretraining exercise is ``experiment pretraining``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError, DataError
from .app import app
from .common import ClassesOpt, ExcludeClassesOpt, LabelsOpt, _load, _out_dir_ok, save_array


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

