"""The classifier and unsupervised pretraining (SPEC 5, the chapter's first exercise)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentforge.errors import ConfigError, DataError
from latentforge.models import build_model
from latentforge.models.classifier import dense_encoder_spec, init_from_autoencoder
from latentforge.train import Trainer, load_run
from latentforge.train.pretraining import fit_model, labeled_subset, predict, train_classifier

QUIET = dict(progress=False, log=lambda m: None)
TINY_AE = ["--set", "hidden_sizes=16", "--set", "coding_size=4", "--batch-size", "8", "--lr", "0.5"]


@pytest.fixture
def digits(tmp_path):
    """300 of scikit-learn's 8x8 digits in [0, 1], with labels, as an .npz."""
    from sklearn.datasets import load_digits
    d = load_digits()
    p = tmp_path / "digits.npz"
    np.savez(p, x=(d.images[:300] / 16.0).astype(np.float32), y=d.target[:300])
    return p


@pytest.fixture
def unlabelled(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "nolabels.npy"
    np.save(p, rng.random((60, 8, 8)).astype(np.float32))
    return p


def _ae(name="stacked-ae", **kw):
    torch.manual_seed(1)
    m = build_model(name, **{"input_shape": [1, 8, 8], "hidden_sizes": [16], "coding_size": 4, **kw})
    with torch.no_grad():                       # weights unlike any fresh init
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def _clf(**kw):
    torch.manual_seed(0)
    return build_model("classifier", **{"input_shape": [1, 8, 8], "hidden_sizes": [16], "coding_size": 4,
                                        "n_classes": 4, **kw})


# ------------------------------------------------------------------------------------ the model
def test_classifier_learns_tiny_data(tiny_images):
    for arch in ("dense", "conv"):
        clf = _clf(arch=arch, conv_filters=[4, 8], epochs=20, batch_size=16, lr=1e-2)
        x, y = torch.from_numpy(tiny_images.x), torch.from_numpy(tiny_images.y)
        tr = Trainer(clf, clf.config, **QUIET)
        tr.fit(x, x, y, y)
        assert tr.state.history[-1]["valid_accuracy"] >= 0.95, arch
        clf.eval()
        with torch.no_grad():
            pred, proba = clf.predict(x), clf.predict_proba(x)
        assert pred.dtype == torch.int64 and pred.shape == (64,)
        assert proba.shape == (64, 4) and torch.allclose(proba.sum(1), torch.ones(64))
        assert (pred == y).float().mean() >= 0.95


def test_classifier_needs_labels_in_range():
    clf = _clf()
    x = torch.rand(4, 1, 8, 8)
    with pytest.raises(DataError, match="needs labels"):
        clf(x)
    with pytest.raises(DataError, match=r"labels lie in \[0, 7\].*n_classes = 4"):
        clf(x, torch.tensor([0, 1, 2, 7]))
    with pytest.raises(DataError, match=r"values lie in \[-1, 2\]"):
        clf.check_data(np.array([[-1.0] * 63 + [2.0]], np.float32))
    with pytest.raises(ConfigError, match="arch=conv needs image data"):
        build_model("classifier", input_shape=[64], arch="conv")


@pytest.mark.parametrize("name", ["stacked-ae", "tied-ae"])
def test_init_from_autoencoder_copies_the_encoder_exactly(name):
    ae = _ae(name)
    clf = _clf(**{k: v for k, v in dense_encoder_spec(ae).items() if k != "init"})
    assert torch.count_nonzero(clf.out.weight) > 0          # glorot from scratch ...
    init_from_autoencoder(clf, ae)
    assert torch.count_nonzero(clf.out.weight) == 0         # ... a zero head on a pretrained encoder
    for mine, theirs in zip(clf.enc, ae.enc):
        assert torch.equal(mine.weight, theirs.weight) and torch.equal(mine.bias, theirs.bias)
    x = torch.rand(10, 1, 8, 8)
    clf.eval()
    with torch.no_grad():
        assert torch.equal(clf.features(x), ae.encode(x))


def test_init_copies_the_input_normalisation_of_linear_output_aes():
    ae = _ae(output_activation="linear", loss="mse")
    x = torch.rand(50, 1, 8, 8) * 4 - 1
    ae.prepare(x)
    spec = dense_encoder_spec(ae)
    assert spec["normalize"] is True
    with pytest.raises(ConfigError, match="its normalize is True but the classifier's is False"):
        init_from_autoencoder(_clf(), ae)
    clf = init_from_autoencoder(_clf(normalize=True), ae)
    assert torch.equal(clf.data_shift, ae.data_shift) and torch.equal(clf.data_scale, ae.data_scale)
    clf.eval()
    with torch.no_grad():
        assert torch.allclose(clf.features(x), ae.encode(x))


def test_init_refuses_other_architectures():
    ae = _ae()
    with pytest.raises(ConfigError, match=r"hidden_sizes is \[16\] but the classifier's is \[12\]"):
        init_from_autoencoder(_clf(hidden_sizes=[12]), ae)
    with pytest.raises(ConfigError, match="coding_size is 4 but the classifier's is 5"):
        init_from_autoencoder(_clf(coding_size=5), ae)
    with pytest.raises(ConfigError, match="activation is 'selu' but the classifier's is 'relu'"):
        init_from_autoencoder(_clf(activation="relu"), ae)
    with pytest.raises(ConfigError, match="it is dense but the classifier's arch is 'conv'"):
        init_from_autoencoder(_clf(arch="conv", conv_filters=[4]), ae)
    other = build_model("classifier", input_shape=[1, 6, 6], hidden_sizes=[16], coding_size=4)
    with pytest.raises(ConfigError, match="takes 64 inputs but the classifier's data has 36"):
        init_from_autoencoder(other, ae)
    with pytest.raises(ConfigError, match="not an autoencoder"):
        init_from_autoencoder(_clf(), _clf())

    class NotDense(torch.nn.Module):            # an AE without dense `enc` layers (e.g. conv)
        name = "conv-thing"

        def __init__(self):
            super().__init__()
            self.enc = torch.nn.ModuleList([torch.nn.Conv2d(1, 4, 3)])
            self.act = torch.nn.SELU()

        def encode(self, x):
            return x
    with pytest.raises(ConfigError, match="not a stack of dense layers"):
        init_from_autoencoder(_clf(), NotDense())


def test_init_copies_only_the_lower_layers_when_asked(tiny_images):
    ae = _ae()                                  # 64 -> 16 -> 4
    clf = _clf(coding_size=7, pretrained_layers=1, freeze_epochs=1, epochs=1, batch_size=16)
    fresh = clf.enc[1].weight.detach().clone()
    init_from_autoencoder(clf, ae)
    assert torch.equal(clf.enc[0].weight, ae.enc[0].weight) and torch.equal(clf.enc[1].weight, fresh)
    assert clf.encoder_parameters() == [clf.enc[0].weight, clf.enc[0].bias]
    Trainer(clf, clf.config, **QUIET).fit(torch.from_numpy(tiny_images.x), y=torch.from_numpy(tiny_images.y))
    assert torch.equal(clf.enc[0].weight, ae.enc[0].weight) and not torch.equal(clf.enc[1].weight, fresh)
    with pytest.raises(ConfigError, match=r"lowest 1 layer sizes is \[64, 16\] but the classifier's is \[64, 12\]"):
        init_from_autoencoder(_clf(hidden_sizes=[12], pretrained_layers=1), ae)
    with pytest.raises(ConfigError, match="'pretrained_layers' = 3: the encoder has only 2 layers"):
        _clf(pretrained_layers=3)


def test_init_from_a_sigmoid_coding_ae():
    ae = _ae("sparse-ae")
    spec = dense_encoder_spec(ae)
    assert spec["coding_activation"] == "sigmoid"
    with pytest.raises(ConfigError, match="coding_activation is 'sigmoid'"):
        init_from_autoencoder(_clf(), ae)
    clf = init_from_autoencoder(_clf(coding_activation="sigmoid"), ae)
    x = torch.rand(5, 1, 8, 8)
    clf.eval()
    with torch.no_grad():
        assert torch.allclose(clf.features(x), ae.encode(x))


def test_frozen_encoder_is_unchanged_then_fine_tuned(tiny_images):
    ae = _ae()
    clf = init_from_autoencoder(_clf(freeze_epochs=2, epochs=2, batch_size=16, lr=1e-2), ae)
    enc0 = [p.detach().clone() for p in clf.enc.parameters()]
    out0 = clf.out.weight.detach().clone()
    x, y = torch.from_numpy(tiny_images.x), torch.from_numpy(tiny_images.y)
    tr = Trainer(clf, clf.config, **QUIET)
    tr.fit(x, y=y)                              # epochs 1-2: frozen
    assert all(torch.equal(a, b) for a, b in zip(enc0, clf.enc.parameters()))
    assert not torch.equal(out0, clf.out.weight)
    tr.epochs = 4
    tr.fit(x, y=y)                              # epochs 3-4: fine-tuned
    assert all(p.requires_grad for p in clf.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(enc0, clf.enc.parameters()))


# ------------------------------------------------------------------------------------ labelled subsets
def test_labeled_subset_is_stratified_and_seeded(tiny_images):
    sub = labeled_subset(tiny_images, 20, seed=3)
    assert len(sub) == 20
    assert sorted(np.unique(sub.y, return_counts=True)[1]) == [5, 5, 5, 5]
    again = labeled_subset(tiny_images, 20, seed=3)
    other = labeled_subset(tiny_images, 20, seed=4)
    assert np.array_equal(sub.x, again.x) and not np.array_equal(sub.x, other.x)
    uneven = tiny_images.subset(np.r_[np.flatnonzero(tiny_images.y == 0), np.flatnonzero(tiny_images.y == 1)[:4]])
    small = labeled_subset(uneven, 5, seed=0)       # 16 + 4 samples: every class still present
    assert len(small) == 5 and set(small.y) == {0, 1}
    with pytest.raises(DataError, match="--labeled 65: larger than the 64"):
        labeled_subset(tiny_images, 65)
    with pytest.raises(ConfigError, match="fewer than the 4 classes"):
        labeled_subset(tiny_images, 3)
    nolab = tiny_images.subset(slice(0, 64))
    nolab.y = None
    with pytest.raises(DataError, match="no labels"):
        labeled_subset(nolab, 10)


def test_train_classifier_on_few_labels_keeps_the_held_out_split(tmp_path, tiny_images):
    from latentforge.data import train_valid_split
    ae_run = fit_model("stacked-ae", build_model("stacked-ae", input_shape=[1, 8, 8], hidden_sizes=[16],
                                                 coding_size=4, epochs=1, batch_size=8, lr=0.5).config,
                       tiny_images, None, out=tmp_path / "ae", **QUIET)
    run = train_classifier(tiny_images, labeled=12, encoder_from=tmp_path / "ae", freeze_epochs=3,
                           out=tmp_path / "clf", overrides={"epochs": 3, "batch_size": 4}, **QUIET)
    info = run.data_info
    _, valid = train_valid_split(tiny_images, 0.1, seed=run.config.seed)
    assert info["n_train"] == 12 and info["labeled"] == 12 and info["n_valid"] == len(valid)
    assert run.config.n_classes == 4 and run.config.encoder_from == str(tmp_path / "ae")
    assert run.config.hidden_sizes == [16] and run.config.coding_size == 4
    # frozen for all 3 epochs: the encoder is still the AE's
    loaded = load_run(tmp_path / "clf")
    for mine, theirs in zip(loaded.model.enc, ae_run.model.enc):
        assert torch.equal(mine.weight, theirs.weight)
    assert loaded.meta["pretraining"]["ae_model"] == "stacked-ae"
    labels = predict(loaded, tiny_images.x)
    assert labels.dtype == np.int64 and labels.shape == (64,)
    assert np.allclose(predict(loaded, tiny_images.x, proba=True).sum(1), 1, atol=1e-5)
    with pytest.raises(ConfigError, match="the autoencoder's encoder has hidden_sizes = \\[16\\]"):
        train_classifier(tiny_images, labeled=12, encoder_from=tmp_path / "ae", out=tmp_path / "c2",
                         overrides={"hidden_sizes": [8]}, **QUIET)
    assert not (tmp_path / "c2").exists()


# ------------------------------------------------------------------------------------ CLI
def test_cli_pretraining_workflow(tmp_path, digits, run_cli):
    ae = tmp_path / "ae"
    code, _, err = run_cli("train", "stacked-ae", "--data", digits, "--epochs", "2", "--out", ae, *TINY_AE)
    assert code == 0, err
    clf = tmp_path / "clf"
    code, out, err = run_cli("train-classifier", "--data", digits, "--labeled", "50", "--encoder-from", ae,
                             "--freeze-epochs", "1", "--epochs", "3", "--out", clf)
    assert code == 0, err
    assert "valid_accuracy=" in out
    summary = json.loads((clf / "run.json").read_text())
    assert summary["data"]["n_train"] == 50 and summary["config"]["freeze_epochs"] == 1
    code, out, err = run_cli("predict", clf, "--data", digits, "--out", tmp_path / "labels.npy")
    assert code == 0, err
    assert "accuracy" in out
    labels = np.load(tmp_path / "labels.npy")
    assert labels.dtype == np.int64 and labels.shape == (300,)
    code, _, err = run_cli("predict", clf, "--data", digits, "--out", tmp_path / "p.npy", "--proba")
    assert code == 0, err
    p = np.load(tmp_path / "p.npy")
    assert p.shape == (300, 10) and np.allclose(p.sum(1), 1, atol=1e-5) and np.array_equal(p.argmax(1), labels)
    # the ordinary `train` command takes the encoder through the config too
    code, _, err = run_cli("train", "classifier", "--data", digits, "--epochs", "1", "--out", tmp_path / "c3",
                           "--set", f"encoder_from={ae}", "--set", "freeze_epochs=1",
                           "--set", "hidden_sizes=16", "--set", "coding_size=4")
    assert code == 0, err
    r3, rae = load_run(tmp_path / "c3"), load_run(ae)
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(r3.model.enc, rae.model.enc))


