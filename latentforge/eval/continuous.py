"""Metrics of autoencoders on continuous (tabular) data, and the units of a VAE's NLL.

A model with per-feature scaling (``normalize_scale = feature``, the default for continuous
non-image data: see :mod:`latentforge.continuous`) is judged in standardised units, where every
column counts the same whatever its units: ``mse_standardized`` is the mean over values of
``((x - x_hat) / std_feature)^2``, and ``baseline_mse_standardized`` the same for predicting
each column's training mean (about 1). A reconstruction beats the per-column mean when the first
is below the second; ``r2`` is ``1 - mse_standardized / baseline_mse_standardized``.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def continuous_metrics(model, x: np.ndarray, recon: np.ndarray) -> dict[str, Any]:
    """Standardised reconstruction error against the per-column mean; ``{}`` unless the model
    standardises each feature."""
    if not getattr(model, "feature_scaled", False):
        return {}
    shift = model.data_shift.detach().cpu().double().numpy()
    scale = model.data_scale.detach().cpu().double().numpy()
    xs = (np.asarray(x, np.float64).reshape(len(x), -1) - shift) / scale
    rs = (np.asarray(recon, np.float64).reshape(len(x), -1) - shift) / scale
    err = float(np.mean((xs - rs) ** 2))
    base = float(np.mean(xs ** 2))            # predicting the training mean (0 in these units)
    return {"mse_standardized": err, "baseline_mse_standardized": base,
            "r2": 1.0 - err / base if base > 0 else None}


def nll_units(model) -> str:
    """What ``iw_nll`` is measured in, for this model's likelihood."""
    if getattr(model, "gaussian", False):
        d = int(np.prod(model.input_shape))
        return (f"nats per sample: the Gaussian density of its {d} values in the data's own units "
                "(a density, so it can be negative; not comparable with a Bernoulli NLL)")
    return "nats per image (Bernoulli likelihood summed over the values)"
