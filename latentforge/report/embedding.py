"""Maps of codings to 2-D: the one mapping code behind ``plot tsne``, the report's map and ``explore``.

:func:`embed` maps ``(N, K)`` codings to ``(N, 2)`` float32 coordinates with one of

* ``tsne``: openTSNE (Poličar et al.) with PCA initialisation. Up to :data:`BH_MAX` points it uses
  Barnes-Hut gradients (fast for small maps); above, FFT-accelerated interpolation gradients
  (Linderman et al.), whose cost grows linearly with N. Above ``fit_max`` points (default
  :data:`TSNE_FIT_MAX`) the map is fitted on a random subsample of ``fit_max`` points and the
  others are placed, in chunks of :data:`CHUNK`, at the median position of their nearest fitted
  neighbours (openTSNE's ``prepare_partial``): memory stays that of the subsample plus one chunk,
  so a million codings map with bounded memory.
* ``pca``: the first two principal components, the covariance accumulated chunk by chunk in
  float64 (any N, memory of one chunk).
* ``umap``: UMAP, only when the ``umap-learn`` package is installed.

Codings that are already 2-D are returned as they are (method ``latent``), and codings that are all
identical (a collapsed encoder) map every point to the origin.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DataError

METHODS = ("tsne", "pca", "umap")
#: up to this many points t-SNE uses Barnes-Hut gradients (faster for small maps), above it FFT
BH_MAX = 2_000
#: above this many points t-SNE is fitted on a subsample of this size and the rest placed (see doc)
TSNE_FIT_MAX = 100_000
#: rows processed at a time by the chunked steps (PCA, placing points)
CHUNK = 65_536
#: display names of the methods
NAMES = {"tsne": "t-SNE", "pca": "PCA", "umap": "UMAP", "latent": "latent", "identical": "identical codes"}


@dataclass
class Map2D:
    """A 2-D map: ``xy`` (N, 2) float32 and the method that made it (``tsne``, ``pca``, ``umap``,
    ``latent`` for 2-D codings shown as they are, ``identical`` for codings that are all equal);
    ``fitted``: how many points the t-SNE was fitted on (the others were placed)."""

    xy: np.ndarray
    method: str
    fitted: int

    @property
    def name(self) -> str:
        return NAMES[self.method]


def umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def available_methods() -> list[str]:
    """The methods that can run here (``umap`` only with umap-learn installed)."""
    return [m for m in METHODS if m != "umap" or umap_available()]


def _check(codes) -> np.ndarray:
    arr = np.asarray(codes)
    if arr.ndim < 2:
        raise DataError(f"codes: expected shape (N, K), got {arr.shape}")
    arr = arr.reshape(len(arr), -1)
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"codes: expected numbers, got {arr.dtype}")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return arr


def _finite_chunks(arr: np.ndarray) -> None:
    for i in range(0, len(arr), CHUNK):
        if not np.isfinite(arr[i:i + CHUNK]).all():
            raise DataError("codes: hold NaN or infinite values")


def _moments(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of the rows, accumulated chunk by chunk."""
    n, k = arr.shape
    mean = np.zeros(k)
    for i in range(0, n, CHUNK):
        mean += arr[i:i + CHUNK].sum(0, dtype=np.float64)
    mean /= max(n, 1)
    cov = np.zeros((k, k))
    for i in range(0, n, CHUNK):
        c = arr[i:i + CHUNK].astype(np.float64) - mean
        cov += c.T @ c
    return mean, cov / max(n - 1, 1)


def pca_2d(codes) -> np.ndarray:
    """The first two principal components of ``codes`` (N, K) as (N, 2) float32, in chunks.

    Signs are fixed (each component's largest loading is positive) so the map is deterministic."""
    arr = _check(codes)
    mean, cov = _moments(arr)
    _, vecs = np.linalg.eigh(cov)
    comp = vecs[:, ::-1][:, :2]
    if comp.shape[1] < 2:                       # 1-D codings: the second axis is 0
        comp = np.concatenate([comp, np.zeros((len(comp), 2 - comp.shape[1]))], 1)
    signs = np.sign(comp[np.abs(comp).argmax(0), range(2)])
    comp = comp * np.where(signs == 0, 1.0, signs)
    out = np.empty((len(arr), 2), np.float32)
    for i in range(0, len(arr), CHUNK):
        out[i:i + CHUNK] = (arr[i:i + CHUNK].astype(np.float64) - mean) @ comp
    return out


