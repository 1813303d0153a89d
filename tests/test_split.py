"""A step's batch shared out over threads (engine/split.py): the same gradient, the policy, the trainer."""
from __future__ import annotations

import json
import threading

import pytest
import torch
from torch import nn

from latentforge.engine.dense_sgd import DenseSGDStep
from latentforge.engine.split import MIN_PART, BatchSplit
from latentforge.engine.threads import ENV, SPLIT_ENV, batch_parts, batch_separable
from latentforge.errors import ConfigError
from latentforge.models import build_model, model_names

SEPARABLE = {"linear-ae", "stacked-ae", "tied-ae", "conv-ae", "recurrent-ae"}


@pytest.fixture
def clean_env(monkeypatch):
    for var in (ENV, SPLIT_ENV, "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_only_noise_free_per_sample_losses_are_separable():
    """The engine's table of exact classes; not their subclasses that add noise (denoising,
    hashing) or a batch-level penalty (sparse), nor a model given a dropout layer."""
    found = {n for n in model_names() if batch_separable(build_model(n, input_shape=[1, 28, 28]))}
    assert found == SEPARABLE
    m = build_model("conv-ae", input_shape=[1, 28, 28])
    m.extra = nn.Dropout(0.2)
    assert not batch_separable(m)
    m.extra = nn.Dropout(0.0)
    assert batch_separable(m)
    m.extra = nn.BatchNorm1d(4)
    assert not batch_separable(m)


def _pair(name, **kw):
    torch.manual_seed(0)
    a = build_model(name, input_shape=[1, 12, 12], **kw)
    b = build_model(name, input_shape=[1, 12, 12], **kw)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("name,parts,kw", [("conv-ae", 2, {"filters": [4, 8]}), ("recurrent-ae", 3, {"hidden_size": 16}),
                                           ("stacked-ae", 2, {"hidden_sizes": [20], "coding_size": 5})])
def test_split_steps_compute_the_whole_batch_steps(name, parts, kw):
    """Steps on sub-batches (even, uneven, and a batch too small to share out) give the losses and
    weights of whole-batch steps, up to float rounding."""
    a, b = _pair(name, **kw)
    x = torch.rand(80, 1, 12, 12)
    opt_a, opt_b = torch.optim.SGD(a.parameters(), 0.5), torch.optim.SGD(b.parameters(), 0.5)
    split = BatchSplit(parts)
    try:
        for lo, hi in [(0, 33), (33, 54), (54, 80), (0, 2 * MIN_PART - 1)]:   # 33, 21, 26, 15 samples
            opt_a.zero_grad(set_to_none=True)
            out_a = split.forward_backward(a, list(a.parameters()), x[lo:hi])
            opt_a.step()
            opt_b.zero_grad(set_to_none=True)
            out_b = b(x[lo:hi])
            out_b.loss.backward()
            opt_b.step()
            assert torch.allclose(out_a.loss, out_b.loss, rtol=1e-5, atol=1e-7)
            assert out_a.parts.keys() == out_b.parts.keys()
            for k in out_a.parts:
                assert torch.allclose(out_a.parts[k], out_b.parts[k], rtol=1e-5, atol=1e-7)
    finally:
        split.close()
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va, vb, rtol=1e-4, atol=1e-5), k


@pytest.mark.parametrize("parts,kw", [(2, {}), (3, {"activation": "relu", "output_activation": "linear", "loss": "mse"})])
def test_the_fused_sgd_step_on_threads_computes_the_one_thread_step(parts, kw):
    """The dense AEs' hand-fused step with sub-batches on threads, then the layers' updates shared
    out, gives the one-thread step's losses and weights."""
    a, b = _pair("stacked-ae", hidden_sizes=[20, 10], coding_size=5, **kw)
    x = torch.rand(80, 1, 12, 12) * (3 if kw else 1)
    a.prepare(x), b.prepare(x)
    split = BatchSplit(parts)
    try:
        for lo, hi in [(0, 33), (33, 54), (54, 80), (0, 2 * MIN_PART - 1)]:
            out_a = DenseSGDStep(a, split)(x[lo:hi], 0.5)
            out_b = DenseSGDStep(b)(x[lo:hi], 0.5)
            assert torch.allclose(out_a.loss, out_b.loss, rtol=1e-5, atol=1e-7)
            assert out_a.parts.keys() == out_b.parts.keys()
    finally:
        split.close()
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va, vb, rtol=1e-4, atol=1e-6), k


def test_parts_run_on_threads_of_their_own_and_frozen_parameters_get_no_gradient():
    m = build_model("stacked-ae", input_shape=[16], hidden_sizes=[8], coding_size=3)
    m.enc[0].weight.requires_grad_(False)
    seen, forward = set(), m.forward

    def spy(x, y=None):
        seen.add(threading.get_ident())
        return forward(x, y)
    m.forward = spy
    split = BatchSplit(2)
    try:
        split.forward_backward(m, list(m.parameters()), torch.rand(32, 16))
    finally:
        split.close()
    assert len(seen) == 2
    assert m.enc[0].weight.grad is None and m.enc[0].bias.grad is not None


