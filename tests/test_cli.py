"""Every CLI command end to end on tiny data, and its bad-input answers (exit 2, one line)."""
from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest

from conftest import mnist4k_path

TINY = ["--set", "hidden_sizes=16", "--set", "coding_size=4", "--batch-size", "8", "--lr", "0.5"]


@pytest.fixture
def cloud(tmp_path):
    """A 3-D point cloud near a plane (the chapter's toy data for the linear AE)."""
    rng = np.random.default_rng(4)
    angles = rng.uniform(-1.5, 1.5, 200)
    x = np.stack([np.cos(angles) + np.sin(angles) / 2, np.sin(angles) * 0.7, np.zeros(200)], 1)
    x = x @ np.array([[1, 0.3, 0.2], [0.1, 1, 0.4], [0.2, 0.1, 1.0]]) + 0.1 * rng.standard_normal((200, 3))
    p = tmp_path / "cloud.npy"
    np.save(p, x.astype(np.float32))
    return p


@pytest.fixture
def digits_npy(tmp_path):
    from sklearn.datasets import load_digits
    d = load_digits()
    p = tmp_path / "digits.npz"
    np.savez(p, x=(d.images[:300] / 16.0).astype(np.float32), y=d.target[:300])
    return p


@pytest.fixture
def trained(tmp_path, digits_npy, run_cli):
    out = tmp_path / "run"
    code, so, se = run_cli("train", "stacked-ae", "--data", digits_npy, "--epochs", "2", "--out", out, *TINY)
    assert code == 0, se
    return out


def test_models_and_datasets(run_cli):
    code, out, _ = run_cli("models")
    assert code == 0 and "stacked-ae" in out and "linear-ae" in out and "tied-ae" in out
    code, out, _ = run_cli("models", "--json")
    rows = json.loads(out)
    assert {r["name"] for r in rows} >= {"stacked-ae", "linear-ae", "tied-ae"}
    assert next(r for r in rows if r["name"] == "stacked-ae")["defaults"]["lr"] == 1.5
    code, out, _ = run_cli("datasets")
    assert code == 0 and "digits" in out and "fashion-mnist" in out and "cifar10" in out


def test_help_everywhere(run_cli):
    for cmd in [[], ["train"], ["encode"], ["decode"], ["reconstruct"], ["info"], ["plot"], ["plot", "tsne"], ["demo"]]:
        code, out, _ = run_cli(*cmd, "--help")
        assert code == 0 and "Usage" in out


def _listed(help_text: str) -> list[str]:
    """The command names of a help page's Commands panel, in order."""
    panel = help_text.split("Commands", 1)[1]
    return [ln[2:].split()[0] for ln in panel.splitlines() if ln.startswith("│ ") and ln[2:3].strip()]


def test_help_lists_the_commands_in_the_users_order(run_cli):
    """The commands live in one module per topic (latentforge/cli/); `latentforge --help` still lists them in
    one order (cli.HELP_ORDER, then the groups), each once, and the groups their subcommands in theirs."""
    from latentforge.cli import HELP_ORDER
    code, out, _ = run_cli("--help")
    names = _listed(out)
    assert code == 0 and len(names) == len(set(names))
    assert [n for n in names if n in HELP_ORDER] == list(HELP_ORDER)
    assert names.index("score") < names.index("plot") < names.index("experiment")
    assert _listed(run_cli("plot", "--help")[1]) == ["reconstructions", "tsne", "history", "samples"]
    assert _listed(run_cli("experiment", "--help")[1])[:2] == ["pretraining", "anomaly"]


def test_train_writes_a_run(trained, run_cli):
    files = {p.name for p in trained.iterdir()}
    assert {"checkpoint.safetensors", "run.json", "history.json"} <= files
    code, out, _ = run_cli("info", trained, "--json")
    info = json.loads(out)
    assert info["model"] == "stacked-ae" and info["epochs_done"] == 2
    assert info["config"]["hidden_sizes"] == [16] and info["params"] > 0
    assert set(info["metrics"]) >= {"train_loss", "valid_loss", "valid_bce"}


