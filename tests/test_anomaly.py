"""Anomaly detection as a workflow (issue 20): class filters, `score`, thresholds, `experiment anomaly`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from latentforge.data import Dataset, load_data
from latentforge.errors import ConfigError, DataError
from latentforge.eval import anomaly as an


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


# ------------------------------------------------------------------------------------ class filters
def test_filter_classes_keeps_and_drops(digits):
    kept = digits.filter_classes("0,3,7")
    assert set(np.unique(kept.y)) == {0, 3, 7} and len(kept) == int(np.isin(digits.y, [0, 3, 7]).sum())
    assert kept.class_filter == {"classes": [0, 3, 7]}
    dropped = digits.filter_classes(exclude=[9])
    assert 9 not in set(dropped.y) and len(dropped) == int((digits.y != 9).sum())
    assert dropped.class_filter == {"exclude_classes": [9]}
    assert digits.filter_classes() is digits
    # the filter survives splitting (the run records it from the full dataset)
    assert kept.subset(np.arange(5)).class_filter == {"classes": [0, 3, 7]}
    # class names work where the data has them
    named = Dataset(x=digits.x[:40], y=digits.y[:40] % 2, name="named", sample_shape=(8, 8), is_image=True,
                    class_names=["even", "odd"])
    assert set(named.filter_classes("odd").y) == {1}


@pytest.mark.parametrize("kwargs, err, words", [
    ({"classes": "11"}, DataError, "--classes 11: no sample of digits has this label"),
    ({"classes": "cat"}, DataError, "has no class named 'cat'"),
    ({"exclude": "0,1,2,3,4,5,6,7,8,9"}, DataError, "no sample of digits is left"),
    ({"classes": "1", "exclude": "2"}, ConfigError, "give one of them"),
    ({"classes": "1,,2"}, ConfigError, "empty item"),
])
def test_filter_classes_errors(digits, kwargs, err, words):
    with pytest.raises(err, match=words):
        digits.filter_classes(**kwargs)


def test_filter_on_data_without_labels_is_one_line(tmp_path, run_cli):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((20, 8, 8)).astype(np.float32))
    code, _, err = run_cli("train", "stacked-ae", "--data", tmp_path / "x.npy", "--classes", "1",
                             "--out", tmp_path / "r")
    assert code == 2 and err.count("\n") == 1
    assert "--classes: " in err and "has no labels to filter by" in err


def test_train_records_the_filter_and_resume_keeps_it(tmp_path, run_cli, digits):
    run_dir = tmp_path / "r"
    code, _, err = run_cli("train", "stacked-ae", "--data", "digits", "--exclude-classes", "9", "--epochs", "1",
                           "--set", "hidden_sizes=16", "--set", "coding_size=4", "--out", run_dir)
    assert code == 0, err
    info = json.loads((run_dir / "run.json").read_text())["data"]
    assert info["class_filter"] == {"exclude_classes": [9]}
    assert info["n_train"] + info["n_valid"] == int((digits.y != 9).sum())
    # --resume without the flag continues on the filtered data (the fingerprint matches) ...
    code, _, err = run_cli("train", "stacked-ae", "--data", "digits", "--epochs", "2", "--resume", "--out", run_dir)
    assert code == 0, err
    assert json.loads((run_dir / "run.json").read_text())["epochs_done"] == 2
    # ... and refuses another filter
    code, _, err = run_cli("train", "stacked-ae", "--data", "digits", "--classes", "1", "--epochs", "3",
                           "--resume", "--out", run_dir)
    assert code == 2 and "trained on --exclude-classes 9, not --classes 1" in err
    # the run's own held-out split is one of the filtered data
    from latentforge.train import load_run
    _, train, test, split = load_run(run_dir).data_splits()
    assert split == "held-out" and 9 not in set(test.y) and 9 not in set(train.y)
    _, train, test, _ = load_run(run_dir).data_splits(classes="1,2")
    assert set(test.y) == {1, 2} and set(train.y) == {1, 2}
    with pytest.raises(DataError, match="the run's own data is its --exclude-classes 9"):
        load_run(run_dir).data_splits(classes="9")
    # encode with a filter: only those samples
    code, _, err = run_cli("encode", run_dir, "--data", "digits", "--classes", "9", "--out", tmp_path / "c.npy")
    assert code == 0, err
    assert np.load(tmp_path / "c.npy").shape == (int((digits.y == 9).sum()), 4)


# ------------------------------------------------------------------------------------ scores by capability
def _noise(like: np.ndarray, n: int = 60) -> np.ndarray:
    return np.random.default_rng(1).random((n, *like.shape[1:])).astype(np.float32)


@pytest.fixture(scope="module")
def normal_split(digits):
    """Digits 0 and 1: training and held-out normal samples."""
    ds = digits.filter_classes("0,1")
    idx = np.random.default_rng(0).permutation(len(ds))
    return ds.x[idx[:300]], ds.y[idx[:300]], ds.x[idx[300:]]


@pytest.mark.parametrize("model, overrides, methods", [
    ("stacked-ae", {"hidden_sizes": [32], "coding_size": 8, "optimizer": "adam", "lr": 3e-3, "epochs": 15},
     ["reconstruction", "knn"]),
    ("vae", {"epochs": 15}, ["iw-nll", "elbo", "reconstruction"]),
    ("gan", {"epochs": 5}, ["discriminator"]),
    ("ddpm", {"epochs": 10, "channels": 8, "channel_mult": [1], "res_blocks": 1, "groups": 4, "steps": 50,
              "batch_size": 32}, ["denoising"]),
    ("classifier", {"epochs": 5}, ["confidence", "knn"]),
])
def test_scores_rank_uniform_noise_above_held_out_normal_data(normal_split, model, overrides, methods):
    from latentforge.eval.anomaly_experiment import fit_detector
    x, y, held = normal_split
    net = fit_detector(model, x, y, seed=0, overrides=overrides)
    assert set(methods) <= set(an.capabilities(net))
    noise = _noise(x)
    for method in methods:
        s_normal = an.anomaly_scores(net, held, method, reference=x, k=20)
        s_noise = an.anomaly_scores(net, noise, method, reference=x, k=20)
        assert s_normal.shape == (len(held),) and np.isfinite(s_normal).all()
        assert np.median(s_noise) > np.median(s_normal), method
        assert an.roc_auc(np.r_[np.zeros(len(held)), np.ones(len(noise))], np.r_[s_normal, s_noise]) > 0.9, method


def test_method_not_supported_is_a_clear_error(normal_split):
    from latentforge.eval.anomaly_experiment import fit_detector
    x, y, _ = normal_split
    net = fit_detector("stacked-ae", x, y, seed=0, epochs=1, overrides={"hidden_sizes": [8], "coding_size": 2})
    with pytest.raises(ConfigError, match="cannot score by importance-weighted"):
        an.anomaly_scores(net, x, "iw-nll")
    with pytest.raises(ConfigError, match="unknown; methods"):
        an.anomaly_scores(net, x, "magic")
    with pytest.raises(ConfigError, match="give reference="):
        an.anomaly_scores(net, x, "knn")


def test_normalisation_and_thresholds():
    ref = np.arange(101, dtype=float)
    np.testing.assert_allclose(an.percentile_of([-1, 50, 1000], ref), [0.0, 100 * 51 / 101, 100.0])
    z = an.standardize(ref, ref)
    assert abs(np.median(z)) < 1e-12
    assert an.fit_threshold(ref, 0.95) == pytest.approx(95.0)
    np.testing.assert_array_equal(an.flags([10, 96], 95.0), [0, 1])
    assert an.check_quantile(None, 0.05) == pytest.approx(0.95)
    with pytest.raises(ConfigError, match="give one of them"):
        an.check_quantile(0.9, 0.1)
    with pytest.raises(ConfigError, match="must be in"):
        an.check_quantile(1.5, None)


# ------------------------------------------------------------------------------------ the score command
@pytest.fixture(scope="module")
def one_class_run(tmp_path_factory):
    from latentforge.cli import main
    run_dir = tmp_path_factory.mktemp("score") / "zeros"
    try:
        main(["train", "stacked-ae", "--data", "digits", "--classes", "0", "--epochs", "30", "--set",
              "hidden_sizes=32", "--set", "coding_size=8", "--set", "optimizer=adam", "--set", "lr=0.003",
              "--out", str(run_dir)])
    except SystemExit as e:
        assert not e.code
    return run_dir


def test_score_command_threshold_and_report(one_class_run, tmp_path, run_cli, digits):
    out = tmp_path / "s.npy"
    code, stdout, err = run_cli("score", one_class_run, "--data", "digits", "--out", out, "--threshold-at", "0.9")
    assert code == 0, err
    scores = np.load(out)
    assert scores.shape == (len(digits),)
    flags = np.load(tmp_path / "s-flags.npy")
    entry = json.loads((one_class_run / "anomaly.json").read_text())["methods"]["reconstruction"]
    np.testing.assert_array_equal(flags, (scores > entry["threshold"]).astype(np.uint8))
    assert entry["quantile"] == 0.9 and "held-out split" in entry["calibration"]
    # the threshold is the quantile of the run's held-out normal scores
    from latentforge.train import load_run
    run = load_run(one_class_run)
    cal, _ = an.calibration_data(run)
    assert entry["threshold"] == pytest.approx(np.quantile(an.anomaly_scores(run, cal.x), 0.9))
    # known anomalies (labels other than 0) are mostly flagged; zeros mostly not
    assert flags[digits.y != 0].mean() > 0.8 and flags[digits.y == 0].mean() < 0.3
    assert entry["evaluation"]["auroc"] > 0.95 and "AUROC" in stdout
    assert (one_class_run / "anomaly-roc.png").stat().st_size > 1000
    # --contamination is the same threshold; knn records its own entry
    code, _, err = run_cli("score", one_class_run, "--out", out, "--method", "knn", "--contamination", "0.1")
    assert code == 0, err
    methods = json.loads((one_class_run / "anomaly.json").read_text())["methods"]
    assert set(methods) == {"reconstruction", "knn"} and methods["knn"]["quantile"] == pytest.approx(0.9)
    # the report shows the section
    code, _, err = run_cli("report", one_class_run)
    assert code == 0, err
    page = (one_class_run / "report.html").read_text()
    assert "Anomaly detection" in page and "avg. precision" in page


@pytest.mark.parametrize("args, words", [
    (["--method", "iw-nll"], "cannot score by"),
    (["--threshold-at", "0.9", "--contamination", "0.1"], "give one of them"),
    (["--flags", "f.npy"], "give --threshold-at or --contamination"),
    (["--classes", "42"], "--classes 42: no sample of digits has this label"),
])
def test_score_command_errors(one_class_run, tmp_path, run_cli, args, words):
    code, _, err = run_cli("score", one_class_run, "--data", "digits", "--out", tmp_path / "s.npy", *args)
    assert code == 2 and words in err and err.count("\n") == 1


# ------------------------------------------------------------------------------------ the experiment
def test_experiment_anomaly_on_tiny_data(tmp_path, run_cli):
    out = tmp_path / "exp"
    code, stdout, err = run_cli("experiment", "anomaly", "--data", "digits", "--protocol", "one-class",
                                "--models", "conv-ae", "--normal", "0,1", "--epochs", "1", "--out", out)
    assert code == 0, err
    result = json.loads((out / "results.json").read_text())
    assert result["classes"] == ["0", "1"] and result["protocol"] == "one-class"
    rows = {r["detector"]: r for r in result["table"]}
    assert {"conv-ae:knn", "conv-ae:reconstruction", "conv-ae:ensemble"} <= set(rows)
    for r in rows.values():
        assert 0.5 < r["classes"]["0"]["auroc"]["mean"] <= 1.0
    assert "conv-ae:knn" in stdout and "mean" in stdout
    assert "| detector |" in (out / "results.md").read_text()
    assert (out / "roc.png").stat().st_size > 1000
    # leave-one-out with the classifier detector (needs several normal classes)
    code, stdout, err = run_cli("experiment", "anomaly", "--data", "digits", "--protocol", "leave-one-out",
                                "--models", "classifier", "--normal", "9", "--epochs", "1", "--out", out)
    assert code == 0, err
    result = json.loads((out / "results.json").read_text())
    assert {r["detector"] for r in result["table"]} == {"classifier:confidence", "classifier:knn",
                                                       "classifier:ensemble"}


def test_experiment_anomaly_errors(tmp_path, run_cli):
    code, _, err = run_cli("experiment", "anomaly", "--data", "digits", "--protocol", "two-class",
                           "--out", tmp_path / "e")
    assert code == 2 and "--protocol 'two-class'" in err
    code, _, err = run_cli("experiment", "anomaly", "--data", "digits", "--normal", "12", "--out", tmp_path / "e")
    assert code == 2 and "--normal 12" in err


# ------------------------------------------------------------------------------------ the sklearn wrapper
def test_sklearn_outlier_detector_uses_the_same_scores(digits):
    import copy

    from latentforge.sklearn import AutoencoderOutlierDetector, InvalidParameterError
    zeros = digits.x[digits.y == 0].reshape(-1, 64)
    x, held = zeros[:140], zeros[140:]
    noise = np.random.default_rng(2).random((40, 64))
    det = AutoencoderOutlierDetector(method="knn", coding_size=8, hidden_sizes=[32], epochs=20, random_state=0,
                                     config={"optimizer": "adam", "lr": 3e-3}).fit(x)
    s_held, s_noise = -det.score_samples(held), -det.score_samples(noise)
    assert an.roc_auc(np.r_[np.zeros(len(held)), np.ones(len(noise))], np.r_[s_held, s_noise]) > 0.9
    model = copy.deepcopy(det.model_).double()
    np.testing.assert_allclose(-det.score_samples(noise), an.anomaly_scores(model, noise, "knn", reference=x),
                               rtol=1e-9)
    rec = AutoencoderOutlierDetector(coding_size=4, hidden_sizes=[16], epochs=2, random_state=0).fit(x)
    np.testing.assert_allclose(-rec.score_samples(noise), an.anomaly_scores(copy.deepcopy(rec.model_).double(),
                                                                            noise, "reconstruction", error="mse"))
    with pytest.raises(InvalidParameterError, match="method must be one of"):
        AutoencoderOutlierDetector(method="magic", epochs=1).fit(x)
    with pytest.raises(InvalidParameterError, match="can score by"):
        AutoencoderOutlierDetector(method="iw-nll", epochs=1).fit(x)


def test_anomaly_percentiles_of_a_run(one_class_run, digits):
    from latentforge.train import load_run
    run = load_run(one_class_run)
    p = an.anomaly_percentiles(run, np.concatenate([digits.x[digits.y == 0][:20], _noise(digits.x, 20)]))
    assert p.shape == (40,) and ((0 <= p) & (p <= 100)).all()
    assert np.median(p[20:]) == 100.0 and np.median(p[:20]) < 100.0
