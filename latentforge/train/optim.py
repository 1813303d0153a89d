"""The optimizers of the config, and the learning rate of each epoch."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from ..config import TrainConfig


def build_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """The optimizer named by the config, with the multi-tensor (``foreach``) kernels."""
    kw = dict(lr=cfg.lr if lr is None else lr, weight_decay=cfg.weight_decay, foreach=True)
    params, betas = list(params), tuple(cfg.betas)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, momentum=cfg.momentum, **kw)
    if cfg.optimizer == "rmsprop":  # Keras' RMSprop defaults: rho 0.9, eps 1e-7
        return torch.optim.RMSprop(params, alpha=0.9, eps=1e-7, momentum=cfg.momentum, **kw)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "nadam": torch.optim.NAdam}[cfg.optimizer]
    return cls(params, betas=betas, **kw)


def set_lr(optimizers: Iterable[torch.optim.Optimizer], schedule: str, epoch: int, epochs: int) -> None:
    """The learning rate of ``epoch``: a pure function of the epoch, so resume stays exact."""
    if schedule == "constant":
        return
    factor = 0.5 * (1 + math.cos(math.pi * epoch / epochs))   # cosine: 1 at epoch 0, ~0 at the end
    for opt in optimizers:
        for g in opt.param_groups:
            g.setdefault("initial_lr", g["lr"])
            g["lr"] = g["initial_lr"] * factor
