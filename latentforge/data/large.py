"""Data larger than memory: a memory-mapped ``.npy`` file or a folder of shards, read in blocks.

:func:`open_large` is the hook :func:`~latentforge.data.sources.load_path` calls first. It
returns a :class:`StreamingDataset` for

* a ``.npy`` file whose float32 size exceeds :func:`stream_threshold` (opened with
  ``np.load(mmap_mode="r")``), and
* a **shard folder** larger than that threshold: a folder of ``.npy`` shards (labels, if any, in
  ``<stem>.labels.npy`` beside each shard), or a folder with several IDX images files for the
  split (``train-00-images-idx3-ubyte``, ``train-01-images-idx3-ubyte.gz``, ...; labels beside
  each by the standard name). A shard folder small enough is read into memory instead.

The threshold is ``LATENTFORGE_STREAM_BYTES`` (bytes) or a quarter of the physical memory.

A :class:`StreamingDataset` is a :class:`~latentforge.data.dataset.Dataset` whose ``x`` is a
:class:`BlockArray`: ``np.load(mmap_mode="r")`` gives the layout (shape, dtype, data offset),
and rows are read on demand with positioned reads of each run of consecutive rows, so the
pages read stay in the page cache and never in the process's resident set; they are converted
by the usual value rules (uint8 / 255, NaN/Inf refused) block by block, never all at once. ``subset`` (hence
``train_valid_split`` and ``--limit``) gives views without reading anything. Training reads
shuffled blocks (:meth:`StreamingDataset.epoch_batches`): the block boundaries (a random
offset), the block order and the order within each block are a pure function of seed and
epoch, so a resumed run sees exactly the order it would have seen, and a background thread
reads the next block while the current one trains. Range checks (``min``/``max``) and the
data fingerprint of a streamed array use a fixed sample of rows, not the whole file.
"""
from __future__ import annotations

import hashlib
import math
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import DataError
from .dataset import Dataset, make_dataset, to_float32, to_labels
from .formats.idx import IDX_DTYPES, SPLIT_TOKENS, idx_images_in, labels_beside, read_idx
from .formats.labels import read_labels
from .formats.npy import read_npy

#: rows read per training block aim at this many float32 bytes (a block is shuffled in memory)
BLOCK_BYTES = 32 << 20
#: rows sampled for range checks, normaliser fitting and fingerprints aim at these budgets
SAMPLE_BYTES = 64 << 20
FINGERPRINT_CHUNKS, FINGERPRINT_ROWS = 64, 16


def stream_threshold() -> int:
    """Data whose float32 size exceeds this many bytes is streamed instead of loaded."""
    env = os.environ.get("LATENTFORGE_STREAM_BYTES")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise DataError(f"LATENTFORGE_STREAM_BYTES={env!r}: expected a number of bytes") from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 << 30


# ---------------------------------------------------------------------------------------- shards
@dataclass
class Shard:
    """One file of rows: memory-mappable (``offset`` into ``path``) or gzip IDX (decoded whole)."""

    path: Path
    n: int
    raw_shape: tuple          # per-sample shape on disk
    dtype: np.dtype           # on-disk dtype (IDX is big-endian)
    offset: int | None        # None: gzip-compressed, read whole

    def read(self, rows: np.ndarray | slice, cache: dict) -> np.ndarray:
        """Raw rows (a slice or sorted indices) as a new in-memory array."""
        if self.offset is None:
            arr = cache.get(self.path)
            if arr is None:
                arr = read_idx(self.path)
                cache.clear()                      # one decoded gzip shard at a time
                cache[self.path] = arr
            return np.array(arr[rows])
        # positioned reads of each run of consecutive rows straight into the result: the file's
        # pages stay in the page cache, never in this process's resident set (a memory map's would)
        if isinstance(rows, slice):
            starts, lengths = np.array([rows.start]), np.array([rows.stop - rows.start])
        else:
            rows = np.asarray(rows, dtype=np.int64)
            cut = np.flatnonzero(np.diff(rows) != 1) + 1
            starts = rows[np.concatenate([[0], cut])] if len(rows) else rows
            lengths = np.diff(np.concatenate([[0], cut, [len(rows)]])) if len(rows) else rows
        row_bytes = self.dtype.itemsize * int(np.prod(self.raw_shape))
        out = np.empty((int(lengths.sum()), *self.raw_shape), self.dtype)
        flat = out.reshape(-1).view(np.uint8)
        with open(self.path, "rb", buffering=0) as f:          # unbuffered: reads go straight in
            at = 0
            for start, length in zip(starts.tolist(), lengths.tolist()):
                want, done = length * row_bytes, 0
                f.seek(self.offset + start * row_bytes)
                while done < want:
                    got = f.readinto(flat[at + done:at + want])
                    if not got:
                        raise DataError(f"{self.path}: file ended early (truncated while being read?)")
                    done += got
                at += want
        return out


