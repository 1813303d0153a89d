"""The HTTP side of ``latentforge explore``: a Starlette app over the served runs, and uvicorn.

Routes (all JSON errors are ``{"error": "one line"}`` with a 4xx status; the server goes on):

* ``GET /`` and ``GET /static/NAME``: the page (files shipped in ``latentforge/explore/static``,
  read once at start; only those names are served).
* ``GET /api/runs``: the runs served (index, name, model, data, capabilities, shapes, classes).
* ``GET /api/runs/{i}/map?method=tsne|umap|pca``: ``{"x", "y", "label", "index", "method"}``.
* ``GET /api/runs/{i}/images/{index}.png``, ``GET /api/runs/{i}/reconstructions/{index}.png``.
* ``GET /api/runs/{i}/points/{index}``: coding, error and percentile, nearest neighbours, hash.
* ``GET /api/runs/{i}/sprites/{sheet}.png``: thumbnails of the points in map order, 32 x 32 a sheet.
* ``POST /api/runs/{i}/decode`` ``{"codes": [[...], ...], "label": null, "ncols": null}`` -> PNG grid;
  or, with ``Content-Type: application/octet-stream``, the codes as n x width little-endian float32
  and ``?n=N[&label=L][&ncols=C]`` (what the page sends: no JSON to parse).
* ``POST /api/runs/{i}/interpolate`` ``{"a": index, "b": index, "steps": 8, "method": null}`` -> PNG strip.
* ``POST /api/runs/{i}/sample`` ``{"n": 16, "seed": 0, "label": null, "truncation": null}`` -> PNG grid
  (``"guidance": w`` too, for runs that sample guided: DDPM's autoguidance, 1 = unguided).
* ``POST /api/runs/{i}/mix`` ``{"seed": 0, "n": 4, "crossover": null, "truncation": null}`` -> StyleGAN's
  style-mixing grid (A sources down the left, B sources across the top).
* ``POST /api/runs/{i}/encode``: an image upload (multipart field ``image``, or the raw PNG/JPEG
  body), optional ``label`` -> ``{"code", "x", "y", "score", "percentile", "reconstruction", ...}``.

With a ``token`` every ``/api/`` request must carry it (header ``X-Token`` or ``?token=``).
"""
from __future__ import annotations

import asyncio
import functools
import hmac
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from .state import INFERENCE_THREADS, ApiError, ServedRun, parse_index

#: largest request body accepted (uploads and JSON)
MAX_BODY = 10 * 1024 * 1024
#: the content type of binary decode requests: the codes as little-endian float32, ``?n=`` of them
BINARY_CODES = "application/octet-stream"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}