def _tsne_model(n: int, perplexity: float, seed: int, n_jobs: int):
    from openTSNE import TSNE
    return TSNE(n_components=2, perplexity=max(1.0, min(float(perplexity), (n - 1) / 3.0)),
                initialization="pca", negative_gradient_method="bh" if n <= BH_MAX else "fft",
                n_jobs=n_jobs, random_state=seed, verbose=False)


def tsne_2d(codes, *, seed: int = 0, perplexity: float = 30.0, fit_max: int | None = TSNE_FIT_MAX,
            n_jobs: int | None = None) -> tuple[np.ndarray, int]:
    """openTSNE map of ``codes`` (see the module doc): ``(xy float32 (N, 2), points fitted)``."""
    arr = _check(codes)
    n = len(arr)
    if n < 4:                                   # t-SNE needs a few neighbours: PCA for a handful of points
        return pca_2d(arr), 0
    n_jobs = n_jobs if n_jobs is not None else int(os.environ.get("LATENTFORGE_MAP_JOBS", "1"))
    # t-SNE calibrates a bandwidth per point, so a global rescale changes nothing but keeps the
    # arithmetic away from extreme magnitudes
    centre = np.zeros(arr.shape[1])
    for i in range(0, n, CHUNK):
        centre += arr[i:i + CHUNK].sum(0, dtype=np.float64)
    centre = (centre / n).astype(np.float32)
    scale = max(float(np.abs(arr[i:i + CHUNK] - centre).max()) for i in range(0, n, CHUNK)) or 1.0
    fit_max = n if fit_max is None else max(int(fit_max), 4)
    rng = np.random.default_rng(seed)
    fit_idx = np.arange(n) if n <= fit_max else np.sort(rng.choice(n, fit_max, replace=False))
    fit_x = (arr[fit_idx] - centre) / scale
    emb = _tsne_model(len(fit_x), perplexity, seed, n_jobs).fit(fit_x)
    xy = np.empty((n, 2), np.float32)
    if len(fit_idx) == n:
        xy[:] = np.asarray(emb)
    else:
        xy[fit_idx] = np.asarray(emb)
        rest = np.ones(n, bool)
        rest[fit_idx] = False
        rest_idx = np.flatnonzero(rest)
        for i in range(0, len(rest_idx), CHUNK):
            part = rest_idx[i:i + CHUNK]
            placed = emb.prepare_partial((arr[part] - centre) / scale, initialization="median", k=10)
            xy[part] = np.asarray(placed)
    if not np.isfinite(xy).all():
        raise DataError("codes: t-SNE produced non-finite coordinates")
    return xy, len(fit_idx)


def umap_2d(codes, *, seed: int = 0) -> np.ndarray:
    if not umap_available():
        raise ConfigError("--method umap needs the umap-learn package (pip install umap-learn)")
    import umap
    return np.asarray(umap.UMAP(n_components=2, random_state=seed).fit_transform(_check(codes)), np.float32)


def embed(codes, method: str = "tsne", *, seed: int = 0, perplexity: float = 30.0,
          fit_max: int | None = TSNE_FIT_MAX, n_jobs: int | None = None) -> Map2D:
    """Map ``codes`` (N, K) to 2-D with ``method`` (``tsne``, ``pca`` or ``umap``; see the module doc)."""
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: must be one of {', '.join(METHODS)}")
    arr = _check(codes)
    n = len(arr)
    if n == 0:
        return Map2D(np.zeros((0, 2), np.float32), method, 0)
    _finite_chunks(arr)
    if arr.shape[1] == 2:
        return Map2D(arr.copy(), "latent", 0)
    lo = np.min([arr[i:i + CHUNK].min(0) for i in range(0, n, CHUNK)], 0)
    hi = np.max([arr[i:i + CHUNK].max(0) for i in range(0, n, CHUNK)], 0)
    if float((hi - lo).max()) <= 1e-12 * max(float(np.abs(np.concatenate([lo, hi])).max()), 1e-30):
        # all codes identical (a collapsed encoder): there is nothing to map
        return Map2D(np.zeros((n, 2), np.float32), "identical", 0)
    if method == "pca":
        return Map2D(pca_2d(arr), "pca", n)
    if method == "umap":
        return Map2D(umap_2d(arr, seed=seed), "umap", n)
    xy, fitted = tsne_2d(arr, seed=seed, perplexity=perplexity, fit_max=fit_max, n_jobs=n_jobs)
    return Map2D(xy, "tsne", fitted)
