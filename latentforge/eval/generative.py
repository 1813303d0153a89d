"""Metrics that compare generated samples with real ones in a feature space.

Every function takes features (N, d) (numpy arrays, torch tensors, anything ``numpy.asarray``
takes); :mod:`latentforge.eval.features` gives them from the domain feature network. The numbers
are *not* comparable to published FIDs, which use Inception-v3 features on ImageNet-like images.

* :func:`frechet_distance` / :func:`fid`: the Fréchet distance between Gaussians fitted to the two
  sets, ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (Heusel et al., 2017).
* :func:`kid`: the kernel inception distance (Bińkowski et al., 2018): the unbiased MMD^2 with the
  polynomial kernel ``(x.y / d + 1)^3`` over all pairs, and its std over disjoint subsets.
* :func:`prdc`: precision and recall with k-NN manifolds (Kynkäänniemi et al., 2019; k = 3), and
  density and coverage (Naeem et al., 2020; k = 5), from chunked distance matrices.
* :func:`pairwise_metrics`: KID and the four k-NN metrics from one pass over the distance matrices.
* :func:`class_mode_coverage` and :func:`inception_score`: from the feature network's class
  probabilities on the generated samples.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import DataError


def _feats(a: Any, name: str) -> np.ndarray:
    detach = getattr(a, "detach", None)
    if callable(detach):
        a = detach().cpu().numpy()
    f = np.asarray(a, dtype=np.float64)
    if f.ndim != 2 or len(f) < 1 or f.shape[1] < 1:
        raise DataError(f"{name}: features must be a non-empty (N, d) array, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise DataError(f"{name}: features hold NaN/Inf values")
    return f


def _same_dim(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise DataError(f"real and generated features differ in dimension: {a.shape[1]} vs {b.shape[1]}")


# ---------------------------------------------------------------------------------------- FID
def gaussian_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) (unbiased, ddof = 1) of features (N, d), N >= 2."""
    f = _feats(features, "features")
    if len(f) < 2:
        raise DataError("need at least 2 samples for a covariance")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet (2-Wasserstein) distance squared between N(mu1, sigma1) and N(mu2, sigma2).

    ``tr((S1 S2)^(1/2))`` is computed as the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix ``S1^(1/2) S2 S1^(1/2)`` (same spectrum as S1 S2), which is stable for
    singular covariances where ``scipy.linalg.sqrtm(S1 @ S2)`` can turn complex.
    """
    mu1, mu2 = np.asarray(mu1, np.float64).ravel(), np.asarray(mu2, np.float64).ravel()
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = len(mu1)
    if len(mu2) != d or s1.shape != (d, d) or s2.shape != (d, d):
        raise DataError(f"Fréchet distance: shapes do not match: mu {len(mu1)}, {len(mu2)}; "
                        f"sigma {s1.shape}, {s2.shape}")
    r1 = _psd_sqrt(s1)
    ev = np.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_covmean = float(np.sqrt(np.clip(ev, 0, None)).sum())
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean, 0.0))


def fid(real: Any, fake: Any) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, d) and (M, d)."""
    r, f = _feats(real, "real"), _feats(fake, "generated")
    _same_dim(r, f)
    return frechet_distance(*gaussian_stats(r), *gaussian_stats(f))


# ---------------------------------------------------------------------------------------- KID, PRDC
def polynomial_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef: float = 1.0) -> torch.Tensor:
    """``(x . y / d + coef) ^ degree`` for every pair of rows, (N, M)."""
    return (x @ y.T / x.shape[1] + coef) ** degree


