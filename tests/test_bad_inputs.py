"""The bad-input matrix: every kind of broken input, fed to every CLI command that reads it.

Each case must end with exit status 2, exactly one line on stderr that starts with
``latentforge: error:`` and names the input, no traceback, and nothing half-written: the test's
output folder stays empty (no output file, no temporary file, no run folder).

Axes:
* DATA cases (corrupt IDX/gzip, NaN, empty, bad CSV, bad image folders, ...) x every command
  that reads ``--data``;
* FIT cases (valid data that does not fit a trained run: other shape, values outside [0, 1]) x
  every command that applies a run to data;
* RUN cases (missing folder, no/truncated/foreign/garbage checkpoint) x every command that
  loads a run;
* CONFIG cases (unknown model/dataset/command/option, bad --set keys, bad types and ranges,
  batch larger than the data, bad config files) for train;
* OUTPUT cases (missing folder, a file as folder, wrong suffix) x every command that writes.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

DATA_COMMANDS = {
    "train": lambda r, src, out: ["train", "stacked-ae", "--data", src, "--out", out / "run", "--epochs", "1"],
    "train-classifier": lambda r, src, out: ["train-classifier", "--data", src, "--out", out / "run", "--epochs", "1"],
    "train classifier": lambda r, src, out: ["train", "classifier", "--data", src, "--out", out / "run"],
    "demo": lambda r, src, out: ["demo", "--data", src, "--out", out / "run", "--epochs", "1"],
    "encode": lambda r, src, out: ["encode", r["ae"], "--data", src, "--out", out / "o.npy"],
    "reconstruct": lambda r, src, out: ["reconstruct", r["ae"], "--data", src, "--out", out / "o.npy"],
    "predict": lambda r, src, out: ["predict", r["clf"], "--data", src, "--out", out / "o.npy"],
    "interpolate": lambda r, src, out: ["interpolate", r["ae"], "--data", src, "--out", out / "o.png"],
    "evaluate": lambda r, src, out: ["evaluate", r["ae"], "--data", src, "--json", out / "o.json"],
    "plot reconstructions": lambda r, src, out: ["plot", "reconstructions", r["ae"], "--data", src,
                                                 "--out", out / "o.png"],
    "plot tsne": lambda r, src, out: ["plot", "tsne", r["ae"], "--data", src, "--out", out / "o.png"],
}
#: commands that apply a trained autoencoder (sigmoid output, 8x8 samples) to data
FIT_COMMANDS = ["encode", "reconstruct", "interpolate", "evaluate", "plot reconstructions", "plot tsne"]
RUN_COMMANDS = {
    "encode": lambda run, out: ["encode", run, "--data", "digits", "--out", out / "o.npy"],
    "decode": lambda run, out: ["decode", run, "--codes", out.parent / "codes.npy", "--out", out / "o.npy"],
    "reconstruct": lambda run, out: ["reconstruct", run, "--data", "digits", "--out", out / "o.npy"],
    "info": lambda run, out: ["info", run],
    "generate": lambda run, out: ["generate", run, "-n", "4", "--out", out / "o.npy"],
    "interpolate": lambda run, out: ["interpolate", run, "--out", out / "o.png"],
    "evaluate": lambda run, out: ["evaluate", run, "--json", out / "o.json"],
    "predict": lambda run, out: ["predict", run, "--data", "digits", "--out", out / "o.npy"],
    "plot reconstructions": lambda run, out: ["plot", "reconstructions", run, "--out", out / "o.png"],
    "plot tsne": lambda run, out: ["plot", "tsne", run, "--out", out / "o.png"],
    "plot history": lambda run, out: ["plot", "history", run, "--out", out / "o.png"],
    "plot samples": lambda run, out: ["plot", "samples", run, "--out", out / "o.png"],
    "train --resume": lambda run, out: ["train", "stacked-ae", "--data", "digits", "--out", run, "--resume"],
}


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny trained run per kind: an autoencoder, a classifier, a GAN (8x8 digits)."""
    from sklearn.datasets import load_digits

    from latentforge.data import load_data
    from latentforge.train import train
    root = tmp_path_factory.mktemp("runs")
    d = load_digits()
    np.savez(root / "digits8.npz", x=(d.images[:200] / 16.0).astype(np.float32), y=d.target[:200])
    ds = load_data(str(root / "digits8.npz"))     # a file, so that commands find the run's held-out split
    quiet = {"log": lambda m: None, "progress": False, "device": "cpu"}
    train("stacked-ae", ds, out=root / "ae", overrides={"hidden_sizes": [16], "coding_size": 4, "epochs": 1}, **quiet)
    train("classifier", ds, out=root / "clf", overrides={"hidden_sizes": [16], "coding_size": 4, "epochs": 1}, **quiet)
    train("gan", ds, out=root / "gan", overrides={"g_hidden_sizes": [8], "d_hidden_sizes": [8], "coding_size": 2,
                                                    "epochs": 1, "sample_every": 0}, **quiet)
    np.save(root / "codes.npy", np.zeros((3, 4), np.float32))
    return {k: root / k for k in ("ae", "clf", "gan")}