def test_an_error_in_a_part_reaches_the_caller():
    m = build_model("stacked-ae", input_shape=[16], hidden_sizes=[8], coding_size=3)
    main, forward = threading.get_ident(), m.forward

    def failing(x, y=None):
        if threading.get_ident() != main:
            raise RuntimeError("part failed")
        return forward(x, y)
    m.forward = failing
    split = BatchSplit(2)
    try:
        with pytest.raises(RuntimeError, match="part failed"):
            split.forward_backward(m, list(m.parameters()), torch.rand(32, 16))
        with pytest.raises(ValueError, match="3 functions for 2 threads"):
            split.run([lambda: 1] * 3)
    finally:
        split.close()
    with pytest.raises(ValueError, match="at least 2"):
        BatchSplit(1)


def test_policy(clean_env):
    """Two parts for a separable one-thread step from SPLIT_MIN_FLOPS where two cores are usable;
    overridable; off where the user fixed the thread count."""
    import latentforge.engine.threads as th
    clean_env.setattr(th, "usable_cores", lambda: 4)
    conv = build_model("conv-ae", input_shape=[1, 28, 28])            # ~0.45 GFLOP a step at batch 32
    seed = build_model("stacked-ae", input_shape=[1, 28, 28])         # ~0.03 GFLOP
    dcgan = build_model("dcgan", input_shape=[1, 28, 28])             # not separable
    assert batch_parts(conv, 32, threads=1) == 2
    assert batch_parts(conv, 32, threads=2) == 1                      # intra-op threads already
    assert batch_parts(conv, 8, threads=1) == 1                       # too few FLOPs (and samples)
    assert batch_parts(seed, 32, threads=1) == 1 and batch_parts(seed, 64, threads=1) == 1   # handoffs cost more
    assert batch_parts(seed, 256, threads=1) == 2
    assert batch_parts(dcgan, 32, threads=1) == 1
    clean_env.setattr(th, "usable_cores", lambda: 1)
    assert batch_parts(conv, 32, threads=1) == 1
    clean_env.setenv(SPLIT_ENV, "3")
    assert batch_parts(conv, 32, threads=1) == 3 and batch_parts(dcgan, 32, threads=1) == 1
    clean_env.setenv(SPLIT_ENV, "1")
    assert batch_parts(conv, 32, threads=1) == 1
    clean_env.setenv(SPLIT_ENV, "two")
    with pytest.raises(ConfigError, match=SPLIT_ENV):
        batch_parts(conv, 32, threads=1)
    clean_env.delenv(SPLIT_ENV)
    clean_env.setattr(th, "usable_cores", lambda: 4)
    for var in (ENV, "OMP_NUM_THREADS"):
        clean_env.setenv(var, "1")
        assert batch_parts(conv, 32, threads=1) == 1
        clean_env.delenv(var)


@pytest.mark.parametrize("model,kw", [("conv-ae", {"filters": [4, 8]}), ("stacked-ae", {"hidden_sizes": [20]})])
def test_training_with_a_split_batch_matches_training_without(clean_env, tmp_path, tiny_images, model, kw):
    """``latentforge train`` end to end (the autograd step; the hand-fused SGD step): the run
    records its split, reaches the weights of the run without it (and exactly those of another
    split run: the sums have a fixed order), and leaves no worker thread behind."""
    from latentforge.train import load_run, train
    weights = {}
    for run, parts in (("a", "2"), ("b", "2"), ("c", "1")):
        clean_env.setenv(SPLIT_ENV, parts)
        train(model, tiny_images, out=tmp_path / run, progress=False, log=lambda m: None, device="cpu",
              overrides={"epochs": 2, "batch_size": 32, **kw})
        hw = json.loads((tmp_path / run / "run.json").read_text())["hardware"]
        assert hw["batch_split"] == int(parts) and hw["threads"] == 1
        weights[run] = load_run(tmp_path / run).model.state_dict()
    assert not [t for t in threading.enumerate() if t.name.startswith("latentforge-part")]
    for k, v in weights["a"].items():
        assert torch.equal(v, weights["b"][k]), k
        assert torch.allclose(v, weights["c"][k], rtol=1e-4, atol=1e-5), k


def test_a_second_fit_gets_threads_of_its_own(clean_env):
    """Each fit starts its threads and ends them; fitting again (more epochs) works."""
    from latentforge.train import Trainer
    clean_env.setenv(SPLIT_ENV, "2")
    m = build_model("stacked-ae", input_shape=[16], hidden_sizes=[8], coding_size=3, epochs=1, batch_size=32)
    tr = Trainer(m, m.config, progress=False, log=lambda s: None)
    x = torch.rand(96, 16)
    tr.fit(x)
    tr.epochs = 2
    tr.fit(x)
    assert tr.state.epoch == 2 and tr.batch_parts == 2 and tr.engine is None