def _check_shape(shape: tuple, source: str) -> None:
    """The shape rules of :func:`~latentforge.data.dataset.make_dataset`."""
    ndim = len(shape)
    if ndim == 0 or shape[0] == 0:
        raise DataError(f"{source}: the data is empty (no samples)")
    if ndim == 1 or ndim > 4:
        raise DataError(f"{source}: array of shape {shape} is not images (N, H, W) / (N, C, H, W) or a table (N, D)")
    if ndim == 4 and shape[1] not in (1, 3, 4):
        raise DataError(f"{source}: 4-D array of shape {shape} must be (N, C, H, W) with C in 1, 3 or 4")
    if 0 in shape[1:]:
        raise DataError(f"{source}: samples of shape {shape[1:]} are empty")


def _npy_shard(path: Path) -> Shard:
    try:
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: cannot read .npy file ({e})") from e
    if not isinstance(mm, np.memmap):
        raise DataError(f"{path}: not a .npy array file")
    if mm.dtype.kind not in "biuf":
        raise DataError(f"{path}: unsupported data type {mm.dtype} (expected numbers)")
    if mm.ndim > 1 and not mm.flags.c_contiguous:
        raise DataError(f"{path}: a Fortran-ordered .npy cannot be streamed; save it C-ordered "
                        f"(np.save(path, np.ascontiguousarray(x)))")
    _check_shape(tuple(mm.shape), str(path))
    shard = Shard(path, int(mm.shape[0]), tuple(int(s) for s in mm.shape[1:]), mm.dtype, int(mm.offset))
    del mm
    return shard


def _idx_shard(path: Path) -> Shard:
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(4 + 4 * 255)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    if head[:2] == b"\x1f\x8b":                         # gzip: the header lies inside; decode once to check
        arr = read_idx(path)
        _check_shape(arr.shape, str(path))
        return Shard(path, int(arr.shape[0]), tuple(arr.shape[1:]), arr.dtype, None)
    ndim = head[3] if len(head) >= 4 else 0
    if not ndim or head[0] or head[1] or head[2] not in IDX_DTYPES or len(head) < 4 + 4 * ndim:
        raise DataError(f"{path}: not an IDX file (bad or truncated header)")
    dims = struct.unpack(f">{ndim}I", head[4:4 + 4 * ndim])
    dtype = np.dtype(IDX_DTYPES[head[2]][0])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if path.stat().st_size - offset != expected:
        raise DataError(f"{path}: header says {'x'.join(map(str, dims))} = {expected} bytes but the file "
                        f"holds {path.stat().st_size - offset}")
    _check_shape(tuple(dims), str(path))
    return Shard(path, int(dims[0]), tuple(int(d) for d in dims[1:]), dtype, offset)


