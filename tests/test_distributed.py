"""Multi-process training (torchrun, gloo on CPU): same weights as one process, resume, GANs."""
from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from latentforge.cli import main
from latentforge.train import train
from latentforge.train import distributed as ddp
from latentforge.train.batches import share as _share

AE = ["--set", "hidden_sizes=[16]", "--set", "coding_size=4"]


def _cli(capfd, *args) -> tuple[int, str, str]:
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capfd.readouterr()
    return code, out.out, out.err


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    protos = rng.random((4, 64))
    x = np.clip(protos[np.arange(212) % 4] + 0.1 * rng.standard_normal((212, 64)), 0, 1).astype(np.float32)
    path = tmp_path / "x.npy"
    np.save(path, x)
    return path


def test_helpers():
    assert ddp.strip_nproc(["train", "gan", "--nproc", "2", "--epochs", "1", "--nproc=3"]) == \
        ["train", "gan", "--epochs", "1"]
    port = ddp.free_port()
    with socket.socket() as s:           # it is free: it can be bound
        s.bind(("127.0.0.1", port))
    assert [_share(7, r, 2) for r in (0, 1)] == [(0, 4), (4, 7)]
    assert [_share(32, r, 3) for r in range(3)] == [(0, 11), (11, 22), (22, 32)]
    assert ddp.info() == ddp.DistInfo(0, 1, 0) and not ddp.launched()


def _one_process(tmp_path, data, epochs=2):
    return train("stacked-ae", str(data), out=tmp_path / "one", progress=False, device="cpu", log=lambda m: None,
                 overrides={"epochs": epochs, "batch_size": 32, "hidden_sizes": [16], "coding_size": 4})


def _assert_same_run(one, run2, epochs):
    a = load_file(one.run_dir / "checkpoint.safetensors")
    b = load_file(run2 / "checkpoint.safetensors")
    keys = [k for k in a if k.startswith("model.")]
    err_max = max(float((a[k] - b[k]).abs().max()) for k in keys)
    assert err_max < 1e-5, err_max
    h2 = json.loads((run2 / "history.json").read_text())
    assert len(h2) == epochs
    for r1, r2 in zip(one.history, h2):
        assert r2["train_loss"] == pytest.approx(r1["train_loss"], rel=1e-5)
        assert r2["valid_loss"] == pytest.approx(r1["valid_loss"], rel=1e-5)
    info = json.loads((run2 / "run.json").read_text())
    assert info["hardware"]["processes"] == 2 and info["epochs_done"] == epochs
    assert "rng.torch.r1" in b                                        # rank 1's RNG is kept for resuming
    assert not list(run2.glob(".write-test*"))


def test_two_processes_reach_the_weights_of_one(tmp_path, data, capfd):
    """2 processes, each with half of every batch of 32 (the 191 training samples leave a last
    batch of 31, split 16 + 15) = 1 process with batches of 32: the global batch is split."""
    run2 = tmp_path / "two"
    code, out, err = _cli(capfd, "train", "stacked-ae", "--data", data, "--epochs", "2", "--batch-size", "32",
                          "--out", run2, "--nproc", "2", "--device", "cpu", "--no-progress", *AE)
    assert code == 0, err
    assert out.count("trained stacked-ae") == 1                       # rank 0 alone reports
    assert err.count("train epoch 2/2") == 1                          # ... and logs
    _assert_same_run(_one_process(tmp_path, data), run2, 2)


@pytest.mark.slow
def test_two_process_resume_is_exact(tmp_path, data, capfd):
    """1 epoch with 2 processes, resumed with 2 processes for a 2nd = 1 process, 2 epochs."""
    run2 = tmp_path / "two"
    for extra in ([], ["--resume"]):
        code, _, err = _cli(capfd, "train", "stacked-ae", "--data", data, "--epochs", str(1 + len(extra)),
                            "--batch-size", "32", "--out", run2, "--nproc", "2", "--device", "cpu", "--no-progress",
                            *AE, *extra)
        assert code == 0, err
    assert "resuming" in err
    _assert_same_run(_one_process(tmp_path, data), run2, 2)


def test_two_process_gan_trains_and_saves(tmp_path, data, capfd):
    run = tmp_path / "gan"
    code, out, err = _cli(capfd, "train", "gan", "--data", data, "--epochs", "2", "--batch-size", "32",
                          "--out", run, "--nproc", "2", "--device", "cpu", "--no-progress",
                          "--set", "g_hidden_sizes=[16]", "--set", "d_hidden_sizes=[16]", "--set", "coding_size=4",
                          "--set", "sample_every=1")
    assert code == 0, err
    assert out.count("trained gan") == 1
    hist = json.loads((run / "history.json").read_text())
    assert len(hist) == 2 and all(np.isfinite(r["train_d_loss"]) and np.isfinite(r["train_g_loss"]) for r in hist)
    ckpt = load_file(run / "checkpoint.safetensors")
    assert any(k.startswith("model.generator") for k in ckpt) and "rng.torch.r1" in ckpt
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    from latentforge.train import load_run
    g = load_run(run)
    assert torch.isfinite(g.model.decode(g.model.latent(4))).all()


def test_nproc_errors(tmp_path, data, capfd, monkeypatch):
    code, _, err = _cli(capfd, "train", "stacked-ae", "--data", data, "--nproc", "2", "--set", "nope=1",
                        "--out", tmp_path / "r")
    assert code == 2 and "nope" in err and not (tmp_path / "r").exists()      # checked before launching
    code, _, err = _cli(capfd, "train", "classifier", "--data", "digits", "--nproc", "2")
    assert code == 2 and "multi-process" in err
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = _cli(capfd, "train", "stacked-ae", "--data", data, "--nproc", "2")
    assert code == 2 and "torchrun" in err


@pytest.mark.slow
def test_two_processes_streaming_match_one(tmp_path, data, capfd, monkeypatch):
    """Streamed from a memory-mapped .npy in blocks: each process reads only its rows of every
    global batch, and the result is the single-process streamed run's."""
    monkeypatch.setenv("LATENTFORGE_STREAM_BYTES", "0")
    run2 = tmp_path / "two"
    code, _, err = _cli(capfd, "train", "stacked-ae", "--data", data, "--epochs", "2", "--batch-size", "32",
                        "--out", run2, "--nproc", "2", "--device", "cpu", "--no-progress", *AE)
    assert code == 0, err
    one = _one_process(tmp_path, data)
    assert one.data_info["streamed"]
    _assert_same_run(one, run2, 2)


@pytest.mark.parametrize("policy", ["stop", "raise"])
def test_two_processes_stop_together_on_a_nan(tmp_path, data, capfd, policy):
    """A diverging run under two processes: every process reaches the same decision at the same
    check (the NaN test is collective), the job ends with status 2 and one error line, and the
    last good checkpoint stays."""
    run = tmp_path / "nan"
    code, out, err = _cli(capfd, "train", "stacked-ae", "--data", data, "--epochs", "2", "--batch-size", "32",
                          "--out", run, "--nproc", "2", "--device", "cpu", "--no-progress", "--lr", "1e7",
                          "--nan-policy", policy, *AE)
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if "latentforge: error:" in ln]
    assert len(lines) == 1 and "loss became" in lines[0] and "Traceback" not in err, err
    assert not run.exists() or not (run / "checkpoint.safetensors").exists()   # failed in epoch 1: nothing kept
