"""Checkpoints: safetensors + JSON metadata in one file, written atomically. Never pickle.

A checkpoint file holds tensors under prefixes (``model.``, ``optim.``, ``rng.``, ``best.``) and
one JSON document in the safetensors metadata under the key ``latentforge``: the format name, the
library version, the model name, its config and the trainer's state. Writing goes to a temporary
file in the same folder, fsync'd, then ``os.replace``'d over the old one, so a crash at any moment
leaves either the old or the new checkpoint, never a half-written one. A temporary file left by a
process killed mid-write (``.checkpoint.safetensors.XXXX.tmp``) is removed by the next save into
the same folder.

Files are written by :mod:`latentforge.io` (atomically).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError
from ..io import NpyWriter, atomic_write_bytes, atomic_write_json, remove_stale_temps  # noqa: F401  (re-exported)
from ..io import json_default as _json_default

FORMAT = "latentforge-checkpoint"
META_KEY = "latentforge"


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
