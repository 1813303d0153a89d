"""The evaluation metrics against small cases computed independently (closed forms, direct formulas,
exact expectations, brute force)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentforge.errors import DataError
from latentforge.eval import (class_mode_coverage, fid, frechet_distance, inception_score, kid, knn_accuracy,
                              linear_probe_accuracy, mmd2_unbiased, pairwise_metrics, pca_basis, prdc,
                              principal_angles, ssim)
from latentforge.eval.generative import knn_radii, polynomial_kernel
from latentforge.eval.metrics import gaussian_window


# ------------------------------------------------------------------------------------------ FID
def test_frechet_distance_of_gaussians_closed_form():
    # commuting (diagonal) covariances: tr((S1 S2)^1/2) = sum sqrt(a_i b_i), so
    # d = |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = 1 + 4 + ((1 - 3) ** 2 + (2 - 1) ** 2 + 0)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([2.0], [[9.0]], [-1.0], [[4.0]]) == pytest.approx(9 + 1)


def test_frechet_distance_general_covariances_against_scipy_sqrtm():
    from scipy.linalg import sqrtm
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    s1, s2 = x @ x.T + 0.1 * np.eye(5), y @ y.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    ref = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(sqrtm(s1 @ s2))))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)
    # rotation invariance: the same Gaussians in rotated coordinates
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    assert frechet_distance(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T) == pytest.approx(ref, rel=1e-9)
    # singular covariances (fewer samples than dimensions) stay real and >= 0
    z = rng.standard_normal((3, 5))
    assert frechet_distance(mu1, z.T @ z, mu1, np.eye(5)) > 0


def test_fid_of_samples_approaches_the_closed_form():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((20000, 2)) * [1.0, 2.0]
    b = rng.standard_normal((20000, 2)) * [3.0, 1.0] + [1.0, 0.0]
    assert fid(a, b) == pytest.approx(1 + (1 - 3) ** 2 + (2 - 1) ** 2, rel=0.03)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(DataError, match="dimension"):
        fid(a, b[:, :1])
    with pytest.raises(DataError, match="NaN"):
        fid(a, np.full((3, 2), np.nan))


# ------------------------------------------------------------------------------------------ KID
def test_mmd2_unbiased_matches_the_definition():
    rng = np.random.default_rng(2)
    x, y = torch.as_tensor(rng.random((6, 3))), torch.as_tensor(rng.random((4, 3)))
    k = lambda a, b: float((a @ b / 3 + 1) ** 3)                             # noqa: E731
    sxx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    syy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
    sxy = sum(k(x[i], y[j]) for i in range(6) for j in range(4)) / 24
    got = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))
    assert got == pytest.approx(sxx + syy - 2 * sxy, rel=1e-12)
    # the all-pairs estimate of `kid` is this same statistic
    assert kid(x.numpy(), y.numpy())[0] == pytest.approx(got, rel=1e-10)


def test_kid_is_unbiased_on_discrete_distributions():
    """Exact MMD^2 of two distributions on a few points, against the mean of the estimates on
    many small samples; the biased (V-statistic) estimate misses it by far more. (``kid`` computes
    this same statistic: test_mmd2_unbiased_matches_the_definition.)"""
    p_pts = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    q_pts = torch.tensor([[0.0, 2.0], [2.0, 0.0], [0.5, 0.5], [1.0, 1.0]], dtype=torch.float64)
    kern = polynomial_kernel
    exact = float(kern(p_pts, p_pts).mean() + kern(q_pts, q_pts).mean() - 2 * kern(p_pts, q_pts).mean())
    g = torch.Generator().manual_seed(3)
    m, reps = 4, 1500
    est, biased = [], []
    for _ in range(reps):
        x = p_pts[torch.randint(0, 3, (m,), generator=g)]
        y = q_pts[torch.randint(0, 4, (m,), generator=g)]
        kxx, kyy, kxy = kern(x, x), kern(y, y), kern(x, y)
        est.append(mmd2_unbiased(kxx, kyy, kxy))
        biased.append(float(kxx.mean() + kyy.mean() - 2 * kxy.mean()))
    se = np.std(est) / math.sqrt(reps)
    assert abs(np.mean(est) - exact) < 4 * se
    assert abs(np.mean(biased) - exact) > 10 * se
    # and through `kid` itself on a few of them: the same values
    x, y = p_pts[[0, 1, 1, 2]].numpy(), q_pts[[3, 0, 2, 2]].numpy()
    assert kid(x, y, subset_size=2)[0] == pytest.approx(
        mmd2_unbiased(kern(p_pts[[0, 1, 1, 2]], p_pts[[0, 1, 1, 2]]), kern(q_pts[[3, 0, 2, 2]], q_pts[[3, 0, 2, 2]]),
                      kern(p_pts[[0, 1, 1, 2]], q_pts[[3, 0, 2, 2]])), rel=1e-10)


def test_kid_of_identical_distributions_is_near_zero_and_of_shifted_ones_positive():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((1000, 16)), rng.standard_normal((1000, 16))
    mean, std = kid(a, b, subset_size=250)
    assert abs(mean) < 3 * std / math.sqrt(4) + 1e-3 and std > 0
    shifted, _ = kid(a, b + 0.5, subset_size=250)
    assert shifted > 20 * std
    m = pairwise_metrics(a, b + 0.5, prdc=False, subset_size=250)
    assert m["kid_subsets"] == 4 and m["kid_subset_size"] == 250
    assert m["kid_subsets_mean"] == pytest.approx(shifted, rel=0.2)


# ------------------------------------------------------------------------------------------ PRDC
def _brute_prdc(real, fake, k_pr=3, k_dc=5):
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=2)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=2)
    d_fr = np.linalg.norm(fake[:, None] - real[None], axis=2)
    kth = lambda d, k: np.sort(d, axis=1)[:, k]                               # noqa: E731  (column 0: self)
    r_pr, r_dc, f_pr = kth(d_rr, k_pr), kth(d_rr, k_dc), kth(d_ff, k_pr)
    return {"precision": (d_fr <= r_pr[None]).any(1).mean(), "recall": (d_fr.T <= f_pr[None]).any(1).mean(),
            "density": (d_fr <= r_dc[None]).sum() / (k_dc * len(fake)), "coverage": (d_fr <= r_dc[None]).any(0).mean()}


def test_precision_recall_on_hand_made_point_sets():
    # real: a unit grid of 5x5 points; 3-NN radius of every real point is 1 (4 neighbours at distance 1
    # inside, corners have 2 at 1 and the 3rd at sqrt(2))
    g = np.array([[i, j] for i in range(5) for j in range(5)], float)
    # fake: 10 points near real points (inside their balls) and 10 points far away (outside every ball)
    near = g[:10] + 0.1
    far = np.array([[100.0 + 3 * i, 100.0] for i in range(10)])
    m = prdc(g, np.concatenate([near, far]))
    assert m["precision"] == pytest.approx(0.5)
    # recall: the fake set's 3-NN balls: the near points' balls (radius ~1) hold real points near the first
    # two columns of the grid; the far points' balls (radius 6) hold none
    ref = _brute_prdc(g, np.concatenate([near, far]))
    assert m["recall"] == pytest.approx(ref["recall"]) and 0 < m["recall"] < 1
    # identical sets: precision = recall = coverage = 1 (density counts how many balls hold each point)
    same = prdc(g, g.copy())
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] == pytest.approx(_brute_prdc(g, g)["density"])
    # a generated set collapsed on one real point: precision 1, recall 1/25 (only that point), low coverage
    collapsed = np.repeat(g[12:13], 10, 0) + np.linspace(0, 0.01, 10)[:, None]
    m = prdc(g, collapsed)
    assert m["precision"] == 1.0 and m["recall"] == pytest.approx(1 / 25)
    assert m["coverage"] == pytest.approx(_brute_prdc(g, collapsed)["coverage"]) and m["coverage"] < 0.5


def test_prdc_chunked_float32_path_equals_brute_force():
    rng = np.random.default_rng(5)
    real = rng.standard_normal((300, 8))
    fake = rng.standard_normal((250, 8)) * 1.3 + 0.2
    ref = _brute_prdc(real, fake)
    for dtype, chunk in ((torch.float64, 7), (torch.float32, 64), (None, None)):
        got = prdc(real, fake, chunk=chunk, dtype=dtype)
        for key, v in ref.items():
            assert got[key] == pytest.approx(v, abs=2 / 250), (key, dtype)


def test_knn_radii_grouped_selection_equals_a_full_sort():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1500, 4))      # 1500 rows: cut into groups of 38 (with padding columns)
    d = ((x[:, None] - x[None]) ** 2).sum(2)
    np.fill_diagonal(d, np.inf)
    srt = np.sort(d, axis=1)
    r3, r5 = knn_radii(x, 3, 5, chunk=500)
    np.testing.assert_allclose(r3, srt[:, 2], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r5, srt[:, 4], rtol=1e-9, atol=1e-12)
    # duplicates: a point's twin is its nearest neighbour at distance 0
    dup = np.concatenate([x[:100], x[:100]])
    assert np.allclose(knn_radii(dup, 1)[0], 0.0)


def test_prdc_needs_more_samples_than_k():
    with pytest.raises(DataError, match="need more than k"):
        prdc(np.zeros((5, 2)), np.ones((10, 2)))


# ------------------------------------------------------------------------------------------ classes
def test_inception_score_of_uniform_and_one_hot_predictions():
    k = 10
    uniform = np.full((100, k), 1 / k)
    assert inception_score(uniform, splits=1)[0] == pytest.approx(1.0)
    one_hot = np.eye(k)[np.arange(100) % k]
    assert inception_score(one_hot, splits=1)[0] == pytest.approx(k)
    assert inception_score(one_hot, splits=5) == pytest.approx((k, 0.0))
    collapsed = np.eye(k)[np.zeros(100, int)]                    # confident but one class: 1
    assert inception_score(collapsed, splits=1)[0] == pytest.approx(1.0)
    # two classes, confident, 3:1 -> exp(H(p_y)) = exp(-(.75 ln .75 + .25 ln .25))
    two = np.eye(2)[np.array([0, 0, 0, 1] * 25)]
    assert inception_score(two, splits=1)[0] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))


def test_class_mode_coverage():
    k = 4
    even = np.eye(k)[np.arange(400) % k]
    m = class_mode_coverage(even)
    assert m["entropy"] == pytest.approx(math.log(4)) and m["classes_covered"] == 4
    skew = np.eye(k)[np.array([0] * 90 + [1] * 9 + [2] * 1)]      # class 3 never, class 2 below 1/(5K)
    m = class_mode_coverage(skew)
    assert m["classes_covered"] == 2 and m["histogram"] == [0.9, 0.09, 0.01, 0.0]
    assert m["entropy"] == pytest.approx(-(0.9 * math.log(0.9) + 0.09 * math.log(0.09) + 0.01 * math.log(0.01)))
    with pytest.raises(DataError, match="probabilities"):
        class_mode_coverage(np.ones((3, 4)))


# ------------------------------------------------------------------------------------------ SSIM
def test_ssim_identical_images_is_one_and_matches_the_direct_formula():
    rng = np.random.default_rng(7)
    x = rng.random((3, 7, 7))
    assert ssim(x, x) == pytest.approx(1.0)
    # 7x7 images with a 7x7 window: one window position, so SSIM is the formula on the Gaussian-weighted
    # statistics of the whole image
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    w = gaussian_window(7, 1.5)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    vals = []
    for a, b in zip(x, y):
        mx, my = (w * a).sum(), (w * b).sum()
        vx, vy = (w * (a - mx) ** 2).sum(), (w * (b - my) ** 2).sum()
        cxy = (w * (a - mx) * (b - my)).sum()
        vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    assert ssim(x, y, win_size=7) == pytest.approx(np.mean(vals), rel=1e-10)
    assert ssim(x, y) == pytest.approx(np.mean(vals), rel=1e-10)          # 11 shrinks to 7 on 7x7 images
    # colour images: the mean over channels; a constant shift of a flat image lowers only the luminance term
    col = rng.random((2, 3, 16, 16))
    assert ssim(col, col) == pytest.approx(1.0)
    assert ssim(col, 1 - col) < 0.5
    with pytest.raises(DataError, match="shape"):
        ssim(x, y[:, :6])


# ------------------------------------------------------------------------------------------ representation
def test_principal_angles_against_a_known_rotation():
    theta = np.radians(30.0)
    e = np.eye(4)
    a = e[:, :2]                                                   # span(e1, e2)
    # rotate e2 towards e3 by 30 degrees: the angles are 0 (e1 shared) and 30
    b = np.stack([e[:, 0], math.cos(theta) * e[:, 1] + math.sin(theta) * e[:, 2]], 1)
    np.testing.assert_allclose(np.degrees(principal_angles(a, b)), [0.0, 30.0], atol=1e-10)
    # a different basis of the same subspace: all angles 0, accurately (the sine branch)
    mix = a @ np.array([[2.0, 1.0], [1.0, 3.0]])
    np.testing.assert_allclose(principal_angles(a, mix), [0.0, 0.0], atol=1e-12)
    # orthogonal subspaces: 90 degrees; against scipy
    from scipy.linalg import subspace_angles
    rng = np.random.default_rng(8)
    p, q = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    np.testing.assert_allclose(principal_angles(p, q), np.sort(subspace_angles(p, q)), atol=1e-10)
    assert np.degrees(principal_angles(e[:, :1], e[:, 1:2]))[0] == pytest.approx(90.0)


def test_pca_basis_finds_the_dominant_directions():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2000, 3)) * [5.0, 2.0, 0.1]
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    basis = pca_basis(x @ q.T + 7.0, 2)
    assert np.degrees(principal_angles(basis, q[:, :2])).max() < 1.0


def test_probes_separate_informative_from_random_codes():
    rng = np.random.default_rng(10)
    y = np.arange(400) % 4
    centres = rng.standard_normal((4, 5)) * 4
    good = centres[y] + rng.standard_normal((400, 5))
    noise = rng.standard_normal((400, 5))
    assert linear_probe_accuracy(good[:300], y[:300], good[300:], y[300:]) > 0.9
    assert knn_accuracy(good[:300], y[:300], good[300:], y[300:]) > 0.9
    assert linear_probe_accuracy(noise[:300], y[:300], noise[300:], y[300:]) < 0.5
    assert knn_accuracy(noise[:300], y[:300], noise[300:], y[300:]) < 0.5
