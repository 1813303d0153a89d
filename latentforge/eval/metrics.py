"""Metrics on numpy arrays (anything ``numpy.asarray`` takes; torch tensors are detached first).

Reconstruction: ``bce`` (mean per value, targets and predictions in [0, 1], predictions clipped to
``[eps, 1 - eps]`` as Keras does), ``mse`` (mean per value), ``psnr`` (dB, against the data's
range) and ``ssim`` (structural similarity of images). Likelihood: ``iw_nll_from_log_weights``
turns importance log-weights into the importance-weighted NLL. Codes: ``near_binary_share`` (sigmoid codes far from 0.5) and
``hash_pair_purity`` / ``label_pair_chance`` (do images that share a hash share a label?).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import DataError


def _arr(a: Any, name: str) -> np.ndarray:
    detach = getattr(a, "detach", None)
    if callable(detach):
        a = detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _pair(x: Any, recon: Any) -> tuple[np.ndarray, np.ndarray]:
    x, recon = _arr(x, "x"), _arr(recon, "recon")
    if x.size != recon.size or len(x) != len(recon):
        raise DataError(f"data and reconstructions differ in size: {x.shape} vs {recon.shape}")
    if x.size == 0:
        raise DataError("no samples to evaluate")
    return x.reshape(len(x), -1), recon.reshape(len(recon), -1)


def bce(x: Any, recon: Any, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy per value, in nats: -mean(x log p + (1 - x) log(1 - p))."""
    x, p = _pair(x, recon)
    if x.min() < 0 or x.max() > 1 or p.min() < 0 or p.max() > 1:
        raise DataError("binary cross-entropy needs data and reconstructions in [0, 1]")
    p = np.clip(p, eps, 1 - eps)
    return float(-(x * np.log(p) + (1 - x) * np.log1p(-p)).mean())


def mse(x: Any, recon: Any) -> float:
    """Mean squared error per value."""
    x, r = _pair(x, recon)
    return float(np.square(x - r).mean())