def test_encode_decode_reconstruct(trained, digits_npy, tmp_path, run_cli):
    codes, imgs, rec = tmp_path / "codes.npy", tmp_path / "imgs.npy", tmp_path / "rec.npy"
    assert run_cli("encode", trained, "--data", digits_npy, "--out", codes)[0] == 0
    z = np.load(codes)
    assert z.shape == (300, 4)
    assert run_cli("decode", trained, "--codes", codes, "--out", imgs)[0] == 0
    assert np.load(imgs).shape == (300, 8, 8)
    assert run_cli("reconstruct", trained, "--data", digits_npy, "--out", rec)[0] == 0
    r = np.load(rec)
    assert r.shape == (300, 8, 8) and r.min() >= 0 and r.max() <= 1
    assert np.allclose(r, np.load(imgs), atol=1e-6)


def test_plots(trained, tmp_path, run_cli):
    for kind in ["reconstructions", "tsne", "history"]:
        png = tmp_path / f"{kind}.png"
        code, _, err = run_cli("plot", kind, trained, "--out", png)
        assert code == 0, err
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_via_cli(tmp_path, digits_npy, run_cli):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli("train", "stacked-ae", "--data", digits_npy, "--epochs", "4", "--out", a, *TINY)[0] == 0
    assert run_cli("train", "stacked-ae", "--data", digits_npy, "--epochs", "2", "--out", b, *TINY)[0] == 0
    assert run_cli("train", "stacked-ae", "--data", digits_npy, "--epochs", "4", "--out", b, "--resume")[0] == 0
    from safetensors.torch import load_file
    wa, wb = load_file(a / "checkpoint.safetensors"), load_file(b / "checkpoint.safetensors")
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa if k.startswith("model."))


def test_greedy_cli(tmp_path, digits_npy, run_cli):
    out = tmp_path / "g"
    code, _, err = run_cli("train", "stacked-ae", "--greedy", "--finetune-epochs", "1", "--data", digits_npy,
                           "--epochs", "2", "--out", out, *TINY)
    assert code == 0, err
    info = json.loads(run_cli("info", out, "--json")[1])
    assert info["greedy"]["stages"] == 2 and info["epochs_done"] == 1


def test_config_file_and_dry_run(tmp_path, digits_npy, run_cli):
    cfg = tmp_path / "c.toml"
    cfg.write_text("hidden_sizes = [12]\ncoding_size = 3\nbatch_size = 16\n")
    out = tmp_path / "r"
    assert run_cli("train", "stacked-ae", "--data", digits_npy, "--config", cfg, "--dry-run", "--out", out)[0] == 0
    info = json.loads(run_cli("info", out, "--json")[1])
    assert info["config"]["coding_size"] == 3 and info["epochs_done"] == 1 and info["data"]["n_train"] <= 256


def test_linear_ae_on_tabular_data_outside_unit_interval(tmp_path, run_cli, cloud):
    big = tmp_path / "big.npy"
    np.save(big, np.load(cloud) * 100 + 50)
    out = tmp_path / "lin"
    assert run_cli("train", "linear-ae", "--data", big, "--epochs", "5", "--out", out)[0] == 0
    rec = tmp_path / "rec.npy"
    assert run_cli("reconstruct", out, "--data", big, "--out", rec)[0] == 0
    x, r = np.load(big), np.load(rec)
    assert r.shape == x.shape and abs(r.mean() - x.mean()) < 5       # outputs in the input's units
    # a sigmoid output, asked for, refuses the same data with a clear message
    code, _, err = run_cli("train", "stacked-ae", "--data", big, "--out", tmp_path / "s",
                           "--set", "output_activation=sigmoid")
    assert code == 2 and "needs data in [0, 1]" in err and not (tmp_path / "s").exists()
    # by default a sigmoid model takes such continuous (non-image) data standardised, and says so
    code, _, err = run_cli("train", "stacked-ae", "--data", big, "--out", tmp_path / "s", "--dry-run")
    assert code == 0 and "continuous data" in err and "standardised" in err


# -- bad input: exit 2, one line on stderr naming the problem, no traceback, nothing written ----------
def _corrupt_gz(tmp_path):
    p = tmp_path / "bad-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(struct.pack(">HBBIII", 0, 8, 3, 10, 4, 4) + bytes(160))[:30])
    return p


def _wrong_magic(tmp_path):
    p = tmp_path / "x-images-idx3-ubyte"
    p.write_bytes(struct.pack(">HBBIII", 7, 8, 3, 10, 4, 4) + bytes(160))
    return p


def _size_mismatch(tmp_path):
    p = tmp_path / "y-images-idx3-ubyte"
    p.write_bytes(struct.pack(">HBBIII", 0, 8, 3, 10, 4, 4) + bytes(100))
    return p


