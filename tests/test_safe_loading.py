"""Safe loading: checkpoints are safetensors + JSON only; any damage is a CheckpointError.

No pickle anywhere in the library (checked by reading its source), every truncation point and
random byte flips of a checkpoint give CheckpointError (never another exception, never code run),
tampered resume state (optimizer, RNG, replay buffer, trainer metadata) names what is wrong, a
run records the library version, and a config field added in a later version gets its default
when an older run is loaded or resumed.
"""
from __future__ import annotations

import json
import random
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from latentforge import __version__
from latentforge.errors import CheckpointError
from latentforge.train import load_run, train
from latentforge.train.checkpoint import load_checkpoint, save_checkpoint

PKG = Path(__file__).resolve().parents[1] / "latentforge"
SMALL = {"hidden_sizes": [16], "coding_size": 4, "batch_size": 8, "lr": 1e-2, "optimizer": "adam"}
GAN = {"g_hidden_sizes": [8], "d_hidden_sizes": [8], "coding_size": 2, "batch_size": 8, "sample_every": 0,
       "experience_replay": 16, "ema": 0.9}
QUIET = {"log": lambda m: None, "progress": False, "device": "cpu"}
CKPT = "checkpoint.safetensors"


def test_no_pickle_in_the_library():
    bad = []
    for path in PKG.rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if (re.search(r"\bimport (c?pickle|dill|joblib|shelve|marshal)\b|\bpickle\.loads?\(|"
                          r"allow_pickle\s*=\s*True|(?<![.\w])eval\(|(?<![.\w])exec\(|yaml\.load\(|yaml\.unsafe_load", code)
                    or ("torch.load(" in code and "weights_only=True" not in code)):
                bad.append(f"{path.relative_to(PKG.parent)}:{i}: {line.strip()}")
    assert not bad, "unsafe deserialisation:\n" + "\n".join(bad)


@pytest.fixture
def saved(tmp_path, tiny_images):
    train("stacked-ae", tiny_images, out=tmp_path / "r", overrides={**SMALL, "epochs": 1}, **QUIET)
    return tmp_path / "r"


def test_a_run_records_the_version(saved):
    _, meta = load_checkpoint(saved / CKPT)
    assert meta["version"] == __version__ and meta["format"] == "latentforge-checkpoint"
    assert json.loads((saved / "run.json").read_text())["version"] == __version__
    assert not (saved / CKPT).read_bytes().startswith(b"\x80")   # not a pickle