@pytest.fixture
def out(tmp_path):
    o = tmp_path / "out"
    o.mkdir()
    return o


def _check(run_cli, args, out: Path, needles: list[str]):
    code, stdout, err = run_cli(*[str(a) for a in args])
    lines = err.strip().splitlines()
    assert code == 2, (args, code, err)
    assert len(lines) == 1 and lines[0].startswith("latentforge: error: "), (args, err)
    assert "Traceback" not in err
    for needle in needles:     # a tuple: any one of its words
        options = needle if isinstance(needle, tuple) else (needle,)
        assert any(o.lower() in lines[0].lower() for o in options), (args, needle, lines[0])
    left = sorted(p.name for p in out.rglob("*"))
    assert not left, f"{args}: half-written output left behind: {left}"


# ------------------------------------------------------------------------------ DATA cases
def _idx(dims, code=0x08, payload=None):
    head = bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    if payload is None:   # random pixels: zeros would gzip to fewer bytes than the truncation keeps
        payload = np.random.default_rng(0).integers(0, 256, int(np.prod(dims)), dtype=np.uint8).tobytes()
    return head + payload


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _png(path: Path, size=(8, 8)) -> Path:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(size[::-1], np.uint8)).save(path)
    return path


def _npy(path: Path, arr, **kw) -> Path:
    np.save(path, arr, **kw)
    return path


def _ok_images(n=64):
    return np.random.default_rng(0).random((n, 8, 8)).astype(np.float32)


def _labels_mismatch(d: Path) -> Path:
    _write(d / "x" / "train-labels-idx1-ubyte", _idx([19]))
    return _write(d / "x" / "train-images-idx3-ubyte", _idx([20, 8, 8]))


