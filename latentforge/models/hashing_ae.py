"""Semantic hashing autoencoder of the chapter (SPEC 13).

hashing-ae: 784 -> 100 (SELU) -> [Gaussian noise, std 15, training only] -> 16 (sigmoid coding)
            -> 100 (SELU) -> 784 sigmoid, BCE. The strong noise on the coding layer's input only
            lets information through when the coding units saturate, so the codes become
            near-binary; rounding them gives a 16-bit hash (``latentforge encode RUN --binary``),
            and similar images share hashes. Nadam lr 1e-3, batch 32, 10 epochs (the notebook).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..config import check_nonnegative
from .sparse_ae import SigmoidCodingAE, SigmoidCodingAEConfig


@dataclass
class HashingAEConfig(SigmoidCodingAEConfig):
    hidden_sizes: list[int] = field(default_factory=lambda: [100])
    coding_size: int = 16
    noise_std: float = 15.0            # Gaussian noise added to the coding layer's input (training only)
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "nadam"
    lr: float = 1e-3

    def validate(self) -> None:
        super().validate()
        check_nonnegative(self, "noise_std")


class HashingAE(SigmoidCodingAE):
    """Semantic hashing AE: noise before a 16-unit sigmoid coding layer gives binary hashes (SPEC 13)."""

    name = "hashing-ae"
    config_class = HashingAEConfig
    config: HashingAEConfig

    def _before_coding(self, h: Tensor) -> Tensor:
        if self.training and self.config.noise_std > 0:
            h = h + self.config.noise_std * torch.randn_like(h)
        return h

    def info_metrics(self, x) -> dict[str, float]:
        """How binary the codes of ``x`` are and how many distinct hashes they make."""
        codes = self.codes_of(x)
        bits = (codes >= 0.5).to(torch.uint8)
        return {"share_near_binary_codes": float(((codes - 0.5).abs() > 0.4).float().mean()),
                "distinct_hashes": int(torch.unique(bits, dim=0).shape[0]) if len(bits) else 0}
