"""Paths between two codes: straight lines (:func:`lerp`) and great circles (:func:`slerp`).

Used by ``latentforge interpolate``, the report's interpolation grids and any library code that
walks a latent space; numpy only.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError

METHODS = ("linear", "slerp")


def lerp(a, b, steps: int):
    """``steps`` points from ``a`` to ``b`` (both included) on the straight line, shape (steps, *a.shape)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = np.linspace(0.0, 1.0, int(steps)).reshape((-1,) + (1,) * a.ndim)
    return (1 - t) * a + t * b


def slerp(a, b, steps: int):
    """``steps`` points from ``a`` to ``b`` (both included) along the great circle (White, 2016).

    ``sin((1-t) w) / sin(w) * a + sin(t w) / sin(w) * b`` with ``w`` the angle between ``a`` and
    ``b``: it keeps the norm typical of a Gaussian prior where a straight line would pass near the
    origin. Parallel, antiparallel or zero vectors fall back to :func:`lerp`.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return lerp(a, b, steps)
    omega = math.acos(float(np.clip(np.dot(a.ravel() / na, b.ravel() / nb), -1.0, 1.0)))
    s = math.sin(omega)
    if s < 1e-6:
        return lerp(a, b, steps)
    t = np.linspace(0.0, 1.0, int(steps)).reshape((-1,) + (1,) * a.ndim)
    return np.sin((1 - t) * omega) / s * a + np.sin(t * omega) / s * b


def interpolate_codes(a, b, steps: int, method: str = "linear"):
    """``steps`` codes from ``a`` to ``b`` by ``method`` (``linear`` or ``slerp``)."""
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: must be one of {', '.join(METHODS)}")
    return (slerp if method == "slerp" else lerp)(a, b, steps)


__all__ = ["METHODS", "lerp", "slerp", "interpolate_codes"]
