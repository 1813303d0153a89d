"""What ``latentforge explore`` holds for each run it serves, and the work behind every route.

A :class:`ServedRun` is built once, before the server says it is ready: the run's model, its data
(``--data``, default the run's own source), the codings and reconstruction errors of every served
point, and the training data's errors (for the anomaly percentile of an upload). Maps are computed
on demand (one worker thread, the default method queued at start) and cached in the run folder as
``explore/map-METHOD-KEY.npy``, KEY a digest of the data's fingerprint, the method and the codings.

Nothing here reads a path that came from a request: runs are addressed by their index on the
command line, points by integers, maps by a method name checked against a fixed list.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import queue
import struct
import sys
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError, LatentforgeError
from ..eval.anomaly import per_sample_error, percentile_of
from ..report.sections import data_uri
from ..models.capabilities import Capability, capabilities_of

#: thumbnails per sprite sheet side (a sheet holds SPRITE_SIDE**2 images, in map order)
SPRITE_SIDE = 32
#: most images one decode / sample request may ask for
MAX_IMAGES = 256
#: most interpolation steps
MAX_STEPS = 64
#: nearest neighbours listed for a point
K_NEIGHBOURS = 8
#: images listed that share a point's hash
MAX_SAME_HASH = 24
#: codings of at most this many bits are treated as binary hashes (sigmoid codings)
MAX_HASH_BITS = 32
MAP_DIR = "explore"
#: default cap on the points served (a random subsample above it, seeded)
DEFAULT_MAX_POINTS = 100_000


#: model calls running at once (each on one intra-op thread, see ``serve``): one per core, at most 8.
#: Models in eval mode hold no per-call state, so requests compute side by side on the cores
#: instead of waiting for each other (or oversubscribing them with intra-op threads).
INFERENCE_THREADS = max(1, min(os.cpu_count() or 1, 8))
INFERENCE = threading.BoundedSemaphore(INFERENCE_THREADS)


class ApiError(Exception):
    """A request the server refuses: HTTP ``status`` and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())


# ------------------------------------------------------------------------------ images and PNGs
def display_images(x: np.ndarray, sample_shape) -> np.ndarray:
    """``x`` as uint8 display images (N, H, W) or (N, H, W, C)."""
    from ..report.plots import to_display_images
    disp = to_display_images(np.asarray(x, np.float32), tuple(sample_shape))
    if disp is None:
        raise ApiError(409, "the data are not images")
    return (np.clip(disp, 0.0, 1.0) * 255).round().astype(np.uint8)


