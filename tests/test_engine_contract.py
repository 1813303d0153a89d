"""The engine seam (``latentforge.engine``): wherever it accepts a model for a fast step (the
hand-fused SGD step, a batch shared out over threads), the result equals autograd + the
optimizer; anything it does not know exactly (a subclass, another activation, optimizer or
precision) trains by autograd. Over every registered model, on tiny configs."""
from __future__ import annotations

import copy

import pytest
import torch
from test_models import SHAPE, TINY

from latentforge import engine
from latentforge.engine.threads import batch_separable
from latentforge.models import REGISTRY, build_model, get_model_class
from latentforge.models.dense_ae import StackedAE
from latentforge.train import Trainer, build_optimizer

TRAINED_BY_LOSS = sorted(n for n in REGISTRY if not getattr(get_model_class(n), "adversarial", False))


class TanhCodesAE(StackedAE):
    """A user's ten-line extension: the same network with tanh codes."""

    def _encode(self, x):
        for layer in self.enc[:-1]:
            x = self.act(layer(x))
        return torch.tanh(self.enc[-1](x))


def _autograd_step(model, opt, xb, yb=None):
    out = model(xb, yb)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    return out


def _same_weights(a, b, rtol=1e-5, atol=1e-6):
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(va, vb, rtol=rtol, atol=atol), k


def test_a_subclass_that_overrides_encode_trains_like_autograd():
    """The bug of issue 18: the fused step used to train such a subclass with the parent's
    gradient (loss 0.7008 vs 0.6970 after one step)."""
    torch.manual_seed(0)
    cfg = build_model("stacked-ae", input_shape=[64], hidden_sizes=[32], coding_size=8, epochs=1,
                      batch_size=32, lr=1.5).config
    a, b = TanhCodesAE(cfg), TanhCodesAE(cfg)
    b.load_state_dict(a.state_dict())
    x = torch.rand(32, 64)
    a.prepare(x), b.prepare(x)
    tr = Trainer(a, cfg, progress=False, log=lambda s: None)
    tr.fit(x)                                              # one epoch = one step of batch 32
    assert tr.fast_step is None
    order = torch.randperm(32, generator=torch.Generator().manual_seed(cfg.seed))
    ref = _autograd_step(b, torch.optim.SGD(b.parameters(), lr=1.5), x[order])
    assert tr.state.history[0]["train_loss"] == pytest.approx(float(ref.loss.detach()), rel=1e-6)
    _same_weights(a, b)


def _tiny(name, **kw):
    torch.manual_seed(0)
    return build_model(name, input_shape=list(SHAPE), **{**TINY[name], "lr": 0.05, **kw})


@pytest.mark.parametrize("name", TRAINED_BY_LOSS)
@pytest.mark.parametrize("split", [None, 2], ids=["whole", "split2"])
def test_the_engine_step_equals_autograd_and_the_optimizer(name, split):
    """Three steps through the engine (whatever it picks: the fused step, sub-batches on threads,
    plain autograd) give the losses and weights of autograd + the config's optimizer."""
    a = _tiny(name, batch_split=split)
    b = copy.deepcopy(a)
    x = torch.rand(48, *SHAPE, generator=torch.Generator().manual_seed(1))
    y = torch.arange(48) % a.config.n_classes if a.uses_labels else None
    a.prepare(x), b.prepare(x)
    opt_a, opt_b = build_optimizer(a.parameters(), a.config), build_optimizer(b.parameters(), b.config)
    eng = engine.start(a, a.config, "cpu", params=list(a.parameters()), optimizer=opt_a, log=lambda s: None)
    try:
        if split:
            assert (eng.batch_parts == split) == batch_separable(a)
        for i in range(0, 48, 16):
            yb = y[i:i + 16] if y is not None else None
            torch.manual_seed(i)
            out_a = eng.step(x[i:i + 16], yb)
            torch.manual_seed(i)
            out_b = _autograd_step(b, opt_b, x[i:i + 16], yb)
            assert float(out_a.loss.detach()) == pytest.approx(float(out_b.loss.detach()), rel=1e-5, abs=1e-6)
    finally:
        eng.close()
    _same_weights(a, b)
    assert (eng.fast is not None) == (name in ("linear-ae", "stacked-ae")), "the allowlist changed"


@pytest.mark.parametrize("kw", [dict(activation="tanh", output_activation="linear", loss="mse"),
                                dict(activation="relu", output_activation="sigmoid", loss="mse"),
                                dict(activation="linear", output_activation="linear", loss="mse")])
