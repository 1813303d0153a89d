"""The training thread policy: one thread for small steps, overridable, with no side effects."""
from __future__ import annotations

import pytest
import torch

from latentforge.engine.threads import ENV, apply_training_threads, forward_flops, training_threads
from latentforge.errors import ConfigError
from latentforge.models import build_model


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    return monkeypatch


def test_small_steps_use_one_thread_large_ones_are_left_alone(clean_env):
    m = build_model("stacked-ae", input_shape=[1, 28, 28])
    gemms = 2 * (784 * 100 + 100 * 30 + 30 * 100 + 100 * 784)      # the four layers' matrix products
    assert gemms <= forward_flops(m) < gemms * 1.1
    assert training_threads(m, 32) == 1 and training_threads(m, 256) == 1
    assert training_threads(m, 10**6) is None                     # 1e6 samples a step: not small


def test_overrides(clean_env):
    m = build_model("stacked-ae", input_shape=[20])
    clean_env.setenv(ENV, "3")
    assert training_threads(m, 32) == 3
    clean_env.setenv(ENV, "0")
    assert training_threads(m, 32) is None
    clean_env.setenv(ENV, "many")
    with pytest.raises(ConfigError, match=ENV):
        training_threads(m, 32)
    clean_env.delenv(ENV)
    clean_env.setenv("OMP_NUM_THREADS", "2")
    assert training_threads(m, 32) is None


def test_estimate_leaves_model_and_rng_untouched(clean_env):
    torch.manual_seed(0)
    m = build_model("dcgan", input_shape=[1, 28, 28])
    m.train()
    buffers = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.get_rng_state()
    assert forward_flops(m) > 10**7
    assert torch.equal(rng, torch.get_rng_state()) and m.training
    assert all(torch.equal(buffers[k], v) for k, v in m.state_dict().items())


def test_apply(clean_env):
    before = torch.get_num_threads()
    try:
        clean_env.setenv(ENV, "2")
        assert apply_training_threads(build_model("stacked-ae", input_shape=[20]), 32) == (2, 1)
    finally:
        torch.set_num_threads(before)


def test_training_uses_the_policy_records_it_and_restores_the_setting(clean_env, tmp_path, tiny_images):
    """A run trains a small model on one thread, says so in run.json, and leaves PyTorch's setting
    as it found it."""
    import json

    from latentforge.train import train
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train("stacked-ae", tiny_images, out=tmp_path / "r", overrides={"epochs": 1, "batch_size": 16},
              progress=False, log=lambda m: None, device="cpu")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["hardware"]["threads"] == 1


def test_passive_waiting_gives_the_large_conv_steps_all_threads(clean_env):
    """With OMP_WAIT_POLICY=PASSIVE the DCGAN's ~4 GFLOP step keeps PyTorch's threads; the small
    steps (conv AE, seed AE at batch 256) still train on one."""
    dcgan = build_model("dcgan", input_shape=[1, 28, 28])
    conv = build_model("conv-ae", input_shape=[1, 28, 28])
    seed = build_model("stacked-ae", input_shape=[1, 28, 28])
    assert training_threads(dcgan, 32) == 1                       # spinning waits: one thread
    clean_env.setenv("OMP_WAIT_POLICY", "passive")
    assert training_threads(dcgan, 32) is None
    assert training_threads(dcgan, 8) == 1                        # ~1 GFLOP: small again
    assert training_threads(conv, 32) == 1 and training_threads(seed, 256) == 1


@pytest.mark.parametrize("preset", [None, "ACTIVE"])
def test_the_command_sets_passive_waiting_before_torch_loads(preset):
    """``latentforge`` sets OMP_WAIT_POLICY=PASSIVE before PyTorch is imported, unless it is set."""
    import os
    import subprocess
    import sys
    code = ("import os, sys\nfrom latentforge import cli\nassert 'torch' not in sys.modules\n"
            "try:\n    cli.main(['models'])\nexcept SystemExit:\n    pass\n"
            "print('WAIT', os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"WAIT {preset or 'PASSIVE'}" in out.stdout


def test_recurrent_layers_are_counted():
    """PyTorch's fused LSTM kernels are invisible to FlopCounterMode: their matrix products are
    counted from the layer's sizes (2 x 4 gates x hidden x (input + hidden) per step)."""
    m = build_model("recurrent-ae", input_shape=[1, 28, 28])
    lstm = 2 * 4 * 28 * (100 * (28 + 100) + 30 * (100 + 30) + 100 * (30 + 100))    # enc1, enc2, dec1
    dense = 2 * 28 * 100 * 28                                                      # per-step output layer
    assert forward_flops(m) == lstm + dense
    gru = torch.nn.GRU(5, 7, num_layers=2, bidirectional=True, batch_first=True)
    from latentforge.engine.threads import _rnn_flops
    assert _rnn_flops(gru, torch.zeros(3, 4, 5)) == 12 * 2 * 3 * 7 * ((5 + 7) + (14 + 7)) * 2
