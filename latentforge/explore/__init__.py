"""``latentforge explore``: a local web page over trained runs (maps, decoding, sampling, uploads).

* :mod:`.state`: what is served for each run (codings, errors, maps) and the work of each route.
* :mod:`.server`: the Starlette application and the uvicorn server.
* :mod:`.kernels`: the CPU kernel each transposed convolution uses, timed once at start.
* ``static/``: the page (HTML, JavaScript, CSS; no build step, nothing fetched from the network).

Optional dependencies: ``pip install 'latentforge[explore]'`` (starlette, uvicorn,
httptools, orjson, python-multipart).
"""
from __future__ import annotations

__all__ = ["create_app", "load_runs", "serve"]


def __getattr__(name: str):
    if name in ("create_app", "serve"):
        from . import server
        return getattr(server, name)
    if name == "load_runs":
        from .state import load_runs
        return load_runs
    raise AttributeError(name)
