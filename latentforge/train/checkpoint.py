"""Checkpoints: safetensors + JSON metadata in one file, written atomically. Never pickle.

A checkpoint file holds tensors under prefixes (``model.``, ``optim.``, ``rng.``, ``best.``) and
one JSON document in the safetensors metadata under the key ``latentforge``: the format name, the
library version, the model name, its config and the trainer's state. Writing goes to a temporary
file in the same folder, fsync'd, then ``os.replace``'d over the old one, so a crash at any moment
leaves either the old or the new checkpoint, never a half-written one. A temporary file left by a
process killed mid-write (``.checkpoint.safetensors.XXXX.tmp``) is removed by the next save into
the same folder.

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

import torch
from torch import Tensor

from ..errors import CheckpointError

FORMAT = "latentforge-checkpoint"
_UMASK = os.umask(0)
os.umask(_UMASK)
META_KEY = "latentforge"
CHECKPOINT_NAME = "checkpoint.safetensors"
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
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_checkpoint(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Save tensors + metadata atomically as one safetensors file."""
    from safetensors.torch import save

    path = Path(path)
    # clone: safetensors refuses tensors that share storage (views, tied buffers)
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    blob = save(clean, metadata={META_KEY: json.dumps({"format": FORMAT, **meta}, default=_json_default)})
    remove_stale_temps(path)          # litter of a process killed while writing this checkpoint
    atomic_write_bytes(path, blob)


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint; CheckpointError for a missing, truncated, corrupt or foreign file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint file here")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = (f.metadata() or {}).get(META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as e:  # safetensors_rust.SafetensorError, OSError, ...
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint (truncated or corrupt?): {first}") from None
    if raw_meta is None:
        raise CheckpointError(f"{path}: a safetensors file, but not a latentforge checkpoint (no '{META_KEY}' metadata)")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON (tampered?)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format') if isinstance(meta, dict) else meta!r}")
    return tensors, meta


def split_prefix(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors under ``prefix.``, with the prefix removed."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def load_module_state(module: torch.nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load a state dict strictly, naming the first tensor that is missing, extra or mismatched."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing:
        raise CheckpointError(f"{source}: tensor '{missing[0]}' is missing from the checkpoint"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if extra:
        raise CheckpointError(f"{source}: unexpected tensor '{extra[0]}' in the checkpoint"
                              + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    for k, ref in expected.items():
        got = state[k]
        if got.shape != ref.shape:
            raise CheckpointError(f"{source}: tensor '{k}' has shape {tuple(got.shape)}, expected {tuple(ref.shape)}")
        if got.dtype != ref.dtype:
            raise CheckpointError(f"{source}: tensor '{k}' has dtype {got.dtype}, expected {ref.dtype}")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise CheckpointError(f"{source}: tensor '{k}' holds NaN/Inf values")
    module.load_state_dict(state, strict=True)


# -- optimizers: tensors in the file, the rest (param groups, scalars) in JSON --------------------
def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, Tensor):
                tensors[f"{idx}.{key}"] = val
            else:
                scalars.setdefault(str(idx), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], info: dict[str, Any], source: str) -> None:
    params = [p for g in opt.param_groups for p in g["params"]]
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        idx, _, key = name.partition(".")
        if not idx.isdigit() or int(idx) >= len(params) or not key:
            raise CheckpointError(f"{source}: unexpected optimizer state tensor '{name}'")
        ref = params[int(idx)]
        # per-parameter buffers (moments, momentum) have the parameter's shape; 'step' is a scalar
        if val.dim() and (val.shape != ref.shape or not val.is_floating_point()):
            raise CheckpointError(f"{source}: optimizer state tensor '{name}' is {val.dtype} {tuple(val.shape)}, "
                                  f"expected a float tensor of shape {tuple(ref.shape)}")
        state.setdefault(int(idx), {})[key] = val
    try:
        for idx, st in info.get("scalars", {}).items():
            state.setdefault(int(idx), {}).update(st)
    except (AttributeError, TypeError, ValueError):
        raise CheckpointError(f"{source}: optimizer state metadata is invalid") from None
    groups = info.get("param_groups")
    own = opt.state_dict()["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(own) or any(
            not isinstance(g, dict) or len(g.get("params", [])) != len(o["params"]) for g, o in zip(groups, own)):
        raise CheckpointError(f"{source}: optimizer state does not match the model's parameters")
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{source}: cannot restore the optimizer state: {e}") from None


# -- outputs of any size: a .npy written batch by batch, atomically --------------------------------
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