def psnr(x: Any, recon: Any, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over the whole set: 10 log10(range^2 / MSE) (inf if exact)."""
    if not data_range > 0:
        raise DataError(f"data_range must be > 0, got {data_range}")
    m = mse(x, recon)
    return math.inf if m == 0 else float(10 * math.log10(data_range ** 2 / m))


def gaussian_window(size: int, sigma: float = 1.5) -> np.ndarray:
    """The (size, size) Gaussian weights of SSIM, summing to 1 (Wang et al. use 11 and 1.5)."""
    t = np.arange(size) - (size - 1) / 2
    g = np.exp(-t ** 2 / (2 * sigma ** 2))
    w = np.outer(g, g)
    return w / w.sum()


def ssim(x: Any, y: Any, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> float:
    """Mean structural similarity (Wang et al., 2004) of images (N, H, W) or (N, C, H, W).

    Local means, variances and covariance under a Gaussian window (``win_size`` x ``win_size``,
    ``sigma``; shrunk to the largest odd size that fits smaller images), over the 'valid' positions;
    ``SSIM = (2 mx my + C1)(2 sxy + C2) / ((mx^2 + my^2 + C1)(sx^2 + sy^2 + C2))`` with
    ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``, ``L = data_range``; averaged over positions, channels and
    images. 1 for identical images.
    """
    import torch
    import torch.nn.functional as F
    xa, ya = _arr(x, "x"), _arr(y, "y")
    if xa.shape != ya.shape:
        raise DataError(f"SSIM: images differ in shape: {xa.shape} vs {ya.shape}")
    if xa.ndim == 3:
        xa, ya = xa[:, None], ya[:, None]
    if xa.ndim != 4 or len(xa) == 0:
        raise DataError(f"SSIM needs images (N, H, W) or (N, C, H, W), got shape {xa.shape}")
    if not data_range > 0:
        raise DataError(f"data_range must be > 0, got {data_range}")
    n, c, h, w = xa.shape
    size = min(int(win_size), h, w)
    size -= 1 - size % 2                                         # odd
    kernel = torch.as_tensor(gaussian_window(size, sigma))[None, None].expand(c, 1, size, size)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    total = 0.0
    for i in range(0, n, 1024):
        a = torch.as_tensor(xa[i:i + 1024])
        b = torch.as_tensor(ya[i:i + 1024])
        stats = F.conv2d(torch.cat([a, b, a * a, b * b, a * b]), kernel, groups=c)     # (5m, C, H', W')
        mx, my, xx, yy, xy = stats.chunk(5)
        vx, vy, cxy = xx - mx * mx, yy - my * my, xy - mx * my
        smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        total += float(smap.mean(dim=(1, 2, 3)).sum())
    return total / n


def reconstruction_metrics(x: Any, recon: Any) -> dict[str, float | None]:
    """BCE (data in [0, 1] only, else None), MSE and PSNR (range 1 for data in [0, 1], else max - min);
    for images (N, H, W) or (N, C, H, W) also SSIM (same range)."""
    xa, ra = _pair(x, recon)
    unit = xa.min() >= 0 and xa.max() <= 1
    in_unit = unit and ra.min() >= 0 and ra.max() <= 1
    data_range = 1.0 if unit else float(xa.max() - xa.min()) or 1.0
    p = psnr(xa, ra, data_range)
    out: dict[str, float | None] = {"bce": bce(xa, ra) if in_unit else None, "mse": mse(xa, ra),
                                    "psnr": p if math.isfinite(p) else None, "psnr_data_range": data_range}
    shape = np.shape(x)
    if len(shape) in (3, 4) and np.shape(recon) == shape:
        out["ssim"] = ssim(_arr(x, "x"), _arr(recon, "recon"), data_range)
    return out


def iw_nll_from_log_weights(log_weights: Any) -> float:
    """Mean importance-weighted NLL from log-weights (N, k): -mean_n log((1/k) sum_i exp(lw_ni))."""
    lw = _arr(log_weights, "log_weights")
    if lw.ndim != 2 or lw.shape[1] < 1 or lw.shape[0] < 1:
        raise DataError(f"log_weights must be (N, k) with N, k >= 1, got {lw.shape}")
    top = lw.max(1, keepdims=True)
    lme = top[:, 0] + np.log(np.exp(lw - top).mean(1))
    return float(-lme.mean())


def near_binary_share(codes: Any, margin: float = 0.4) -> float:
    """Share of code values with |c - 0.5| > margin (near 0 or near 1)."""
    c = _arr(codes, "codes")
    if c.size == 0:
        raise DataError("no codes")
    return float((np.abs(c - 0.5) > margin).mean())


def _same_pairs(groups: np.ndarray) -> int:
    _, counts = np.unique(groups, return_counts=True, axis=0)
    return int((counts * (counts - 1) // 2).sum())


def hash_pair_purity(hashes: Any, labels: Any) -> tuple[float, int]:
    """Among the pairs of samples that share a hash, the share that also share a label.

    ``hashes`` is (N, bits) of 0/1 (or (N,) ints). Returns (purity, number of such pairs);
    purity is NaN when no two samples share a hash.
    """
    h = np.asarray(hashes)
    y = np.asarray(labels).reshape(-1)
    if len(h) != len(y):
        raise DataError(f"{len(h)} hashes but {len(y)} labels")
    h = h.reshape(len(h), -1).astype(np.int64)
    pairs = _same_pairs(h)
    if pairs == 0:
        return math.nan, 0
    both = _same_pairs(np.concatenate([h, y[:, None].astype(np.int64)], 1))
    return both / pairs, pairs


def label_pair_chance(labels: Any) -> float:
    """Share of all pairs of samples that share a label (what random hashes would give)."""
    y = np.asarray(labels).reshape(-1)
    n = len(y)
    if n < 2:
        raise DataError("need at least 2 labels")
    return _same_pairs(y[:, None]) / (n * (n - 1) // 2)
