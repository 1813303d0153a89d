"""Commands for generative models and autoencoders: generate, interpolate (evaluate: cli/evaluate.py).

A model is *generative* when it declares ``Capability.SAMPLES``: ``sample(n, labels=None,
generator=None)`` returns ``n`` images in [0, 1] shaped like its inputs (``generator`` is a CPU
``torch.Generator``). It is *conditional* when it declares ``Capability.CONDITIONAL`` (trained on
labels): then ``labels`` picks the class.
A model may also accept ``truncation=PSI`` in ``sample`` (the truncation trick of GANs).

    latentforge generate RUN -n 100 --out samples.npy [--label 3] [--seed 0] [--grid samples.png]
    latentforge generate RUN -n 64 --grid samples.png        # only the grid
    latentforge generate DDPM_RUN -n 64 --grid g.png --guidance 1   # ddpm without its autoguidance
    latentforge interpolate RUN --data SRC --pairs 5 --steps 8 --out grid.png [--method slerp]
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError, DataError
from .app import app
from .common import LabelsOpt, _heldout, _out_dir_ok

METHODS = ("linear", "slerp")       # latentforge.models.interpolation.METHODS (not imported: --help stays light)
GRID_MAX = 100          # `generate --grid` shows at most this many samples


# ------------------------------------------------------------------------------ helpers
def _check_png(path: Path, flag: str) -> None:
    if Path(path).suffix.lower() != ".png":
        raise DataError(f"{flag} {path}: must be a .png file")
    _out_dir_ok(path)


# ------------------------------------------------------------------------------ generate
@app.command("generate")
def generate_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder of a generative model (vae, conditional-vae, GANs, ...)."),
    n: int = typer.Option(..., "-n", "--n", help="Number of samples (>= 1)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output .npy, shape (N, *sample shape) (images in "
                                       "[0, 1]); or a folder (DIR/, or --format png): DIR/samples.npy plus one PNG "
                                       "per image (a samples.csv for tabular data). Give --out, --grid or both."),
    fmt: str = typer.Option("auto", "--format", help="npy (one .npy file), png (a folder: the .npy and one PNG "
                            "per image, or a CSV for tabular data) or auto (png when --out is a folder)."),
    label: Optional[int] = typer.Option(None, "--label", help="Class to generate (conditional models only; required there)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the latent noise (same seed, same samples)."),
    truncation: Optional[float] = typer.Option(None, "--truncation",
                                               help="Truncation psi, for models whose sample() supports it."),
    guidance: Optional[float] = typer.Option(None, "--guidance",
                                             help="Guidance weight, for models that sample guided (ddpm's "
                                                  "autoguidance: default the run's, 3; 1 = unguided)."),
    grid: Optional[Path] = typer.Option(None, "--grid", help=f"Also save a PNG grid of (at most {GRID_MAX}) samples."),
    batch_size: int = typer.Option(4096, "--batch-size", "-b", min=1),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Generate N new samples from a trained generative model."""
    from ..report.sample_files import output_plan, write_sample_files
    if n < 1:
        raise ConfigError(f"-n {n}: the number of samples must be >= 1")
    if out is None and grid is None:
        raise ConfigError("give --out (where the samples go: a .npy file or a folder) and/or --grid (a PNG grid)")
    if out is None and fmt != "auto":
        raise ConfigError(f"--format {fmt}: says how --out is written; give --out too")
    npy, folder = output_plan(out, fmt) if out is not None else (None, None)
    if npy is not None:
        _out_dir_ok(npy if folder is None else folder)
    if grid is not None:
        _check_png(grid, "--grid")
    if truncation is not None and not (math.isfinite(truncation) and truncation > 0):
        raise ConfigError(f"--truncation {truncation}: must be a positive number")
    if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
        raise ConfigError(f"--guidance {guidance}: must be a number >= 0 (1 = unguided)")

    import numpy as np
    from ..models.capabilities import Capability, check_label
    from ..train import load_run
    run = load_run(run_dir, device)
    model = run.model
    if Capability.SAMPLES not in model.capabilities:
        raise ConfigError(f"{run_dir}: {run.name} is not a generative model (it has no sample()); "
                          f"train vae, conditional-vae or a GAN")
    if Capability.CONDITIONAL in model.capabilities:
        if label is None:
            raise ConfigError(f"{run.name} is conditional: give --label K, the class to generate")
        check_label(model, label, run.name)
    elif label is not None:
        raise ConfigError(f"--label: {run.name} is unconditional; it generates without a label")
    if folder is not None:
        folder.mkdir(exist_ok=True)
    # streamed batch by batch into the .npy (atomically), so any n fits in the memory of one batch
    images = run.generate(n, label=label, seed=seed, truncation=truncation, batch_size=batch_size, out=npy,
                          guidance=guidance)
    if npy is not None:
        print(f"wrote {npy} {images.shape}")
    if folder is not None:
        what = write_sample_files(images, folder, run.data_info)
        print(f"wrote {what}")
    if grid is not None:
        from ..report import plot_image_grid
        shape = run.data_info.get("sample_shape")
        shown = min(n, GRID_MAX)
        what = f"class {label}" if label is not None else f"seed {seed}"
        plot_image_grid(np.asarray(images[:shown]), grid, sample_shape=shape,
                        title=f"{run.name}: {shown} samples ({what})",
                        feature_names=run.data_info.get("feature_names"))
        print(f"wrote {grid}")