def mmd2_unbiased(kxx: torch.Tensor, kyy: torch.Tensor, kxy: torch.Tensor) -> float:
    """The unbiased MMD^2 estimate from explicit kernel matrices (m, m), (n, n), (m, n); m, n >= 2:
    ``sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1)) - 2 mean k(x_i, y_j)``.
    """
    m, n = kxx.shape[0], kyy.shape[0]
    if m < 2 or n < 2:
        raise DataError("the unbiased MMD needs at least 2 samples on each side")
    sxx = float(kxx.sum()) - float(kxx.diagonal().sum())
    syy = float(kyy.sum()) - float(kyy.diagonal().sum())
    return sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * float(kxy.sum()) / (m * n)


class _Kid:
    """Kernel sums of one pass: all off-diagonal pairs, and pairs inside each of B blocks of m rows."""

    def __init__(self, d: int, degree: int, coef: float, blocks: int, m: int):
        self.s, self.degree, self.coef, self.blocks, self.m = 0.5 / d, degree, coef, blocks, m
        self.total = 0.0
        self.block = np.zeros(blocks)

    def add(self, h: torch.Tensor, col_sq: torch.Tensor, i: int, n: int, diag: bool, buf: torch.Tensor) -> None:
        """Rows i..i+c of ``h = |y_j|^2 - 2 x_i . y_j`` (c, >= n; columns past n are padding);
        ``diag``: a self pass (x = y). The kernel ``(x.y / d + coef)^p = (|y_j|^2 / 2d + coef - h / 2d)^p``."""
        c = len(h)
        kern = torch.add((col_sq[:n] * self.s + self.coef)[None, :], h[:, :n], alpha=-self.s, out=buf[:c, :n])
        kern.pow_(self.degree)
        if diag:
            rows = torch.arange(c)
            kern[rows, rows + i] = 0
        self.total += float(kern.sum())
        m = self.m
        for b in range(i // m, min(self.blocks, (i + c - 1) // m + 1)):
            lo, hi = max(b * m, i), min((b + 1) * m, i + c)
            self.block[b] += float(kern[lo - i:hi - i, b * m:(b + 1) * m].sum())


def _half_dists(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``|b_j|^2 - 2 a_i . b_j`` (len(a), len(b)): the squared distances less the row term |a_i|^2
    (which no row-wise ranking depends on), by one fused matrix product."""
    return torch.addmm(b_sq[None, :], a, b.T, alpha=-2.0, out=out[:len(a)])


def _group_size(n: int, k: int) -> int:
    """Columns per group for :func:`_row_smallest` (0: plain topk for small rows)."""
    g = math.isqrt(n)
    return g if g >= 8 and n // g > 2 * k else 0


def _row_smallest(h: torch.Tensor, k: int, g: int) -> torch.Tensor:
    """The k smallest values of each row (c, G g), ascending, (c, k), without a top-k over whole rows.

    Rows are cut into G groups of g; the k smallest values of a row all lie in the k groups with the
    smallest minima (an element of any other group G' is >= min(G') >= the k chosen groups' minima,
    k distinct elements), so one vectorised min per group, a top-k over the G minima and a top-k over
    the k g gathered values give them exactly.
    """
    if not g:
        return h.topk(k, dim=1, largest=False, sorted=True).values
    c = len(h)
    grouped = h.view(c, -1, g)                                                 # (c, G, g)
    best = grouped.amin(2).topk(k, dim=1, largest=False).indices              # (c, k)
    cand = torch.gather(grouped, 1, best[:, :, None].expand(c, k, g))         # (c, k, g)
    return cand.reshape(c, k * g).topk(k, dim=1, largest=False, sorted=True).values


def _self_pass(x: torch.Tensor, ks: tuple[int, ...], kid: _Kid | None, chunk: int) -> list[torch.Tensor]:
    """One chunked pass over x's Gram matrix: the squared k-NN radii for each k in ``ks`` (not
    counting a point as its own neighbour), and the KID kernel sums."""
    n = len(x)
    sq = (x * x).sum(1)
    kmax = max(ks, default=1)
    g = _group_size(n, kmax)
    n_pad = -(-n // g) * g if g else n
    # padding columns: zero vectors at infinite distance, so that rows cut into groups of g
    cols = torch.cat([x, x.new_zeros((n_pad - n, x.shape[1]))])
    col_sq = torch.cat([sq, sq.new_full((n_pad - n,), math.inf)])
    radii = [torch.empty(n, dtype=x.dtype) for _ in ks]
    buf, kbuf = torch.empty((chunk, n_pad), dtype=x.dtype), torch.empty((chunk, n), dtype=x.dtype)
    for i in range(0, n, chunk):
        h = _half_dists(x[i:i + chunk], cols, col_sq, buf)                   # (c, n_pad)
        if kid is not None:
            kid.add(h, col_sq, i, n, diag=True, buf=kbuf)
        if ks:
            rows = torch.arange(len(h))
            h[rows, rows + i] = math.inf                                     # not one's own neighbour
            top = _row_smallest(h, kmax, g)
            for r, k in zip(radii, ks):
                r[i:i + chunk] = (top[:, k - 1] + sq[i:i + chunk]).clamp_min_(0)
    return radii


def knn_radii(features: Any, *ks: int, chunk: int = 1024) -> list[np.ndarray]:
    """For each k in ``ks``: every row's squared distance to its k-th nearest *other* row, (N,)."""
    f = _feats(features, "features")
    if not ks or min(ks) < 1 or max(ks) >= len(f):
        raise DataError(f"k-NN radii need 1 <= k < N, got k = {list(ks)} for {len(f)} samples")
    return [r.numpy() for r in _self_pass(torch.as_tensor(f), tuple(ks), None, chunk)]