def _label_mismatch(tmp_path):
    p = tmp_path / "z-images-idx3-ubyte"
    p.write_bytes(struct.pack(">HBBIII", 0, 8, 3, 10, 4, 4) + bytes(160))
    (tmp_path / "z-labels-idx1-ubyte").write_bytes(struct.pack(">HBBI", 0, 8, 1, 9) + bytes(9))
    return p


def _nan(tmp_path):
    p = tmp_path / "nan.npy"
    a = np.zeros((10, 4), np.float32)
    a[3, 2] = np.nan
    np.save(p, a)
    return p


def _empty(tmp_path):
    p = tmp_path / "empty.npy"
    np.save(p, np.zeros((0, 4), np.float32))
    return p


BAD_TRAIN = [
    (lambda t: ["train", "nope-ae"], "unknown model 'nope-ae'"),
    (lambda t: ["train", "stacked-ae", "--data", "imagenet-99"], "imagenet-99"),
    (lambda t: ["train", "stacked-ae", "--data", str(t / "missing.npy")], "missing.npy"),
    (lambda t: ["train", "stacked-ae", "--data", str(_corrupt_gz(t))], "bad-images-idx3-ubyte.gz"),
    (lambda t: ["train", "stacked-ae", "--data", str(_wrong_magic(t))], "magic"),
    (lambda t: ["train", "stacked-ae", "--data", str(_size_mismatch(t))], "y-images-idx3-ubyte"),
    (lambda t: ["train", "stacked-ae", "--data", str(_label_mismatch(t))], "9"),
    (lambda t: ["train", "stacked-ae", "--data", str(_nan(t))], "NaN"),
    (lambda t: ["train", "stacked-ae", "--data", str(_empty(t))], "empty"),
    (lambda t: ["train", "stacked-ae", "--set", "bogus=1"], "unknown config key 'bogus'"),
    (lambda t: ["train", "stacked-ae", "--set", "lr=-1"], "'lr'"),
    (lambda t: ["train", "stacked-ae", "--set", "hidden_sizes=a,b"], "hidden_sizes"),
    (lambda t: ["train", "stacked-ae", "--set", "lr"], "key=value"),
    (lambda t: ["train", "stacked-ae", "--epochs", "0"], "'epochs'"),
    (lambda t: ["train", "stacked-ae", "--batch-size", "100000"], "batch_size"),
    (lambda t: ["train", "stacked-ae", "--valid-fraction", "1.5"], "valid_fraction"),
    (lambda t: ["train", "stacked-ae", "--config", str(t / "nope.toml")], "nope.toml"),
    (lambda t: ["train", "stacked-ae", "--resume", "--out", str(t / "norun")], "norun"),
    (lambda t: ["train", "stacked-ae", "--device", "cuda"] , "cuda"),
]


