"""How useful an autoencoder's codings are: linear-probe and k-NN accuracy, and for linear models
the principal angles between the learned subspace and PCA's.

* :func:`linear_probe_accuracy`: standardise the codes, fit scikit-learn's multinomial
  ``LogisticRegression`` on the training codes, report the accuracy on the held-out ones.
* :func:`knn_accuracy`: majority vote of the k nearest training codes (Euclidean).
* :func:`principal_angles`: the angles between the column spaces of two matrices (Björck & Golub);
  :func:`pca_basis` and :func:`linear_decoder_basis` give the two subspaces for a linear AE, whose
  decoder spans PCA's principal subspace at the optimum of the MSE (Baldi & Hornik, 1989).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError


def _xy(codes: Any, labels: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(codes, dtype=np.float64)
    c = c.reshape(len(c), -1)
    y = np.asarray(labels).reshape(-1)
    if len(c) != len(y) or len(c) == 0:
        raise DataError(f"{name}: {len(c)} codes but {len(y)} labels")
    if not np.isfinite(c).all():
        raise DataError(f"{name}: codes hold NaN/Inf values")
    return c, y


def linear_probe_accuracy(train_codes: Any, train_labels: Any, test_codes: Any, test_labels: Any,
                          C: float = 1.0, max_iter: int = 1000) -> float:
    """Held-out accuracy of a logistic regression on standardised codes (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    xtr, ytr = _xy(train_codes, train_labels, "training codes")
    xte, yte = _xy(test_codes, test_labels, "held-out codes")
    if len(np.unique(ytr)) < 2:
        raise DataError("linear probe: the training codes need at least 2 classes")
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(xtr, ytr)
    return float((clf.predict(xte) == yte).mean())


def knn_accuracy(train_codes: Any, train_labels: Any, test_codes: Any, test_labels: Any, k: int = 5) -> float:
    """Held-out accuracy of the k-nearest-neighbour vote (Euclidean; scikit-learn, brute force)."""
    from sklearn.neighbors import KNeighborsClassifier
    xtr, ytr = _xy(train_codes, train_labels, "training codes")
    xte, yte = _xy(test_codes, test_labels, "held-out codes")
    k = min(int(k), len(xtr))
    if k < 1:
        raise DataError(f"k-NN accuracy: k must be >= 1, got {k}")
    clf = KNeighborsClassifier(n_neighbors=k, algorithm="brute").fit(xtr, ytr)
    return float((clf.predict(xte) == yte).mean())


def _orth(a: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the column space of a (rank-revealing SVD)."""
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    rank = int((s > s.max(initial=0.0) * max(a.shape) * np.finfo(float).eps).sum())
    return u[:, :rank]


def principal_angles(a: Any, b: Any) -> np.ndarray:
    """Principal angles (radians, ascending) between the column spaces of a (D, p) and b (D, q).

    ``cos`` of the angles are the singular values of ``Qa^T Qb``; small angles are taken from the
    sines (singular values of ``Qb - Qa Qa^T Qb``), which keeps them accurate near 0.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if b.ndim == 1:
        b = b[:, None]
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise DataError(f"principal angles need (D, p) and (D, q) matrices, got {a.shape} and {b.shape}")
    qa, qb = _orth(a), _orth(b)
    if qa.shape[1] == 0 or qb.shape[1] == 0:
        raise DataError("principal angles: a subspace is empty (a zero matrix)")
    if qa.shape[1] < qb.shape[1]:
        qa, qb = qb, qa
    cos = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)        # descending
    sin = np.clip(np.linalg.svd(qb - qa @ (qa.T @ qb), compute_uv=False), 0.0, 1.0)[::-1]   # ascending
    angles = np.where(cos ** 2 < 0.5, np.arccos(cos), np.arcsin(sin[:len(cos)]))
    return np.sort(angles)


def pca_basis(x: Any, k: int) -> np.ndarray:
    """The top-k principal directions of x (N, D), as columns (D, k)."""
    xa = np.asarray(x, np.float64)
    xa = xa.reshape(len(xa), -1)
    if not 1 <= k <= min(xa.shape):
        raise DataError(f"PCA: k = {k} does not fit data of shape {xa.shape}")
    _, _, vt = np.linalg.svd(xa - xa.mean(0), full_matrices=False)
    return vt[:k].T


def is_linear_autoencoder(model: Any) -> bool:
    """A dense AE with no nonlinearity anywhere (linear-ae, or stacked/tied with linear activations)."""
    cfg = getattr(model, "config", None)
    return (callable(getattr(model, "_decode_pre", None)) and getattr(cfg, "activation", None) == "linear"
            and getattr(cfg, "output_activation", None) == "linear" and getattr(cfg, "coding_activation", None)
            in (None, "linear"))


def linear_decoder_basis(model: Any) -> np.ndarray:
    """The columns (D, k) of a linear AE's decoder map in its internal (normalised) units:
    ``decode_pre(e_i) - decode_pre(0)`` for each coding axis i."""
    import torch
    k = int(model.config.coding_size)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            dev = next(model.parameters()).device
            z = torch.cat([torch.zeros(1, k), torch.eye(k)]).to(dev)
            pre = model._decode_pre(z).double().cpu().numpy()
    finally:
        model.train(was)
    return (pre[1:] - pre[:1]).T


def subspace_report(model: Any, x: Any) -> dict[str, Any]:
    """Principal angles (degrees) between a linear AE's decoder subspace and the top-k PCA subspace
    of ``x`` (in the model's internal units; the normalisation shifts and scales, so PCA's subspace
    is the same as in the data's units)."""
    import torch
    with torch.no_grad():
        xi = model.to_internal(torch.as_tensor(np.asarray(x, np.float32)).to(next(model.parameters()).device))
    w = linear_decoder_basis(model)
    ang = np.degrees(principal_angles(w, pca_basis(xi.double().cpu().numpy(), w.shape[1])))
    return {"principal_angles_deg": [round(float(a), 4) for a in ang], "max_principal_angle_deg": float(ang.max())}