def pairwise_metrics(real: Any, fake: Any, *, kid: bool = True, prdc: bool = True, k_pr: int = 3, k_dc: int = 5,
                     subset_size: int = 1000, degree: int = 3, coef: float = 1.0, seed: int = 0,
                     chunk: int | None = None, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """KID and precision/recall/density/coverage from one chunked pass over each of the three Gram
    matrices (real-real, generated-generated, generated-real): O(N^2 d) in matrix products and
    vectorised reductions, never a Python loop over pairs, O(chunk N) memory.

    **KID** (Bińkowski et al., 2018), kernel ``(x . y / d + coef) ^ degree``: ``kid`` is the unbiased
    MMD^2 over *all* pairs (the U-statistic; it has the expectation of the usual average over random
    subsets, with less variance), ``kid_std`` the std (ddof = 0) of the same estimate on B disjoint
    random subsets of ``kid_subset_size`` samples a side (B = N // subset_size, at least 2), and
    ``kid_subsets_mean`` their mean.

    **Precision/recall** (Kynkäänniemi et al., 2019), balls with radius the distance to the
    ``k_pr``-th nearest neighbour in the own set: precision is the share of generated samples inside
    some real ball, recall the share of real samples inside some generated ball. **Density/coverage**
    (Naeem et al., 2020), real balls with ``k_dc``: density ``= 1/(k M) sum_j #{i: fake_j in ball_i}``
    (about 1 when both sets come from one distribution), coverage the share of real balls that hold
    at least one generated sample. A point on a ball's boundary counts as inside.

    ``dtype``: float64 up to 10^7 pairs, float32 above (default). ``chunk``: rows per matrix product
    (default: about 10^7 entries per chunk; fewer, larger operations also wait less on busy cores).
    """
    r, f = _feats(real, "real"), _feats(fake, "generated")
    _same_dim(r, f)
    n_r, n_f = len(r), len(f)
    chunk = int(chunk or min(max(64, 10 ** 7 // max(n_r, n_f)), max(n_r, n_f)))
    if dtype is None:
        dtype = torch.float64 if n_r * n_f <= 10 ** 7 else torch.float32
    rng = np.random.default_rng(seed)
    rt = torch.as_tensor(r[rng.permutation(n_r)], dtype=dtype)     # a random order: the KID blocks
    ft = torch.as_tensor(f[rng.permutation(n_f)], dtype=dtype)
    out: dict[str, Any] = {}
    kr = kf = kx = None
    if kid:
        if min(n_r, n_f) < 2:
            raise DataError(f"KID needs at least 2 real and 2 generated samples, got {n_r} and {n_f}")
        nmin = min(n_r, n_f)
        blocks = max(2, nmin // max(2, int(subset_size))) if nmin >= 4 else 1
        kr, kf, kx = (_Kid(r.shape[1], degree, coef, blocks, nmin // blocks) for _ in range(3))
    if prdc:
        for name, n in (("real", n_r), ("generated", n_f)):
            if n <= max(k_pr, k_dc):
                raise DataError(f"precision/recall: {n} {name} samples; need more than k = {max(k_pr, k_dc)}")
    real_pr, real_dc = _self_pass(rt, (k_pr, k_dc) if prdc else (), kr, chunk) or (None, None)
    (fake_pr,) = _self_pass(ft, (k_pr,) if prdc else (), kf, chunk) or (None,)
    r_sq, f_sq = (rt * rt).sum(1), (ft * ft).sum(1)
    prec_hits, density_count = 0, 0
    # running minima over the generated samples, per real sample: of d2 (coverage), of d2 - r_j (recall)
    nearest = torch.full((n_r,), math.inf, dtype=dtype)
    recall_gap = torch.full((n_r,), math.inf, dtype=dtype)
    buf, kbuf, tmp = (torch.empty((chunk, n_r), dtype=dtype) for _ in range(3))
    inside = torch.empty((chunk, n_r), dtype=torch.bool)
    for j in range(0, n_f, chunk):
        h = _half_dists(ft[j:j + chunk], rt, r_sq, buf)                    # (c, N_real)
        c = len(h)
        if kx is not None:
            kx.add(h, r_sq, j, n_r, diag=False, buf=kbuf)
        if prdc:
            fsq = f_sq[j:j + chunk]
            # precision: min_i (d2_ji - r_i) <= 0, with d2_ji = h_ji + |f_j|^2
            gap = torch.sub(h, real_pr[None, :], out=tmp[:c]).amin(1)
            prec_hits += int((gap <= -fsq).sum())
            d2 = h.add_(fsq[:, None])                                        # squared distances, in place
            density_count += int(torch.count_nonzero(torch.le(d2, real_dc[None, :], out=inside[:c])))
            torch.minimum(nearest, d2.amin(0), out=nearest)
            torch.minimum(recall_gap, torch.sub(d2, fake_pr[j:j + chunk, None], out=tmp[:c]).amin(0), out=recall_gap)
    if kid:
        assert kr is not None and kf is not None and kx is not None
        m = kr.m
        out["kid"] = kr.total / (n_r * (n_r - 1)) + kf.total / (n_f * (n_f - 1)) - 2 * kx.total / (n_r * n_f)
        per_block = kr.block / (m * (m - 1)) + kf.block / (m * (m - 1)) - 2 * kx.block / (m * m)
        out.update(kid_std=float(np.std(per_block)), kid_subsets_mean=float(np.mean(per_block)),
                   kid_subsets=kr.blocks, kid_subset_size=m)
    if prdc:
        out.update(precision=prec_hits / n_f, recall=float((recall_gap <= 0).double().mean()),
                   density=density_count / (k_dc * n_f), coverage=float((nearest <= real_dc).double().mean()),
                   k_precision_recall=k_pr, k_density_coverage=k_dc)
    return out


def kid(real: Any, fake: Any, subset_size: int = 1000, degree: int = 3, coef: float = 1.0,
        seed: int = 0, **kw: Any) -> tuple[float, float]:
    """Kernel inception distance: (unbiased MMD^2 over all pairs, its std over disjoint subsets of
    ``subset_size``); see :func:`pairwise_metrics`."""
    m = pairwise_metrics(real, fake, kid=True, prdc=False, subset_size=subset_size, degree=degree, coef=coef,
                         seed=seed, **kw)
    return m["kid"], m["kid_std"]


def prdc(real: Any, fake: Any, k_pr: int = 3, k_dc: int = 5, **kw: Any) -> dict[str, Any]:
    """Precision, recall, density and coverage; see :func:`pairwise_metrics`."""
    return pairwise_metrics(real, fake, kid=False, prdc=True, k_pr=k_pr, k_dc=k_dc, **kw)


# ---------------------------------------------------------------------------------------- classes
def _probs(p: Any, name: str) -> np.ndarray:
    q = _feats(p, name)
    if q.shape[1] < 2 or q.min() < -1e-6 or not np.allclose(q.sum(1), 1.0, atol=1e-4):
        raise DataError(f"{name}: expected class probabilities (N, K >= 2) whose rows sum to 1")
    return np.clip(q, 0.0, 1.0)


def class_mode_coverage(probs: Any, min_share: float | None = None) -> dict[str, Any]:
    """How the predicted classes of generated samples spread over the K classes.

    ``entropy``: of the histogram of argmax classes, in nats (``log K`` when uniform, 0 when every
    sample falls in one class); ``classes_covered``: classes that receive at least ``min_share`` of
    the samples (default: a fifth of the uniform share, ``1 / (5K)``); ``histogram``: the shares.
    """
    p = _probs(probs, "class probabilities")
    k = p.shape[1]
    share = np.bincount(p.argmax(1), minlength=k) / len(p)
    thr = 1.0 / (5 * k) if min_share is None else float(min_share)
    nz = share[share > 0]
    return {"entropy": float(-(nz * np.log(nz)).sum()), "entropy_max": math.log(k),
            "classes_covered": int((share >= thr).sum()), "n_classes": k, "min_share": thr,
            "histogram": [round(float(s), 6) for s in share]}


def inception_score(probs: Any, splits: int = 10) -> tuple[float, float]:
    """``exp(E_x KL(p(y|x) || p(y)))`` on ``splits`` equal parts; (mean, std over the parts).

    1 for predictions that are all the same (or all uniform); K for confident predictions spread
    evenly over K classes. Here p(y|x) comes from the domain feature network, not Inception.
    """
    p = _probs(probs, "class probabilities")
    splits = max(1, min(int(splits), len(p)))
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0).sum(1)
        scores.append(math.exp(float(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


# ---------------------------------------------------------------------------------------- all
def generative_metrics(real: Any, fake: Any, real_probs: Any = None, fake_probs: Any = None, *,
                       normalize: bool = True, kid_subset_size: int = 1000, seed: int = 0) -> dict[str, Any]:
    """FID, KID, precision/recall, density/coverage; with class probabilities also the class-mode
    coverage and the IS-style score (with the real data's values beside them, for reference).

    ``normalize``: first scale both feature sets by the one factor that gives the real features a
    mean square of 1 per dimension (``feature_scale``), so that FID and KID do not depend on the
    arbitrary scale of a feature network (precision, recall, density and coverage never do).
    """
    r, f = _feats(real, "real"), _feats(fake, "generated")
    out: dict[str, Any] = {}
    if normalize:
        scale = 1.0 / max(math.sqrt(float(np.mean(r * r))), 1e-12)
        r, f = r * scale, f * scale
        out["feature_scale"] = scale
    out["fid"] = fid(r, f)
    out.update(pairwise_metrics(r, f, subset_size=kid_subset_size, seed=seed))
    if fake_probs is not None:
        modes = class_mode_coverage(fake_probs)
        out["modes"] = modes
        out["inception_score"], out["inception_score_std"] = inception_score(fake_probs)
        if real_probs is not None:
            ref = class_mode_coverage(real_probs)
            out["modes_real"] = {key: ref[key] for key in ("entropy", "classes_covered", "histogram")}
            out["inception_score_real"] = inception_score(real_probs)[0]
    return out
