"""Crash safety: SIGKILL at random moments (during steps and during checkpoint writes), Ctrl-C.

Each kill test trains one run in a subprocess (``python -m latentforge train``), kills it at a
random moment, checks that the run folder's latest checkpoint loads, resumes it with
``--resume``, kills again ... and finally lets it finish. The finished run's tensors (weights,
optimizer state, RNG states, GAN replay buffer and EMA) must equal those of an uninterrupted run
with the same seed, bit for bit. ``LATENTFORGE_TEST_SLOW_SAVE`` makes every checkpoint write pause
halfway, so that many kills land while a checkpoint is being written.

The default suite kills 3 times (stacked-ae twice, the GAN once); ``-m slow`` kills 20 times each.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from latentforge.train import load_run
from latentforge.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
CKPT = "checkpoint.safetensors"
SLOW_SAVE = 0.25          # seconds every checkpoint write pauses halfway through

MODELS = {
    "stacked-ae": ["--set", "hidden_sizes=16", "--set", "coding_size=4", "--batch-size", "16", "--lr", "0.5"],
    # a GAN with an experience-replay buffer and an EMA generator: both must resume exactly
    "gan": ["--set", "g_hidden_sizes=16", "--set", "d_hidden_sizes=16", "--set", "coding_size=4",
            "--set", "experience_replay=32", "--set", "ema=0.9", "--set", "sample_every=0", "--batch-size", "16"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from sklearn.datasets import load_digits
    p = tmp_path_factory.mktemp("crash") / "digits.npy"
    np.save(p, (load_digits().images[:240] / 16.0).astype(np.float32))
    return p


def _env(slow: bool) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CI": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("LATENTFORGE_TEST_SLOW_SAVE", None)
    env.pop("LATENTFORGE_TEST_HOLD_SAVE", None)
    if slow:
        env["LATENTFORGE_TEST_SLOW_SAVE"] = str(SLOW_SAVE)
    return env


def _cmd(model: str, data: Path, out: Path, epochs: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "latentforge", "train", model, "--data", str(data), "--out", str(out),
            "--epochs", str(epochs), "--seed", "3", "--device", "cpu", "--no-progress", *MODELS[model], *extra]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class _Proc:
    """A training subprocess whose stderr is collected line by line in a thread."""

    def __init__(self, cmd: list[str], env: dict[str, str]):
        # Ctrl-C must reach the child as a KeyboardInterrupt even when this process runs with SIGINT
        # ignored (a background job of a non-interactive shell): Python installs its handler only
        # for a SIGINT that is not ignored at start, and the ignored state survives exec
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                  preexec_fn=_default_sigint if os.name == "posix" else None)
        self.lines: list[str] = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self) -> None:
        for line in self.p.stderr:
            self.lines.append(line)

    def holding(self) -> bool:
        """The process said it holds a checkpoint write (LATENTFORGE_TEST_HOLD_SAVE)."""
        return any(line.startswith("latentforge-test: holding") for line in self.lines)

    def epochs_logged(self) -> int:
        return sum(" epoch " in line for line in self.lines)

    def wait(self, timeout: float = 300) -> int:
        rc = self.p.wait(timeout)
        self.t.join(5)
        return rc


def _reference(model: str, data: Path, out: Path, epochs: int) -> None:
    """The uninterrupted run, in a subprocess like the others (an in-process run can round
    differently: the test process's torch state is not a fresh interpreter's)."""
    done = subprocess.run(_cmd(model, data, out, epochs), env=_env(False), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr


def _tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / CKPT)[0]


def _kill_and_resume(model: str, data: Path, root: Path, kills: int, epochs: int, seed: int,
                     ref: Path | None = None) -> dict:
    rng = random.Random(seed)
    run = root / "run"
    if ref is None:
        ref = root / "ref"
        _reference(model, data, ref, epochs)
    stats = {"kills": 0, "mid_write": 0, "before_first_checkpoint": 0, "restarts": 0}
    for _ in range(kills):
        resume = (run / CKPT).exists()
        extra = ["--resume"] if resume else (["--overwrite"] if run.exists() else [])
        start_epoch = load_checkpoint(run / CKPT)[1]["trainer"]["epoch"] if resume else 0
        if start_epoch >= epochs - 1:
            break                                        # too close to the end to kill again
        proc = _Proc(_cmd(model, data, run, epochs, *extra), _env(True))
        # kill after one or two of this process's epoch lines, then a random delay: lands in a step
        # or (mostly, with the slow save) in the middle of the checkpoint write that follows. (Short
        # hops: with a target anywhere in the remaining epochs, a run reached its end after ~8
        # kills, however many were asked for.)
        target = 0 if rng.random() < 0.1 else rng.randint(1, min(2, epochs - 1 - start_epoch))   # 10%: start-up
        deadline = time.monotonic() + 300
        while proc.epochs_logged() < target and proc.p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, SLOW_SAVE * 1.6) if target else rng.uniform(0.0, 3.0))
        if proc.p.poll() is not None:                    # it finished (or failed) before the kill
            assert proc.wait() == 0, "".join(proc.lines)
            break
        proc.p.send_signal(signal.SIGKILL)
        proc.wait()
        stats["kills"] += 1
        litter = list(run.glob(f".{CKPT}.*.tmp")) if run.exists() else []
        stats["mid_write"] += bool(litter)
        if (run / CKPT).exists():
            load_run(run)                                # the latest checkpoint always loads
            assert load_checkpoint(run / CKPT)[1]["trainer"]["epoch"] >= start_epoch
        else:
            stats["before_first_checkpoint"] += 1
    # finish the run
    extra = ["--resume"] if (run / CKPT).exists() else (["--overwrite"] if run.exists() else [])
    stats["restarts"] = stats["before_first_checkpoint"]
    fin = subprocess.run(_cmd(model, data, run, epochs, *extra), env=_env(False), capture_output=True, text=True,
                         timeout=600)
    assert fin.returncode == 0, fin.stderr
    a, b = _tensors(ref), _tensors(run)
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"after {stats} the resumed run differs from the uninterrupted one in {differ[:5]}"
    assert not list(run.glob(".*.tmp")), "temporary files left behind after the run finished"
    if model == "gan":
        assert any(k.startswith("extra.replay.") for k in b) and any(k.startswith("model.g_ema.") for k in b)
    return stats


AE_EPOCHS = 6


@pytest.fixture(scope="module")
def ae_reference(data, tmp_path_factory) -> Path:
    """The uninterrupted stacked-ae run both the kill and the Ctrl-C test compare with."""
    ref = tmp_path_factory.mktemp("ref") / "ref"
    _reference("stacked-ae", data, ref, AE_EPOCHS)
    return ref


@pytest.mark.parametrize("model,kills,epochs", [("stacked-ae", 2, AE_EPOCHS), ("gan", 1, 5)])
def test_sigkill_then_resume_is_exact(tmp_path, data, ae_reference, model, kills, epochs):
    stats = _kill_and_resume(model, data, tmp_path, kills, epochs, seed=1,
                             ref=ae_reference if model == "stacked-ae" else None)
    assert stats["kills"] >= 1
    print(model, stats)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["stacked-ae", "gan"])
def test_sigkill_20_times_then_resume_is_exact(tmp_path, data, model):
    stats = _kill_and_resume(model, data, tmp_path, 20, 40, seed=2)
    assert stats["kills"] >= 15 and stats["mid_write"] >= 3, stats
    print(model, stats)


def test_atomic_write_leaves_old_or_new_and_cleans_litter(tmp_path):
    """A write killed halfway leaves the old file intact plus a temp file; the next save removes it."""
    from latentforge.train.checkpoint import save_checkpoint
    path = tmp_path / CKPT
    save_checkpoint(path, {"w": torch.zeros(1000)}, {"n": 1})
    code = ("import sys, torch; from latentforge.train.checkpoint import save_checkpoint; "
            f"save_checkpoint(r'{path}', {{'w': torch.ones(100000)}}, {{'n': 2}})")
    p = subprocess.Popen([sys.executable, "-c", code], env={**_env(False), "LATENTFORGE_TEST_HOLD_SAVE": "1"},
                         stderr=subprocess.PIPE, text=True)
    said = p.stderr.readline()                          # the write is held halfway from this line on
    assert said.startswith("latentforge-test: holding checkpoint write 1"), said
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stderr.close()
    litter = list(tmp_path.glob(f".{CKPT}.*.tmp"))
    assert litter, "the kill did not land during the write"
    tensors, meta = load_checkpoint(path)              # the old checkpoint, whole
    assert meta["n"] == 1 and torch.equal(tensors["w"], torch.zeros(1000))
    save_checkpoint(path, {"w": torch.ones(3)}, {"n": 3})
    assert not list(tmp_path.glob(f".{CKPT}.*.tmp"))
    assert load_checkpoint(path)[1]["n"] == 3


def test_sigint_saves_says_how_to_resume_and_exits_130(tmp_path, data, ae_reference):
    ref, run = ae_reference, tmp_path / "run"
    epochs = AE_EPOCHS
    # the run holds its third checkpoint write halfway and says so: Ctrl-C lands mid-write, whatever the load
    proc = _Proc(_cmd("stacked-ae", data, run, epochs), {**_env(False), "LATENTFORGE_TEST_HOLD_SAVE": "3"})
    deadline = time.monotonic() + 300
    while not proc.holding() and proc.p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.holding(), "".join(proc.lines)
    proc.p.send_signal(signal.SIGINT)
    assert proc.wait() == 130
    err = "".join(proc.lines)
    assert "Traceback" not in err
    last = [line for line in proc.lines if line.startswith("latentforge: error:")]
    assert len(last) == 1 and "interrupted" in last[0] and "--resume" in last[0] and str(run / CKPT) in last[0]
    saved = load_checkpoint(run / CKPT)[1]["trainer"]["epoch"]
    assert f"checkpoint of epoch {saved}" in last[0] and saved == 2     # the held third write was abandoned
    assert not list(run.glob(".*.tmp"))
    fin = subprocess.run(_cmd("stacked-ae", data, run, epochs, "--resume"), env=_env(False), capture_output=True,
                         text=True, timeout=600)
    assert fin.returncode == 0, fin.stderr
    a, b = _tensors(ref), _tensors(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ NaN guard
def _ds(nan_rows=()):
    from sklearn.datasets import load_digits

    from latentforge.data import Dataset
    x = (load_digits().images[:160, None] / 16.0).astype(np.float32)
    x[list(nan_rows)] = np.nan                       # injected past the readers (which refuse NaN)
    return Dataset(x=x, y=None, name="digits8", sample_shape=(8, 8), is_image=True)


SMALL = {"hidden_sizes": [16], "coding_size": 4, "batch_size": 16}
GAN = {"g_hidden_sizes": [16], "d_hidden_sizes": [16], "coding_size": 4, "batch_size": 16, "sample_every": 0,
       "experience_replay": 32, "ema": 0.9}
QUIET = {"log": lambda m: None, "progress": False, "device": "cpu"}


def test_nan_stop_is_the_default_and_explains(run_cli, tmp_path):
    data = tmp_path / "d.npy"
    np.save(data, _ds().x[:, 0])
    code, _, err = run_cli("train", "stacked-ae", "--data", data, "--out", tmp_path / "run", "--lr", "1e6",
                           "--set", "hidden_sizes=16", "--set", "coding_size=4", "--batch-size", "16")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "loss became" in lines[0] and "lower learning rate" in lines[0] and "--nan-policy skip" in lines[0]
    assert not (tmp_path / "run").exists()          # failed before its first checkpoint: nothing left


@pytest.mark.parametrize("policy", ["stop", "raise"])
def test_nan_keeps_the_last_good_checkpoint(tmp_path, policy):
    from latentforge.errors import TrainingError
    from latentforge.train import train

    def blow_up(trainer, record):                     # after epoch 2 the learning rate explodes
        if record["epoch"] == 2:
            trainer.optimizer.param_groups[0]["lr"] = 1e6
    with pytest.raises(TrainingError) as e:
        train("stacked-ae", _ds(), out=tmp_path / "run", overrides={**SMALL, "epochs": 6, "nan_policy": policy},
              callbacks=[blow_up], **QUIET)
    msg = str(e.value)
    assert "epoch 3" in msg and "last good checkpoint (epoch 2)" in msg and str(tmp_path / "run") in msg
    assert policy != "raise" or ", batch " in msg    # raise names the first bad batch
    run = load_run(tmp_path / "run")
    assert run.meta["trainer"]["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in run.model.state_dict().values())


@pytest.mark.parametrize("split", ["1", "2"])
def test_nan_skip_drops_bad_batches_and_finishes(tmp_path, monkeypatch, split):
    """... with the step's batch shared out over threads too (train/split.py): the NaN of one
    part reaches the summed gradient that the guard checks."""
    from latentforge.train import train
    monkeypatch.setenv("LATENTFORGE_BATCH_SPLIT", split)
    seen = []
    run = train("stacked-ae", _ds(nan_rows=[5]), out=tmp_path / "run",
                overrides={**SMALL, "epochs": 3, "nan_policy": "skip"}, valid_fraction=0.0, callbacks=[lambda tr, rec: seen.append(tr.skipped_batches)], **QUIET)
    assert seen == [1, 2, 3]                          # the batch holding the NaN sample, once per epoch
    assert all(torch.isfinite(v).all() for v in run.model.state_dict().values())
    assert all(np.isfinite(h["train_loss"]) for h in run.history)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["hardware"]["batch_split"] == int(split)


def test_nan_skip_changes_nothing_on_clean_data(tmp_path):
    from latentforge.train import train
    cfg = {**SMALL, "epochs": 2, "optimizer": "adam", "lr": 1e-2}
    a = train("stacked-ae", _ds(), out=tmp_path / "a", overrides=cfg, **QUIET)
    b = train("stacked-ae", _ds(), out=tmp_path / "b", overrides={**cfg, "nan_policy": "skip"}, **QUIET)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_nan_skip_gives_up_when_every_batch_is_bad(tmp_path):
    from latentforge.errors import TrainingError
    from latentforge.train import train
    with pytest.raises(TrainingError, match="in a row skipped"):
        train("stacked-ae", _ds(), out=tmp_path / "run",
              overrides={**SMALL, "epochs": 2, "nan_policy": "skip", "lr": 1e6}, **QUIET)


def test_nan_guard_in_the_adversarial_trainer(tmp_path):
    from latentforge.errors import TrainingError
    from latentforge.train import train
    with pytest.raises(TrainingError, match="loss became"):
        train("gan", _ds(nan_rows=[7]), out=tmp_path / "stop", overrides={**GAN, "epochs": 2}, valid_fraction=0.0,
              **QUIET)
    with pytest.raises(TrainingError, match="batch"):
        train("gan", _ds(nan_rows=[7]), out=tmp_path / "raise", overrides={**GAN, "epochs": 2, "nan_policy": "raise"},
              valid_fraction=0.0, **QUIET)
    seen = []
    run = train("gan", _ds(nan_rows=[7]), out=tmp_path / "skip", overrides={**GAN, "epochs": 2, "nan_policy": "skip"},
                valid_fraction=0.0, callbacks=[lambda tr, rec: seen.append(tr.skipped_batches)], **QUIET)
    assert seen and seen[-1] >= 2
    assert all(torch.isfinite(v).all() for v in run.model.state_dict().values())