# name -> (make(dir) -> source path, words the error line must contain besides the source)
DATA_CASES = {
    "gz-truncated": (lambda d: _write(d / "a-images-idx3-ubyte.gz", gzip.compress(_idx([20, 8, 8]))[:40]),
                     ["gzip"]),
    "gz-corrupt": (lambda d: _write(d / "a-images-idx3-ubyte.gz", b"\x1f\x8b" + b"garbage" * 20), ["gzip"]),
    "idx-wrong-magic": (lambda d: _write(d / "a-images-idx3-ubyte", b"\x01\x02" + _idx([20, 8, 8])[2:]),
                        ["magic"]),
    "idx-wrong-dtype": (lambda d: _write(d / "a-images-idx3-ubyte", _idx([20, 8, 8], code=0x07)), ["type code"]),
    "idx-size-disagrees": (lambda d: _write(d / "a-images-idx3-ubyte", _idx([20, 8, 8])[:-5]), ["header says"]),
    "idx-labels-count": (_labels_mismatch, ["20 samples", "19 labels"]),
    "npy-nan": (lambda d: _npy(d / "a.npy", np.where(np.arange(64 * 64).reshape(64, 8, 8) == 70, np.nan,
                                                      _ok_images())), ["NaN"]),
    "npy-inf": (lambda d: _npy(d / "a.npy", np.full((20, 8, 8), np.inf, np.float32)), ["Inf"]),
    "npy-empty": (lambda d: _npy(d / "a.npy", np.zeros((0, 8, 8), np.float32)), ["empty"]),
    "npy-int-over-255": (lambda d: _npy(d / "a.npy", np.full((20, 8, 8), 300, np.int16)), ["[0, 255]"]),
    "npy-pickle": (lambda d: _npy(d / "a.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True),
                   ["pickle"]),
    "npy-garbage": (lambda d: _write(d / "a.npy", b"not numpy at all"), ["npy"]),
    "npy-1d": (lambda d: _npy(d / "a.npy", np.zeros(20, np.float32)), [("(20,)", "1-D")]),
    "npz-no-data-array": (lambda d: (np.savez(d / "a.npz", foo=np.zeros((3, 4)), bar=np.ones(3)), d / "a.npz")[1],
                          ["foo"]),
    "csv-non-numeric": (lambda d: _write(d / "a.csv", b"1,2,3\n4,five,6\n"), ["five", "line 2"]),
    "csv-ragged": (lambda d: _write(d / "a.csv", b"1,2,3\n4,5\n"), ["line 2", "fields"]),
    "csv-empty": (lambda d: _write(d / "a.csv", b""), ["empty"]),
    "csv-binary": (lambda d: _write(d / "a.csv", b"\x00\x01\xff\xfe"), []),
    "folder-empty": (lambda d: (d / "imgs").mkdir() or d / "imgs", ["no images"]),
    "folder-no-images": (lambda d: (_write(d / "imgs" / "notes.txt", b"hello"), d / "imgs")[1], ["no images"]),
    "folder-unreadable-image": (lambda d: (_png(d / "imgs" / "a.png"), _write(d / "imgs" / "b.png", b"\x89PNGjunk"),
                                           d / "imgs")[2], ["b.png", "cannot decode"]),
    "folder-mixed-sizes": (lambda d: (_png(d / "imgs" / "a.png"), _png(d / "imgs" / "b.png", (9, 8)),
                                      d / "imgs")[2], ["same size"]),
    "missing-path": (lambda d: d / "nope.npy", ["no such file"]),
    "unknown-builtin": (lambda d: "mnistt", ["not a built-in dataset"]),
    "unsupported-suffix": (lambda d: _write(d / "a.xyz", b"123"), ["unsupported file type"]),
}


@pytest.mark.parametrize("command", list(DATA_COMMANDS))
@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data(run_cli, runs, tmp_path, out, case, command):
    make, needles = DATA_CASES[case]
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    src = make(src_dir)
    _check(run_cli, DATA_COMMANDS[command](runs, src, out), out, [str(src).rstrip("/"), *needles])


# ------------------------------------------------------------------------------ FIT cases
FIT_CASES = {
    "other-shape": (lambda d: _npy(d / "a.npy", np.random.default_rng(0).random((20, 5, 5)).astype(np.float32)),
                    ["shape"]),
    "outside-unit-interval": (lambda d: _npy(d / "a.npy", (_ok_images() * 3 - 1).astype(np.float32)), ["[0, 1]"]),
    "other-channels": (lambda d: _npy(d / "a.npy", np.random.default_rng(0).random((20, 3, 8, 8)).astype(np.float32)),
                       ["shape"]),
}


@pytest.mark.parametrize("command", FIT_COMMANDS)
@pytest.mark.parametrize("case", list(FIT_CASES))
def test_data_that_does_not_fit_the_run(run_cli, runs, tmp_path, out, case, command):
    make, needles = FIT_CASES[case]
    src = make(tmp_path)
    _check(run_cli, DATA_COMMANDS[command](runs, src, out), out, [str(src), *needles])


def test_outside_unit_interval_also_refused_by_train(run_cli, tmp_path, out):
    src = _npy(tmp_path / "a.npy", (_ok_images() * 3 - 1).astype(np.float32))
    _check(run_cli, ["train", "stacked-ae", "--data", src, "--out", out / "run"], out, [str(src), "[0, 1]"])


# ------------------------------------------------------------------------------ RUN cases
def _trunc(d: Path, runs) -> Path:
    r = d / "run"
    r.mkdir()
    raw = (runs["ae"] / "checkpoint.safetensors").read_bytes()
    (r / "checkpoint.safetensors").write_bytes(raw[:len(raw) // 2])
    return r


def _foreign(d: Path, runs) -> Path:
    import torch
    from safetensors.torch import save_file
    r = d / "run"
    r.mkdir()
    save_file({"w": torch.zeros(3)}, str(r / "checkpoint.safetensors"))
    return r


RUN_CASES = {
    "missing-folder": (lambda d, runs: d / "no-run", [("no such run folder", "no checkpoint")]),
    "no-checkpoint": (lambda d, runs: (d / "run").mkdir() or d / "run", ["no checkpoint"]),
    "truncated-checkpoint": (_trunc, ["truncated or corrupt"]),
    "foreign-safetensors": (_foreign, ["not a latentforge checkpoint"]),
    "garbage-checkpoint": (lambda d, runs: (_write(d / "run" / "checkpoint.safetensors", b"\x80\x04garbage"),
                                            d / "run")[1], ["checkpoint"]),
    "a-file-not-a-folder": (lambda d, runs: _write(d / "run.txt", b"x"), [("run folder", "no checkpoint")]),
}


@pytest.mark.parametrize("command", list(RUN_COMMANDS))
@pytest.mark.parametrize("case", list(RUN_CASES))
def test_bad_run(run_cli, runs, tmp_path, case, command):
    make, needles = RUN_CASES[case]
    out = tmp_path / "work" / "out"
    out.mkdir(parents=True)
    np.save(tmp_path / "work" / "codes.npy", np.zeros((3, 4), np.float32))
    run = make(tmp_path, runs)
    _check(run_cli, RUN_COMMANDS[command](run, out), out, [str(run), *needles])


WRONG_KIND = [  # (command, run kind, words)
    ("generate", "ae", ["not a generative model"]),
    ("plot samples", "ae", ["generat"]),
    ("predict", "ae", ["not a classifier"]),
    ("encode", "gan", ["no encode"]),
    ("reconstruct", "gan", ["no reconstruct"]),
    ("interpolate", "gan", ["encode"]),
    ("decode", "clf", ["decode"]),
    ("train --resume", "gan", ["gan"]),
]


@pytest.mark.parametrize("command,kind,needles", WRONG_KIND)
def test_run_of_the_wrong_kind(run_cli, runs, tmp_path, command, kind, needles):
    out = tmp_path / "work" / "out"
    out.mkdir(parents=True)
    np.save(tmp_path / "work" / "codes.npy", np.zeros((3, 4), np.float32))
    _check(run_cli, RUN_COMMANDS[command](runs[kind], out), out, needles)


# ------------------------------------------------------------------------------ CONFIG cases
CONFIG_CASES = {
    "unknown-model": (["train", "no-such-model"], ["no-such-model"]),
    "unknown-dataset": (["train", "stacked-ae", "--data", "cifar100"], ["cifar100"]),
    "unknown-command": (["frobnicate"], ["frobnicate"]),
    "unknown-option": (["train", "stacked-ae", "--frob"], ["--frob"]),
    "bad-option-type": (["train", "stacked-ae", "--epochs", "ten"], ["--epochs"]),
    "set-unknown-key": (["train", "stacked-ae", "--set", "hiden_sizes=3"], ["hiden_sizes"]),
    "set-no-equals": (["train", "stacked-ae", "--set", "lr"], ["key=value"]),
    "set-bad-type": (["train", "stacked-ae", "--set", "epochs=abc"], ["epochs", "integer"]),
    "set-bad-list": (["train", "stacked-ae", "--set", "hidden_sizes=[1,"], ["hidden_sizes"]),
    "negative-lr": (["train", "stacked-ae", "--lr", "-0.1"], ["lr"]),
    "nan-lr": (["train", "stacked-ae", "--lr", "nan"], ["lr"]),
    "zero-epochs": (["train", "stacked-ae", "--epochs", "0"], ["epochs", ">= 1"]),
    "zero-batch": (["train", "stacked-ae", "--batch-size", "0"], ["batch_size"]),
    "batch-larger-than-data": (["train", "stacked-ae", "--batch-size", "100000"], ["batch_size", "larger"]),
    "bad-optimizer": (["train", "stacked-ae", "--set", "optimizer=adamax"], ["optimizer"]),
    "bad-nan-policy": (["train", "stacked-ae", "--nan-policy", "ignore"], ["nan_policy"]),
    "bad-precision": (["train", "stacked-ae", "--precision", "8"], ["precision"]),
    "negative-momentum": (["train", "stacked-ae", "--set", "momentum=-1"], ["momentum"]),
    "bad-valid-fraction": (["train", "stacked-ae", "--valid-fraction", "1.5"], ["valid_fraction"]),
    "zero-limit": (["train", "stacked-ae", "--limit", "0"], ["--limit"]),
    "bad-device": (["train", "stacked-ae", "--device", "tpu"], ["--device"]),
    "resume-without-out": (["train", "stacked-ae", "--resume"], ["--resume"]),
    "classifier-flag-on-ae": (["train", "stacked-ae", "--labeled", "10"], ["--labeled"]),
    "greedy-on-gan": (["train", "gan", "--greedy"], ["--greedy"]),
    "negative-sample-every": (["train", "vae", "--set", "sample_every=-1"], ["sample_every", ">= 0"]),
    "zero-r1-every": (["train", "stylegan", "--set", "r1_every=0"], ["r1_every"]),
    "bad-betas": (["train", "stylegan", "--set", "betas=[0.9]"], ["betas"]),
    "bad-cuda-graphs": (["train", "stacked-ae", "--set", "cuda_graphs=maybe"], ["cuda_graphs"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config(run_cli, out, case, monkeypatch):
    args, needles = CONFIG_CASES[case]
    monkeypatch.chdir(out)               # a default runs/ folder would land here
    _check(run_cli, [*args, "--out", out / "run"] if args[0] == "train" and "--resume" not in args else args,
           out, needles)


CONFIG_FILES = {
    "cfg.toml": (b"lr = [1,\n", ["cannot parse"]),
    "cfg.yaml": (b"lr: [1,\n", ["cannot parse"]),
    "cfg.json": (b'{"lr": 0.1,}', ["cannot parse"]),
    "cfg.ini": (b"lr=1", ["unknown config format"]),
    "cfg2.toml": (b"[model]\nlr = 1\n", ["holds a table"]),
    "cfg3.toml": (b"lrr = 1\n", ["lrr"]),
    "cfg4.json": (b'{"epochs": "many"}', ["epochs"]),
    "cfg5.json": (b"[1, 2]", ["mapping"]),
    "cfg6.toml": (b"\xff\xfe\x00", ["UTF-8"]),
}


@pytest.mark.parametrize("name", list(CONFIG_FILES))
def test_bad_config_file(run_cli, tmp_path, out, name):
    content, needles = CONFIG_FILES[name]
    cfg = _write(tmp_path / name, content)
    _check(run_cli, ["train", "stacked-ae", "--config", cfg, "--out", out / "run"], out, needles)


def test_missing_config_file(run_cli, tmp_path, out):
    _check(run_cli, ["train", "stacked-ae", "--config", tmp_path / "none.toml", "--out", out / "run"], out,
           ["none.toml"])


# ------------------------------------------------------------------------------ OUTPUT cases
WRITE_COMMANDS = {
    "encode": lambda r, o: ["encode", r["ae"], "--data", "digits", "--out", o("o.npy")],
    "decode": lambda r, o: ["decode", r["ae"], "--codes", r["ae"].parent / "codes.npy", "--out", o("o.npy")],
    "reconstruct": lambda r, o: ["reconstruct", r["ae"], "--data", "digits", "--out", o("o.npy")],
    "generate": lambda r, o: ["generate", r["gan"], "-n", "3", "--out", o("o.npy")],
    "generate --grid": lambda r, o: ["generate", r["gan"], "-n", "3", "--out", o("ok.npy", good=True),
                                     "--grid", o("g.png")],
    "predict": lambda r, o: ["predict", r["clf"], "--data", "digits", "--out", o("o.npy")],
    "interpolate": lambda r, o: ["interpolate", r["ae"], "--out", o("o.png")],
    "evaluate": lambda r, o: ["evaluate", r["ae"], "--json", o("o.json")],
    "plot reconstructions": lambda r, o: ["plot", "reconstructions", r["ae"], "--out", o("o.png")],
    "plot tsne": lambda r, o: ["plot", "tsne", r["ae"], "--out", o("o.png")],
    "plot history": lambda r, o: ["plot", "history", r["ae"], "--out", o("o.png")],
    "plot samples": lambda r, o: ["plot", "samples", r["gan"], "--out", o("o.png")],
}
OUTPUT_CASES = {
    "missing-folder": (lambda out, name: out / "no" / "such" / name, ["does not exist"]),
    "file-as-folder": (lambda out, name: _write(out.parent / "afile", b"x") / name, []),
}


@pytest.mark.parametrize("command", list(WRITE_COMMANDS))
@pytest.mark.parametrize("case", list(OUTPUT_CASES))
def test_output_path_cannot_be_written(run_cli, runs, tmp_path, out, case, command):
    make, needles = OUTPUT_CASES[case]
    chosen = []

    def o(name, good=False):
        p = out / name if good else make(out, name)
        if not good:
            chosen.append(p)
        return p

    args = WRITE_COMMANDS[command](runs, o)
    _check(run_cli, args, out, [str(chosen[0]) if command != "train" else str(chosen[0].parent), *needles])
    assert not chosen[0].exists()


@pytest.mark.parametrize("args", [   # the last argument is the bad one
    ["encode", "{ae}", "--data", "digits", "--out", "{out}/o.txt"],
    ["reconstruct", "{ae}", "--data", "digits", "--out", "{out}/o.csv"],
    ["decode", "{ae}", "--codes", "{root}/codes.npy", "--out", "{out}/o"],
    ["generate", "{gan}", "-n", "3", "--out", "{out}/o.png"],
    ["generate", "{gan}", "-n", "3", "--out", "{out}/o.npy", "--grid", "{out}/g.jpg"],
    ["predict", "{clf}", "--data", "digits", "--out", "{out}/o.json"],
    ["interpolate", "{ae}", "--out", "{out}/o.npy"],
    ["evaluate", "{ae}", "--json", "{out}"],
])
def test_output_of_the_wrong_kind(run_cli, runs, out, args):
    fill = {"ae": runs["ae"], "gan": runs["gan"], "clf": runs["clf"], "out": out, "root": runs["ae"].parent}
    args = [a.format(**fill) for a in args]
    _check(run_cli, args, out, [args[-1]])


def test_existing_run_folder_is_not_replaced(run_cli, runs, tmp_path):
    out = tmp_path / "out"
    (out / "run").mkdir(parents=True)
    (out / "run" / "mine.txt").write_text("keep me")
    code, _, err = run_cli("train", "stacked-ae", "--out", out / "run")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--overwrite" in err
    assert sorted(p.name for p in (out / "run").iterdir()) == ["mine.txt"]


def test_debug_shows_the_traceback(run_cli, tmp_path):
    from latentforge.errors import DataError
    with pytest.raises(DataError):
        run_cli("--debug", "train", "stacked-ae", "--data", tmp_path / "none.npy")