def test_cli_experiment_pretraining(tmp_path, digits, run_cli):
    res = tmp_path / "res.json"
    code, out, err = run_cli("experiment", "pretraining", "--data", digits, "--labeled", "40", "--seeds", "2",
                             "--ae-epochs", "1", "--epochs", "2", "--freeze-epochs", "1",
                             "--ae-set", "hidden_sizes=16", "--ae-set", "coding_size=4", "--ae-set", "batch_size=16",
                             "--out", tmp_path / "exp", "--json", res)
    assert code == 0, err
    assert "scratch" in out and "pretrained" in out and "±" in out
    r = json.loads(res.read_text())
    assert r["labeled"] == 40 and r["seeds"] == [0, 1] and r["n_test"] == 60
    for key in ("scratch", "pretrained"):
        assert len(r["results"][key]["accuracy"]) == 2 and 0 <= r["results"][key]["mean"] <= 1
    assert (tmp_path / "exp" / "seed-1" / "pretrained" / "checkpoint.safetensors").exists()
    run = load_run(tmp_path / "exp" / "seed-0" / "pretrained")
    assert run.config.freeze_epochs == 1 and run.config.encoder_from == str(tmp_path / "exp" / "seed-0" / "ae")


def _one_error_line(code, err):
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("latentforge: error:"), err
    return lines[0]


