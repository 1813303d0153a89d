"""``latentforge plot samples``: a grid of samples from any generative run."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..cli import _out_dir_ok, plot_app


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
