"""Sparse, hashing and variational autoencoders (SPEC 11-13), their metrics, and the generate /
interpolate / evaluate commands: behaviour on real digits, hand-computed metric values, and the CLI
end to end with its bad-input answers (exit 2, one line)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import mnist4k_path
from latentforge.models.interpolation import interpolate_codes, lerp, slerp
from latentforge.errors import ConfigError, DataError
from latentforge.eval import (bce, hash_pair_purity, iw_nll_from_log_weights, label_pair_chance, mse,
                              near_binary_share, psnr, reconstruction_metrics)
from latentforge.models import build_model
from latentforge.models.sparse_ae import kl_sparsity
from latentforge.train import Trainer


@pytest.fixture(scope="module")
def digits():
    """MNIST-4k as tensors: 2000 training digits and 500 held-out ones (with labels)."""
    from latentforge.data import load_data
    ds = load_data(str(mnist4k_path()))
    x, y = torch.from_numpy(ds.x), torch.from_numpy(ds.y)
    return x[:2000], y[:2000], x[3500:], y[3500:]


def _fit(name, x, y=None, **cfg):
    torch.manual_seed(0)
    m = build_model(name, input_shape=list(x.shape[1:]), **cfg)
    m.prepare(x)
    Trainer(m, m.config, progress=False, log=lambda s: None).fit(x, y=y)
    return m.eval()


# ------------------------------------------------------------------------------ sparse-ae
def test_kl_sparsity_hand_value():
    codes = torch.tensor([[0.2, 0.1], [0.4, 0.1]])          # unit means 0.3 and 0.1
    want = 0.1 * math.log(0.1 / 0.3) + 0.9 * math.log(0.9 / 0.7)   # the second unit is on target: 0
    assert kl_sparsity(codes, 0.1).item() == pytest.approx(want, rel=1e-5)


def test_sparse_penalties_are_named_parts():
    x = torch.rand(8, 1, 8, 8)
    kl = build_model("sparse-ae", input_shape=[1, 8, 8], hidden_sizes=[16], coding_size=12)
    out = kl(x)
    assert set(out.parts) == {"bce", "kl"}
    assert out.loss.item() == pytest.approx((out.parts["bce"] + out.parts["kl"]).item(), rel=1e-6)
    l1 = build_model("sparse-ae", input_shape=[1, 8, 8], hidden_sizes=[16], coding_size=12, penalty="l1")
    out = l1(x)
    codes = l1.encode(x)
    assert set(out.parts) == {"bce", "l1"}
    assert out.parts["l1"].item() == pytest.approx(1e-3 * codes.abs().sum().item() / 8, rel=1e-5)
    assert 0 <= codes.min() and codes.max() <= 1 and l1.codes_in_unit_interval
    with pytest.raises(ConfigError, match="penalty"):
        build_model("sparse-ae", input_shape=[64], penalty="l2")


# The chapter's penalty (weight 0.05, target 0.1, divided by the batch size as Keras does) with a
# faster schedule than the default (Nadam 1e-3, batch 32, 10 epochs: about 0.69 on 3,600 digits).
SPARSE_TEST_CONFIG = dict(optimizer="adam", lr=1e-2, batch_size=64, epochs=15)


def test_sparse_kl_codes_are_sparse(digits):
    """SPEC 11 on real digits: the KL penalty holds the mean activation near its target 0.1,
    and most activations lie below 0.1 (the book: about 70%; measured here: 0.77, mean 0.11)."""
    x, _, xv, _ = digits
    m = _fit("sparse-ae", x, **SPARSE_TEST_CONFIG)
    info = m.info_metrics(xv.numpy())
    assert 0.06 < info["mean_coding_activation"] < 0.14, info
    assert info["share_activations_below_0.1"] >= 0.7, info


# ------------------------------------------------------------------------------ hashing-ae
def test_hashing_noise_only_in_training():
    m = build_model("hashing-ae", input_shape=[64], hidden_sizes=[16], coding_size=4)
    x = torch.rand(5, 64)
    m.eval()
    assert torch.equal(m.encode(x), m.encode(x))
    m.train()
    assert not torch.equal(m.encode(x), m.encode(x))


def test_hashing_codes_are_near_binary_and_similar_images_share_hashes(digits):
    x, _, xv, yv = digits
    m = _fit("hashing-ae", x, lr=1e-2, batch_size=64, epochs=5)   # a faster schedule than the default
    codes = m.codes_of(xv.numpy())
    assert near_binary_share(codes) > 0.8                        # measured: 0.97; purity 0.53 vs 0.10
    hashes = (codes >= 0.5).to(torch.uint8).numpy()
    purity, pairs = hash_pair_purity(hashes, yv.numpy())
    assert pairs > 0
    assert purity > 2 * label_pair_chance(yv.numpy())      # chance: ~0.1 for ten balanced digits
    info = m.info_metrics(xv.numpy())
    assert info["share_near_binary_codes"] == pytest.approx(near_binary_share(codes))


# ------------------------------------------------------------------------------ vae
@pytest.fixture(scope="module")
def vae(digits):
    x, _, _, _ = digits
    return _fit("vae", x, epochs=4)


def test_vae_loss_parts_and_sample(vae, digits):
    x, _, xv, _ = digits
    out = vae(xv[:64])
    assert set(out.parts) == {"bce", "kl"} and out.parts["kl"].item() > 0
    assert out.loss.item() == pytest.approx((out.parts["bce"] + out.parts["kl"]).item(), rel=1e-6)
    s = vae.sample(7, generator=torch.Generator().manual_seed(1))
    assert s.shape == (7, 1, 28, 28) and s.min() >= 0 and s.max() <= 1
    again = vae.sample(7, generator=torch.Generator().manual_seed(1))
    assert torch.equal(s, again)
    assert torch.equal(vae.encode(xv[:5]), vae.encode(xv[:5]))   # the mean: deterministic
    with pytest.raises(ConfigError, match="unconditional"):
        vae.sample(3, labels=1)


def test_vae_importance_weighted_nll_is_tighter_than_the_elbo(vae, digits):
    _, _, xv, _ = digits
    xs = xv[:200]
    gen = torch.Generator().manual_seed(0)
    elbo_nll = -vae.log_likelihood(xs, k=1, generator=gen).mean().item()
    iw_nll = -vae.log_likelihood(xs, k=50, generator=gen).mean().item()
    assert math.isfinite(iw_nll) and 0 < iw_nll <= elbo_nll
    # the k = 1 bound is the ELBO: sum BCE + KL, within Monte-Carlo noise
    with torch.no_grad():
        out = vae(xs)
    elbo_from_loss = out.loss.item() * 784
    assert elbo_nll == pytest.approx(elbo_from_loss, rel=0.05)


def test_conditional_vae_labels():
    m = build_model("conditional-vae", input_shape=[1, 8, 8], hidden_sizes=[16], coding_size=2, n_classes=3)
    x = torch.rand(6, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert m(x, y).loss.isfinite()
    with pytest.raises(ConfigError, match="labels"):
        m(x)
    with pytest.raises(DataError, match="n_classes"):
        m(x, torch.tensor([0, 1, 2, 3, 0, 1]))
    g = torch.Generator()
    a = m.sample(4, labels=0, generator=g.manual_seed(0))
    b = m.sample(4, labels=2, generator=g.manual_seed(0))
    assert a.shape == (4, 1, 8, 8) and not torch.equal(a, b)     # same noise, another class
    with pytest.raises(ConfigError, match="labels"):
        m.sample(4)
    ll = m.log_likelihood(x, k=3, y=y)
    assert ll.shape == (6,) and torch.isfinite(ll).all()


# ------------------------------------------------------------------------------ interpolation
def test_slerp_and_lerp_endpoints_and_norms():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(10), rng.standard_normal(10)
    for fn in (lerp, slerp):
        path = fn(a, b, 7)
        assert path.shape == (7, 10)
        np.testing.assert_allclose(path[0], a, atol=1e-12)
        np.testing.assert_allclose(path[-1], b, atol=1e-12)
    u, v = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    mid = slerp(u, v, 3)[1]
    np.testing.assert_allclose(mid, [math.sqrt(0.5)] * 2)          # on the unit circle
    np.testing.assert_allclose(lerp(u, v, 3)[1], [0.5, 0.5])       # on the chord
    np.testing.assert_allclose(slerp(u, 2 * u, 3)[1], 1.5 * u)      # parallel: falls back to lerp
    with pytest.raises(ConfigError):
        interpolate_codes(u, v, 3, "cubic")


# ------------------------------------------------------------------------------ metrics
def test_metrics_hand_computed():
    x = np.array([[0.0, 1.0]])
    assert bce(x, [[0.5, 0.5]]) == pytest.approx(math.log(2))
    assert bce([[1.0, 0.0]], [[0.9, 0.2]]) == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    assert mse([[0.0, 1.0]], [[0.1, 0.7]]) == pytest.approx((0.01 + 0.09) / 2)
    assert psnr([[0.0, 0.0]], [[0.1, 0.1]]) == pytest.approx(20.0)          # MSE 0.01
    assert psnr([[0.0, 0.0]], [[1.0, 1.0]], data_range=10) == pytest.approx(20.0)
    assert psnr(x, x) == math.inf
    m = reconstruction_metrics([[0.0, 2.0]], [[0.0, 1.0]])
    assert m["bce"] is None and m["psnr_data_range"] == 2.0 and m["mse"] == pytest.approx(0.5)
    # log-weights log 1 and log 3: -log(mean(1, 3)) = -log 2; a second image with log-weight 0
    assert iw_nll_from_log_weights([[0.0, math.log(3)], [0.0, 0.0]]) == pytest.approx(-math.log(2) / 2)
    assert near_binary_share([[0.05, 0.5, 0.95, 0.2]]) == 0.5
    hashes = np.array([[0, 1], [0, 1], [0, 1], [1, 1]])
    purity, pairs = hash_pair_purity(hashes, [3, 3, 4, 3])     # 3 pairs share a hash, 1 shares the label
    assert pairs == 3 and purity == pytest.approx(1 / 3)
    assert label_pair_chance([0, 0, 1, 1]) == pytest.approx(2 / 6)
    with pytest.raises(DataError):
        bce([[0.0, 2.0]], [[0.5, 0.5]])


# ------------------------------------------------------------------------------ CLI
TINY_VAE = ["--set", "hidden_sizes=16", "--set", "coding_size=2", "--batch-size", "16", "--epochs", "2"]


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    from sklearn.datasets import load_digits
    d = load_digits()
    p = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(p, x=(d.images[:300] / 16.0).astype(np.float32), y=d.target[:300])
    return p


@pytest.fixture(scope="module")
def runs(digits_npz, tmp_path_factory):
    from latentforge.train import train
    base = tmp_path_factory.mktemp("runs")
    over = {"hidden_sizes": [16], "coding_size": 2, "batch_size": 16, "epochs": 2}
    log = lambda s: None  # noqa: E731
    return {
        "vae": train("vae", str(digits_npz), out=base / "vae", overrides=over, progress=False, log=log).run_dir,
        "cvae": train("conditional-vae", str(digits_npz), out=base / "cvae", overrides=over,
                      progress=False, log=log).run_dir,
        "ae": train("stacked-ae", str(digits_npz), out=base / "ae", overrides={**over, "lr": 0.5},
                    progress=False, log=log).run_dir,
    }


def test_cli_generate(runs, tmp_path, run_cli):
    out, grid = tmp_path / "s.npy", tmp_path / "s.png"
    code, so, se = run_cli("generate", runs["vae"], "-n", "12", "--out", out, "--grid", grid, "--seed", "3")
    assert code == 0, se
    s = np.load(out)
    assert s.shape == (12, 8, 8) and s.dtype == np.float32 and s.min() >= 0 and s.max() <= 1
    assert grid.stat().st_size > 0
    assert run_cli("generate", runs["vae"], "-n", "12", "--out", tmp_path / "t.npy", "--seed", "3")[0] == 0
    assert np.array_equal(np.load(tmp_path / "t.npy"), s)                         # seeded
    code, so, se = run_cli("generate", runs["cvae"], "-n", "5", "--label", "7", "--out", out)
    assert code == 0, se
    assert np.load(out).shape == (5, 8, 8)


@pytest.mark.parametrize("which,args,match", [
    ("vae", ["--label", "1"], "unconditional"),
    ("cvae", [], "--label"),
    ("cvae", ["--label", "10"], "out of range"),
    ("cvae", ["--label", "-1"], "out of range"),
    ("vae", ["-n", "0"], "must be >= 1"),
    ("vae", ["--out", "/nonexistent-dir/x.npy"], "does not exist"),
    ("vae", ["--out", "x.txt"], ".npy"),
    ("vae", ["--truncation", "0.7"], "truncation"),
    ("ae", [], "not a generative model"),
])
def test_cli_generate_bad_inputs(runs, tmp_path, run_cli, which, args, match):
    full = ["-n", "4", "--out", str(tmp_path / "s.npy"), *args]
    # later flags win in click: put the defaults first so that the case's flags override them
    code, out, err = run_cli("generate", runs[which], *full)
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and match in err, err


def test_cli_interpolate(runs, digits_npz, tmp_path, run_cli):
    out = tmp_path / "i.png"
    code, so, se = run_cli("interpolate", runs["vae"], "--data", digits_npz, "--pairs", "3", "--steps", "5",
                           "--out", out)
    assert code == 0, se
    assert "slerp" in so and out.stat().st_size > 0                           # the VAE's default
    code, so, se = run_cli("interpolate", runs["ae"], "--pairs", "2", "--steps", "4", "--out", out)
    assert code == 0 and "linear" in so, se
    code, so, se = run_cli("interpolate", runs["cvae"], "--pairs", "2", "--steps", "4", "--out", out,
                           "--method", "linear")
    assert code == 0, se
    for args, match in [(["--steps", "1"], "--steps"), (["--pairs", "0"], "--pairs"),
                        (["--method", "cubic"], "--method"), (["--out", "/nonexistent-dir/i.png"], "does not exist")]:
        code, so, se = run_cli("interpolate", runs["vae"], "--out", out, *args)
        assert code == 2 and se.count("\n") == 1 and match in se, se


def test_cli_evaluate(runs, digits_npz, tmp_path, run_cli):
    js = tmp_path / "m.json"
    code, so, se = run_cli("evaluate", runs["vae"], "--k", "5", "--json", js)
    assert code == 0, se
    res = json.loads(so)
    assert json.loads(js.read_text()) == res
    assert res["split"] == "held-out" and res["n"] == 30 and res["iw_nll_k"] == 5
    assert res["bce"] > 0 and res["mse"] > 0 and res["psnr"] > 0 and res["iw_nll"] > 0
    code, so, se = run_cli("evaluate", runs["ae"], "--data", digits_npz, "-n", "10")
    assert code == 0, se
    res = json.loads(so)
    assert res["n"] == 10 and res["split"] == "held-out" and "iw_nll" not in res and res["bce"] > 0
    code, so, se = run_cli("evaluate", runs["cvae"], "--k", "3")
    assert code == 0 and json.loads(so)["iw_nll"] > 0, se
    for args, match in [(["-n", "0"], "-n"), (["--k", "0"], "--k"), (["--json", "/nonexistent-dir/m.json"], "does not exist")]:
        code, so, se = run_cli("evaluate", runs["vae"], *args)
        assert code == 2 and se.count("\n") == 1 and match in se, se


def test_cli_info_and_binary_encode_for_sigmoid_codings(digits_npz, tmp_path, run_cli):
    run = tmp_path / "sp"
    code, _, se = run_cli("train", "sparse-ae", "--data", digits_npz, "--out", run, "--set", "hidden_sizes=16",
                          "--set", "coding_size=12", "--epochs", "1", "--batch-size", "16")
    assert code == 0, se
    info = json.loads(run_cli("info", run, "--json")[1])
    assert 0 <= info["share_activations_below_0.1"] <= 1 and 0 <= info["mean_coding_activation"] <= 1
    assert run_cli("encode", run, "--data", digits_npz, "--binary", "--out", tmp_path / "h.npy")[0] == 0
    assert set(np.unique(np.load(tmp_path / "h.npy"))) <= {0, 1}


def test_cli_generate_passes_truncation_where_the_model_declares_it(runs, tmp_path, run_cli, monkeypatch):
    from latentforge.models.capabilities import Capability
    from latentforge.models.vae import VAE

    def sample(self, n, labels=None, generator=None, truncation=1.0):
        return torch.full((n, 1, 8, 8), truncation / 2)
    monkeypatch.setattr(VAE, "sample", sample)
    code, _, se = run_cli("generate", runs["vae"], "-n", "3", "--out", tmp_path / "x.npy", "--truncation", "0.6")
    assert code == 2 and "no truncation trick" in se            # not declared: refused in one line
    code, _, se = run_cli("generate", runs["vae"], "-n", "3", "--out", tmp_path / "x.npy", "--guidance", "2")
    assert code == 2 and "without guidance" in se               # likewise guidance (ddpm declares it)
    monkeypatch.setattr(VAE, "capabilities", VAE.capabilities | Capability.TRUNCATION)
    out = tmp_path / "t.npy"
    code, _, se = run_cli("generate", runs["vae"], "-n", "3", "--out", out, "--truncation", "0.6")
    assert code == 0, se
    np.testing.assert_allclose(np.load(out), 0.3)
    code, _, se = run_cli("generate", runs["vae"], "-n", "3", "--out", out, "--truncation", "-1")
    assert code == 2 and "--truncation" in se and se.count("\n") == 1


def test_cli_help(run_cli):
    for cmd in ("generate", "interpolate", "evaluate"):
        code, out, _ = run_cli(cmd, "--help")
        assert code == 0 and "Usage" in out