def test_every_truncation_is_a_checkpoint_error(saved):
    raw = (saved / CKPT).read_bytes()
    header = 8 + int.from_bytes(raw[:8], "little")
    cuts = sorted({0, 1, 7, 8, 9, header - 1, header, header + 1, len(raw) - 1,
                   *range(0, len(raw), max(1, len(raw) // 40))})
    for cut in cuts:
        (saved / CKPT).write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match=re.escape(str(saved / CKPT))):
            load_run(saved)


def test_random_byte_flips_give_only_checkpoint_errors(saved):
    raw = (saved / CKPT).read_bytes()
    header = 8 + int.from_bytes(raw[:8], "little")
    rng = random.Random(0)
    outcomes = {"loaded": 0, "refused": 0}
    for k in range(150):
        b = bytearray(raw)
        pos = rng.randrange(header) if k % 2 else rng.randrange(len(raw))  # half in the JSON header
        b[pos] = rng.randrange(256)
        (saved / CKPT).write_bytes(bytes(b))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load_run(saved)
            outcomes["loaded"] += 1
        except CheckpointError as e:
            assert str(saved / CKPT) in str(e)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 20, outcomes


def _rewrite(path: Path, fn) -> None:
    tensors, meta = load_checkpoint(path)
    tensors, meta = fn(dict(tensors), json.loads(json.dumps(meta)))
    save_checkpoint(path, tensors, {k: v for k, v in meta.items() if k != "format"})


def _resume(run_dir: Path, data, model="stacked-ae"):
    return train(model, data, out=run_dir, overrides={"epochs": 2}, resume=True, **QUIET)


def _optim_key(t):
    return next(k for k in t if k.startswith("optim."))


RESUME_TAMPERING = {
    "optimizer tensor shape": (lambda t, m: ({**t, _optim_key(t): torch.zeros(3)}, m), "optimizer"),
    "optimizer groups": (lambda t, m: (t, {**m, "trainer": {**m["trainer"], "optimizers": {"optim": {
        "param_groups": [], "scalars": {}}}}}), "optimizer state does not match"),
    "rng state missing": (lambda t, m: ({k: v for k, v in t.items() if k != "rng.data"}, m), "random-number state"),
    "rng state garbage": (lambda t, m: ({**t, "rng.torch": torch.zeros(3, dtype=torch.uint8)}, m),
                          "random-number state"),
    "trainer state missing": (lambda t, m: (t, {k: v for k, v in m.items() if k != "trainer"}), "trainer state"),
    "trainer epoch missing": (lambda t, m: (t, {**m, "trainer": {k: v for k, v in m["trainer"].items()
                                                                 if k != "epoch"}}), "trainer"),
    "trainer epoch not a number": (lambda t, m: (t, {**m, "trainer": {**m["trainer"], "epoch": "x"}}), "trainer"),
    "model tensor dtype": (lambda t, m: ({**t, "model.enc.0.weight": t["model.enc.0.weight"].half()}, m),
                           "'enc.0.weight' has dtype"),
}


@pytest.mark.parametrize("case", list(RESUME_TAMPERING))
def test_tampered_resume_state_is_refused(saved, tiny_images, case):
    edit, needle = RESUME_TAMPERING[case]
    _rewrite(saved / CKPT, edit)
    with pytest.raises(CheckpointError, match=re.escape(needle)):
        _resume(saved, tiny_images)


def test_tampered_gan_replay_buffer_is_refused(tmp_path, tiny_images):
    run = tmp_path / "gan"
    train("gan", tiny_images, out=run, overrides={**GAN, "epochs": 1}, **QUIET)
    _rewrite(run / CKPT, lambda t, m: ({**t, "extra.replay.buffer": t["extra.replay.buffer"][:3]}, m))
    with pytest.raises(CheckpointError, match="extra.replay.buffer"):
        _resume(run, tiny_images, "gan")


def test_a_field_added_later_gets_its_default(saved, tiny_images):
    """A run saved before ``nan_policy`` and ``precision`` existed loads and resumes with the defaults."""
    def drop(t, m):
        m["config"] = {k: v for k, v in m["config"].items() if k not in ("nan_policy", "precision")}
        return t, m
    _rewrite(saved / CKPT, drop)
    assert "nan_policy" not in load_checkpoint(saved / CKPT)[1]["config"]
    run = load_run(saved)
    assert run.config.nan_policy == "stop" and run.config.engine.precision == "32"
    resumed = _resume(saved, tiny_images)
    assert resumed.config.nan_policy == "stop" and resumed.meta["trainer"]["epoch"] == 2


def test_a_run_saved_with_flat_engine_keys_loads_and_resumes(saved, tiny_images, recwarn):
    """Runs saved before the engine section kept fused_step, cuda_graphs, precision and compile
    among the model's fields: they load without a warning, into the engine section, except
    ``cuda_graphs: true`` (then the default, now off until verified on a GPU)."""
    def flatten(t, m):
        cfg = {k: v for k, v in m["config"].items() if k not in ("engine", "divergence_policy")}
        m["config"] = {**cfg, "fused_step": False, "cuda_graphs": True, "precision": "32", "compile": False}
        return t, m
    _rewrite(saved / CKPT, flatten)
    run = load_run(saved)
    assert not [w for w in recwarn if "unknown" in str(w.message)]
    eng = run.config.engine
    assert (eng.fused_step, eng.cuda_graphs, eng.precision, eng.compile) == (False, False, "32", False)
    resumed = _resume(saved, tiny_images)
    assert resumed.meta["trainer"]["epoch"] == 2 and resumed.config.engine.fused_step is False


def test_a_field_from_a_newer_version_is_ignored_with_a_warning(saved):
    _rewrite(saved / CKPT, lambda t, m: (t, {**m, "config": {**m["config"], "future_knob": 3}, "version": "9.9"}))
    with pytest.warns(UserWarning, match="future_knob"):
        run = load_run(saved)
    assert not hasattr(run.config, "future_knob")


@pytest.mark.parametrize("content", [b"", b"\x00" * 8, b"{}", b"\xff" * 8 + b"{}", b"PK\x03\x04 zip",
                                     b"\x80\x04\x95 a pickle"])
def test_foreign_files_are_refused(saved, content):
    (saved / CKPT).write_bytes(content)
    with pytest.raises(CheckpointError, match="checkpoint"):
        load_run(saved)


def test_npy_inputs_never_unpickle(tmp_path, run_cli, saved):
    """An object array (a pickle inside .npy) is refused, for data and for decode's codes."""
    np.save(tmp_path / "evil.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    for args in (["encode", saved, "--data", tmp_path / "evil.npy", "--out", tmp_path / "o.npy"],
                 ["decode", saved, "--codes", tmp_path / "evil.npy", "--out", tmp_path / "o.npy"]):
        code, _, err = run_cli(*args)
        assert code == 2 and "evil.npy" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.npy").exists()


def test_a_field_whose_default_changed_the_model_gets_its_legacy_value(tmp_path, tiny_images):
    """StyleGAN's ``style_mode`` came later with default ``demod``; a run saved without the field
    is an ``adain`` run (its weights are AdaIN's) and loads as one (``LEGACY_DEFAULTS``)."""
    run_dir = tmp_path / "sg"
    train("stylegan", tiny_images, out=run_dir, overrides={"channels": [4], "coding_size": 4, "w_dim": 4,
                                                          "batch_size": 8, "epochs": 1, "sample_every": 0,
                                                          "style_mode": "adain"}, **QUIET)
    _rewrite(run_dir / CKPT, lambda t, m: (t, {**m, "config": {k: v for k, v in m["config"].items()
                                                               if k != "style_mode"}}))
    assert load_run(run_dir).config.style_mode == "adain"
    _rewrite(run_dir / CKPT, lambda t, m: (t, {**m, "config": {**m["config"], "style_mode": "demod"}}))
    with pytest.raises(CheckpointError):          # an adain checkpoint read as demod: weights do not fit
        load_run(run_dir)
