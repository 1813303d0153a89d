"""The domain feature network (model `features`), its per-dataset cache, and `latentforge evaluate`
on generative models and autoencoders."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentforge.data import Dataset
from latentforge.errors import ConfigError, DataError
from latentforge.models import build_model

LOG = lambda s: None  # noqa: E731
FAST = {"epochs": 10, "batch_size": 32, "conv_filters": [8, 16], "feature_size": 32}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets its own data cache (the feature networks are cached there)."""
    monkeypatch.setenv("LATENTFORGE_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def digits():
    from latentforge.data import load_data
    ds = load_data("digits")                                    # (1797, 1, 8, 8) in [0, 1], 10 classes
    return ds.subset(slice(0, 600))


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory, digits):
    p = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(p, x=digits.x[:, 0], y=digits.y)
    return p


@pytest.fixture(scope="module")
def feature_run(digits, tmp_path_factory):
    from latentforge.eval.features import train_feature_network
    return train_feature_network(digits, tmp_path_factory.mktemp("f") / "feat", overrides=FAST, device="cpu",
                                 progress=False)


def test_shapes_for_grey_colour_and_flat_data():
    for shape, conv in (([1, 28, 28], True), ([3, 32, 32], True), ([8, 8], True), ([20], False)):
        m = build_model("features", input_shape=shape, n_classes=3, conv_filters=[4, 8], feature_size=16,
                        hidden_sizes=[12])
        x = torch.rand(5, *shape)
        m.prepare(x)
        m.eval()
        f = m.features(x)
        assert f.shape == (5, 16) and (f >= 0).all()
        p = m.predict_proba(x)
        assert p.shape == (5, 3) and torch.allclose(p.sum(1), torch.ones(5))
        assert (len(m.convs) > 0) == conv
        out = m(x, torch.tensor([0, 1, 2, 0, 1]))
        assert {"mse", "ce", "accuracy"} <= set(out.parts)
        assert set(m(x).parts) == {"mse"}                          # no labels: the AE term alone
    with pytest.raises(DataError, match="n_classes"):
        m(torch.rand(2, 20), torch.tensor([0, 5]))
    with pytest.raises(ConfigError, match="n_classes"):
        build_model("features", input_shape=[4], n_classes=1)


def test_trained_feature_network_classifies_and_records_its_labels(feature_run):
    assert feature_run.name == "features" and feature_run.data_info["labels"]
    assert feature_run.config.n_classes == 10                   # from the data's labels
    assert feature_run.history[-1]["valid_accuracy"] > 0.6      # 10 classes: chance is 0.1


def test_feature_network_trains_without_labels(digits, tmp_path):
    from latentforge.eval.features import embed, train_feature_network
    unlabelled = Dataset(x=digits.x, y=None, name="unlabelled", sample_shape=(8, 8), is_image=True)
    run = train_feature_network(unlabelled, tmp_path / "f", overrides=FAST, device="cpu", progress=False)
    hist = run.history
    assert not run.data_info["labels"] and "valid_ce" not in hist[-1]
    assert hist[-1]["valid_mse"] < hist[0]["valid_mse"]
    f, probs = embed(run, digits.x[:50])
    assert f.shape == (50, 32) and probs is None


def test_cli_train_features(digits_npz, tmp_path, run_cli):
    out = tmp_path / "feat"
    code, so, se = run_cli("train", "features", "--data", digits_npz, "--out", out, "--epochs", "1",
                           "--set", "conv_filters=4,8", "--set", "feature_size=16")
    assert code == 0, se
    assert "trained features" in so and (out / "checkpoint.safetensors").exists()


def test_the_cache_trains_once_per_dataset(digits, cache):
    from latentforge.eval import features as fmod
    msgs: list[str] = []
    run, source = fmod.feature_network_for(digits, log=msgs.append)
    assert source == "trained" and run.run_dir.parent == cache / "features" and msgs
    again, source = fmod.feature_network_for(digits, log=msgs.append)
    assert source == "cache" and again.run_dir == run.run_dir
    other = digits.subset(slice(0, 300))
    assert fmod.cached_features_path(other) != fmod.cached_features_path(digits)
    assert not [p for p in (cache / "features").iterdir() if p.name.startswith(".tmp")]


def test_metrics_rank_degraded_samples_below_real_ones(digits, feature_run):
    """Held-out real digits vs the same digits blurred or noised: every metric prefers the real ones."""
    from latentforge.eval.features import embed
    from latentforge.eval.generative import generative_metrics
    x = digits.x
    ref, other = x[:300], x[300:]
    blurred = torch.nn.functional.avg_pool2d(torch.as_tensor(other), 3, 1, 1).numpy()
    noisy = np.clip(other + 0.35 * np.random.default_rng(0).standard_normal(other.shape), 0, 1).astype(np.float32)
    fr, pr = embed(feature_run, ref)
    res = {}
    for name, imgs in (("real", other), ("blurred", blurred), ("noisy", noisy)):
        f, p = embed(feature_run, imgs)
        res[name] = generative_metrics(fr, f, pr, p)
    for bad in ("blurred", "noisy"):
        assert res["real"]["fid"] < res[bad]["fid"]
        assert res["real"]["kid"] < res[bad]["kid"]
        assert res["real"]["precision"] > res[bad]["precision"]
        assert res["real"]["coverage"] > res[bad]["coverage"]
    assert abs(res["real"]["kid"]) < 5 * res["real"]["kid_std"] + 1e-3
    assert res["real"]["inception_score"] > 3 and res["real"]["modes"]["classes_covered"] == 10


