"""Evaluation metrics of latentforge.

* :mod:`.metrics`: reconstruction quality (BCE, MSE, PSNR, SSIM), likelihood bounds, code statistics.
* :mod:`.generative`: generated vs real samples in a feature space: FID, KID, precision/recall,
  density/coverage, class-mode coverage, the IS-style score.
* :mod:`.representation`: linear-probe and k-NN accuracy of codings, principal angles to PCA.
* :mod:`.features`: the domain feature network the generative metrics are computed on (not
  Inception: the numbers are not comparable to published FIDs).
"""
from __future__ import annotations

from .generative import (class_mode_coverage, fid, frechet_distance, gaussian_stats, generative_metrics,
                         inception_score, kid, mmd2_unbiased, pairwise_metrics, prdc)
from .metrics import (bce, hash_pair_purity, iw_nll_from_log_weights, label_pair_chance, mse,
                      near_binary_share, psnr, reconstruction_metrics, ssim)
from .representation import knn_accuracy, linear_probe_accuracy, pca_basis, principal_angles

__all__ = ["bce", "mse", "psnr", "ssim", "reconstruction_metrics", "iw_nll_from_log_weights",
           "near_binary_share", "hash_pair_purity", "label_pair_chance",
           "fid", "frechet_distance", "gaussian_stats", "kid", "mmd2_unbiased", "prdc", "pairwise_metrics",
           "class_mode_coverage", "inception_score", "generative_metrics",
           "linear_probe_accuracy", "knn_accuracy", "principal_angles", "pca_basis"]
