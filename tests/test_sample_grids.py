"""Per-epoch sample grids of the generative models trained by the (non-adversarial) Trainer:
VAEs and DDPM write RUN_DIR/samples/epoch_NNN.png as GANs do, from fixed noise that leaves the
training RNG alone (so a run is the same with or without them, and resume stays exact)."""
from __future__ import annotations

import numpy as np
import torch

from latentforge.data import Dataset
from latentforge.train import train

QUIET = {"log": lambda m: None, "progress": False}
VAE = {"hidden_sizes": [16], "coding_size": 2, "batch_size": 16, "epochs": 3}


def _names(run_dir):
    folder = run_dir / "samples"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_vae_grids_every_epoch_without_touching_the_training_rng(tmp_path, tiny_images):
    on = train("vae", tiny_images, out=tmp_path / "on", overrides={**VAE, "sample_every": 1}, **QUIET)
    off = train("vae", tiny_images, out=tmp_path / "off", overrides={**VAE, "sample_every": 0}, **QUIET)
    assert _names(tmp_path / "on") == ["epoch_001.png", "epoch_002.png", "epoch_003.png"]
    assert _names(tmp_path / "off") == []
    a, b = on.model.state_dict(), off.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)          # the grids drew nothing from the training RNG


def test_ddpm_grids_every_n_epochs_and_after_the_last(tmp_path, tiny_images):
    cfg = dict(channels=8, channel_mult=[1, 2], steps=50, sample_steps=5, batch_size=16, epochs=3)
    train("ddpm", tiny_images, out=tmp_path / "d", overrides={**cfg, "sample_every": 2}, **QUIET)
    assert _names(tmp_path / "d") == ["epoch_002.png", "epoch_003.png"]
    from latentforge.models import build_model
    assert build_model("ddpm", input_shape=[1, 8, 8]).config.sample_every == 5   # sampling costs: every 5


def test_tabular_data_gets_a_heat_map_and_autoencoders_no_grid(tmp_path):
    rng = np.random.default_rng(0)
    table = Dataset(x=rng.random((48, 6)).astype(np.float32), y=None, name="table", sample_shape=(6,),
                    is_image=False)
    train("vae", table, out=tmp_path / "t", overrides={**VAE, "epochs": 1}, **QUIET)
    assert _names(tmp_path / "t") == ["epoch_001.png"]
    images = Dataset(x=rng.random((48, 1, 8, 8)).astype(np.float32), y=None, name="img", sample_shape=(8, 8),
                     is_image=True)
    train("stacked-ae", images, out=tmp_path / "ae", overrides={"epochs": 1, "hidden_sizes": [8], "coding_size": 2},
          **QUIET)
    assert _names(tmp_path / "ae") == []                      # not generative: nothing to sample
