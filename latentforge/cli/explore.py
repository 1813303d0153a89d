"""``latentforge explore``: the chapter's latent-space figures as a live page in the browser.

    latentforge explore RUN_DIR [RUN_DIR ...] [--data DATA] [--labels L] [--method tsne|umap|pca]
                        [--max-points N] [--host 127.0.0.1] [--port PORT] [--open]

The server and the page are in :mod:`latentforge.explore` (optional dependencies: the ``explore``
extra, ``pip install 'latentforge[explore]'``).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import ConfigError
from .app import app
from .common import LabelsOpt

_HELP = (
    "Serve a page to explore runs in the browser: the map of every coding (openTSNE, PCA or UMAP; 2-D "
    "codings as they are) with thumbnails as you zoom, a point's reconstruction, error and nearest "
    "neighbours, interpolations, the latent plane of 2-D models, samples of generative runs, and "
    "uploads placed on the map with their anomaly percentile.\n\n"
    "Prints `serving http://HOST:PORT/` when ready; Ctrl-C stops it. Maps are cached in "
    "RUN_DIR/explore/. The HTTP interface (for scripts) is in the README, section \"Explore\".")


@app.command("explore", help=_HELP)
def explore_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="One or more run folders (switch between them on the page)."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data to map and show (default: each run's "
                                       "own data source, all of it; never downloaded)."),
    labels: Optional[Path] = LabelsOpt,
    method: str = typer.Option("tsne", "--method", help="Map of the codings: tsne (openTSNE), umap (when "
                               "umap-learn is installed) or pca; the page can switch."),
    max_points: int = typer.Option(100_000, "--max-points", min=1, help="Serve at most N points (a seeded "
                                   "random subsample above it). openTSNE maps 70,000 codings in about 3 CPU "
                                   "minutes (bench/explore_maps.py); the map is cached in the run folder."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but a loopback "
                             "address prints a warning and requires a random token on every API call."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port (0: any free port; the line "
                             "`serving ...` gives the real one)."),
    open_: bool = typer.Option(False, "--open", help="Open the page in a web browser."),
) -> None:
    try:
        import orjson  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("explore needs its optional dependencies: pip install 'latentforge[explore]' "
                          "(starlette, uvicorn, httptools, orjson, python-multipart)") from None
    if method not in ("tsne", "umap", "pca"):
        raise ConfigError(f"--method {method!r}: must be one of tsne, umap, pca")
    seen = set()
    for d in run_dirs:
        if d.resolve() in seen:
            raise ConfigError(f"{d}: run folder given twice")
        seen.add(d.resolve())
    from ..explore.server import is_loopback, listen, serve
    from ..explore.state import load_runs
    sock = listen(host, port)             # a busy port or a bad address fails before any work
    token = None
    if not is_loopback(host):
        import secrets
        token = secrets.token_urlsafe(18)
        print(f"latentforge: warning: --host {host} makes the runs reachable from other machines; every API "
              f"call needs the token {token} (header X-Token or ?token=; open the page with ?token={token})",
              file=sys.stderr, flush=True)
    try:
        runs = load_runs(list(run_dirs), data=data, labels=labels, max_points=max_points, method=method)
    except BaseException:
        sock.close()
        raise
    serve(runs, host, port, open_browser=open_, token=token, sock=sock)
    print("stopped", file=sys.stderr)