@pytest.fixture(scope="module")
def gen_runs(digits_npz, tmp_path_factory):
    from latentforge.train import train
    base = tmp_path_factory.mktemp("runs")
    return {
        "gan": train("gan", str(digits_npz), out=base / "gan", progress=False, log=LOG,
                     overrides={"g_hidden_sizes": [32], "d_hidden_sizes": [32], "coding_size": 8, "epochs": 1,
                                "sample_every": 0}).run_dir,
        "linear": train("linear-ae", str(digits_npz), out=base / "lin", progress=False, log=LOG,
                        overrides={"coding_size": 3, "epochs": 3, "lr": 0.5}).run_dir,
    }


def test_cli_evaluate_generative_with_given_and_cached_features(gen_runs, feature_run, digits_npz, tmp_path,
                                                                run_cli, cache):
    js = tmp_path / "g.json"
    code, so, se = run_cli("evaluate", gen_runs["gan"], "--features", feature_run.run_dir, "-n", "200",
                           "--json", js)
    assert code == 0, se
    res = json.loads(so)
    assert json.loads(js.read_text()) == res
    g = res["generative"]
    assert g["n_real"] == g["n_generated"] == 200 and g["features"]["source"] == "given"
    assert g["fid"] > 0 and 0 <= g["precision"] <= 1 and 0 <= g["recall"] <= 1 and g["kid_std"] >= 0
    assert 1 <= g["inception_score"] <= 10 and g["modes"]["n_classes"] == 10
    assert "bce" not in res and "features:" in se and str(feature_run.run_dir) in se
    # without --features: one is trained on the data and cached, then reused
    code, so, se = run_cli("evaluate", gen_runs["gan"], "-n", "100")
    assert code == 0, se
    assert json.loads(so)["generative"]["features"]["source"] == "trained" and "training the feature" in se
    code, so, se = run_cli("evaluate", gen_runs["gan"], "-n", "100")
    assert json.loads(so)["generative"]["features"]["source"] == "cache"


def test_cli_evaluate_linear_ae_reports_codings_and_principal_angles(gen_runs, run_cli):
    code, so, se = run_cli("evaluate", gen_runs["linear"])
    assert code == 0, se
    res = json.loads(so)
    rep = res["representation"]
    assert res["split"] == "held-out" and "ssim" in res and -1 <= res["ssim"] <= 1
    assert 0 <= rep["linear_probe_accuracy"] <= 1 and 0 <= rep["knn_accuracy"] <= 1 and rep["n_train"] == 540
    assert len(rep["principal_angles_deg"]) == 3 and 0 <= rep["max_principal_angle_deg"] <= 90
    assert "generative" not in res


def test_a_linear_ae_with_pca_weights_has_zero_principal_angles(digits):
    from latentforge.eval.representation import pca_basis, subspace_report
    x = digits.x.reshape(len(digits), -1)
    m = build_model("linear-ae", input_shape=[64], coding_size=4)
    m.prepare(torch.as_tensor(x))
    basis = pca_basis(m.to_internal(torch.as_tensor(x)).double().numpy(), 4)        # (64, 4)
    with torch.no_grad():
        m.dec[-1].weight.copy_(torch.as_tensor(basis @ np.diag([2.0, -1.0, 0.5, 3.0])))   # any basis of it
    rep = subspace_report(m, x)
    assert rep["max_principal_angle_deg"] < 1e-3
    with torch.no_grad():
        m.dec[-1].weight.copy_(torch.randn(64, 4))
    assert subspace_report(m, x)["max_principal_angle_deg"] > 20


def test_cli_evaluate_refusals(gen_runs, feature_run, digits_npz, tmp_path, run_cli):
    for args, match in [((feature_run.run_dir,), "neither an autoencoder"),
                        ((gen_runs["gan"], "--features", gen_runs["linear"]), "not a feature network"),
                        ((gen_runs["gan"], "-n", "3", "--features", feature_run.run_dir), "at least 6")]:
        code, so, se = run_cli("evaluate", *args)
        assert code == 2 and se.count("\n") == 1 and match in se, se
    wrong = tmp_path / "flat.npy"
    np.save(wrong, np.random.default_rng(0).random((50, 10)).astype(np.float32))
    from latentforge.eval.features import train_feature_network
    flat = train_feature_network(Dataset(x=np.load(wrong), y=None, name="flat", sample_shape=(10,), is_image=False),
                                 tmp_path / "flatfeat", overrides={"epochs": 1}, device="cpu", progress=False)
    code, so, se = run_cli("evaluate", gen_runs["gan"], "--features", flat.run_dir)
    assert code == 2 and "shape" in se, se