@pytest.mark.parametrize("make,needle", BAD_TRAIN, ids=[n for _, n in BAD_TRAIN])
def test_bad_train_input(tmp_path, run_cli, make, needle, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out-run"
    args = make(tmp_path)
    if "--out" not in args:
        args += ["--out", str(out)]
    code, so, err = run_cli(*args)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("latentforge: error:") and needle.lower() in lines[0].lower(), err
    assert "Traceback" not in err
    assert not out.exists()


def test_debug_shows_the_traceback(run_cli):
    with pytest.raises(Exception, match="unknown model"):
        run_cli("--debug", "train", "nope-ae")


def test_bad_inference_input(trained, tmp_path, run_cli):
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((5, 7, 7), np.float32))
    badcodes = tmp_path / "codes.npy"
    np.save(badcodes, np.zeros((5, 9), np.float32))
    cases = [
        (["encode", trained, "--data", wrong, "--out", tmp_path / "c.npy"], "shape (1, 7, 7)"),
        (["reconstruct", trained, "--data", wrong, "--out", tmp_path / "r.npy"], "built for (1, 8, 8)"),
        (["decode", trained, "--codes", badcodes, "--out", tmp_path / "d.npy"], "codes must be"),
        (["decode", trained, "--codes", tmp_path / "none.npy", "--out", tmp_path / "d.npy"], "none.npy"),
        (["encode", tmp_path / "no-run", "--data", "digits", "--out", tmp_path / "c.npy"], "no such run folder"),
        (["encode", trained, "--data", "digits", "--out", tmp_path / "nodir" / "c.npy"], "does not exist"),
        (["encode", trained, "--data", "digits", "--out", tmp_path / "c.txt"], ".npy"),
        (["info", tmp_path], "no checkpoint"),
    ]
    for args, needle in cases:
        code, _, err = run_cli(*args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not list(tmp_path.glob("*.npy.*")) and not (tmp_path / "c.npy").exists()


def test_unknown_command_and_option_exit_2(run_cli):
    assert run_cli("frobnicate")[0] == 2
    assert run_cli("train", "stacked-ae", "--no-such-flag")[0] == 2
    assert run_cli("train", "stacked-ae", "--epochs", "ten")[0] == 2


def test_demo(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("demo", "--epochs", "2", "--out", tmp_path / "demo")
    assert code == 0, err
    for name in ["reconstructions.png", "tsne.png", "history.png", "checkpoint.safetensors"]:
        assert (tmp_path / "demo" / name).exists()
        assert str(tmp_path / "demo" / name) in out or name == "checkpoint.safetensors"


def test_mnist4k_folder_trains(tmp_path, run_cli):
    out = tmp_path / "m"
    code, _, err = run_cli("train", "stacked-ae", "--data", mnist4k_path(), "--limit", "500", "--epochs", "1", "--out", out)
    assert code == 0, err
    assert json.loads(run_cli("info", out, "--json")[1])["config"]["input_shape"] == [1, 28, 28]


def test_conditional_models_get_the_datas_labels(tmp_path, digits_npy, run_cli):
    out = tmp_path / "cvae"
    code, _, err = run_cli("train", "conditional-vae", "--data", digits_npy, "--epochs", "1", "--out", out,
                           "--set", "hidden_sizes=16,8", "--set", "coding_size=3", "--batch-size", "16")
    assert code == 0, err
    codes, rec = tmp_path / "c.npy", tmp_path / "r.npy"
    assert run_cli("encode", out, "--data", digits_npy, "--out", codes)[0] == 0
    assert np.load(codes).shape == (300, 3)
    assert run_cli("reconstruct", out, "--data", digits_npy, "--out", rec)[0] == 0
    unlabelled = tmp_path / "x.npy"
    np.save(unlabelled, np.load(digits_npy)["x"])
    code, _, err = run_cli("encode", out, "--data", unlabelled, "--out", codes)
    assert code == 2 and "needs the data's labels" in err


def test_train_classifier_with_pretrained_encoder(tmp_path, digits_npy, run_cli):
    ae, clf = tmp_path / "ae", tmp_path / "clf"
    assert run_cli("train", "stacked-ae", "--data", digits_npy, "--epochs", "1", "--out", ae, *TINY)[0] == 0
    code, out, err = run_cli("train", "classifier", "--data", digits_npy, "--labeled", "50", "--encoder-from", ae,
                             "--freeze-epochs", "1", "--epochs", "2", "--out", clf)
    assert code == 0, err
    info = json.loads(run_cli("info", clf, "--json")[1])
    assert info["config"]["encoder_from"] and info["config"]["freeze_epochs"] == 1
    code, _, err = run_cli("train", "stacked-ae", "--data", digits_npy, "--labeled", "5", "--out", tmp_path / "x")
    assert code == 2 and "only for `train classifier`" in err and not (tmp_path / "x").exists()


def test_evaluate_help_default_n_is_the_library_default():
    """`evaluate --help` states the generative sample count without importing eval (fast --help):
    its copy of the constant must stay the library's."""
    from latentforge.cli import evaluate as cli_evaluate
    from latentforge.eval import run_metrics
    assert cli_evaluate.GENERATIVE_DEFAULT_N == run_metrics.GENERATIVE_DEFAULT_N


def test_generate_grid_alone(tmp_path, run_cli):
    """`generate RUN -n N --grid g.png` needs no --out; neither flag is a one-line error."""
    code, _, err = run_cli("train", "gan", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "g"))
    assert code == 0, err
    code, out, err = run_cli("generate", str(tmp_path / "g"), "-n", "9", "--grid", str(tmp_path / "grid.png"))
    assert code == 0, err
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "wrote" in out
    assert not list(tmp_path.glob("*.npy"))
    code, _, err = run_cli("generate", str(tmp_path / "g"), "-n", "9")
    assert code == 2 and "--out" in err and "--grid" in err and err.count("\n") == 1
    code, _, err = run_cli("generate", str(tmp_path / "g"), "-n", "9", "--grid", str(tmp_path / "x.png"),
                           "--format", "png")
    assert code == 2 and "--format" in err
