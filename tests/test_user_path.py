"""The user's path (issue 16): the notebook API, data corner cases, continuous data, runs that
travel, metrics one can trust, and what Keras / TensorBoard users expect of the CLI."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cancer_csv(tmp_path_factory) -> Path:
    """scikit-learn's breast-cancer table (569 x 30, columns in very different units) as a CSV
    with a header and a label column."""
    from sklearn.datasets import load_breast_cancer
    d = load_breast_cancer()
    path = tmp_path_factory.mktemp("tab") / "cancer.csv"
    header = ",".join([n.replace(" ", "_") for n in d.feature_names] + ["label"])
    np.savetxt(path, np.column_stack([d.data, d.target]), delimiter=",", header=header, comments="", fmt="%.6g")
    return path


def _cli(*args, cwd=None):
    """The CLI in a fresh process (for checks of what reaches the terminal)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "latentforge", *map(str, args)], cwd=cwd, env=env, check=False,
                          capture_output=True, text=True, timeout=600)


# ------------------------------------------------------------------------------ 1. the Python API
@pytest.fixture(scope="module")
def digit_runs(tmp_path_factory):
    """A stacked AE, a VAE and a conditional VAE on the bundled digits (one epoch each)."""
    from latentforge.train.run import train
    root = tmp_path_factory.mktemp("runs")
    quiet = {"progress": False, "log": lambda m: None}
    return {name: train(name, "digits", out=root / name, overrides={"epochs": 1}, **quiet)
            for name in ("stacked-ae", "vae", "conditional-vae")}


def test_run_generate_is_numpy_batched_seeded_and_checked(digit_runs):
    from latentforge.errors import ConfigError
    vae, cvae, sae = digit_runs["vae"], digit_runs["conditional-vae"], digit_runs["stacked-ae"]
    a = vae.generate(10, seed=3)
    assert isinstance(a, np.ndarray) and a.shape == (10, 8, 8) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, vae.generate(10, seed=3))          # same seed, same samples
    assert not np.array_equal(a, vae.generate(10, seed=4))
    assert vae.generate(10, seed=3, batch_size=3).shape == (10, 8, 8)   # batched like encode
    assert cvae.generate(4, label=7, seed=0).shape == (4, 8, 8)
    with pytest.raises(ConfigError, match="conditional"):
        cvae.generate(4)
    with pytest.raises(ConfigError, match="label"):
        cvae.generate(4, label=12)
    with pytest.raises(ConfigError, match="unconditional"):
        vae.generate(4, label=1)
    with pytest.raises(ConfigError, match="truncation"):
        vae.generate(4, truncation=0.7)
    with pytest.raises(ConfigError, match="not a generative model"):
        sae.generate(4)


def test_run_interpolate_goes_from_one_decoded_end_to_the_other(digit_runs):
    from latentforge.data import load_data
    ds = load_data("digits")
    for name in ("stacked-ae", "vae"):
        run = digit_runs[name]
        path = run.interpolate(ds.x[0], ds.x[1], steps=5)
        assert path.shape == (5, 8, 8)
        rec = run.reconstruct(ds.x[:2]).reshape(2, 8, 8)
        np.testing.assert_allclose(path[0], rec[0], atol=1e-4)
        np.testing.assert_allclose(path[-1], rec[1], atol=1e-4)
        assert run.interpolate(ds.x[:3], ds.x[3:6], steps=4).shape == (3, 4, 8, 8)   # pairs
    cv = digit_runs["conditional-vae"].interpolate(ds.x[0], ds.x[1], steps=3, y_a=ds.y[0], y_b=ds.y[1])
    assert cv.shape == (3, 8, 8)


def test_repr_of_a_run_is_one_line(digit_runs):
    from latentforge.train import load_run
    run = load_run(digit_runs["vae"].run_dir)
    text = repr(run)
    assert "\n" not in text and len(text) < 200
    for part in ("'vae'", "data='digits'", "epochs=1", "train_loss=", str(run.run_dir)):
        assert part in text, text


