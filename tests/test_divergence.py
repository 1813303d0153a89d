"""Settings that follow each other (issue 16, item 2): a named optimizer brings its own lr when
none is given, and a diverging loss stops the run loudly (exit 2), keeping the last good
checkpoint and naming the learning rate."""
from __future__ import annotations

import json

import pytest
import torch

from latentforge.config import OPTIMIZER_DEFAULT_LR
from latentforge.errors import TrainingError
from latentforge.models import build_model, make_model_config
from latentforge.train import Trainer

QUIET = dict(progress=False, log=lambda s: None)


def test_a_named_optimizer_without_lr_gets_its_customary_lr():
    assert make_model_config("stacked-ae", {"optimizer": "adam"}).lr == 1e-3
    assert make_model_config("stacked-ae", {"optimizer": "rmsprop"}).lr == OPTIMIZER_DEFAULT_LR["rmsprop"]
    assert make_model_config("stacked-ae", {"optimizer": "adam", "lr": 0.5}).lr == 0.5      # given: kept
    assert make_model_config("stacked-ae", {"optimizer": "sgd"}).lr == 1.5                   # the model's own
    assert make_model_config("stacked-ae", {}).lr == 1.5
    assert make_model_config("sparse-ae", {"optimizer": "nadam"}).lr == 1e-3
    assert make_model_config("recurrent-ae", {"optimizer": "rmsprop"}).lr == 0.002          # its chapter lr


def test_adam_at_sgds_lr_fails_loudly_and_adam_alone_trains(run_cli, tmp_path):
    code, out, err = run_cli("train", "stacked-ae", "--set", "optimizer=adam", "--set", "lr=1.5",
                             "--out", tmp_path / "bad", "--no-progress")
    assert code == 2 and "diverged" in err and "learning rate" in err and "--lr" in err
    assert "adam's customary lr is 0.001" in err and "divergence_policy=off" in err
    assert not (tmp_path / "bad").exists()          # failed before its first checkpoint: nothing left
    code, out, err = run_cli("train", "stacked-ae", "--set", "optimizer=adam", "--epochs", "3",
                             "--out", tmp_path / "good", "--no-progress")
    assert code == 0, err
    assert "adam's customary learning rate" in err
    run = json.loads((tmp_path / "good" / "run.json").read_text())
    assert run["config"]["lr"] == 1e-3 and run["config"]["optimizer"] == "adam"
    assert run["metrics"]["train_loss"] < 0.7        # BCE of the untrained model: ~0.69


def _diverging(policy, run_dir=None, epochs=4):
    """A stacked AE whose lr is raised after two healthy epochs (a callback), so that it diverges."""
    torch.manual_seed(0)
    m = build_model("stacked-ae", input_shape=[32], hidden_sizes=[16], coding_size=4, epochs=epochs,
                    batch_size=16, optimizer="adam", lr=1e-3, divergence_policy=policy)
    x = torch.rand(128, 32)
    m.prepare(x)
    logs = []

    def raise_lr(tr, record):
        if record["epoch"] == 2:
            for g in tr.optimizer.param_groups:
                g["lr"] = 50.0
    tr = Trainer(m, m.config, run_dir=run_dir, progress=False, log=logs.append, callbacks=[raise_lr])
    return tr, x, logs


def test_the_last_good_checkpoint_is_kept(tmp_path):
    from latentforge.train.checkpoint import load_checkpoint
    tr, x, _ = _diverging("stop", run_dir=tmp_path)
    with pytest.raises(TrainingError, match=r"diverged.*last good checkpoint \(epoch 2\)"):
        tr.fit(x)
    _, meta = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert meta["trainer"]["epoch"] == 2 and meta["trainer"]["start_loss"] == pytest.approx(tr.state.start_loss)


def test_warn_and_off_train_on():
    tr, x, logs = _diverging("warn")
    tr.fit(x)
    assert tr.state.epoch == 4 and sum("diverged" in m for m in logs) == 1
    tr, x, logs = _diverging("off")
    tr.fit(x)
    assert tr.state.epoch == 4 and not any("diverged" in m for m in logs)


def test_a_gan_is_not_guarded():
    from latentforge.train.adversarial import AdversarialTrainer
    assert Trainer.guards_divergence and not AdversarialTrainer.guards_divergence
