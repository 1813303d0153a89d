"""What makes ``--resume`` exact: the trainer's state in one safetensors checkpoint (model and
optimizer tensors, the data-order generator, the torch RNGs of every process, the loss scale,
the best weights, the history and the counters), written atomically, and read back."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .. import __version__
from ..errors import CheckpointError
from ..io import CHECKPOINT_NAME as CHECKPOINT
from .checkpoint import load_module_state, load_optimizer_state, optimizer_state, save_checkpoint, split_prefix

if TYPE_CHECKING:
    from .trainer import Trainer


@dataclass
class TrainerState:
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    start_loss: float | None = None      # the first step's loss (the divergence guard's reference)


def checkpoint_tensors(tr: "Trainer") -> dict[str, Tensor]:
    t = {f"model.{k}": v for k, v in tr.model.state_dict().items()}
    for name, opt in tr.optimizers.items():
        opt_t, _ = optimizer_state(opt)
        t.update({f"{name}.{k}": v for k, v in opt_t.items()})
    t.update({f"extra.{k}": v for k, v in tr.extra_state().items()})
    t["rng.data"] = tr.generator.get_state()
    t["rng.torch"] = torch.get_rng_state()
    if tr.device.type == "cuda":
        t["rng.cuda"] = torch.cuda.get_rng_state(tr.device)
    for r, (cpu, cuda) in enumerate(tr._rank_rng[1:], 1):   # the other processes' RNGs
        t[f"rng.torch.r{r}"] = cpu
        if cuda is not None:
            t[f"rng.cuda.r{r}"] = cuda
    if tr._scaler is not None:
        t["amp.scale"] = torch.tensor(float(tr._scaler.get_scale()), dtype=torch.float64)
        t["amp.growth_tracker"] = torch.tensor(int(tr._scaler.state_dict().get("_growth_tracker", 0)))
    if tr._best_weights is not None:
        t.update({f"best.{k}": v for k, v in tr._best_weights.items()})
    return t


def save(tr: "Trainer", path: Path | None = None) -> Path:
    assert tr.run_dir is not None or path is not None
    path = Path(path) if path is not None else tr.run_dir / CHECKPOINT
    opt_info = {name: optimizer_state(opt)[1] for name, opt in tr.optimizers.items()}
    st = tr.state
    meta = {**tr.meta, "version": __version__,
            "trainer": {"epoch": st.epoch, "epochs": tr.epochs, "history": st.history,
                        "best_loss": st.best_loss if math.isfinite(st.best_loss) else None,
                        "best_epoch": st.best_epoch, "bad_epochs": st.bad_epochs,
                        "stopped_early": st.stopped_early, "start_loss": st.start_loss,
                        "optimizers": opt_info}}
    save_checkpoint(path, checkpoint_tensors(tr), meta)
    if tr.run_dir is not None and path == tr.run_dir / CHECKPOINT:
        tr._saved_epoch = st.epoch      # what an interrupted run can resume from
    return path


def restore(tr: "Trainer", tensors: dict[str, Tensor], meta: dict[str, Any], source: str) -> None:
    """Restore everything needed to continue exactly where the checkpoint left off."""
    info = meta.get("trainer")
    if not isinstance(info, dict):
        raise CheckpointError(f"{source}: checkpoint has no trainer state; it cannot be resumed")
    load_module_state(tr.model, split_prefix(tensors, "model"), source)
    infos = info.get("optimizers", {})
    for name, opt in tr.optimizers.items():
        load_optimizer_state(opt, split_prefix(tensors, name), infos.get(name, {}), source)
    tr.load_extra_state(split_prefix(tensors, "extra"), source)
    try:
        tr.generator.set_state(tensors["rng.data"])
        torch.set_rng_state(tensors["rng.torch"])
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"{source}: random-number state missing or invalid ({e})") from None
    restore_scale_state(tr, tensors)
    best = split_prefix(tensors, "best")
    tr._best_weights = best or None
    try:
        history = list(info.get("history", []))
        start = info.get("start_loss")
        if start is None and history:          # saved before the divergence guard: its first epoch
            start = history[0].get("train_loss")
        tr.state = TrainerState(epoch=int(info["epoch"]), history=history,
                                best_loss=float(info["best_loss"]) if info.get("best_loss") is not None else math.inf,
                                best_epoch=int(info.get("best_epoch", 0)), bad_epochs=int(info.get("bad_epochs", 0)),
                                stopped_early=bool(info.get("stopped_early", False)),
                                start_loss=float(start) if start is not None else None)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: trainer state is incomplete or invalid ({type(e).__name__}: {e})") from None
    if not 0 <= tr.state.epoch <= 10**9:
        raise CheckpointError(f"{source}: trainer state has an invalid epoch {tr.state.epoch}")
    tr._saved_epoch = tr.state.epoch


def restore_scale_state(tr: "Trainer", tensors: dict[str, Tensor]) -> None:
    """This rank's RNG (several processes), the CUDA RNG and the loss scale from a checkpoint."""
    d = tr.dist
    if d.rank > 0 and f"rng.torch.r{d.rank}" in tensors:
        torch.set_rng_state(tensors[f"rng.torch.r{d.rank}"])
        tr._rank_rng_restored = True
    if tr.device.type == "cuda":
        key = "rng.cuda" if d.rank == 0 else f"rng.cuda.r{d.rank}"
        if key in tensors:
            torch.cuda.set_rng_state(tensors[key], tr.device)
    if tr._scaler is not None and "amp.scale" in tensors:
        state = tr._scaler.state_dict()
        state.update(scale=float(tensors["amp.scale"]), _growth_tracker=int(tensors["amp.growth_tracker"]))
        tr._scaler.load_state_dict(state)
