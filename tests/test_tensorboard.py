"""`train --tensorboard`: scalars and image grids that TensorBoard reads back, matching history.json."""
from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

from latentforge.data import load_data
from latentforge.train import train

AE = dict(hidden_sizes=[32], coding_size=8, epochs=3)
GAN = dict(g_hidden_sizes=[32], d_hidden_sizes=[32], coding_size=8, epochs=2)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits").subset(slice(0, 256))


def _events(run_dir):
    pytest.importorskip("tensorboard", reason="tensorboard is an optional dependency: "
                        "pip install 'latentforge[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def _check_scalars(acc, run_dir) -> list[dict]:
    history = json.loads((run_dir / "history.json").read_text())
    fields = {k for rec in history for k, v in rec.items() if k != "epoch" and isinstance(v, (int, float))}
    assert set(acc.Tags()["scalars"]) == fields
    for key in fields:
        logged = [(e.step, e.value) for e in acc.Scalars(key)]
        expected = [(rec["epoch"], rec[key]) for rec in history if key in rec]
        assert [s for s, _ in logged] == [s for s, _ in expected], key
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6), key
    return history


def _check_images(acc, tag: str, epochs: int, shape: tuple[int, int]) -> None:
    from PIL import Image
    events = acc.Images(tag)
    assert [e.step for e in events] == list(range(1, epochs + 1))
    for e in events:
        assert (e.height, e.width) == shape
        im = Image.open(io.BytesIO(e.encoded_image_string))
        assert im.size == (shape[1], shape[0]) and np.asarray(im).std() > 5


def test_autoencoder_scalars_and_reconstructions(tmp_path, digits, run_cli):
    src = tmp_path / "d.npz"
    np.savez(src, x=digits.x[:, 0], y=digits.y)
    code, out, err = run_cli("train", "stacked-ae", "--data", src, "--epochs", AE["epochs"], "--out", tmp_path / "run",
                             "--tensorboard", "--no-progress", "--set", "hidden_sizes=32", "--set", "coding_size=8")
    assert code == 0, err
    acc = _events(tmp_path / "run")
    history = _check_scalars(acc, tmp_path / "run")
    assert len(history) == AE["epochs"] and {"train_loss", "valid_loss", "lr", "seconds"} <= set(acc.Tags()["scalars"])
    assert acc.Tags()["images"] == ["reconstructions"]              # an autoencoder has no sample()
    _check_images(acc, "reconstructions", AE["epochs"], (2 * 8 + 1, 8 * 8 + 7))   # 2 rows x 8 of 8x8, 1-px gutters


def test_gan_scalars_and_samples_and_training_unchanged(tmp_path, digits):
    kw = dict(overrides=GAN, progress=False, log=lambda m: None, device="cpu")
    with_tb = train("gan", digits, out=tmp_path / "tb", tensorboard=True, **kw)
    without = train("gan", digits, out=tmp_path / "plain", **kw)
    acc = _events(tmp_path / "tb")
    history = _check_scalars(acc, tmp_path / "tb")
    assert {"train_d_loss", "train_g_loss", "valid_d_real"} <= set(acc.Tags()["scalars"])
    _check_images(acc, "samples", GAN["epochs"], (8 * 8 + 7, 8 * 8 + 7))           # 8 x 8 samples
    # logging draws its own noise: the run trains exactly as without it
    drop = ("seconds", "samples_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in history] == \
           [{k: v for k, v in r.items() if k not in drop} for r in without.history]
    assert not (tmp_path / "plain" / "tensorboard").exists()
    assert with_tb.history == history


def test_resume_appends_and_a_fresh_run_replaces(tmp_path, digits):
    kw = dict(progress=False, log=lambda m: None, device="cpu", tensorboard=True)
    train("stacked-ae", digits, out=tmp_path / "r", overrides={**AE, "epochs": 1}, **kw)
    train("stacked-ae", digits, out=tmp_path / "r", overrides={"epochs": 2}, resume=True, **kw)
    acc = _events(tmp_path / "r")
    assert [e.step for e in acc.Scalars("train_loss")] == [1, 2]
    _check_scalars(acc, tmp_path / "r")
    train("stacked-ae", digits, out=tmp_path / "r", overrides={**AE, "epochs": 1}, overwrite=True, **kw)
    assert [e.step for e in _events(tmp_path / "r").Scalars("train_loss")] == [1]


def test_missing_tensorboard_is_a_clear_error(tmp_path, digits, monkeypatch, run_cli):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)    # `import` now raises ImportError
    np.savez(tmp_path / "d.npz", x=digits.x[:64, 0])
    code, out, err = run_cli("train", "stacked-ae", "--data", tmp_path / "d.npz", "--dry-run", "--tensorboard",
                             "--out", tmp_path / "run")
    assert code == 2 and err.count("\n") == 1
    assert "--tensorboard needs the tensorboard package" in err and "latentforge[tensorboard]" in err
    assert not (tmp_path / "run").exists()                             # refused before anything was written


@pytest.mark.parametrize("extra", [[], ["--labeled", "100"]])
def test_classifier_logs_its_epochs(tmp_path, run_cli, extra):
    """Both training paths of `train classifier` (all labels, a labelled subset) log every epoch;
    a replaced run's events are gone."""
    run_dir = tmp_path / "c"
    for _ in range(2):                                  # the second run replaces the first
        code, _, err = run_cli("train", "classifier", "--data", "digits", "--epochs", "2", "--tensorboard",
                               "--set", "hidden_sizes=[16]", "--out", run_dir, "--overwrite", *extra)
        assert code == 0, err
    acc = _events(run_dir)
    _check_scalars(acc, run_dir)
    assert "train_accuracy" in acc.Tags()["scalars"] or "valid_accuracy" in acc.Tags()["scalars"]
