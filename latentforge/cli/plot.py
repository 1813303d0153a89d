"""The ``plot`` group, figures of a run: ``reconstructions``, ``tsne``, ``history`` and ``samples`` (a grid
of samples from any generative run)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import DataError
from .app import plot_app
from .common import ClassesOpt, ExcludeClassesOpt, LabelsOpt, _heldout, _out_dir_ok


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
    from ..report import plot_reconstructions
    from ..train import load_run
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
    from ..report import plot_tsne
    from ..train import load_run
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
    from ..report import plot_history
    from ..train import load_run
    _out_dir_ok(out)
    run = load_run(run_dir)
    if not run.history:
        raise DataError(f"{run_dir}: the run has no history yet")
    history = run.history
    if run.meta.get("greedy"):                   # history.json: every greedy stage, then the fine-tuning
        from ..train.summary import history_records
        history = history_records(run.meta["greedy"], run.history)
    plot_history(history, out, title=f"{run.name}: {run.data_info.get('source', '')}")
    print(f"wrote {out}")



@plot_app.command("samples")
def plot_samples_cmd(run_dir: Path = typer.Argument(..., help="A run folder of a generative model."),
                     out: Path = typer.Option(..., "--out", "-o", help="Output PNG."),
                     n: int = typer.Option(64, "--n", "-n", min=1, help="How many samples."),
                     seed: int = typer.Option(0, "--seed", help="Seed of the latents."),
                     label: Optional[int] = typer.Option(None, "--label", help="Class, for conditional models "
                                                         "(default: one row per class)."),
                     device: str = typer.Option("cpu", "--device")) -> None:
    """A grid of samples (per-epoch grids of GAN runs are in RUN_DIR/samples/)."""
    import torch

    from ..errors import ConfigError
    from ..models.capabilities import Capability, check_label
    from ..report import plot_image_grid
    from ..train import load_run
    _out_dir_ok(out)
    run = load_run(run_dir, device)
    if Capability.SAMPLES not in run.model.capabilities:
        raise ConfigError(f"{run_dir}: model {run.name!r} does not generate samples")
    labels = None
    if Capability.CONDITIONAL in run.model.capabilities:
        k = run.model.config.n_classes
        if label is not None:
            check_label(run.model, label, run.name)
        labels = torch.full((n,), label) if label is not None else torch.arange(n) % k
        labels = labels.to(run.device)
    elif label is not None:
        raise ConfigError(f"--label: {run.name!r} is not a conditional model")
    with torch.no_grad():
        images = run.model.sample(n, labels, generator=torch.Generator(device=run.device).manual_seed(seed))
    plot_image_grid(images.cpu().numpy(), out, title=f"{run.name}: {n} samples")
    print(f"wrote {out}")
