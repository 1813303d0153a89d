"""``latentforge export``: a run's encoder, decoder or generator as an ONNX or TorchScript file."""
from __future__ import annotations

from pathlib import Path

import typer

from .app import app
from .common import _out_dir_ok


@app.command("export")
def export_cmd(run_dir: Path = typer.Argument(..., help="A run folder."),
               fmt: str = typer.Option(..., "--format", "-f", help="onnx or torchscript."),
               part: str = typer.Option(..., "--part", "-p", help="encoder, decoder (autoencoders, VAEs) or "
                                        "generator (GANs, VAEs)."),
               out: Path = typer.Option(..., "--out", "-o", help="Output file (.onnx, .pt).")) -> None:
    """Export a part of a trained model, in the data's units, with a dynamic batch axis.

    encoder: samples -> codes; decoder: codes -> samples; generator: latents z ~ N(0, I) ->
    images in [0, 1]. ONNX needs onnx and onnxscript (the "export" extra of latentforge).
    """
    from ..export import export_part
    from ..train import load_run
    _out_dir_ok(out)
    run = load_run(run_dir, "cpu")
    export_part(run.model, part, fmt, out, name=run.name)
    print(f"wrote {out} ({run.name} {part}, {fmt})")
