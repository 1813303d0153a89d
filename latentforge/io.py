"""The one writer of every file latentforge writes: atomically (a temporary file in the same
folder, fsync'd, then ``os.replace``'d over the old one, then the folder fsync'd), with the usual
permissions (the umask's, not ``mkstemp``'s 0600). A crash at any moment leaves the old file or
the new one, never half of one; a temporary file left by a process killed mid-write
(``.NAME.XXXX.tmp``) is removed by :func:`remove_stale_temps`.

``LATENTFORGE_TEST_SLOW_SAVE=SECONDS`` (tests only) pauses halfway through every atomic write, so
that crash tests can kill a process while a checkpoint is being written.
``LATENTFORGE_TEST_HOLD_SAVE=N`` (tests only) holds the process's N-th checkpoint write halfway,
after printing ``latentforge-test: holding checkpoint write N`` on stderr, until a signal arrives:
a test sends its signal when it reads that line, never after a guessed delay.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)
CHECKPOINT_NAME = "checkpoint.safetensors"     # a run folder's checkpoint (LATENTFORGE_TEST_HOLD_SAVE holds its writes)
_checkpoint_writes = 0          # this process's checkpoint writes (LATENTFORGE_TEST_HOLD_SAVE)


def _test_pause(path: Path) -> None:
    """The tests' hooks halfway through a write (see the module doc); nothing when unset."""
    global _checkpoint_writes
    slow = float(os.environ.get("LATENTFORGE_TEST_SLOW_SAVE") or 0)
    if slow > 0:
        time.sleep(slow)
    hold = int(os.environ.get("LATENTFORGE_TEST_HOLD_SAVE") or 0)
    if hold > 0 and path.name == CHECKPOINT_NAME:
        _checkpoint_writes += 1
        if _checkpoint_writes == hold:
            print(f"latentforge-test: holding checkpoint write {hold}", file=sys.stderr, flush=True)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:      # a signal ends the wait (KeyboardInterrupt, SIGTERM...)
                time.sleep(0.05)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename + fsync of the folder)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            if os.environ.get("LATENTFORGE_TEST_SLOW_SAVE") or os.environ.get("LATENTFORGE_TEST_HOLD_SAVE"):
                f.write(data[:len(data) // 2])   # tests: a window in which the temp file is half written
                f.flush()
                _test_pause(path)
                f.write(data[len(data) // 2:])
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete temporary files that an interrupted atomic write of ``path`` left beside it."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, default=json_default) + "\n").encode())


def json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")



class NpyWriter:
    """Write an ``(n, ...)`` ``.npy`` file batch by batch into a temporary file beside ``path``,
    renamed over ``path`` only when all ``n`` rows are written (a failure removes it).

    Rows go out with plain sequential writes rather than through a memory map, so the memory
    used stays that of one batch whatever ``n`` is (a memory map's dirty pages count towards
    the process's resident memory). Use as a context manager::

        with NpyWriter(path, n) as w:
            for batch in batches:
                w.write(batch)          # the first batch fixes the dtype and the row shape
    """

    def __init__(self, path: str | Path, n: int, row_shape: tuple[int, ...] | None = None):
        import numpy as np
        self.np = np
        self.path = Path(path)
        self.n, self.row_shape, self.written = int(n), row_shape, 0
        self.dtype = None
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)
        self.f = os.fdopen(fd, "wb")

    def write(self, batch) -> None:
        np = self.np
        batch = np.ascontiguousarray(batch)
        if self.dtype is None:
            self.dtype = batch.dtype
            self.row_shape = tuple(self.row_shape if self.row_shape is not None else batch.shape[1:])
            np.lib.format.write_array_header_2_0(self.f, {
                "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                "shape": (self.n, *self.row_shape)})
        rows = len(batch)
        batch = batch.astype(self.dtype, copy=False).reshape((rows, *self.row_shape))
        if self.written + rows > self.n:
            raise ValueError(f"{self.path}: more than the {self.n} rows announced")
        self.f.write(batch.data)
        self.written += rows

    def close(self) -> None:
        if self.written != self.n:
            raise ValueError(f"{self.path}: {self.written} rows written of {self.n}")
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)
        _fsync_dir(self.path.parent)

    def abort(self) -> None:
        self.f.close()
        Path(self.tmp).unlink(missing_ok=True)

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


__all__ = ["NpyWriter", "atomic_write_bytes", "atomic_write_json", "remove_stale_temps", "json_default"]