def test_cli_bad_inputs(tmp_path, digits, unlabelled, run_cli):
    line = _one_error_line(*run_cli("train-classifier", "--data", unlabelled, "--labeled", "10",
                                    "--out", tmp_path / "a")[::2])
    assert "needs labels" in line
    line = _one_error_line(*run_cli("train-classifier", "--data", digits, "--labeled", "5000",
                                    "--out", tmp_path / "b")[::2])
    assert "--labeled 5000: larger than the 270 training samples" in line
    line = _one_error_line(*run_cli("train-classifier", "--data", digits, "--labeled", "50",
                                    "--encoder-from", tmp_path / "nothing", "--out", tmp_path / "c")[::2])
    assert "nothing" in line
    (tmp_path / "empty").mkdir()
    line = _one_error_line(*run_cli("train-classifier", "--data", digits, "--encoder-from", tmp_path / "empty",
                                    "--out", tmp_path / "d")[::2])
    assert "no checkpoint" in line
    # a classifier run is not an autoencoder
    code, _, err = run_cli("train-classifier", "--data", digits, "--labeled", "40", "--epochs", "1",
                           "--set", "hidden_sizes=8", "--set", "coding_size=4", "--out", tmp_path / "clf")
    assert code == 0, err
    line = _one_error_line(*run_cli("train-classifier", "--data", digits, "--encoder-from", tmp_path / "clf",
                                    "--out", tmp_path / "e")[::2])
    assert "not an autoencoder" in line
    line = _one_error_line(*run_cli("experiment", "pretraining", "--data", unlabelled, "--seeds", "1")[::2])
    assert "needs labels" in line
    line = _one_error_line(*run_cli("experiment", "pretraining", "--data", digits, "--labeled", "290")[::2])
    assert "--labeled 290: larger than the 240 training samples" in line
    line = _one_error_line(*run_cli("experiment", "pretraining", "--data", digits, "--ae", "classifier")[::2])
    assert "not an autoencoder" in line
    line = _one_error_line(*run_cli("predict", tmp_path / "nothing", "--data", digits, "--out", tmp_path / "l.npy")[::2])
    assert "no such run folder" in line
    for stale in ("a", "b", "c", "d", "e"):
        assert not (tmp_path / stale).exists(), stale


def test_cli_encoder_from_a_conv_autoencoder_is_refused(tmp_path, digits, run_cli):
    from latentforge.data import load_data
    from latentforge.models import make_model_config
    ds = load_data(str(digits))
    cfg = make_model_config("conv-ae", {"epochs": 1, "batch_size": 32})
    fit_model("conv-ae", cfg, ds, None, out=tmp_path / "conv", **QUIET)
    line = _one_error_line(*run_cli("train-classifier", "--data", digits, "--encoder-from", tmp_path / "conv",
                                    "--out", tmp_path / "x")[::2])
    assert "not a stack of dense layers" in line
