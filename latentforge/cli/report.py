"""``latentforge report`` and ``latentforge compare``: the run's HTML page, and several runs side by side.

    latentforge report RUN_DIR [--data SRC] [--out FILE] [--open]
    latentforge compare RUN_DIR RUN_DIR ... [--out compare.html] [--open]
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import app
from .common import ClassesOpt, ExcludeClassesOpt, _out_dir_ok


def _open(path: Path) -> None:
    import webbrowser
    if not webbrowser.open(path.resolve().as_uri()):
        print(f"(no browser found to open {path})")


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="A run folder."),
               data: Optional[str] = typer.Option(None, "--data", "-d", help="Data for reconstructions, the "
                                                  "t-SNE map and metrics (default: the run's held-out split; "
                                                  "never downloaded: unavailable data skips those sections)."),
               classes: Optional[str] = ClassesOpt,
               exclude_classes: Optional[str] = ExcludeClassesOpt,
               out: Optional[Path] = typer.Option(None, "--out", "-o",
                                                  help="Output HTML (default RUN_DIR/report.html)."),
               seed: int = typer.Option(0, "--seed", help="Seed of the samples, pairs and t-SNE."),
               open_: bool = typer.Option(False, "--open", help="Open the page in a web browser.")) -> None:
    """Write one self-contained HTML page of a run: config, curves, images, t-SNE, metrics, hardware."""
    from ..report.page import build_report
    if out is not None:
        _out_dir_ok(out)
    path = build_report(run_dir, data, out=out, seed=seed, classes=classes, exclude_classes=exclude_classes)
    print(f"wrote {path}")
    if open_:
        _open(path)


@app.command("compare")
def compare_cmd(run_dirs: list[Path] = typer.Argument(..., help="Two or more run folders."),
                out: Path = typer.Option(Path("compare.html"), "--out", "-o", help="Output HTML."),
                open_: bool = typer.Option(False, "--open", help="Open the page in a web browser.")) -> None:
    """Put runs side by side: one metrics table and every run's loss curves on one plot."""
    from ..report.compare import build_compare
    _out_dir_ok(out)
    path = build_compare(list(run_dirs), out)
    print(f"wrote {path} ({len(run_dirs)} runs)")
    if open_:
        _open(path)