# ------------------------------------------------------------------------------ interpolate
@app.command("interpolate")
def interpolate_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder of an autoencoder (anything with encode and decode)."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Images to pick pairs from "
                                       "(default: the run's held-out split; the run's own source: its held-out split)."),
    labels: Optional[Path] = LabelsOpt,
    pairs: int = typer.Option(5, "--pairs", help="Number of random pairs (rows of the grid)."),
    steps: int = typer.Option(8, "--steps", help="Images per row, the two end points included (>= 2)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output PNG grid: one row per pair."),
    method: Optional[str] = typer.Option(None, "--method", help="linear or slerp (default: slerp for "
                                         "Gaussian-latent models such as VAEs, else linear)."),
    seed: int = typer.Option(0, "--seed", help="Seed that picks the pairs."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Interpolate between the codes of random pairs of real images and decode the path."""
    if pairs < 1:
        raise ConfigError(f"--pairs {pairs}: must be >= 1")
    if steps < 2:
        raise ConfigError(f"--steps {steps}: must be >= 2 (the two end points)")
    if method is not None and method not in METHODS:
        raise ConfigError(f"--method {method!r}: must be one of {', '.join(METHODS)}")
    _check_png(out, "--out")

    import numpy as np
    import torch
    from ..models.capabilities import Capability, data_labels, has
    from ..models.interpolation import interpolate_codes
    from ..report import plot_image_grid
    from ..train import load_run
    run = load_run(run_dir, device)
    model = run.model
    if not has(model, Capability.ENCODES, Capability.DECODES):
        raise ConfigError(f"{run_dir}: {run.name} has no encode/decode; interpolation needs an autoencoder")
    method = method or ("slerp" if Capability.GAUSSIAN_LATENT in model.capabilities else "linear")
    ds = _heldout(run, data, labels)
    if len(ds) < 2:
        raise DataError(f"{ds.name}: need at least 2 images to make pairs, got {len(ds)}")
    model.check_data(ds.x, ds.name)
    y_all = data_labels(model, ds, run.name)
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.choice(len(ds), 2, replace=False) for _ in range(pairs)]).ravel()   # (2K,)
    x = ds.x[idx]
    dev = run.device
    cond = y_all[idx] if y_all is not None else None
    codes = run.batched(model.encode, x, 4096, y=cond)                                     # (2K, ...)
    code_shape = codes.shape[1:]
    flat = codes.reshape(len(codes), -1)
    path = np.concatenate([interpolate_codes(flat[2 * i], flat[2 * i + 1], steps, method) for i in range(pairs)])
    z = torch.as_tensor(path.reshape((pairs * steps, *code_shape)), dtype=torch.float32).to(dev)
    model.eval()
    with torch.inference_mode():
        if cond is not None:    # the class moves from one end point's to the other's
            k = model.config.n_classes
            eye = np.eye(k)
            w = np.linspace(0.0, 1.0, steps)[:, None]
            soft = np.concatenate([(1 - w) * eye[cond[2 * i]] + w * eye[cond[2 * i + 1]] for i in range(pairs)])
            images = model.decode(z, y=torch.as_tensor(soft, dtype=torch.float32).to(dev))
        else:
            images = model.decode(z)
    images = images.float().cpu().numpy().reshape((pairs * steps, *ds.sample_shape))
    if ds.y is not None:
        row_labels = [f"{ds.y[idx[2 * i]]}→{ds.y[idx[2 * i + 1]]}" for i in range(pairs)]
    else:
        row_labels = [f"#{idx[2 * i]}→#{idx[2 * i + 1]}" for i in range(pairs)]
    plot_image_grid(images, out, nrows=pairs, ncols=steps, sample_shape=ds.sample_shape,
                    title=f"{run.name}: {method} interpolation", row_labels=row_labels)
    print(f"wrote {out} ({pairs} pairs x {steps} steps, {method})")