def test_the_fused_step_equals_autograd_for_each_setting_it_accepts(kw):
    a = _tiny("stacked-ae", **kw)
    b = copy.deepcopy(a)
    x = torch.rand(64, *SHAPE) * (3 if kw["output_activation"] == "linear" else 1)
    a.prepare(x), b.prepare(x)
    fast = engine.select_step(a, a.config)
    assert fast is not None
    opt = torch.optim.SGD(b.parameters(), lr=0.05)
    for i in range(0, 64, 16):
        fa, ob = fast(x[i:i + 16], 0.05), _autograd_step(b, opt, x[i:i + 16])
        assert torch.allclose(fa.loss, ob.loss.detach(), rtol=1e-5, atol=1e-6)
        assert fa.parts.keys() == ob.parts.keys()
        for k in fa.parts:
            assert torch.allclose(fa.parts[k], ob.parts[k].detach(), rtol=1e-5, atol=1e-6), k
    _same_weights(a, b, rtol=1e-4)


def _overriding(cls, method):
    """A subclass of ``cls`` that overrides ``method`` with the parent's own behaviour."""
    parent = getattr(cls, method)
    return type(f"My{cls.__name__}", (cls,), {method: lambda self, *a, **k: parent(self, *a, **k)})


@pytest.mark.parametrize("name", ["stacked-ae", "linear-ae"])
@pytest.mark.parametrize("method", ["forward", "_encode", "_decode_pre", "reconstruction_loss", "to_internal"])
def test_a_subclass_that_overrides_a_method_is_not_accepted(name, method):
    m = _tiny(name)
    assert engine.select_step(m, m.config) is not None
    sub = _overriding(type(m), method)(m.config)
    assert engine.select_step(sub, sub.config) is None
    assert not batch_separable(sub)              # nor is its batch shared out over threads


@pytest.mark.parametrize("kw", [dict(momentum=0.9), dict(weight_decay=1e-4), dict(optimizer="adam"),
                                dict(precision="bf16"), dict(nan_policy="skip"), dict(fused_step=False),
                                dict(activation="elu"), dict(activation="gelu")])
def test_settings_outside_the_allowlist_fall_back_to_autograd(kw):
    m = _tiny("stacked-ae", **kw)
    assert engine.select_step(m, m.config) is None


def test_what_else_the_allowlist_refuses():
    m = _tiny("stacked-ae")
    assert engine.select_step(m, m.config) is not None
    assert engine.select_step(m, m.config, world=2) is None                       # several processes
    assert engine.select_step(m, m.config, params=list(m.enc.parameters())) is None  # some parameters only
    m.act = torch.nn.ELU()                                                         # a replaced module
    assert engine.select_step(m, m.config) is None
    t = _tiny("tied-ae")                                                           # tied kernels
    assert engine.select_step(t, t.config) is None
    f = _tiny("stacked-ae")
    f.enc[0].weight.requires_grad_(False)                                          # a frozen layer
    assert engine.select_step(f, f.config) is None
    h = _tiny("stacked-ae")
    handle = h.enc[0].register_forward_hook(lambda mod, args, out: out * 2)       # a hook changes the function
    assert engine.select_step(h, h.config) is None
    handle.remove()
    assert engine.select_step(h, h.config) is not None
    h.dec[0].weight.register_hook(lambda g: g * 0)                                 # a gradient hook
    assert engine.select_step(h, h.config) is None
    i = _tiny("stacked-ae")
    i._encode = lambda x: torch.tanh(StackedAE._encode(i, x))                       # a method replaced on it
    assert engine.select_step(i, i.config) is None


def test_engine_settings_are_a_section_of_their_own():
    """Given flat like any key, kept in ``config.engine`` (not among the model's fields), saved
    as a section and read back; CUDA graphs off by default."""
    from latentforge.config import EngineConfig, config_to_dict, make_config
    from latentforge.errors import ConfigError
    from latentforge.models import make_model_config

    cfg = make_model_config("stacked-ae", {"fused_step": "false", "precision": "bf16", "threads": "1"})
    assert cfg.engine == EngineConfig(fused_step=False, precision="bf16", threads=1)
    assert not hasattr(cfg, "fused_step") and not hasattr(cfg, "cuda_graphs")
    assert EngineConfig().cuda_graphs is False
    saved = config_to_dict(cfg)
    assert saved["engine"]["precision"] == "bf16" and "precision" not in saved
    assert make_config(type(cfg), saved) == cfg
    for bad in ({"threads": -1}, {"batch_split": 0}, {"precision": "8"}, {"cuda_graphs": "maybe"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            make_model_config("stacked-ae", bad)


def test_the_dcgan_trains_on_the_engines_kernels_and_gets_its_layers_back():
    from torch import nn

    from latentforge.engine import kernels
    from latentforge.train.adversarial import AdversarialTrainer
    m = _tiny("dcgan", epochs=1, batch_size=8, sample_every=0)
    seen = []
    tr = AdversarialTrainer(m, m.config, progress=False, log=lambda s: None,
                            callbacks=[lambda t, r: seen.append({type(x) for x in t.model.modules()})])
    tr.fit(torch.rand(16, *SHAPE))
    assert {kernels.ImageConv2d, kernels.ImageConvTranspose2d, kernels.MaskDropout} <= seen[0]
    after = {type(x) for x in m.modules()}
    assert nn.Conv2d in after and not after & {kernels.ImageConv2d, kernels.ImageConvTranspose2d, kernels.MaskDropout}
