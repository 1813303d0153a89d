"""Evaluation metrics of latentforge: reconstruction quality, likelihood bounds, code statistics."""
from __future__ import annotations

from .metrics import (bce, hash_pair_purity, iw_nll_from_log_weights, label_pair_chance, mse,
                      near_binary_share, psnr, reconstruction_metrics)

__all__ = ["bce", "mse", "psnr", "reconstruction_metrics", "iw_nll_from_log_weights",
           "near_binary_share", "hash_pair_purity", "label_pair_chance"]
