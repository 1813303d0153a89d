"""What the foundation must show, on real data: the chapter's claims for SPEC 1, 2 and 6."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from conftest import mnist4k_path
from latentforge.data import Dataset, load_data
from latentforge.models import build_model
from latentforge.train import Trainer, train


def _cloud(n=200, seed=4):
    """A 3-D cloud close to a curved plane (like the chapter's toy data), not centred."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1.5, 1.5, n)
    x = np.stack([np.cos(a) + np.sin(a) / 2, np.sin(a) * 0.7, np.zeros(n)], 1)
    x = x @ np.array([[1, 0.3, 0.2], [0.1, 1, 0.4], [0.2, 0.1, 1.0]]) + 0.1 * rng.standard_normal((n, 3))
    return x.astype(np.float32)


def _pca_mse(x, k=2):
    p = PCA(k).fit(x)
    return float(((p.inverse_transform(p.transform(x)) - x) ** 2).mean()), p


def _principal_angles(a, b):
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    return np.degrees(np.arccos(np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1, 1)))


@pytest.mark.parametrize("scale,shift", [(1.0, 0.0), (100.0, 50.0)])
def test_linear_ae_is_pca_on_a_3d_cloud(tmp_path, scale, shift):
    x = _cloud() * scale + shift
    ds = Dataset(x=x, y=None, name="cloud", sample_shape=(3,), is_image=False)
    run = train("linear-ae", ds, out=tmp_path / "lin", valid_fraction=0,
                overrides={"epochs": 300, "lr_schedule": "cosine"}, log=lambda m: None)
    mse = float(((run.reconstruct(x) - x) ** 2).mean())
    pca_mse, pca = _pca_mse(x)
    assert mse <= 1.01 * pca_mse, (mse, pca_mse)
    # the decoder's column space is PCA's plane: principal angles ~0
    w = run.model.dec[0].weight.detach().numpy()                # (3, 2)
    assert _principal_angles(w, pca.components_.T).max() < 2.0


def test_linear_ae_is_pca_on_digits(tmp_path):
    ds = load_data("digits")
    ds = Dataset(x=ds.x.reshape(len(ds), -1), y=ds.y, name="digits", sample_shape=(64,), is_image=False)
    run = train("linear-ae", ds, out=tmp_path / "lin", valid_fraction=0, overrides={"epochs": 20}, log=lambda m: None)
    mse = float(((run.reconstruct(ds.x) - ds.x) ** 2).mean())
    pca_mse, _ = _pca_mse(ds.x)
    assert mse <= 1.05 * pca_mse, (mse, pca_mse)


def _mnist_split(n_train):
    ds = load_data(str(mnist4k_path()))
    x = torch.from_numpy(ds.x)
    return x[:n_train], x[n_train:]


def _fit(name, x, xv, seed=42, **cfg):
    torch.manual_seed(seed)
    m = build_model(name, input_shape=[1, 28, 28], seed=seed, **cfg)
    tr = Trainer(m, m.config, progress=False, log=lambda s: None)
    tr.fit(x, xv)
    return m, tr.state.history[-1]["valid_loss"]


def test_stacked_ae_matches_the_chapters_keras_code():
    """The chapter's defaults, 20 epochs, on the split the Keras reference used (first 3000 / last
    1000 of mnist-4k): the Keras code measured 0.1339 / 0.1380 / 0.1375 held-out BCE (seeds 42, 1, 2;
    mean 0.1365) with ../shared/bench/keras_seed_ae.py's model. The issue's reference figure: ~0.130."""
    x, xv = _mnist_split(3000)
    _, bce = _fit("stacked-ae", x, xv)
    assert bce <= 0.1365, bce


def test_tied_ae_half_the_parameters_about_the_same_loss():
    x, xv = _mnist_split(3600)
    stacked, bce_s = _fit("stacked-ae", x, xv)
    tied, bce_t = _fit("tied-ae", x, xv)
    n_s = sum(p.numel() for p in stacked.parameters())
    n_t = sum(p.numel() for p in tied.parameters())
    assert n_t <= 0.55 * n_s
    assert bce_t <= 1.03 * bce_s, (bce_t, bce_s)