# ------------------------------------------------------------------------------ 2. data corner cases
def test_limit_zero_is_refused_before_reading_the_data(run_cli, tmp_path):
    for extra in ([], ["--dry-run"]):
        code, _, err = run_cli("train", "stacked-ae", "--data", tmp_path / "nothing.npy", "--limit", "0", *extra)
        assert code == 2 and "--limit 0: must be >= 1" in err and "nothing.npy" not in err


@pytest.mark.parametrize("data_key, label_key", [("images", "targets"), ("data", "labels"), ("features", "label"),
                                                 ("X", "y"), ("inputs", "classes")])
def test_npz_with_common_key_names_says_which_were_used(run_cli, tmp_path, data_key, label_key):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, **{data_key: rng.random((40, 8, 8)).astype(np.float32), label_key: np.arange(40) % 3,
                      "extra": np.zeros(2)})
    from latentforge.data import load_data
    ds = load_data(path)
    assert ds.y is not None and ds.y.max() == 2
    code, _, err = run_cli("train", "linear-ae", "--data", path, "--dry-run", "--out", tmp_path / "r")
    assert code == 0
    assert f"data from array {data_key!r}" in err and f"labels from {label_key!r}" in err and "'extra'" in err


def test_mixed_grey_and_colour_folder_is_promoted_once_with_a_note(run_cli, tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
    for i in range(6):
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(tmp_path / "imgs" / "a" / f"{i}.png")
        Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(tmp_path / "imgs" / "b" / f"{i}.png")
    code, _, err = run_cli("train", "conv-ae", "--data", tmp_path / "imgs", "--dry-run", "--batch-size", "4",
                           "--out", tmp_path / "r")
    assert code == 0 and err.count("promoted to RGB") == 1 and "6 of 12 images are greyscale" in err


# ------------------------------------------------------------------------------ 3. continuous data
@pytest.fixture(scope="module")
def tabular_runs(cancer_csv, tmp_path_factory):
    """A stacked AE and a VAE trained on the breast-cancer CSV through the CLI."""
    from latentforge.cli import main
    root = tmp_path_factory.mktemp("tabruns")
    runs = {"sae": root / "sae", "vae": root / "vae"}
    for name, model, extra in (("sae", "stacked-ae", ["--set", "hidden_sizes=16", "--set", "coding_size=8"]),
                               ("vae", "vae", [])):
        try:
            main(["train", model, "--data", str(cancer_csv), "--out", str(runs[name]), "--epochs", "20",
                  "--no-progress", *extra])
        except SystemExit as e:
            assert not e.code
    return runs


def test_tabular_reconstruction_beats_the_per_column_mean(tabular_runs, run_cli):
    for name, run in tabular_runs.items():
        code, out, err = run_cli("evaluate", run, "--json", run / "metrics.json")
        assert code == 0, err
        m = json.loads(out)
        assert m["baseline_mse_standardized"] > 0.5                       # the per-column mean: about 1
        assert m["mse_standardized"] < 0.7 * m["baseline_mse_standardized"], (name, m)
        assert m["r2"] > 0.3 and "psnr" not in m


def test_standardisation_is_in_the_checkpoint_and_undone_on_output(tabular_runs, cancer_csv):
    from latentforge.data import load_data
    from latentforge.train import load_run
    ds = load_data(cancer_csv)
    for name in ("sae", "vae"):
        run = load_run(tabular_runs[name])
        cfg = run.config
        assert cfg.output_activation == "linear" and cfg.normalize_scale == "feature"
        assert run.model.data_scale.shape == (30,)                          # per feature, saved and loaded
        train_part = run.data_splits()[1].x
        np.testing.assert_allclose(run.model.data_scale.numpy(), train_part.std(0), rtol=1e-3)
        rec = run.reconstruct(ds.x[:100])
        assert abs(rec[:, 3].mean() - ds.x[:100, 3].mean()) < 0.3 * ds.x[:, 3].std()   # 'area': hundreds
        assert run.data_info["feature_names"][3] == "mean_area"
    vae = load_run(tabular_runs["vae"])
    assert vae.config.likelihood == "gaussian" and hasattr(vae.model, "out_log_var")
    g = vae.generate(200, seed=0)                                          # not clipped to [0, 1]
    assert g.max() > 100 and abs(np.median(g[:, 3]) - np.median(ds.x[:, 3])) < ds.x[:, 3].std()


def test_gaussian_vae_nll_units_and_explicit_bernoulli_refused(tabular_runs, run_cli, cancer_csv, tmp_path):
    code, out, err = run_cli("evaluate", tabular_runs["vae"])      # on its own: no order between tests
    assert code == 0, err
    m = json.loads(out)
    assert "Gaussian" in m["iw_nll_units"] and np.isfinite(m["iw_nll"])
    code, _, err = run_cli("train", "vae", "--data", cancer_csv, "--set", "likelihood=bernoulli", "--dry-run",
                           "--out", tmp_path / "b")
    assert code == 2 and "[0, 1]" in err


def test_sklearn_wrapper_shares_the_continuous_defaults(cancer_csv):
    from latentforge.data import load_data
    from latentforge.sklearn import AutoencoderTransformer
    x = load_data(cancer_csv).x
    ae = AutoencoderTransformer("stacked-ae", coding_size=4, hidden_sizes=[8], epochs=2, random_state=0).fit(x)
    cfg = ae.model_.config
    assert (cfg.output_activation, cfg.normalize_scale, cfg.optimizer) == ("linear", "feature", "adam")
    assert ae.inverse_transform(ae.transform(x[:5])).shape == (5, 30)


def test_tabular_plots_name_the_columns(tabular_runs, run_cli, tmp_path):
    code, _, err = run_cli("plot", "reconstructions", tabular_runs["sae"], "--out", tmp_path / "r.png")
    assert code == 0, err
    from latentforge.report import plot_reconstructions
    from latentforge.train import load_run
    run = load_run(tabular_runs["sae"])
    x = run.data_splits()[2].x[:4]
    fig = plot_reconstructions(x, run.reconstruct(x), feature_names=run.data_info["feature_names"])
    assert "mean_radius" in [t.get_text() for t in fig.axes[0].get_yticklabels()]


def test_generate_writes_a_folder_of_files(tabular_runs, digit_runs, run_cli, tmp_path):
    code, _, err = run_cli("generate", digit_runs["vae"].run_dir, "-n", "5", "--out", f"{tmp_path}/pngs/")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == [
        *(f"sample_{i:05d}.png" for i in range(5)), "samples.npy"]
    from PIL import Image
    assert Image.open(tmp_path / "pngs" / "sample_00000.png").size == (8, 8)
    code, _, err = run_cli("generate", digit_runs["vae"].run_dir, "-n", "3", "--out", tmp_path / "f2",
                           "--format", "png")
    assert code == 0 and len(list((tmp_path / "f2").glob("*.png"))) == 3
    code, _, err = run_cli("generate", digit_runs["vae"].run_dir, "-n", "3", "--out", f"{tmp_path}/x/",
                           "--format", "npy")
    assert code == 2 and "not a folder" in err
    code, _, err = run_cli("generate", tabular_runs["vae"], "-n", "4", "--out", f"{tmp_path}/tab/")
    assert code == 0
    lines = (tmp_path / "tab" / "samples.csv").read_text().splitlines()
    assert lines[0].startswith("mean_radius,mean_texture") and len(lines) == 5


# ------------------------------------------------------------------------------ 4. runs that travel
def test_a_run_records_absolute_data_and_labels_and_says_what_moved(run_cli, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    (tmp_path / "proj" / "data").mkdir(parents=True)
    x = rng.random((120, 8, 8)).astype(np.float32)
    np.save(tmp_path / "proj" / "data" / "x.npy", x)
    (tmp_path / "proj" / "data" / "y.txt").write_text("\n".join(str(i % 3) for i in range(120)))
    monkeypatch.chdir(tmp_path / "proj")
    code, _, err = run_cli("train", "stacked-ae", "--data", "data/x.npy", "--labels", "data/y.txt",
                           "--epochs", "1", "--out", "runs/x")
    assert code == 0, err
    info = json.loads((tmp_path / "proj" / "runs" / "x" / "run.json").read_text())["data"]
    assert info["source"] == str(tmp_path / "proj" / "data" / "x.npy") and info["source_given"] == "data/x.npy"
    assert info["labels_path"] == str(tmp_path / "proj" / "data" / "y.txt")
    monkeypatch.chdir(tmp_path)                                   # another folder: still works, labels too
    code, out, err = run_cli("evaluate", "proj/runs/x")
    assert code == 0, err
    assert "linear_probe_accuracy" in json.loads(out)["representation"]
    shutil.move(tmp_path / "proj" / "runs", tmp_path / "moved-runs")       # a moved run folder works
    assert run_cli("evaluate", "moved-runs/x")[0] == 0
    shutil.move(tmp_path / "proj" / "data", tmp_path / "moved-data")       # moved data: one clear line
    code, _, err = run_cli("evaluate", "moved-runs/x")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "x.npy is missing" in err and "--data" in err
    code, out, err = run_cli("evaluate", "moved-runs/x", "--data", "moved-data/x.npy",
                             "--labels", "moved-data/y.txt")
    assert code == 0, err
    code, _, err = run_cli("report", "moved-runs/x")
    assert code == 0, err
    page = (tmp_path / "moved-runs" / "x" / "report.html").read_text()
    banner = page.split('class="banner">', 1)[1].split("</div>", 1)[0]
    assert "left out of this report" in banner and "Reconstructions" in banner and "missing" in banner


# ------------------------------------------------------------------------------ 5. metrics one can trust
def test_feature_network_verdict():
    from latentforge.eval.features import assess
    near = assess({"trained_with_labels": True, "valid_accuracy": 0.367, "n_classes": 3})
    assert near["trusted"] is False and "near chance" in near["warning"] and "--features" in near["warning"]
    assert assess({"trained_with_labels": True, "valid_accuracy": 0.9, "n_classes": 3})["trusted"] is True
    assert assess({"trained_with_labels": True, "valid_accuracy": 0.3, "n_classes": 10})["trusted"] is False
    assert assess({"trained_with_labels": False, "valid_mse": 0.8})["trusted"] is False
    assert assess({"trained_with_labels": False, "valid_mse": 0.2})["trusted"] is True


@pytest.mark.slow
def test_evaluate_marks_metrics_from_a_chance_feature_network_untrusted(run_cli, tmp_path):
    """Colour images with random labels (3 classes): the feature network cannot beat chance."""
    rng = np.random.default_rng(0)
    x = rng.random((150, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "noise.npz", x=x, y=rng.integers(0, 3, 150))
    data = tmp_path / "noise.npz"
    assert run_cli("train", "features", "--data", data, "--epochs", "1", "--out", tmp_path / "f")[0] == 0
    assert run_cli("train", "vae", "--data", data, "--epochs", "1", "--out", tmp_path / "v")[0] == 0
    code, out, err = run_cli("evaluate", tmp_path / "v", "--features", tmp_path / "f", "-n", "40",
                             "--json", tmp_path / "v" / "metrics.json")
    assert code == 0, err
    gen = json.loads(out)["generative"]
    assert gen["trusted"] is False and gen["features"]["valid_accuracy"] is not None
    counts = np.bincount(np.load(data)["y"])
    assert gen["features"]["chance_accuracy"] == pytest.approx(counts.max() / counts.sum())   # the majority class
    assert gen["features"]["n_classes"] == 3
    assert "warning: the feature network is near chance" in err
    assert run_cli("report", tmp_path / "v")[0] == 0
    page = (tmp_path / "v" / "report.html").read_text()
    metrics = page.split('id="metrics"', 1)[1].split("</section>", 1)[0]
    assert "NOT trusted" in metrics and "near chance" in metrics


def test_report_metrics_table_has_one_row_per_metric_and_bookkeeping_apart(digit_runs, run_cli):
    run_dir = digit_runs["vae"].run_dir
    assert run_cli("evaluate", run_dir, "-n", "60", "--k", "5", "--json", run_dir / "metrics.json")[0] == 0
    assert run_cli("report", run_dir)[0] == 0
    section = (run_dir / "report.html").read_text().split('id="metrics"', 1)[1].split("</section>", 1)[0]
    main_table, _, books = section.partition("<details")
    names = [cell.split("</th>")[0] for cell in main_table.split("<tr><th>")[2:]]
    assert len(names) == len(set(names)), names                         # no metric twice
    for name in ("bce", "mse", "psnr", "ssim", "iw_nll"):
        assert names.count(name) == 1, (name, names)
    for key in ("n_train", "kid_subsets", "seconds_sampling", "features.epochs", "iw_nll_k"):
        assert key not in names and key in books, key
    assert "-0.0" not in section and "e+0" not in main_table


def test_numbers_are_formatted_for_people():
    from latentforge.report.metrics_table import fmt_number
    assert fmt_number(21140.3) == "21,140" and fmt_number(-0.0) == "0" and fmt_number(-0.00001) == "-1.000e-05"
    assert fmt_number(0.123456) == "0.1235" and fmt_number(131.62) == "131.6" and fmt_number(12345) == "12,345"
    assert fmt_number(-0.00004) != "-0"


def test_compare_ranks_losses_only_among_like_quantities(digit_runs, run_cli, tmp_path):
    from latentforge.train.run import train
    other = train("stacked-ae", "digits", out=tmp_path / "sae2", overrides={"epochs": 1, "lr": 0.5},
                  progress=False, log=lambda m: None)
    out = tmp_path / "c.html"
    dirs = [digit_runs["stacked-ae"].run_dir, digit_runs["vae"].run_dir, other.run_dir]
    assert run_cli("compare", *dirs, "--out", out)[0] == 0
    page = out.read_text()
    row = page.split("<th>train_loss</th>", 1)[1].split("</tr>", 1)[0]
    cells = row.split("<td")[1:]
    assert "best" not in cells[1]                                      # the VAE's bce + kl: not ranked
    assert sum("best" in c for c in cells) == 1                        # one of the two stacked AEs
    assert "<th>loss</th>" in page and "bce + kl" in page


# ------------------------------------------------------------------------------ 6. Keras/TensorBoard habits
def test_info_shows_a_layer_table_and_keeps_json(digit_runs, run_cli):
    run = digit_runs["stacked-ae"]
    code, out, _ = run_cli("info", run.run_dir)
    assert code == 0 and "Layer (type)" in out and "Output shape" in out and "Param #" in out
    assert "enc.0 (Linear)" in out and "(N, 100)" in out
    total = sum(p.numel() for p in run.model.parameters())
    assert f"Total params: {total:,}" in out
    info = json.loads(run_cli("info", run.run_dir, "--json")[1])
    assert info["params"] == total and info["model"] == "stacked-ae"


def test_train_help_starts_with_examples_has_no_bool_and_ends_with_environment(run_cli):
    code, out, _ = run_cli("train", "--help")
    assert code == 0 and "<bool>" not in out
    assert out.index("Examples:") < out.index("Options") < out.index("LATENTFORGE_THREADS")
    assert out.index("--nproc") < out.index("LATENTFORGE_THREADS")


def test_model_descriptions_are_whole_sentences(run_cli):
    _, out, _ = run_cli("models")
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) >= 15
    for line in lines:
        assert line.rstrip().endswith(".") and "see module doc" not in line, line


def test_greedy_training_keeps_every_stage_in_history_json(run_cli, tmp_path):
    code, _, err = run_cli("train", "stacked-ae", "--greedy", "--epochs", "2", "--finetune-epochs", "1",
                           "--limit", "300", "--out", tmp_path / "g")
    assert code == 0, err
    hist = json.loads((tmp_path / "g" / "history.json").read_text())
    stages = [r["stage"] for r in hist]
    assert stages == ["greedy 1/2", "greedy 1/2", "greedy 2/2", "greedy 2/2", "finetune"]
    assert "greedy1_train_loss" in hist[0] and "greedy2_valid_loss" in hist[2] and "train_loss" in hist[-1]


@pytest.mark.slow
def test_export_prints_no_third_party_warnings(digit_runs, tmp_path):
    pytest.importorskip("onnxscript")
    r = _cli("export", digit_runs["stacked-ae"].run_dir, "--format", "onnx", "--part", "encoder",
             "--out", tmp_path / "e.onnx")
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "" and r.stdout.startswith("wrote")
