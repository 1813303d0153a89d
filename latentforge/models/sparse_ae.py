"""Sparse autoencoder of the chapter (SPEC 11), and the sigmoid-coding stacked AE it builds on.

SPEC 11 sparse-ae: 784 -> 100 (SELU) -> 300 (sigmoid coding layer) -> 100 (SELU) -> 784 sigmoid,
                   BCE, plus a sparsity penalty on the codes, computed per batch of N codes:
                   ``penalty=kl`` (default): ``kl_weight * sum_j KL(target || mean_j) / N`` where
                   ``mean_j`` is unit j's mean activation over the batch (weight 0.05, target 0.1);
                   ``penalty=l1``: ``l1_weight * sum_ij |code_ij| / N`` (weight 1e-3).
                   The division by the batch size N is what Keras does to every activity
                   regularizer, so it is part of the chapter's results; ``kl_divide_by_batch =
                   false`` drops it for the KL penalty (the penalty is then N times stronger).
                   Nadam lr 1e-3, batch 32, 10 epochs. (The chapter's notebook uses SGD lr 1.0
                   on 55k images; on a few thousand images it barely trains in 10 epochs:
                   ``--set optimizer=sgd --lr 1.0`` to use it.)
Book result: most codes near 0 (about 70% of the activations below 0.1) while each unit's mean
activation stays near 0.1, and reconstructions stay good.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..config import check_choice, check_positive
from ..errors import ConfigError
from .base import init_weight
from .capabilities import Capability
from .dense_ae import StackedAE, StackedAEConfig


@dataclass
class SigmoidCodingAEConfig(StackedAEConfig):
    """A stacked AE whose coding layer is sigmoid (SELU hidden layers): codes lie in [0, 1]."""

    coding_init: str = "glorot_uniform"   # Keras' default for the sigmoid coding layer


class SigmoidCodingAE(StackedAE):
    """Stacked AE with SELU hidden layers and a sigmoid coding layer (base of sparse and hashing AEs).

    ``_before_coding(h)`` is a hook on the input of the coding layer (hashing-ae adds noise there).
    """

    name = "sigmoid-coding-ae"   # not registered itself
    config_class = SigmoidCodingAEConfig
    capabilities = StackedAE.capabilities | Capability.UNIT_CODES
    config: SigmoidCodingAEConfig

    def __init__(self, config: SigmoidCodingAEConfig):
        super().__init__(config)
        layer = self.enc[-1]
        if config.coding_init != "default":
            init_weight(layer.weight, config.coding_init)

    def _before_coding(self, h: Tensor) -> Tensor:
        return h

    def _encode(self, x: Tensor) -> Tensor:          # (N, D) -> (N, coding_size), in [0, 1]
        for layer in self.enc[:-1]:
            x = self.act(layer(x))
        return torch.sigmoid(self.enc[-1](self._before_coding(x)))

    @torch.no_grad()
    def codes_of(self, x, batch_size: int = 4096) -> Tensor:
        """Codes of ``x`` (numpy or tensor, data units) in eval mode, on the CPU."""
        was = self.training
        self.eval()
        dev = next(self.parameters()).device
        x = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
        out = [self.encode(x[i:i + batch_size].to(dev)).cpu() for i in range(0, len(x), batch_size)]
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0, self.config.coding_size)


@dataclass
class SparseAEConfig(SigmoidCodingAEConfig):
    hidden_sizes: list[int] = field(default_factory=lambda: [100])
    coding_size: int = 300
    penalty: str = "kl"                # kl | l1
    kl_weight: float = 0.05
    target_sparsity: float = 0.1       # the target mean activation of each coding unit
    kl_divide_by_batch: bool = True    # divide the KL penalty by the batch size, as Keras does
    l1_weight: float = 1e-3
    # the chapter's notebook: 10 epochs, Keras' default batch of 32
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "nadam"
    lr: float = 1e-3

    def validate(self) -> None:
        super().validate()
        check_choice("penalty", self.penalty, ("kl", "l1"))
        check_positive(self, "kl_weight", "l1_weight")
        if not 0.0 < self.target_sparsity < 1.0:
            raise ConfigError(f"config field 'target_sparsity' = {self.target_sparsity!r}: must be in (0, 1)")


class SparseAE(SigmoidCodingAE):
    """Sparse AE: 300 sigmoid codes with a KL (or L1) sparsity penalty (SPEC 11)."""

    name = "sparse-ae"
    config_class = SparseAEConfig
    config: SparseAEConfig

    def regularization(self, codes: Tensor) -> dict[str, Tensor]:
        cfg = self.config
        if cfg.penalty == "l1":
            return {"l1": cfg.l1_weight * codes.abs().sum(1).mean()}
        kl = cfg.kl_weight * kl_sparsity(codes, cfg.target_sparsity)
        return {"kl": kl / len(codes) if cfg.kl_divide_by_batch else kl}

    def info_metrics(self, x) -> dict[str, float]:
        """Sparsity of the codes of ``x`` (``info`` passes the held-out split)."""
        codes = self.codes_of(x)
        return {"mean_coding_activation": float(codes.mean()),
                "share_activations_below_0.1": float((codes < 0.1).float().mean())}


def kl_sparsity(codes: Tensor, target: float, eps: float = 1e-7) -> Tensor:
    """``sum_j KL(Bernoulli(target) || Bernoulli(q_j))`` with ``q_j`` unit j's mean over the batch."""
    q = codes.mean(0).clamp(eps, 1 - eps)
    p = target
    return (p * (math.log(p) - q.log()) + (1 - p) * (math.log(1 - p) - (1 - q).log())).sum()