def png_bytes(img: np.ndarray) -> bytes:
    """A uint8 (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA image as PNG bytes: rows unfiltered,
    zlib level 1 with run-length matching only (Z_RLE: the runs of background and padding are what
    compresses in these grids). For a 64-image grid: 0.4 ms and ~30 KB, where plain level 1 takes
    0.6-0.8 ms for the same size within 5% and Pillow's adaptive filters twice that."""
    h, w = img.shape[:2]
    ch = 1 if img.ndim == 2 else img.shape[2]
    colour = {1: 0, 3: 2, 4: 6}[ch]
    raw = np.empty((h, 1 + w * ch), np.uint8)
    raw[:, 0] = 0                                  # filter type 0 (none) on every row
    raw[:, 1:] = np.ascontiguousarray(img, np.uint8).reshape(h, w * ch)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    idat = deflate.compress(raw.tobytes()) + deflate.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def mosaic(images: np.ndarray, ncols: int | None = None, pad: int = 1, fill: int = 40) -> np.ndarray:
    """uint8 images (N, H, W[, C]) tiled ``ncols`` wide (default: square-ish), ``pad`` pixels apart."""
    n = len(images)
    ncols = max(1, min(ncols or math.ceil(math.sqrt(n)), n))
    nrows = math.ceil(n / ncols)
    h, w = images.shape[1:3]
    shape = (nrows * (h + pad) + pad, ncols * (w + pad) + pad) + images.shape[3:]
    out = np.full(shape, fill, np.uint8)
    for k in range(n):
        r, c = divmod(k, ncols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = images[k]
    return out


# ------------------------------------------------------------------------------ anomaly scores
def reconstruction_errors(x, recon, kind: str) -> np.ndarray:
    """Per-sample reconstruction error: mean binary cross-entropy per value (``bce``, the loss of
    the chapter's sigmoid autoencoders) or mean squared error (``mse``), as float64."""
    return per_sample_error(torch.as_tensor(np.asarray(x, np.float64)),
                            torch.as_tensor(np.asarray(recon, np.float64)), kind).numpy()


def error_percentile(score: float, reference: np.ndarray) -> float:
    """The percentage of ``reference`` errors (sorted ascending) at or below ``score``: 99 means
    that 99% of the training data reconstruct at least as well."""
    if len(reference) == 0:
        return float("nan")
    return float(percentile_of([score], reference)[0])       # the anomaly scores' percentile (score)


# ------------------------------------------------------------------------------ request values
def as_int(value: Any, what: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ApiError(400, f"{what}: expected an integer, got {value!r}"[:200])
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ApiError(400, f"{what} {value}: must be in {rng}")
    return int(value)


def as_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(400, f"{what}: expected a finite number, got {value!r}"[:200])
    return float(value)


def as_nonnegative(value: Any, what: str, hint: str = "") -> float:
    """A finite number >= 0 (a truncation psi, a guidance weight)."""
    x = as_float(value, what)
    if x < 0:
        raise ApiError(400, f"{what} {x}: must be >= 0{hint}")
    return x


def parse_index(text: str, what: str = "index") -> int:
    """A path segment that must be a non-negative integer (404 otherwise: no such resource)."""
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise ApiError(404, f"unknown {what} {text[:40]!r}")
    return int(text)


# ------------------------------------------------------------------------------ the map worker
class MapWorker:
    """One daemon thread computing maps in order; ``submit`` returns an event-backed job."""

    def __init__(self) -> None:
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="explore-maps", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> _Job:
        job = _Job(fn)
        self._queue.put(job)
        return job

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            try:
                job.result = job.fn()
            except BaseException as e:   # noqa: BLE001 - reported to the requests that wait for it
                job.error = e
            job.done.set()


@dataclass
class _Job:
    fn: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None

    def wait(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


# ------------------------------------------------------------------------------ a served run
def capabilities(model, code_width: int | None, has_data: bool, is_image: bool) -> dict[str, bool]:
    """What the page may show for a model: decided by the capabilities it declares, not by its name."""
    caps = capabilities_of(model)
    encode = Capability.ENCODES in caps and has_data and code_width is not None
    decode = Capability.DECODES in caps and code_width is not None
    return {
        "map": encode,
        "encode": encode,
        "reconstruct": encode and Capability.RECONSTRUCTS in caps,
        "decode": decode,
        "interpolate": encode and decode,
        "sample": Capability.SAMPLES in caps,
        "conditional": Capability.CONDITIONAL in caps,
        "truncation": Capability.TRUNCATION in caps,
        "guidance": Capability.GUIDANCE in caps,
        "plane": encode and decode and code_width == 2,
        "hash": encode and Capability.UNIT_CODES in caps and code_width <= MAX_HASH_BITS,
        "images": has_data and is_image,
        "upload": encode and has_data and is_image,
        "slerp": Capability.GAUSSIAN_LATENT in caps,
        "mix": Capability.STYLE_MIXING in caps,
    }


def _gan_like_code_width(model) -> int | None:
    """Width of the latent a decode-only model (a GAN) takes, from its config."""
    size = getattr(model.config, "coding_size", None)
    return int(size) if isinstance(size, int) and not isinstance(size, bool) else None


class ServedRun:
    """One run folder served by ``explore`` (see the module doc)."""

    def __init__(self, index: int, run_dir: Path, *, data: str | None = None, labels: Path | None = None,
                 max_points: int | None = DEFAULT_MAX_POINTS, default_method: str = "tsne",
                 worker: MapWorker | None = None, data_cache: dict | None = None, seed: int = 0,
                 log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> None:
        from ..train import load_run
        self.index = index
        self.run_dir = Path(run_dir)
        self.run = load_run(run_dir, "cpu")
        self.model = self.run.model
        self.model.eval()
        self.lock = INFERENCE                 # bounded concurrent inference, across runs
        self.worker = worker or MapWorker()
        self.default_method = default_method
        self.seed = seed
        self.log = log
        self._maps: dict[str, _Job] = {}
        self._maps_lock = threading.Lock()
        self._sprites: dict[int, bytes] = {}
        self.ds = None
        self.y: np.ndarray | None = None
        self.source: str | None = None
        self.idx = np.zeros(0, np.int64)
        self.codes: np.ndarray | None = None
        self.code_shape: tuple[int, ...] | None = None
        self.errors: np.ndarray | None = None
        self.reference: np.ndarray = np.zeros(0)
        self.error_kind = "bce" if getattr(self.model.config, "loss", "mse") == "bce" else "mse"
        has_encoder = Capability.ENCODES in capabilities_of(self.model)
        if has_encoder:
            self._load_data(data, labels, max_points, data_cache if data_cache is not None else {})
        elif data is not None or labels is not None:
            log(f"latentforge: note: {self.run_dir}: {self.run.name} has no encoder; --data is not used for it")
        width = int(self.codes.shape[1]) if self.codes is not None else _gan_like_code_width(self.model)
        if self.codes is None:
            self.code_shape = (width,) if width is not None else None
        self.code_width = width
        is_image = bool(self.ds is not None and self.ds.is_image)
        self.caps = capabilities(self.model, width, self.ds is not None, is_image)
        self._hashes = None
        if self.caps["hash"]:
            bits = (self.codes >= 0.5).astype(np.uint64)
            self._hashes = (bits << np.arange(bits.shape[1], dtype=np.uint64)).sum(1)
        self._pos = {int(v): k for k, v in enumerate(self.idx)} if len(self.idx) <= 2_000_000 else None

    # -- setup -------------------------------------------------------------------------------
    def _load_data(self, data, labels, max_points, cache) -> None:
        from ..data import load_data, train_valid_split
        from ..data.dataset import Dataset
        info = self.run.data_info
        source = data or info.get("source")
        if source is None:
            raise DataError(f"{self.run_dir}: the run does not record its data source; give --data")
        key = (str(source), str(labels) if labels is not None else None)
        if key not in cache:
            cache[key] = load_data(source, labels=labels, download=False)
        ds = cache[key]
        self.model.check_data(ds.x, ds.name)
        if (Capability.CONDITIONAL in capabilities_of(self.model)) and ds.y is None:
            raise DataError(f"{ds.name}: {self.run.name} is conditional and needs the data's labels (give --labels)")
        n = len(ds)
        if n == 0:
            raise DataError(f"{ds.name}: no samples")
        if max_points is not None and n > max_points:
            idx = np.sort(np.random.default_rng(self.seed).choice(n, max_points, replace=False))
        else:
            idx = np.arange(n)
        self.ds, self.idx = ds, idx.astype(np.int64)
        self.source = str(source)
        x = ds.x[idx] if len(idx) < n else ds.x
        y = (ds.y[idx] if len(idx) < n else ds.y) if ds.y is not None else None
        self.y = y
        cond = y if (Capability.CONDITIONAL in capabilities_of(self.model)) else None
        with self.lock:
            codes = self.run.batched(self.model.encode, x, 2048, progress=False, desc="encode", y=cond)
        self.code_shape = tuple(codes.shape[1:])
        self.codes = np.ascontiguousarray(codes.reshape(len(codes), -1), dtype=np.float32)
        if Capability.RECONSTRUCTS in capabilities_of(self.model):
            self.errors = self._errors_of(x, cond)
            # the reference for an upload's percentile: the run's training split when this is its
            # own data (split as it was trained), else every served point
            reference = self.errors
            if str(source) == info.get("source") and info.get("valid_fraction"):
                positions = Dataset(x=np.arange(n, dtype=np.float32), y=None, name="index",
                                    sample_shape=(), is_image=False)
                train, valid = train_valid_split(positions, info["valid_fraction"], seed=self.run.config.seed)
                if valid is not None:
                    train_rows = train.x.astype(np.int64)
                    served = np.isin(self.idx, train_rows)
                    reference = self.errors[served] if served.any() else self.errors
            self.reference = np.sort(reference)
        self.fingerprint = self._fingerprint(x)

    def _errors_of(self, x, cond) -> np.ndarray:
        out = np.empty(len(x))
        for i in range(0, len(x), 2048):
            xb = np.asarray(x[i:i + 2048], np.float32)
            with self.lock:
                rec = self.run.batched(self.model.reconstruct, xb, 2048, progress=False, desc="reconstruct",
                                       y=cond[i:i + 2048] if cond is not None else None)
            out[i:i + len(xb)] = reconstruction_errors(xb, rec, self.error_kind)
        return out

    @staticmethod
    def _fingerprint(x) -> str:
        from ..train.run import fingerprint
        return fingerprint(np.ascontiguousarray(x, np.float32))

    # -- description -------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        from ..report.embedding import available_methods
        ds = self.ds
        sample_shape = list(ds.sample_shape) if ds is not None else self.run.data_info.get("sample_shape")
        classes = None
        n_classes = getattr(self.model.config, "n_classes", None) if self.caps["conditional"] else None
        if self.ds is not None and self.y is not None:
            values = sorted(int(v) for v in np.unique(self.y))
            names = ds.class_names
            classes = [{"label": v, "name": str(names[v]) if names and 0 <= v < len(names) else str(v)}
                       for v in values]
        elif n_classes:
            classes = [{"label": v, "name": str(v)} for v in range(int(n_classes))]
        methods = ["latent"] if self.code_width == 2 else available_methods()
        image_hw = None
        if self.caps["images"]:
            image_hw = list(display_images(self.ds.x[:1], self.ds.sample_shape).shape[1:3])
        return {
            "index": self.index, "name": self.run_dir.name, "model": self.run.name,
            "data": self.source if self.ds is not None else self.run.data_info.get("source"),
            "n": len(self.idx), "n_data": len(self.ds) if self.ds is not None else 0,
            "capabilities": self.caps, "code_width": self.code_width,
            "code_shape": list(self.code_shape) if self.code_shape else None,
            "sample_shape": sample_shape, "image_hw": image_hw, "classes": classes,
            "n_classes": int(n_classes) if n_classes else None,
            "methods": methods, "default_method": "latent" if self.code_width == 2 else self.default_method,
            "interpolation": "slerp" if self.caps["slerp"] else "linear",
            "error": self.error_kind if self.errors is not None else None,
            "sprite_side": SPRITE_SIDE,
            "n_styles": int(self.model.sampling_generator.synthesis.n_styles) if self.caps["mix"] else None,
        }

    # -- points --------------------------------------------------------------------------------
    def position(self, index: int) -> int:
        """The served position of data row ``index`` (404 when it is not served)."""
        if self.ds is None:
            raise ApiError(404, f"run {self.index} ({self.run.name}) has no data points")
        pos = self._pos.get(index) if self._pos is not None else None
        if pos is None and self._pos is None:
            k = int(np.searchsorted(self.idx, index))
            pos = k if k < len(self.idx) and self.idx[k] == index else None
        if pos is None:
            raise ApiError(404, f"unknown index {index}: run {self.index} serves {len(self.idx)} points "
                                f"(indices 0..{len(self.ds) - 1} of {self.source})")
        return pos

    def require(self, cap: str, what: str) -> None:
        if not self.caps.get(cap):
            raise ApiError(400, f"run {self.index} ({self.run.name}) cannot {what}")

    def image_png(self, index: int) -> bytes:
        self.require("images", "show images (its data are not images)")
        pos = self.position(index)
        return png_bytes(display_images(self.ds.x[self.idx[pos]][None], self.ds.sample_shape)[0])

    def _labels_tensor(self, labels) -> torch.Tensor | None:
        if not self.caps["conditional"] or labels is None:
            return None
        return torch.as_tensor(np.asarray(labels), dtype=torch.long)

    def reconstruction_png(self, index: int) -> bytes:
        self.require("reconstruct", "reconstruct")
        self.require("images", "show images (its data are not images)")
        pos = self.position(index)
        x = torch.as_tensor(np.asarray(self.ds.x[self.idx[pos]][None], np.float32))
        y = self._labels_tensor(self.y[pos:pos + 1] if self.y is not None else None)
        with self.lock, torch.inference_mode():
            rec = self.model.reconstruct(x, y) if y is not None else self.model.reconstruct(x)
        return png_bytes(display_images(rec.float().numpy(), self.ds.sample_shape)[0])

    def point(self, index: int, k: int = K_NEIGHBOURS) -> dict[str, Any]:
        self.require("encode", "encode its data")
        pos = self.position(index)
        c = self.codes[pos]
        d = ((self.codes - c) ** 2).sum(1)
        d[pos] = np.inf
        k = min(k, len(d) - 1)
        near = np.argpartition(d, k)[:k] if 0 < k < len(d) else np.arange(0)
        near = near[np.argsort(d[near])]
        out: dict[str, Any] = {
            "index": index, "label": int(self.y[pos]) if self.y is not None else None,
            "code": [round(float(v), 6) for v in c],
            "neighbours": [int(self.idx[j]) for j in near],
            "neighbour_distances": [round(float(math.sqrt(d[j])), 6) for j in near],
        }
        if self.errors is not None:
            out["error"] = float(self.errors[pos])
            out["percentile"] = error_percentile(float(self.errors[pos]), self.reference)
        if self._hashes is not None:
            h = self._hashes[pos]
            same = np.flatnonzero(self._hashes == h)
            out["hash"] = format(int(h), f"0{self.code_width}b")[::-1]    # bit i = code unit i
            out["same_hash_count"] = len(same) - 1
            out["same_hash"] = [int(self.idx[j]) for j in same if j != pos][:MAX_SAME_HASH]
        return out

    def sprite_png(self, sheet: int) -> bytes:
        self.require("images", "show images (its data are not images)")
        per = SPRITE_SIDE * SPRITE_SIDE
        n_sheets = math.ceil(len(self.idx) / per)
        if sheet >= n_sheets:
            raise ApiError(404, f"unknown sprite sheet {sheet}: run {self.index} has {n_sheets}")
        if sheet not in self._sprites:
            rows = self.idx[sheet * per:(sheet + 1) * per]
            imgs = display_images(self.ds.x[rows], self.ds.sample_shape)
            grid = mosaic(imgs, SPRITE_SIDE, pad=0)
            if len(self._sprites) > 64:
                self._sprites.clear()
            self._sprites[sheet] = png_bytes(grid)
        return self._sprites[sheet]

    # -- maps ----------------------------------------------------------------------------------
    def map_method(self, method: str | None) -> str:
        from ..report.embedding import METHODS, available_methods
        if not self.caps["map"]:
            raise ApiError(400, f"run {self.index} ({self.run.name}) has no encoder: it has no map")
        if method is None or method == "":
            method = self.default_method
        if self.code_width == 2:
            return "latent"
        if method not in METHODS:
            raise ApiError(400, f"method {method[:40]!r}: must be one of {', '.join(METHODS)}")
        if method not in available_methods():
            raise ApiError(400, f"method {method!r} is not available here (pip install umap-learn)")
        return method

    def _map_path(self, method: str) -> Path:
        h = hashlib.blake2b(digest_size=8)
        h.update(f"{self.fingerprint}|{method}|{self.seed}|{len(self.idx)}|".encode())
        h.update(np.ascontiguousarray(self.idx).tobytes())
        h.update(self.codes.tobytes())
        return self.run_dir / MAP_DIR / f"map-{method}-{h.hexdigest()}.npy"

    def _compute_map(self, method: str) -> np.ndarray:
        from ..report.embedding import embed
        path = self._map_path(method)
        if path.is_file():
            try:
                xy = np.load(path, allow_pickle=False)
                if xy.shape == (len(self.idx), 2) and np.isfinite(xy).all():
                    return xy.astype(np.float32)
            except (OSError, ValueError):
                pass
        xy = embed(self.codes, "tsne" if method == "latent" else method, seed=self.seed).xy
        try:
            from ..io import atomic_write_bytes
            path.parent.mkdir(exist_ok=True)
            buf = io.BytesIO()
            np.save(buf, xy.astype(np.float32))
            atomic_write_bytes(path, buf.getvalue())
        except OSError as e:
            self.log(f"latentforge: warning: cannot cache the map in {path.parent}: {e.strerror or e}")
        return xy.astype(np.float32)

    def map_job(self, method: str) -> _Job:
        """The map's job: t-SNE and UMAP queue on the worker thread; 2-D codings and PCA (seconds
        for a million points) are computed at once, in the calling thread."""
        with self._maps_lock:
            job = self._maps.get(method)
            if job is None or (job.done.is_set() and job.error is not None):
                if method in ("latent", "pca"):
                    job = _Job(lambda: self._compute_map(method))
                    try:
                        job.result = job.fn()
                    except BaseException as e:      # noqa: BLE001 - reported to the request
                        job.error = e
                    job.done.set()
                else:
                    job = self.worker.submit(lambda: self._compute_map(method))
                self._maps[method] = job
            return job

    def map_xy(self, method: str | None) -> tuple[str, np.ndarray]:
        method = self.map_method(method)
        try:
            return method, self.map_job(method).wait()
        except LatentforgeError as e:
            raise ApiError(500, f"map ({method}) failed: {e}") from None

    def map_json(self, method: str | None) -> dict[str, Any]:
        method, xy = self.map_xy(method)
        return {"x": np.round(xy[:, 0].astype(np.float64), 5).tolist(),
                "y": np.round(xy[:, 1].astype(np.float64), 5).tolist(),
                "label": self.y.tolist() if self.y is not None else [None] * len(self.idx),
                "index": self.idx.tolist(), "method": method}

    # -- decoding ------------------------------------------------------------------------------
    def choose_kernels(self, n: int = 64) -> list[str]:
        """Time the decoder's transposed convolutions on ``n`` seeded codes with each CPU kernel
        and keep the faster one per layer (:mod:`.kernels`); the names of the layers switched."""
        from .kernels import choose_transposed_conv_kernels
        if not self.caps["decode"] or self.code_shape is None:
            return []
        z = torch.as_tensor(np.random.default_rng(self.seed).normal(size=(n, *self.code_shape)), dtype=torch.float32)
        args = []
        if self.caps["conditional"]:                  # one class after another
            args = [self._labels_tensor(np.arange(n) % int(self.model.config.n_classes))]
        try:
            with self.lock:
                return choose_transposed_conv_kernels(self.model, lambda: self.model.decode(z, *args))
        except Exception as e:                        # noqa: BLE001 - a speed-up, never a reason not to serve
            self.log(f"latentforge: note: {self.run_dir}: kept the default convolution kernels ({type(e).__name__}: {e})")
            return []

    def _decode(self, z: np.ndarray, labels=None, soft: np.ndarray | None = None) -> np.ndarray:
        """Decode flat codes (N, width) to uint8 display images."""
        zt = torch.as_tensor(z.reshape((len(z), *self.code_shape)), dtype=torch.float32)
        args: list[Any] = []
        if self.caps["conditional"]:
            if soft is not None:
                args = [torch.as_tensor(soft, dtype=torch.float32)]
            else:
                args = [self._labels_tensor(labels)]
        with self.lock, torch.inference_mode():
            out = self.model.decode(zt, *args)
        shape = self.ds.sample_shape if self.ds is not None else tuple(self.model.config.input_shape)
        return display_images(out.float().numpy(), shape)

    def check_label(self, label: Any, n: int) -> np.ndarray | None:
        """Labels for ``n`` images from a request's ``label`` (conditional models need one)."""
        if not self.caps["conditional"]:
            if label is not None:
                raise ApiError(400, f"label: run {self.index} ({self.run.name}) is not conditional")
            return None
        k = int(getattr(self.model.config, "n_classes", 0) or 0)
        if label is None:
            return None
        lab = as_int(label, "label", 0, k - 1 if k else None)
        return np.full(n, lab, np.int64)

    def _check_codes(self, codes: list, may_hold_bools: bool = True) -> np.ndarray:
        """The codes of a request as float32 (N, width); 400 naming the first bad row otherwise.
        numpy checks the usual request at once (a 64 x 576 conv code: 0.2 ms, not 70 ms in Python);
        the row-by-row pass only runs to name what is wrong. numpy reads ``true`` beside numbers as
        1.0: unless the caller knows there are no booleans (a JSON body without ``true``/``false``),
        a scan for them comes first."""
        width = self.code_width
        if not (may_hold_bools and any(type(v) is bool for row in codes if isinstance(row, list) for v in row)):
            try:
                arr = np.asarray(codes)
                if arr.dtype.kind in "iuf" and arr.shape == (len(codes), width) and np.isfinite(arr).all():
                    return arr.astype(np.float32)
            except (ValueError, TypeError, OverflowError):
                pass
        for i, row in enumerate(codes):
            if not isinstance(row, list):
                raise ApiError(400, f"codes[{i}]: expected a list of numbers")
            if len(row) != width:
                raise ApiError(400, f"codes[{i}]: expected {width} numbers (the code width), got {len(row)}")
            for v in row:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ApiError(400, f"codes[{i}]: expected finite numbers, got {v!r}"[:200])
        raise ApiError(400, f"codes: expected {len(codes)} rows of {width} finite numbers")

    def float32_codes(self, body: bytes, n: Any) -> np.ndarray:
        """The codes of a binary decode request: ``n`` rows of the code width as little-endian
        float32, nothing before or after (``?n=`` says how many, so a truncated body is an error,
        not fewer images). Read without a copy per value: 64 conv codes take microseconds where
        their JSON takes ~2 ms of parsing under the GIL."""
        self.require("decode", "decode codes")
        if n is None:
            raise ApiError(400, "binary codes: give their number as ?n=N (the body holds N x code width "
                                "little-endian float32 values)")
        rows = as_int(n, "n", 1, MAX_IMAGES)
        width = self.code_width
        want = rows * width * 4
        if len(body) != want:
            raise ApiError(400, f"binary codes: n={rows} codes of width {width} are {want} bytes of "
                                f"little-endian float32, got {len(body)} bytes")
        z = np.frombuffer(body, "<f4").reshape(rows, width)
        finite = np.isfinite(z).all(1)
        if not finite.all():
            bad = int(np.argmin(finite))
            raise ApiError(400, f"codes[{bad}]: expected finite numbers (a NaN or infinity was sent)")
        return z.astype(np.float32)           # native byte order, and writable for torch

    def decode_png(self, codes: Any, label: Any = None, ncols: Any = None, *, may_hold_bools: bool = True) -> bytes:
        """A PNG grid of the decoded ``codes``: a request's JSON list of lists (checked here; see
        :meth:`_check_codes` for ``may_hold_bools``) or a float32 array (N, width) already checked
        by :meth:`float32_codes`."""
        self.require("decode", "decode codes")
        if isinstance(codes, np.ndarray):
            z = codes
        else:
            if not isinstance(codes, list) or not codes:
                raise ApiError(400, "codes: expected a non-empty list of codes (lists of numbers)")
            if len(codes) > MAX_IMAGES:
                raise ApiError(400, f"codes: at most {MAX_IMAGES} codes per request, got {len(codes)}")
            z = self._check_codes(codes, may_hold_bools)
        labels = self.check_label(label, len(z))
        if self.caps["conditional"] and labels is None:
            raise ApiError(400, f"run {self.index} ({self.run.name}) is conditional: give \"label\"")
        cols = as_int(ncols, "ncols", 1, MAX_IMAGES) if ncols is not None else None
        return png_bytes(mosaic(self._decode(z, labels), cols))

    def interpolate_png(self, a: Any, b: Any, steps: Any = 8, method: Any = None) -> bytes:
        from ..models.interpolation import interpolate_codes
        self.require("interpolate", "interpolate (it needs an encoder and a decoder)")
        ia, ib = as_int(a, "a", 0), as_int(b, "b", 0)
        pa, pb = self.position(ia), self.position(ib)
        steps = as_int(steps if steps is not None else 8, "steps", 2, MAX_STEPS)
        if method is None:
            method = "slerp" if self.caps["slerp"] else "linear"
        if method not in ("linear", "slerp"):
            raise ApiError(400, f"method {str(method)[:40]!r}: must be linear or slerp")
        path = interpolate_codes(self.codes[pa], self.codes[pb], steps, method).astype(np.float32)
        soft = None
        if self.caps["conditional"]:
            k = int(self.model.config.n_classes)
            eye = np.eye(k)
            w = np.linspace(0.0, 1.0, steps)[:, None]
            soft = (1 - w) * eye[int(self.y[pa])] + w * eye[int(self.y[pb])]
        return png_bytes(mosaic(self._decode(path, soft=soft), steps))

    def sample_png(self, n: Any = 16, seed: Any = 0, label: Any = None, truncation: Any = None,
                   ncols: Any = None, guidance: Any = None) -> bytes:
        self.require("sample", "generate samples")
        n = as_int(n if n is not None else 16, "n", 1, MAX_IMAGES)
        seed = as_int(seed if seed is not None else 0, "seed", 0, 2**63 - 1)
        labels = self.check_label(label, n)
        if self.caps["conditional"] and labels is None:        # one class after another
            labels = np.arange(n) % int(self.model.config.n_classes)
        kwargs: dict[str, Any] = {}
        for what, value, lacks, hint in (("truncation", truncation, "has no truncation trick", ""),
                                         ("guidance", guidance, "samples without guidance", " (1 = unguided)")):
            if value is not None:
                if not self.caps[what]:
                    raise ApiError(400, f"{what}: run {self.index} ({self.run.name}) {lacks}")
                kwargs[what] = as_nonnegative(value, what, hint)
        cols = as_int(ncols, "ncols", 1, MAX_IMAGES) if ncols is not None else None
        gen = torch.Generator().manual_seed(seed)
        with self.lock, torch.inference_mode():
            out = self.model.sample(n, self._labels_tensor(labels), generator=gen, **kwargs)
        shape = self.ds.sample_shape if self.ds is not None else tuple(self.model.config.input_shape)
        return png_bytes(mosaic(display_images(out.float().clamp(0, 1).numpy(), shape), cols))

    def mix_png(self, seed: Any = 0, n: Any = 4, crossover: Any = None, truncation: Any = None) -> bytes:
        """StyleGAN's style-mixing figure: ``n`` sources A (left column) and ``n`` sources B (top
        row); each cell takes A's styles below layer ``crossover`` (coarse: pose, shape) and B's
        from it on (fine: stroke, texture)."""
        self.require("mix", "mix styles (it has no mapping network with per-layer styles)")
        g = self.model.sampling_generator
        k = int(g.synthesis.n_styles)
        n = as_int(n if n is not None else 4, "n", 1, 8)
        seed = as_int(seed if seed is not None else 0, "seed", 0, 2**63 - 1)
        cut = as_int(crossover if crossover is not None else k // 2, "crossover", 1, k - 1)
        psi = as_nonnegative(truncation, "truncation") if truncation is not None else None
        gen = torch.Generator().manual_seed(seed)
        za = self.model.latent(n, gen, device="cpu")
        zb = self.model.latent(n, gen, device="cpu")
        with self.lock, torch.inference_mode():
            wa, wb = g.mapping(za), g.mapping(zb)
            a = wa[:, None].expand(n, k, wa.shape[-1]).clone()
            b = wb[:, None].expand(n, k, wb.shape[-1]).clone()
            if psi is not None and callable(getattr(g, "truncate", None)):
                a, b = g.truncate(a, psi), g.truncate(b, psi)
            mixed = a[:, None].repeat(1, n, 1, 1)
            mixed[:, :, cut:] = b[None, :, cut:]
            out = self.model.from_internal(g.synthesis(torch.cat([a, b, mixed.reshape(n * n, k, -1)])))
        shape = tuple(self.model.config.input_shape)
        imgs = display_images(out.float().clamp(0, 1).numpy(), shape)
        cells = np.zeros(((n + 1) ** 2,) + imgs.shape[1:], np.uint8)
        for c in range(n):
            cells[1 + c] = imgs[n + c]                          # top row: the B sources
        for r in range(n):
            cells[(r + 1) * (n + 1)] = imgs[r]                  # left column: the A sources
            for c in range(n):
                cells[(r + 1) * (n + 1) + 1 + c] = imgs[2 * n + r * n + c]
        return png_bytes(mosaic(cells, n + 1))

    # -- uploads -------------------------------------------------------------------------------
    def encode_upload(self, content: bytes, label: Any = None, method: str | None = None) -> dict[str, Any]:
        self.require("upload", "encode uploads (it needs an encoder and image data)")
        x = self._image_from_bytes(content)
        labels = self.check_label(label, 1)
        if self.caps["conditional"] and labels is None:
            raise ApiError(400, f"run {self.index} ({self.run.name}) is conditional: give the image's \"label\"")
        y = self._labels_tensor(labels)
        xt = torch.as_tensor(x[None])
        with self.lock, torch.inference_mode():
            code = self.model.encode(xt, y) if y is not None else self.model.encode(xt)
            rec = self.model.reconstruct(xt, y) if y is not None else self.model.reconstruct(xt)
        flat = code.float().numpy().reshape(-1).astype(np.float32)
        score = float(reconstruction_errors(x[None], rec.float().numpy(), self.error_kind)[0])
        method, xy = self.map_xy(method)
        px, py = self._place(flat, xy, method)
        d = ((self.codes - flat) ** 2).sum(1)
        near = np.argsort(d)[:K_NEIGHBOURS]
        return {"code": [round(float(v), 6) for v in flat], "x": px, "y": py, "method": method,
                "score": score, "percentile": error_percentile(score, self.reference),
                "error": self.error_kind, "neighbours": [int(self.idx[j]) for j in near],
                "reconstruction": data_uri(png_bytes(display_images(rec.float().numpy(), self.ds.sample_shape)[0]))}

    def _place(self, code: np.ndarray, xy: np.ndarray, method: str) -> tuple[float, float]:
        """Where a new coding lands on a map: exactly for linear maps (2-D codes, PCA), else at
        the median position of its nearest served neighbours (openTSNE places new points so)."""
        if method == "latent":
            return float(code[0]), float(code[1])
        if method == "pca":                       # PCA is affine: recover it from the map itself
            a = np.concatenate([self.codes, np.ones((len(self.codes), 1), np.float32)], 1).astype(np.float64)
            w, *_ = np.linalg.lstsq(a, xy.astype(np.float64), rcond=None)
            p = np.concatenate([code, [1.0]]) @ w
            return float(p[0]), float(p[1])
        d = ((self.codes - code) ** 2).sum(1)
        near = np.argsort(d)[:10]
        p = np.median(xy[near], 0)
        return float(p[0]), float(p[1])

    def _image_from_bytes(self, content: bytes) -> np.ndarray:
        """The uploaded PNG/JPEG as one sample shaped like the data (checked before decoding)."""
        import warnings

        from PIL import Image, UnidentifiedImageError
        shape = tuple(self.ds.sample_shape)
        hw = display_images(self.ds.x[:1], shape).shape[1:]
        want_h, want_w = hw[0], hw[1]
        channels = hw[2] if len(hw) == 3 else 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(io.BytesIO(content))
                if im.format not in ("PNG", "JPEG"):
                    raise ApiError(400, f"upload: a PNG or JPEG image is expected, got {im.format}")
                if im.size != (want_w, want_h):
                    raise ApiError(400, f"upload: the image is {im.size[0]}x{im.size[1]} pixels; this run "
                                        f"takes {want_w}x{want_h}")
                im = im.convert("L" if channels == 1 else "RGB")
                arr = np.asarray(im, np.float32) / 255.0
        except ApiError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
                Image.DecompressionBombWarning):
            raise ApiError(400, "upload: not a readable PNG or JPEG image") from None
        if channels == 1:
            x = arr.reshape(shape)
        else:                       # display images are channels-last; the data may be (C, H, W)
            x = arr if shape[-1] == channels else np.moveaxis(arr, -1, 0)
            x = x.reshape(shape)
        return np.ascontiguousarray(x, np.float32)


def load_runs(run_dirs: list[Path], *, data: str | None = None, labels: Path | None = None,
              max_points: int | None = DEFAULT_MAX_POINTS, method: str = "tsne", seed: int = 0,
              precompute: bool = True, log: Callable[[str], None] | None = None) -> list[ServedRun]:
    """Load every run to serve (errors: one line, before the server starts) and queue the maps
    of the default method."""
    if method not in ("tsne", "pca", "umap"):
        raise ConfigError(f"--method {method!r}: must be one of tsne, umap, pca")
    if method == "umap":
        from ..report.embedding import umap_available
        if not umap_available():
            raise ConfigError("--method umap needs the umap-learn package (pip install umap-learn)")
    if max_points is not None and max_points < 1:
        raise ConfigError(f"--max-points {max_points}: must be >= 1")
    worker = MapWorker()
    cache: dict = {}
    kw = {"log": log} if log is not None else {}
    runs = [ServedRun(i, Path(d), data=data, labels=labels, max_points=max_points, default_method=method,
                      worker=worker, data_cache=cache, seed=seed, **kw) for i, d in enumerate(run_dirs)]
    if precompute:
        for r in runs:
            if r.caps["map"]:
                r.map_job(r.map_method(None))
    return runs