# ---------------------------------------------------------------------------------------- the array
class BlockArray:
    """The float32 samples of shards (or a view of them), read on demand in canonical shape.

    Indexing (an int, a slice or an index array) returns a numpy array; ``np.asarray`` reads
    everything (only for data that fits). ``min``/``max`` are taken over a fixed sample of rows.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, shards: list[Shard], name: str, rows: np.ndarray | slice | None = None):
        self.shards = shards
        self.name = name
        self.starts = np.cumsum([0] + [s.n for s in shards])          # global row of each shard's first row
        total = int(self.starts[-1])
        self.rows = slice(0, total) if rows is None else rows         # view position -> global row
        raw = shards[0].raw_shape
        self.sample_shape = (1, *raw) if len(raw) == 2 else raw       # (H, W) images become (1, H, W)
        self._cache: dict = {}
        self._lock = threading.Lock()
        self._range: tuple[float, float] | None = None

    # -- numpy-like surface --------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return (len(self), *self.sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    @property
    def size(self) -> int:
        return len(self) * int(np.prod(self.sample_shape))

    @property
    def nbytes(self) -> int:
        return self.size * 4

    def __len__(self) -> int:
        r = self.rows
        return r.stop - r.start if isinstance(r, slice) else len(r)

    def __repr__(self) -> str:
        return f"BlockArray({self.name!r}, shape={self.shape}, {len(self.shards)} shard(s))"

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            k = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= k < len(self):
                raise IndexError(f"index {key} out of range for {len(self)} samples")
            return self.read(np.array([k]))[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self.read(slice(start, max(start, stop)))
            return self.read(np.arange(start, stop, step))
        return self.read(np.asarray(key))

    def __array__(self, dtype=None, copy=None):
        out = self.read(slice(0, len(self)))
        return out if dtype is None else out.astype(dtype)

    def subset(self, idx) -> "BlockArray":
        if isinstance(self.rows, slice) and isinstance(idx, slice):
            start, stop, step = idx.indices(len(self))
            rows = (slice(self.rows.start + start, self.rows.start + max(start, stop)) if step == 1
                    else np.arange(self.rows.start + start, self.rows.start + stop, step))
        elif isinstance(self.rows, slice):
            idx = np.asarray(idx, dtype=np.int64).reshape(-1)
            if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
                raise IndexError(f"index out of range for {len(self)} samples")
            rows = np.where(idx < 0, idx + len(self), idx) + self.rows.start
        else:
            rows = np.asarray(self.rows[idx], dtype=np.int64).reshape(-1)
        view = BlockArray.__new__(BlockArray)
        view.__dict__.update(self.__dict__)
        view.rows, view._range, view._lock = rows, None, threading.Lock()
        return view

    def min(self) -> float:
        return self._sampled_range()[0]

    def max(self) -> float:
        return self._sampled_range()[1]

    # -- reading -------------------------------------------------------------------------------
    def _global(self, pos: np.ndarray | slice) -> np.ndarray | slice:
        """Global rows of view positions (a slice stays a slice when the view is a range)."""
        r = self.rows
        if isinstance(r, slice):
            if isinstance(pos, slice):
                return slice(r.start + pos.start, r.start + pos.stop)
            return np.asarray(pos, dtype=np.int64) + r.start
        return r[pos]

    def read(self, pos: np.ndarray | slice) -> np.ndarray:
        """float32 samples at view positions ``pos`` (a step-1 slice or indices), in that order."""
        rows = self._global(pos)
        if isinstance(rows, slice):
            return self._read_range(rows.start, rows.stop)
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros((0, *self.sample_shape), np.float32)
        if len(rows) > 1 and np.all(np.diff(rows) == 1):
            return self._read_range(int(rows[0]), int(rows[-1]) + 1)
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), *self.sample_shape), np.float32)
        srt = rows[order]
        sid = np.searchsorted(self.starts, srt, side="right") - 1
        for s in np.unique(sid):
            m = sid == s
            local = srt[m] - self.starts[s]
            out[order[m]] = self._convert(self.shards[s], self.shards[s].read(local, self._cache), int(local[0]))
        return out

    def _read_range(self, lo: int, hi: int) -> np.ndarray:
        parts = []
        s = int(np.searchsorted(self.starts, lo, side="right")) - 1
        while lo < hi:
            end = min(hi, int(self.starts[s + 1]))
            a = lo - int(self.starts[s])
            parts.append(self._convert(self.shards[s], self.shards[s].read(slice(a, a + end - lo), self._cache), a))
            lo, s = end, s + 1
        if not parts:
            return np.zeros((0, *self.sample_shape), np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _convert(self, shard: Shard, raw: np.ndarray, first: int) -> np.ndarray:
        """The value rules of the in-memory readers, block by block (float32 in one pass)."""
        raw = raw.astype(raw.dtype.newbyteorder("=")) if not raw.dtype.isnative else raw
        if raw.dtype == np.float32 and math.isfinite(raw.sum(dtype=np.float64)):
            out = raw                                  # already float32 and finite: no copy
        else:
            out = to_float32(raw, f"{shard.path} (rows from {first})")
        return out.reshape((len(out), *self.sample_shape))

    # -- samples -------------------------------------------------------------------------------
    def sample(self, max_rows: int, seed: int = 0) -> np.ndarray:
        """Up to ``max_rows`` rows from 16 seeded random runs of consecutive rows (all rows when
        they fit): what the normaliser and the range checks see."""
        n = len(self)
        if n <= max_rows:
            return self.read(slice(0, n))
        chunks = 16
        run = max(1, max_rows // chunks)
        rng = np.random.default_rng(seed)
        starts = np.sort(rng.choice(n // run, size=min(chunks, n // run), replace=False)) * run
        return np.concatenate([self.read(slice(int(s), int(s) + run)) for s in starts])

    def _sampled_range(self) -> tuple[float, float]:
        if self._range is None:
            rows = max(1, SAMPLE_BYTES // 4 // max(1, int(np.prod(self.sample_shape))))
            s = self.sample(rows)
            self._range = (float(s.min()), float(s.max())) if s.size else (0.0, 0.0)
        return self._range


def fingerprint_positions(n: int) -> np.ndarray:
    """The rows a sampled fingerprint hashes: 64 runs of 16 rows, evenly spaced, and the last row."""
    if n <= FINGERPRINT_CHUNKS * FINGERPRINT_ROWS:
        return np.arange(n)
    starts = np.linspace(0, n - FINGERPRINT_ROWS, FINGERPRINT_CHUNKS).astype(np.int64)
    pos = (starts[:, None] + np.arange(FINGERPRINT_ROWS)[None]).reshape(-1)
    return np.unique(np.append(pos, n - 1))


def sampled_fingerprint(x) -> str:
    """A short hash of the shape and a fixed sample of rows; the same for an in-memory float32
    array and a :class:`BlockArray` holding the same values."""
    h = hashlib.blake2b(digest_size=12)
    h.update(f"sampled{tuple(x.shape)}".encode())
    pos = fingerprint_positions(len(x))
    for i in range(0, len(pos), FINGERPRINT_ROWS):            # a few rows per read
        part = pos[i:i + FINGERPRINT_ROWS]
        rows = x.read(part) if isinstance(x, BlockArray) else np.asarray(x[part], dtype=np.float32)
        h.update(np.ascontiguousarray(rows).view(np.uint8).data)
    return h.hexdigest()


def full_fingerprint(x: BlockArray) -> str:
    """The hash of every value, block by block: equal to hashing the in-memory array."""
    h = hashlib.blake2b(digest_size=12)
    h.update(str(x.shape).encode())
    step = max(1, BLOCK_BYTES // 4 // max(1, int(np.prod(x.sample_shape))))
    for i in range(0, len(x), step):
        h.update(np.ascontiguousarray(x.read(slice(i, min(len(x), i + step)))).view(np.uint8).data)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- dataset
@dataclass(eq=False, repr=False)
class StreamingDataset(Dataset):
    """A :class:`Dataset` whose ``x`` is a :class:`BlockArray` (labels stay in memory)."""

    def subset(self, idx) -> "StreamingDataset":
        if not isinstance(idx, slice):
            idx = np.asarray(idx)
            if idx.ndim == 0:
                idx = idx.reshape(1)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
        return StreamingDataset(x=self.x.subset(idx), y=None if self.y is None else self.y[idx], name=self.name,
                                sample_shape=self.sample_shape, is_image=self.is_image,
                                class_names=None if self.class_names is None else list(self.class_names),
                                class_filter=self.class_filter)

    def without_labels(self) -> "StreamingDataset":
        return StreamingDataset(x=self.x, y=None, name=self.name, sample_shape=self.sample_shape,
                                is_image=self.is_image, class_names=self.class_names)

    def materialize(self) -> Dataset:
        """The same data as an in-memory :class:`Dataset` (reads everything)."""
        return Dataset(x=np.asarray(self.x), y=self.y, name=self.name, sample_shape=self.sample_shape,
                       is_image=self.is_image, class_names=self.class_names, class_filter=self.class_filter)

    # -- training order ------------------------------------------------------------------------
    def block_plan(self, seed: int, epoch: int, block_rows: int | None = None) -> list[np.ndarray]:
        """This epoch's order as a list of blocks (view positions, in reading order).

        Blocks are runs of consecutive rows (cut at a random offset that changes every epoch, and
        at shard boundaries; a gzip shard is one block, since it is decoded whole); their order
        and the order within each block are shuffled. A pure function of (seed, epoch).
        """
        x = self.x
        n = len(x)
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0x51AB])
        if block_rows is None:
            block_rows = max(1, BLOCK_BYTES // 4 // max(1, int(np.prod(x.sample_shape))))
        # view positions where a shard starts (views are sorted: ranges and train/valid splits)
        rows = x.rows
        if isinstance(rows, slice):
            cuts = np.clip(x.starts - rows.start, 0, n)
        else:
            cuts = np.searchsorted(rows, x.starts)
        bounds: set[int] = set()
        for s, shard in enumerate(x.shards):
            lo, hi = int(cuts[s]), int(cuts[s + 1])
            if hi <= lo:
                continue
            bounds.add(lo)
            if shard.offset is not None:                  # gzip shards stay whole
                offset = int(rng.integers(block_rows)) if hi - lo > block_rows else 0
                bounds.update(range(lo + offset, hi, block_rows))
        edges = sorted(b for b in bounds if b < n) + [n]
        dt = np.int32 if n < 2**31 else np.int64
        blocks = [np.arange(a, b, dtype=dt) for a, b in zip(edges[:-1], edges[1:]) if b > a]
        return [rng.permutation(blocks[k]) for k in rng.permutation(len(blocks))]

    def epoch_batches(self, batch_size: int, seed: int, epoch: int, n_use: int, *, rank: int = 0,
                      world: int = 1, device: torch.device | str = "cpu", block_rows: int | None = None,
                      prefetch: int = 2) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, float]]:
        """This rank's share of each global batch of this epoch: ``(xb, yb, share)`` where
        ``share`` is its fraction of the global batch. Only the first ``n_use`` samples of the
        epoch's order are used (a steps cap, or the tail that cannot be split among ranks).

        Each block is read once in file order (on the background thread, and only the rows this
        rank needs), moved to the device, and every batch is gathered from it by index: a fresh,
        aligned tensor per batch, as the in-memory path gathers from its tensor.
        """
        plan = self.block_plan(seed, epoch, block_rows)
        jobs = []
        pos = 0
        for block in plan:
            if pos >= n_use:
                break
            idx = np.arange(pos, pos + len(block))
            keep = idx < n_use
            if world > 1:
                within, b = idx % batch_size, idx // batch_size
                size = np.minimum(batch_size, n_use - b * batch_size)
                lo, hi = _share(size, rank, world)
                keep &= (within >= lo) & (within < hi)
            jobs.append(block[keep])
            pos += len(block)
        device = torch.device(device)
        with _Prefetcher(self, jobs, device.type == "cuda", prefetch) as blocks:
            segs: list[list] = []            # [x, y, index into x in this rank's order, next position]
            for b in range(-(-n_use // batch_size)):
                size = min(batch_size, n_use - b * batch_size)
                lo, hi = _share(np.int64(size), rank, world)
                m = int(hi - lo)
                xs, ys = [], []
                while m:
                    if not segs or segs[0][3] == len(segs[0][2]):
                        segs = []
                        _trim_heap()
                        segs = [[t.to(device, non_blocking=True) if t is not None else None for t in next(blocks)] + [0]]
                    x, y, order, at = segs[0]
                    k = min(m, len(order) - at)
                    rows = order[at:at + k]
                    xs.append(x.index_select(0, rows))
                    ys.append(y.index_select(0, rows) if y is not None else None)
                    segs[0][3] += k
                    m -= k
                xb = xs[0] if len(xs) == 1 else torch.cat(xs)
                yb = None if ys[0] is None else (ys[0] if len(ys) == 1 else torch.cat(ys))
                yield xb, yb, float(hi - lo) / float(size)

    def eval_batches(self, batch_size: int, device: torch.device | str = "cpu",
                     with_labels: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """All rows in order, in batches, read ahead by the background thread."""
        n = len(self.x)
        step = max(batch_size, BLOCK_BYTES // 4 // max(1, int(np.prod(self.x.sample_shape))))
        jobs = [np.arange(i, min(n, i + step)) for i in range(0, n, step)]
        device = torch.device(device)
        src = self if with_labels else self.without_labels()
        with _Prefetcher(src, jobs, device.type == "cuda", 2) as blocks:
            for xb, yb, _ in blocks:
                xb = xb.to(device, non_blocking=True)
                yb = yb.to(device, non_blocking=True) if yb is not None else None
                for i in range(0, len(xb), batch_size):     # copies: fresh, aligned batches
                    yield xb[i:i + batch_size].clone(), yb[i:i + batch_size].clone() if yb is not None else None


_MALLOC_TRIM: list = []


def _trim_heap() -> None:
    """Give the heap's free memory back to the system (glibc's ``malloc_trim``; a no-op elsewhere).

    Streaming frees a block's worth of buffers every block while training allocates and frees
    its own per-step buffers; under that pattern glibc kept the freed memory and the resident
    set grew by ~1 MB per step (measured on the 10 GB benchmark); trimming once per block keeps
    it flat.
    """
    if not _MALLOC_TRIM:
        import ctypes
        import ctypes.util
        fn = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            fn = getattr(libc, "malloc_trim", None)
        except OSError:
            pass
        _MALLOC_TRIM.append(fn)
    if _MALLOC_TRIM[0] is not None:
        _MALLOC_TRIM[0](0)


def _share(size, rank: int, world: int):
    """Rank ``rank``'s contiguous part [lo, hi) of a batch of ``size`` split as evenly as possible."""
    base, extra = size // world, size % world
    lo = rank * base + np.minimum(rank, extra)
    return lo, lo + base + (rank < extra)