def static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files, by name, read from the package."""
    out = {}
    for entry in resources.files("latentforge.explore").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in _TYPES:
            out[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return out


def create_app(runs: list[ServedRun], token: str | None = None,
               log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)):
    """The Starlette application serving ``runs`` (see the module doc)."""
    import orjson
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    files = static_files()
    # Requests that compute (decode, interpolate, sample, mix) run in a pool of one thread per core
    # (INFERENCE_THREADS), first come first served: under 20 concurrent decodes each waits its
    # turn instead of 20 threads racing for the cores and the GIL (conv AE, 64 codes: p95 148 ->
    # 92 ms, and 17% less CPU a request; bench/explore_load.py). Everything else (maps, which may
    # wait for t-SNE, uploads, single images) stays on Starlette's thread pool.
    pool = ThreadPoolExecutor(max_workers=INFERENCE_THREADS, thread_name_prefix="explore-inference")

    async def infer(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))

    no_store = {"Cache-Control": "no-store"}

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=no_store)

    def png(data: bytes, cache: bool = False) -> Response:
        headers = {"Cache-Control": "private, max-age=3600"} if cache else no_store
        return Response(data, media_type="image/png", headers=headers)

    def get_run(request: Request) -> ServedRun:
        i = parse_index(request.path_params["run"], "run")
        if i >= len(runs):
            raise ApiError(404, f"unknown run {i}: {len(runs)} run(s) served (0..{len(runs) - 1})")
        return runs[i]

    def png_index(text: str) -> int:
        if not text.endswith(".png"):
            raise ApiError(404, f"unknown image {text[:40]!r} (expected INDEX.png)")
        return parse_index(text[:-4])

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            raise ApiError(413, f"request body of {int(length)} bytes: the limit is {MAX_BODY} bytes (10 MB)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise ApiError(413, f"request body larger than the limit of {MAX_BODY} bytes (10 MB)")
            chunks.append(chunk)
        body = b"".join(chunks)
        request._body = body          # form() reads the body from here, not from the stream again
        return body

    async def read_json(request: Request) -> dict[str, Any]:
        return parse_json(await read_body(request))

    def parse_json(body: bytes) -> dict[str, Any]:
        try:      # strict JSON (RFC 8259): NaN, Infinity and numbers beyond a double are malformed
            obj = orjson.loads(body or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"malformed JSON: {e}"[:300]) from None
        if not isinstance(obj, dict):
            raise ApiError(400, "expected a JSON object")
        return obj

    def fields(obj: dict[str, Any], allowed: tuple[str, ...]) -> None:
        unknown = sorted(set(obj) - set(allowed))
        if unknown:
            raise ApiError(400, f"unknown field(s) {', '.join(map(repr, unknown))[:200]}; expected "
                                f"{', '.join(allowed)}")

    def guarded(fn):
        """Turn ApiError into its JSON answer and any other failure into a 500 JSON answer."""
        async def endpoint(request: Request):
            t0 = time.perf_counter()
            try:
                if token is not None:
                    given = request.headers.get("x-token") or request.query_params.get("token") or ""
                    if not hmac.compare_digest(given.encode(), token.encode()):
                        raise ApiError(403, "missing or wrong token (header X-Token or ?token=)")
                response = await fn(request)
                # the time the server spent on the request (queueing for a core included)
                response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.1f}"
                return response
            except ApiError as e:
                return error(e.status, e.message)
            except Exception as e:        # noqa: BLE001 - the server goes on serving
                from ..errors import LatentforgeError
                if isinstance(e, LatentforgeError):
                    return error(400, str(e))
                log(f"latentforge: explore: {request.method} {request.url.path}: {type(e).__name__}: {e}")
                return error(500, f"internal error: {type(e).__name__}: {e}"[:300])
        return endpoint

    # -- pages -------------------------------------------------------------------------------
    async def index(request: Request):
        body, kind = files["index.html"]
        return Response(body, media_type=kind, headers=no_store)

    async def static(request: Request):
        name = request.path_params["name"]
        if name not in files:
            return error(404, f"unknown file {name[:40]!r}")
        body, kind = files[name]
        return Response(body, media_type=kind, headers=no_store)

    # -- the API -----------------------------------------------------------------------------
    async def list_runs(request: Request):
        return JSONResponse([r.describe() for r in runs], headers=no_store)

    async def get_map(request: Request):
        run = get_run(request)
        method = request.query_params.get("method")
        return JSONResponse(await run_in_threadpool(run.map_json, method), headers=no_store)

    def cached_png(render: Callable[[ServedRun, int], bytes]):
        """A GET route for ``.../{name}`` = ``INDEX.png``: ``render(run, INDEX)``, cacheable."""
        async def endpoint(request: Request):
            run = get_run(request)
            return png(await run_in_threadpool(render, run, png_index(request.path_params["name"])), cache=True)
        return endpoint

    async def point(request: Request):
        run = get_run(request)
        return JSONResponse(await run_in_threadpool(run.point, parse_index(request.path_params["index"])),
                            headers=no_store)

    def query_value(text: str | None) -> Any:
        """A query parameter as the JSON value it stands for: integers as int, ``null``/empty as None."""
        if text is None or text in ("", "null"):
            return None
        body = text[1:] if text[:1] == "-" else text
        return int(text) if body.isascii() and body.isdigit() and len(body) <= 20 else text

    async def decode(request: Request):
        run = get_run(request)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == BINARY_CODES:
            # n codes as little-endian float32 (?n=N&label=&ncols=): no JSON to parse under the GIL
            params = request.query_params
            unknown = sorted(set(params) - {"n", "label", "ncols", "token"})
            if unknown:
                raise ApiError(400, f"unknown query parameter(s) {', '.join(map(repr, unknown))[:200]}; "
                                    f"a binary decode takes n, label, ncols")
            body = await read_body(request)
            n, label, ncols = (query_value(params.get(k)) for k in ("n", "label", "ncols"))
            return png(await infer(lambda: run.decode_png(run.float32_codes(body, n), label, ncols)))
        body = await read_body(request)

        binary_hint = "n" in request.query_params

        def decode_json() -> bytes:       # a 64 x 576 body is ~2 ms of parsing: off the event loop
            try:
                obj = parse_json(body)
            except ApiError as e:
                if binary_hint:           # ?n= without the content type: float32 read as JSON
                    raise ApiError(e.status, f"{e.message} (binary codes need Content-Type: "
                                             f"{BINARY_CODES})") from None
                raise
            fields(obj, ("codes", "label", "ncols"))
            if "codes" not in obj:
                raise ApiError(400, "missing field \"codes\"")
            # only a body that could hold a JSON true/false needs the scan for booleans among the
            # codes; numbers and the field names have no "t" or "f" (one memchr, 3 us for 300 KB,
            # where looking for b"true" itself takes 0.2 ms)
            return run.decode_png(obj["codes"], obj.get("label"), obj.get("ncols"),
                                  may_hold_bools=b"t" in body or b"f" in body)
        return png(await infer(decode_json))

    async def interpolate(request: Request):
        run = get_run(request)
        obj = await read_json(request)
        fields(obj, ("a", "b", "steps", "method"))
        for key in ("a", "b"):
            if key not in obj:
                raise ApiError(400, f"missing field \"{key}\" (a point's index)")
        return png(await infer(run.interpolate_png, obj["a"], obj["b"], obj.get("steps", 8), obj.get("method")))

    async def sample(request: Request):
        run = get_run(request)
        obj = await read_json(request)
        fields(obj, ("n", "seed", "label", "truncation", "ncols", "guidance"))
        return png(await infer(run.sample_png, obj.get("n", 16), obj.get("seed", 0), obj.get("label"),
                               obj.get("truncation"), obj.get("ncols"), obj.get("guidance")))

    async def mix(request: Request):
        run = get_run(request)
        obj = await read_json(request)
        fields(obj, ("seed", "n", "crossover", "truncation"))
        return png(await infer(run.mix_png, obj.get("seed", 0), obj.get("n", 4), obj.get("crossover"),
                               obj.get("truncation")))

    async def encode(request: Request):
        run = get_run(request)
        body = await read_body(request)
        kind = request.headers.get("content-type", "")
        label: Any = request.query_params.get("label")
        if kind.startswith("multipart/form-data"):
            try:
                form = await request.form(max_files=1, max_fields=4, max_part_size=MAX_BODY)
            except HTTPException as e:
                raise ApiError(400, f"malformed upload: {e.detail}") from None
            upload = form.get("image") or form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "upload: send the image as the multipart field \"image\"")
            content = await upload.read()
            label = form.get("label", label)
        else:
            content = body
        if not content:
            raise ApiError(400, "upload: empty body (send a PNG or JPEG image)")
        if isinstance(label, str):
            label = None if label in ("", "null") else (int(label) if label.lstrip("-").isdigit() else label)
        method = request.query_params.get("method")
        return JSONResponse(await run_in_threadpool(run.encode_upload, content, label, method), headers=no_store)

    async def not_found(request: Request, exc: Exception):
        status = getattr(exc, "status_code", 404)
        what = "no such route" if status == 404 else "method not allowed"
        return error(status, f"{what}: {request.method} {request.url.path[:80]}")

    g = guarded
    routes = [
        Route("/", index), Route("/static/{name}", static),
        Route("/api/runs", g(list_runs)),
        Route("/api/runs/{run}/map", g(get_map)),
        Route("/api/runs/{run}/images/{name}", g(cached_png(ServedRun.image_png))),
        Route("/api/runs/{run}/reconstructions/{name}", g(cached_png(ServedRun.reconstruction_png))),
        Route("/api/runs/{run}/sprites/{name}", g(cached_png(ServedRun.sprite_png))),
        Route("/api/runs/{run}/points/{index}", g(point)),
        Route("/api/runs/{run}/decode", g(decode), methods=["POST"]),
        Route("/api/runs/{run}/interpolate", g(interpolate), methods=["POST"]),
        Route("/api/runs/{run}/sample", g(sample), methods=["POST"]),
        Route("/api/runs/{run}/encode", g(encode), methods=["POST"]),
        Route("/api/runs/{run}/mix", g(mix), methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def listen(host: str = "127.0.0.1", port: int = 0):
    """A listening socket on ``host:port`` (port 0: a free one), or ConfigError saying why not."""
    import socket

    from ..errors import ConfigError
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on connections whose
    # socket says proto == IPPROTO_TCP, and a response's header and body writes otherwise wait for
    # the client's delayed ACK (~40 ms a request on a kept-alive connection)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as e:
        sock.close()
        reason = getattr(e, "strerror", None) or e
        raise ConfigError(f"--host {host} --port {port}: cannot listen there: {reason}") from None
    sock.listen(128)
    return sock


def serve(runs: list[ServedRun], host: str = "127.0.0.1", port: int = 0, *, open_browser: bool = False,
          token: str | None = None, sock=None) -> None:
    """Serve ``runs`` until Ctrl-C (on ``sock`` if given, else a new socket on ``host:port``);
    print ``serving http://HOST:PORT/`` once listening."""
    import uvicorn

    if sock is None:
        sock = listen(host, port)
    real_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{real_port}/"
    app = create_app(runs, token=token)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print(f"serving {url}", flush=True)
                if open_browser:
                    import webbrowser
                    webbrowser.open(url + (f"?token={token}" if token else ""))

    import torch
    # a request decodes at most a few hundred images: one intra-op thread each, requests side by
    # side (state.INFERENCE); OpenMP teams of two on a busy 2-core machine cost 10x at n = 64
    torch.set_num_threads(1)
    for run in runs:                      # timed on the one thread the requests use (explore/kernels.py)
        run.choose_kernels()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2)
    server = Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:         # uvicorn re-raises the Ctrl-C it handled: a clean stop
        pass
    finally:
        sock.close()
