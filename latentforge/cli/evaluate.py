"""``latentforge evaluate``: the numbers that judge a trained model, as JSON.

    latentforge evaluate RUN [--data SRC] [--n N] [--features RUN_DIR] [--json metrics.json]

The metrics themselves are library code: :func:`latentforge.eval.run_metrics.evaluate_run` (its
docstring lists them). Not comparable to published (Inception) FIDs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError, DataError
from .app import app
from .common import ClassesOpt, ExcludeClassesOpt, LabelsOpt, _out_dir_ok, _print_json

GENERATIVE_DEFAULT_N = 10_000   # latentforge.eval.run_metrics.GENERATIVE_DEFAULT_N (for the help text)


@app.command("evaluate")
def evaluate_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder of an autoencoder or a generative model."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data to evaluate on (default: the run's "
                                       "source; the run's own source: its held-out split for the AE metrics)."),
    labels: Optional[Path] = LabelsOpt,
    classes: Optional[str] = ClassesOpt,
    exclude_classes: Optional[str] = ExcludeClassesOpt,
    n: Optional[int] = typer.Option(None, "-n", "--n", help="Use only the first N held-out samples (AE metrics) "
                                    f"and N real vs N generated samples (generative; default min({GENERATIVE_DEFAULT_N:,}, "
                                    "data size))."),
    features: Optional[Path] = typer.Option(None, "--features", help="The feature network (a run of `latentforge "
                                            "train features`) for the generative metrics; default: the one "
                                            "cached for the data, trained on first use."),
    k: int = typer.Option(100, "--k", help="Importance samples per image for the VAE's NLL estimate."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the metrics to this JSON file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the importance samples, the generated samples and subsets."),
    batch_size: int = typer.Option(4096, "--batch-size", "-b", min=1),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Judge a trained model: reconstruction, codings and NLL of autoencoders; FID, KID,
    precision/recall, density/coverage, mode coverage and IS of generative models."""
    if n is not None and n < 1:
        raise ConfigError(f"-n {n}: must be >= 1")
    if k < 1:
        raise ConfigError(f"--k {k}: must be >= 1")
    if json_out is not None:
        _out_dir_ok(json_out)

    from ..eval.run_metrics import evaluate_run
    from ..train import load_run
    run = load_run(run_dir, device)
    result = evaluate_run(run, data, labels, n=n, features=features, k=k, seed=seed, batch_size=batch_size,
                          device=device, splits=run.data_splits(data, labels, classes=classes,
                                                                exclude_classes=exclude_classes))
    if json_out is not None:
        from ..io import atomic_write_json
        try:
            atomic_write_json(json_out, result)
        except OSError as e:
            raise DataError(f"{json_out}: cannot write: {e.strerror or e}") from None
    _print_json(result)
