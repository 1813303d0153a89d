"""The trainer and runs: determinism, exact resume, early stopping, greedy training, checkpoints."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentforge.errors import CheckpointError, ConfigError, DataError, TrainingError
from latentforge.train import load_run, train
from latentforge.train.checkpoint import load_checkpoint, save_checkpoint

SMALL = {"hidden_sizes": [16], "coding_size": 4, "batch_size": 8, "lr": 0.5}


def _weights(run):
    return {k: v.clone() for k, v in run.model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights(tmp_path, tiny_images):
    a = train("stacked-ae", tiny_images, out=tmp_path / "a", overrides={**SMALL, "epochs": 2}, log=lambda m: None)
    b = train("stacked-ae", tiny_images, out=tmp_path / "b", overrides={**SMALL, "epochs": 2}, log=lambda m: None)
    c = train("stacked-ae", tiny_images, out=tmp_path / "c", overrides={**SMALL, "epochs": 2, "seed": 7}, log=lambda m: None)
    assert _same(_weights(a), _weights(b))
    assert not _same(_weights(a), _weights(c))


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_resume_equals_uninterrupted(tmp_path, tiny_images, optimizer):
    cfg = {**SMALL, "optimizer": optimizer, "lr": 0.5 if optimizer == "sgd" else 1e-2, "momentum": 0.5 if optimizer != "adam" else 0.0}
    straight = train("stacked-ae", tiny_images, out=tmp_path / "s", overrides={**cfg, "epochs": 4}, log=lambda m: None)
    train("stacked-ae", tiny_images, out=tmp_path / "r", overrides={**cfg, "epochs": 2}, log=lambda m: None)
    resumed = train("stacked-ae", tiny_images, out=tmp_path / "r", overrides={"epochs": 4}, resume=True, log=lambda m: None)
    assert _same(_weights(straight), _weights(resumed))
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]
    assert json.loads((tmp_path / "r" / "run.json").read_text())["epochs_done"] == 4


def test_resume_refuses_other_data_and_config_changes(tmp_path, tiny_images):
    train("stacked-ae", tiny_images, out=tmp_path / "r", overrides={**SMALL, "epochs": 1}, log=lambda m: None)
    with pytest.raises(ConfigError, match="cannot change lr"):
        train("stacked-ae", tiny_images, out=tmp_path / "r", overrides={"lr": 0.1, "epochs": 2}, resume=True)
    other = tiny_images.subset(np.arange(60))
    with pytest.raises(DataError, match="not the data the run"):
        train("stacked-ae", other, out=tmp_path / "r", overrides={"epochs": 2}, resume=True)
    with pytest.raises(ConfigError, match="trains 'stacked-ae', not 'tied-ae'"):
        train("tied-ae", tiny_images, out=tmp_path / "r", resume=True)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train("stacked-ae", tiny_images, out=tmp_path / "nothing", resume=True)


def test_existing_run_folder_is_not_overwritten(tmp_path, tiny_images):
    train("stacked-ae", tiny_images, out=tmp_path / "r", overrides={**SMALL, "epochs": 1}, log=lambda m: None)
    with pytest.raises(ConfigError, match="exists and is not empty"):
        train("stacked-ae", tiny_images, out=tmp_path / "r", overrides={**SMALL, "epochs": 1})


def test_early_stopping_keeps_best_weights(tmp_path, tiny_images):
    logs = []
    run = train("stacked-ae", tiny_images, out=tmp_path / "e",
                overrides={**SMALL, "epochs": 50, "lr": 3.0, "early_stopping": 2}, log=logs.append)
    hist = run.history
    assert len(hist) < 50 and any("early stopping" in m for m in logs)
    best = min(hist, key=lambda h: h["valid_loss"])
    # the model holds the best epoch's weights: its validation loss is the best one
    from latentforge.data import train_valid_split
    from latentforge.train import Trainer
    _, valid = train_valid_split(tiny_images, 0.1, seed=run.config.seed)
    val = Trainer(run.model, run.config, progress=False).evaluate(torch.from_numpy(valid.x))["loss"]
    assert val == pytest.approx(best["valid_loss"], rel=1e-5)


def test_nan_loss_stops_with_advice(tmp_path, tiny_images):
    with pytest.raises(TrainingError, match="loss became (nan|inf).*lower learning rate"):
        train("linear-ae", tiny_images, out=tmp_path / "n",
              overrides={"lr": 1e12, "epochs": 3, "batch_size": 8, "coding_size": 2}, log=lambda m: None)
    assert not (tmp_path / "n").exists()      # failed before its first checkpoint: nothing left behind


def test_greedy_then_finetune(tmp_path, tiny_images):
    cfg = {**SMALL, "hidden_sizes": [16, 8], "epochs": 3}
    run = train("stacked-ae", tiny_images, out=tmp_path / "g", overrides={**cfg, "finetune_epochs": 2},
                greedy=True, log=lambda m: None)
    g = run.meta["greedy"]
    assert g["stages"] == 3 and all(len(h) == 3 for h in g["histories"])
    # each stage learned: its loss went down
    assert all(h[-1]["train_loss"] < h[0]["train_loss"] for h in g["histories"])
    assert len(run.history) == 2
    loaded = load_run(tmp_path / "g")
    assert loaded.meta["greedy"]["stages"] == 3
    x = tiny_images.x
    assert np.allclose(loaded.reconstruct(x), run.reconstruct(x), atol=1e-6)


def test_greedy_stage_trains_only_its_layers(tiny_images):
    from latentforge.models import build_model
    from latentforge.train import Trainer
    torch.manual_seed(0)
    m = build_model("tied-ae", input_shape=[1, 8, 8], hidden_sizes=[16], coding_size=4, epochs=2, batch_size=8, lr=0.5)
    stage = m.greedy_stages()[1]
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = torch.rand(32, 16)
    Trainer(stage, m.config, params=stage.stage_parameters(), progress=False, log=lambda s: None).fit(x)
    changed = {k for k, v in m.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"enc.1.weight", "enc.1.bias", "dec_bias.0"}


def test_greedy_refused_for_models_without_stages(tmp_path, tiny_images, monkeypatch):
    from latentforge.models import Capability
    from latentforge.models.dense_ae import StackedAE
    monkeypatch.setattr(StackedAE, "capabilities", StackedAE.capabilities & ~Capability.GREEDY)
    with pytest.raises(ConfigError, match="--greedy"):
        train("stacked-ae", tiny_images, out=tmp_path / "x", greedy=True)


# -- checkpoints ------------------------------------------------------------------------------
@pytest.fixture
def saved_run(tmp_path, tiny_images):
    train("stacked-ae", tiny_images, out=tmp_path / "r", overrides={**SMALL, "epochs": 1}, log=lambda m: None)
    return tmp_path / "r"


def test_run_batches_equal_one_call_on_everything(saved_run, tiny_images):
    """Run.encode/decode/reconstruct over batches that do not divide the data (and in binary
    mode, uint8) give what one model call on all of it gives."""
    run = load_run(saved_run)
    x = tiny_images.x[:61]
    with torch.inference_mode():
        xt = torch.from_numpy(x)
        codes, recon = run.model.encode(xt).numpy(), run.model.reconstruct(xt).numpy()
        dec = run.model.decode(torch.from_numpy(codes)).numpy()
    got = run.encode(x, batch_size=8, progress=False)
    assert got.dtype == np.float32 and got.shape == codes.shape
    np.testing.assert_allclose(got, codes, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run.decode(codes, batch_size=7, progress=False), dec, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run.reconstruct(x, batch_size=60, progress=False), recon, rtol=1e-5, atol=1e-6)
    hashes = run.encode(x, batch_size=8, progress=False, binary=True)
    assert hashes.dtype == np.uint8 and np.array_equal(hashes, (codes >= 0.5).astype(np.uint8))
    assert run.encode(x[:0], progress=False).shape[0] == 0
    with pytest.raises(ValueError, match="3 rows of results for a batch of 8 rows"):
        run.batched(lambda xb: xb[:3], x, 8, progress=False, desc="odd")


def test_run_refuses_values_outside_the_unit_interval(saved_run, tiny_images):
    """The Python API checks the range of arrays whatever their dtype and flags (``value_range``:
    one torch.aminmax pass for writable float32, numpy's min/max otherwise). NaN passes this
    check (the readers refuse it; training with ``nan_policy=skip`` skips its batches)."""
    from latentforge.models.base import value_range
    run = load_run(saved_run)
    x = tiny_images.x.copy()
    ro = x.copy()
    ro.setflags(write=False)
    for a in (x, ro, x.astype(np.float64), torch.from_numpy(x)):
        assert value_range(a) == (float(x.min()), float(x.max()))
    bad = x.copy()
    bad[3, 0, 2, 2] = np.nan
    for a in (bad, bad.astype(np.float64), torch.from_numpy(bad)):
        lo, hi = value_range(a)
        assert np.isnan(lo) and np.isnan(hi)                 # NaN propagates: never a silent range
    for a in (x * 2, (x - 0.5).astype(np.float64)):
        with pytest.raises(DataError, match=r"values lie in .* needs data in \[0, 1\]"):
            run.reconstruct(a, progress=False)


def test_checkpoint_is_not_a_pickle(saved_run):
    raw = (saved_run / "checkpoint.safetensors").read_bytes()
    assert not raw.startswith(b"\x80") and b"latentforge-checkpoint" in raw[:20000]


def test_truncated_checkpoint(saved_run):
    p = saved_run / "checkpoint.safetensors"
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_run(saved_run)


def _rewrite(path, fn):
    tensors, meta = load_checkpoint(path)
    tensors, meta = fn(tensors, meta)
    meta = {k: v for k, v in meta.items() if k != "format"}
    save_checkpoint(path, tensors, meta)


@pytest.mark.parametrize("edit,needle", [
    (lambda t, m: ({**t, "model.enc.0.weight": t["model.enc.0.weight"][:, :10]}, m), "'enc.0.weight' has shape"),
    (lambda t, m: ({**t, "model.enc.0.weight": t["model.enc.0.weight"].double()}, m), "'enc.0.weight' has dtype"),
    (lambda t, m: ({k: v for k, v in t.items() if k != "model.dec.1.bias"}, m), "'dec.1.bias' is missing"),
    (lambda t, m: ({**t, "model.extra": torch.zeros(2)}, m), "unexpected tensor 'extra'"),
    (lambda t, m: (t, {**m, "model": "evil-model"}), "'evil-model' is not known"),
    (lambda t, m: ({**t, "model.enc.0.bias": t["model.enc.0.bias"] * float("nan")}, m), "NaN"),
])
def test_tampered_checkpoint_names_the_tensor(saved_run, edit, needle):
    _rewrite(saved_run / "checkpoint.safetensors", edit)
    with pytest.raises(CheckpointError, match=needle):
        load_run(saved_run)


def test_foreign_safetensors_file(saved_run):
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(3)}, str(saved_run / "checkpoint.safetensors"))
    with pytest.raises(CheckpointError, match="not a latentforge checkpoint"):
        load_run(saved_run)


def test_older_run_missing_a_config_field_gets_the_default(saved_run):
    def drop(t, m):
        m = dict(m)
        m["config"] = {k: v for k, v in m["config"].items() if k != "finetune_epochs"}
        return t, m
    _rewrite(saved_run / "checkpoint.safetensors", drop)
    assert load_run(saved_run).config.finetune_epochs == 0


def test_step_losses_stack_single_steps_lazily():
    """Single steps are kept as scalars and stacked when the table is read; the rows, their
    scales (several processes), chunk blocks, ``pop`` and ``last`` are as if stacked per step."""
    from types import SimpleNamespace

    from latentforge.train.losses import StepLosses

    def out(loss, bce):
        return SimpleNamespace(loss=torch.tensor(loss), parts={"bce": torch.tensor(bce)})
    s = StepLosses()
    s.add(out(1.0, 2.0))
    s.add(out(3.0, 4.0), scale=0.5)
    assert s.rows == 2 and torch.equal(s.last(), torch.tensor([1.5, 2.0]))
    s.add_block(torch.tensor([[5.0, 6.0], [7.0, 8.0]]))
    s.add(out(9.0, 10.0))
    s.add(out(float("nan"), 0.0))
    assert torch.isnan(s.last()[0])
    s.pop()
    assert s.rows == 5 and s.names == ["bce"]
    want = torch.tensor([[1.0, 2.0], [1.5, 2.0], [5.0, 6.0], [7.0, 8.0], [9.0, 10.0]])
    assert torch.equal(s.table(), want) and torch.equal(s.table(3), want[3:])
    s.add(out(11.0, 12.0))                               # after a read: stacked onto the table
    assert torch.equal(s.table(4), torch.tensor([[9.0, 10.0], [11.0, 12.0]]))
    means = s.means(n=6 * 4 - 2, bs=4)                   # last batch of 2 samples
    assert means["loss"] == pytest.approx((4 * (1 + 1.5 + 5 + 7 + 9) + 2 * 11) / 22)
    assert means["bce"] == pytest.approx((4 * (2 + 2 + 6 + 8 + 10) + 2 * 12) / 22)
    # copy=True (a compiled model's outputs, overwritten by its next CUDA-graph replay): the values
    # as they were when added, whatever happens to the output tensors afterwards
    c = StepLosses()
    o = out(1.0, 2.0)
    c.add(o, copy=True)
    o.loss.fill_(7.0), o.parts["bce"].fill_(8.0)
    assert torch.equal(c.table(), torch.tensor([[1.0, 2.0]]))