class _Prefetcher:
    """Reads the blocks ``jobs`` (view positions) on a background thread, up to ``depth`` ahead;
    iterating yields ``(x, y, where)``: the rows in file order and, for each position of the
    job, its row in ``x``."""

    def __init__(self, ds: StreamingDataset, jobs: list[np.ndarray], pin: bool, depth: int):
        self.ds, self.jobs, self.pin = ds, jobs, pin
        self.q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="latentforge-blocks")

    def _run(self) -> None:
        try:
            for job in self.jobs:
                if self.stop.is_set():
                    return
                order = np.argsort(job, kind="stable")
                srt = job[order]
                x = torch.from_numpy(self.ds.x.read(srt))        # one sorted (mostly sequential) read
                y = torch.from_numpy(self.ds.y[srt]) if self.ds.y is not None else None
                where = np.empty(len(job), np.int64)
                where[order] = np.arange(len(job))               # row of x of each job position
                if self.pin:
                    x = x.pin_memory()
                    y = y.pin_memory() if y is not None else None
                self._put((x, y, torch.from_numpy(where)))
            self._put(None)
        except BaseException as e:                               # re-raised in the consumer
            self._put(e)

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __enter__(self):
        self.thread.start()
        return self._iter()

    def _iter(self):
        while True:
            item = self.q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


