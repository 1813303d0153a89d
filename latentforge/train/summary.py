"""The one writer of a run folder's ``run.json`` (a readable summary) and ``history.json``, for
every kind of run: ``train`` (greedy stages included), the classifier and its pretraining
experiment, the feature network. One schema: model, version, config (with its ``engine``
section), data, epochs done, greedy stages, last metrics, parameters, training and wall time,
hardware (with what the engine chose), and when."""
from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import __version__
from ..config import config_to_dict
from . import distributed as ddp
from .checkpoint import atomic_write_json

if TYPE_CHECKING:
    from .trainer import Trainer

RUN_JSON = "run.json"
HISTORY_JSON = "history.json"


def hardware(device: torch.device, trainer: "Trainer | None" = None) -> dict[str, Any]:
    """Where a run ran and, after training, how: the intra-op threads, the batch split and the
    fast step the engine used, and the number of processes."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "threads": (trainer.threads if trainer is not None else None) or torch.get_num_threads(),
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if trainer is not None:
        info.update(batch_split=trainer.batch_parts, fast_step=trainer.fast_step, processes=trainer.dist.world)
    return info


def run_summary(name: str, config: Any, data: dict[str, Any], trainer: "Trainer", model: torch.nn.Module,
                device: torch.device, wall_seconds: float, greedy: dict[str, Any] | None = None,
                **extra: Any) -> dict[str, Any]:
    history = trainer.state.history
    return {"model": name, "version": __version__, "config": config_to_dict(config), "data": data, **extra,
            "epochs_done": trainer.state.epoch, "greedy": greedy, "metrics": history[-1] if history else {},
            "params": sum(p.numel() for p in model.parameters()),
            "train_seconds": sum(r.get("seconds", 0.0) for r in history),   # all epochs, resumed ones too
            "wall_seconds": wall_seconds,                                   # this invocation
            "hardware": hardware(device, trainer),
            "updated": _dt.datetime.now().isoformat(timespec="seconds")}


def history_records(greedy_info: dict[str, Any] | None, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What ``history.json`` holds: with greedy training, every stage's epochs first (keys prefixed
    ``greedy1_``, ``greedy2_``, ..., ``stage`` = ``greedy 1/2``...), then the fine-tuning epochs
    (``stage`` = ``finetune``); else the epochs as they are."""
    if not greedy_info:
        return list(history)
    stages = greedy_info.get("histories") or []
    out: list[dict[str, Any]] = []
    for i, stage in enumerate(stages, 1):
        for rec in stage:
            out.append({"stage": f"greedy {i}/{len(stages)}", "epoch": rec.get("epoch"),
                        **{f"greedy{i}_{k}": v for k, v in rec.items() if k != "epoch"}})
    return out + [{"stage": "finetune", **rec} for rec in history]


def write_run_files(run_dir: Path, trainer: "Trainer", summary: dict[str, Any]) -> None:
    """``history.json`` (greedy stages first) and ``run.json`` (with several processes, rank 0 writes)."""
    if ddp.info().main:
        atomic_write_json(Path(run_dir) / HISTORY_JSON, history_records(summary.get("greedy"), trainer.state.history))
        atomic_write_json(Path(run_dir) / RUN_JSON, summary)