# ---------------------------------------------------------------------------------------- opening
def _npy_shard_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".npy"
                  and not p.name.lower().endswith(".labels.npy") and not p.name.startswith("."))


def _idx_shard_files(folder: Path, split: str) -> list[Path]:
    images = idx_images_in(folder)
    tokens = SPLIT_TOKENS
    matching = [p for p in images if tokens[split].search(p.name)]
    if not matching and not any(t.search(p.name) for p in images for t in tokens.values()):
        matching = images                                     # shards without split names
    return matching if len(matching) > 1 else []


def open_large(path: Path, labels=None, *, name: str, split: str = "train") -> Dataset | None:
    """A dataset for a large ``.npy`` or a shard folder, or None when ``path`` is neither (the
    regular readers then handle it). Shard folders under the threshold are loaded into memory."""
    if path.is_file() and path.suffix.lower() == ".npy":
        try:                                   # only the header is read here
            mm = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None                        # the regular reader reports the problem
        size = mm.size * 4 if isinstance(mm, np.memmap) and mm.ndim >= 1 else 0
        del mm
        if size <= stream_threshold():
            return None
        return _streaming([_npy_shard(path)], None, name, labels)
    if not path.is_dir():
        return None
    npys = _npy_shard_files(path)
    if npys:
        shards = [_npy_shard(p) for p in npys]
        label_files = [p.with_name(p.name[:-4] + ".labels.npy") for p in npys]
        have = [f.is_file() for f in label_files]
        if any(have) and not all(have):
            missing = label_files[have.index(False)]
            raise DataError(f"{name}: some shards have labels (<stem>.labels.npy) but {missing.name} is missing")
        per_shard = label_files if all(have) else None
    else:
        files = _idx_shard_files(path, split)
        if not files:
            return None
        shards = [_idx_shard(p) for p in files]
        beside = [labels_beside(p) for p in files]
        per_shard = beside if all(b is not None for b in beside) else None
    first = shards[0]
    for s in shards[1:]:
        if s.raw_shape != first.raw_shape:
            raise DataError(f"{name}: shard {s.path.name} holds samples of shape {s.raw_shape} but "
                            f"{first.path.name} holds {first.raw_shape}")
    y = None
    if labels is None and per_shard is not None:
        parts = []
        for s, f in zip(shards, per_shard):
            lab = read_labels(f)
            if len(lab) != s.n:
                raise DataError(f"{s.path} holds {s.n} samples but {f} holds {len(lab)} labels")
            parts.append(lab)
        y = np.concatenate(parts)
    total = sum(s.n for s in shards) * int(np.prod(first.raw_shape)) * 4
    if total <= stream_threshold():                      # small enough: the in-memory fast path
        arrays = [read_npy(s.path) if s.path.suffix.lower() == ".npy" else read_idx(s.path) for s in shards]
        arr = np.concatenate(arrays)
        ys = read_labels(labels) if labels is not None else y
        return make_dataset(arr, ys, name=name, source=name, labels_source=str(labels) if labels else None)
    return _streaming(shards, y, name, labels)


def _streaming(shards: list[Shard], y: np.ndarray | None, name: str, labels) -> StreamingDataset:
    n = sum(s.n for s in shards)
    if labels is not None:
        y = read_labels(labels)
        if len(y) != n:
            raise DataError(f"{name} holds {n} samples but {labels} holds {len(y)} labels")
    elif y is not None:
        y = to_labels(y, name)
    raw = shards[0].raw_shape
    return StreamingDataset(x=BlockArray(shards, name), y=y, name=name, sample_shape=raw,
                            is_image=len(raw) >= 2)
