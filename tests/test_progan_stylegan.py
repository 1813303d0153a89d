"""progan (SPEC 18) and stylegan (SPEC 19): each mechanism checked on its own, then a full
progressive schedule and a StyleGAN run with exact resume, on tiny images."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from latentforge.errors import ConfigError, DataError
from latentforge.models import build_model
from latentforge.models.gan import MinibatchStd
from latentforge.models.progan import EqualizedConv2d, EqualizedLinear, PixelNorm, resize, resolution_ladder
from latentforge.models.stylegan import AdaIN, GroupedMinibatchStd, ModulatedConv2d
from latentforge.train import load_run, train
from latentforge.train.adversarial import AdversarialTrainer

PG = {"channels": [8, 8, 4], "coding_size": 8, "batch_size": 8, "sample_every": 0, "epochs": 8,
      "epochs_per_resolution": [2], "fade_epochs": 1.0}      # the schedule the tests below were written for
SG = {"channels": [8, 4], "coding_size": 8, "w_dim": 8, "batch_size": 8, "sample_every": 0}
QUIET = {"log": lambda m: None}


def _images(n=32, size=16, seed=0):
    """n 'images' (N, 1, size, size) in [0, 1]: blurred blobs, as a Dataset."""
    from latentforge.data import Dataset
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, size, size)).astype(np.float32)
    x = np.clip(0.5 * x + 0.5 * x[:, :, ::-1], 0, 1).astype(np.float32)
    return Dataset(x=x, y=None, name="tiny16", sample_shape=(size, size), is_image=True)


def _progan(size=16, **kw):
    torch.manual_seed(0)
    return build_model("progan", input_shape=[1, size, size], **{**PG, **kw})


# ============================================================================== progan
def test_resolution_ladder_and_shapes_refused():
    assert resolution_ladder(28) == [4, 7, 14, 28]
    assert resolution_ladder(32) == [4, 8, 16, 32]
    assert resolution_ladder(16) == [4, 8, 16] and resolution_ladder(8) == [4, 8] and resolution_ladder(4) == [4]
    with pytest.raises(DataError, match="square"):
        build_model("progan", input_shape=[1, 16, 12])
    with pytest.raises(DataError, match="square"):
        build_model("stylegan", input_shape=[64])


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_shapes_at_every_stage(shape):
    torch.manual_seed(0)
    m = build_model("progan", input_shape=list(shape), channels=[8, 8, 4, 4], coding_size=8)
    z, x = torch.randn(3, 8), torch.rand(3, *shape)
    for s, r in enumerate(m.resolutions):
        for alpha in (0.0, 0.5, 1.0):
            m.set_progress(s, alpha)
            assert m.resolution == r
            out = m.generator(z)
            assert out.shape == (3, *shape)                          # always data-sized
            assert m.discriminator(m.to_internal(x)).shape == (3,)
        feats = m.generator.features(z, s)
        assert [f.shape[-1] for f in feats] == m.resolutions[:s + 1]
        m.set_progress(s, 1.0)
        out = m.generator(z)                                         # the r x r image, upsampled
        assert torch.allclose(out, resize(resize(out, r), shape[1]), atol=1e-6)
        imgs = m.sample(3, generator=torch.Generator().manual_seed(0))
        assert imgs.shape == (3, *shape) and imgs.min() >= 0 and imgs.max() <= 1


def test_generator_fade_in():
    m = _progan()
    g, z = m.generator, torch.randn(4, 8)
    for s in (1, 2):
        prev = g(z, stage=s - 1, alpha=1.0)
        assert torch.allclose(g(z, stage=s, alpha=0.0), prev, atol=1e-6)      # the upsampled old output
        new = resize(g.to_rgb[s](g.features(z, s)[s]), 16)
        assert torch.allclose(g(z, stage=s, alpha=1.0), new, atol=1e-6)      # the new block's output
        assert torch.allclose(g(z, stage=s, alpha=0.25), 0.75 * prev + 0.25 * new, atol=1e-5)


def test_discriminator_fade_in():
    m = _progan()
    d, x = m.discriminator, torch.rand(6, 1, 16, 16) * 2 - 1
    for s in (1, 2):
        assert torch.allclose(d(x, stage=s, alpha=0.0), d(x, stage=s - 1, alpha=1.0), atol=1e-5)
        full = d(x, stage=s, alpha=1.0)
        assert not torch.allclose(full, d(x, stage=s, alpha=0.0))
        with torch.no_grad():                                        # alpha = 1: the old input path is unused
            for p in d.from_rgb[s - 1].parameters():
                p.zero_()
        assert torch.equal(d(x, stage=s, alpha=1.0), full)


def test_equalized_learning_rate_everywhere():
    torch.manual_seed(0)
    for name, kw in (("progan", PG), ("stylegan", SG)):
        m = build_model(name, input_shape=[1, 16, 16], **kw)
        layers = [mod for net in (m.generator, m.discriminator) for mod in net.modules()
                  if isinstance(mod, (nn.Linear, nn.Conv2d))]
        assert layers and all(isinstance(mod, (EqualizedLinear, EqualizedConv2d)) for mod in layers)
        unit = _unit_gain(m)
        for mod in layers:
            fan_in = mod.weight[0].numel()
            gain = 1.0 if mod in unit else math.sqrt(2)
            assert mod.scale == pytest.approx(gain / math.sqrt(fan_in) * getattr(mod, "lr_mul", 1.0))
            assert torch.equal(mod.runtime_weight(), mod.weight * mod.scale)
    # He's constant for the hidden layers, stored weights N(0, 1), and forward uses the scaled weights
    conv = EqualizedConv2d(32, 64, 3)
    assert conv.scale == pytest.approx(math.sqrt(2 / (32 * 9)))
    assert abs(conv.weight.std().item() - 1) < 0.05 and abs(conv.weight.mean().item()) < 0.05
    x = torch.randn(2, 32, 5, 5)
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight * math.sqrt(2 / 288), conv.bias, padding=1), atol=1e-5)
    lin = EqualizedLinear(100, 7)
    assert torch.allclose(lin(torch.ones(1, 100)), torch.ones(1, 100) @ (lin.weight * math.sqrt(2 / 100)).T + lin.bias)


def _unit_gain(m):
    """Layers with gain 1 (linear outputs: toRGB, D's score; StyleGAN's style affines)."""
    g = m.generator
    rgb = list(g.to_rgb) if hasattr(g, "to_rgb") else [g.synthesis.to_rgb]
    affines = [mod.affine for mod in g.modules() if isinstance(mod, (AdaIN, ModulatedConv2d))]
    return set(rgb + affines + [m.discriminator.out])


def test_pixel_norm_unit_mean_square_per_pixel():
    x = torch.randn(3, 5, 4, 4) * 7 + 2
    y = PixelNorm()(x)
    assert torch.allclose(y.square().mean(1), torch.ones(3, 4, 4), atol=1e-5)
    m = _progan()
    for h in m.generator.features(torch.randn(2, 8), 2):            # after every conv block of G
        assert torch.allclose(h.square().mean(1), torch.ones(2, h.shape[-1], h.shape[-1]), atol=1e-4)


def test_minibatch_std_at_the_end_of_d():
    m = _progan()
    d = m.discriminator
    assert isinstance(d.mbstd, MinibatchStd) and d.final[0].in_channels == m.generator.ch[0] + 1
    x = torch.rand(4, 1, 16, 16)
    other = x.clone()
    other[1:] = torch.rand(3, 1, 16, 16)
    assert not torch.allclose(d(x)[0], d(other)[0])                  # a score depends on the batch
    off = _progan(minibatch_std=False).discriminator
    assert not isinstance(off.mbstd, MinibatchStd)
    grouped = _progan(mbstd_group=4).discriminator                    # the paper's groups of 4
    assert isinstance(grouped.mbstd, GroupedMinibatchStd)
    x = torch.rand(8, 1, 16, 16)
    other = x.clone()
    other[4:] = torch.rand(4, 1, 16, 16)
    assert torch.allclose(grouped(x)[:4], grouped(other)[:4], atol=1e-6)   # a score depends on its group only


def test_schedule_is_a_pure_function_of_progress():
    m = _progan(epochs_per_resolution=[2, 3], fade_epochs=2)
    assert m.stage_epochs() == [2, 3, 3]
    assert m.schedule(0) == (0, 1.0) and m.schedule(1, 0.5) == (0, 1.0)
    assert m.schedule(2) == (1, 0.0) and m.schedule(2, 0.5) == (1, 0.25) and m.schedule(3, 0.5) == (1, 0.75)
    assert m.schedule(4) == (1, 1.0) and m.schedule(5) == (2, 0.0) and m.schedule(50) == (2, 1.0)
    assert _progan(fade_epochs=0).schedule(2) == (1, 1.0) and _progan().schedule(2, 0.5) == (1, 0.5)
    with pytest.raises(ConfigError, match="fade_epochs"):
        _progan(epochs_per_resolution=[2, 1], fade_epochs=2)
    # the hooks: the stage per epoch, alpha per step (steps per epoch learnt from the step counter)
    m = _progan(epochs_per_resolution=[1], fade_epochs=1)
    seen = []
    for epoch in range(3):
        m.on_epoch_start(epoch)
        for _ in range(4):
            m.on_train_step()
            seen.append((m.stage, m.alpha))
    assert seen[:4] == [(0, 1.0)] * 4
    assert seen[4:] == [(1, 0.0), (1, 0.25), (1, 0.5), (1, 0.75), (2, 0.0), (2, 0.25), (2, 0.5), (2, 0.75)]
    assert int(m.step) == 12


def test_schedule_through_every_resolution_resumes_exactly(tmp_path):
    data = _images()
    cfg = {**PG, "epochs_per_resolution": [1], "fade_epochs": 0.5, "sample_every": 1, "fit_schedule": False}
    straight = train("progan", data, out=tmp_path / "s", overrides={**cfg, "epochs": 4}, **QUIET)
    train("progan", data, out=tmp_path / "r", overrides={**cfg, "epochs": 2}, **QUIET)
    mid = load_run(tmp_path / "r").model
    assert (mid.stage, mid.alpha) == (1, 1.0)                        # epoch 2 faded 8x8 in fully
    resumed = train("progan", data, out=tmp_path / "r", overrides={"epochs": 4}, resume=True, **QUIET)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resume differs from the uninterrupted run"
    m = straight.model
    assert (m.stage, m.alpha, int(m.step)) == (2, 1.0, 16)         # 4 epochs x 4 steps; last rung
    assert len(list((tmp_path / "s" / "samples").iterdir())) == 4
    run = load_run(tmp_path / "s")
    assert (run.model.stage, run.model.alpha) == (2, 1.0)           # the stage travels with the checkpoint
    x = run.model.sample(5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 1, 16, 16) and 0 <= x.min() and x.max() <= 1
    with pytest.raises(ConfigError, match="truncation"):
        run.model.sample(2, truncation=0.5)


def test_schedule_fitted_to_a_short_run_ends_at_full_resolution(tmp_path):
    m = _progan(epochs=2)                                            # 3 rungs x 2 epochs: needs 6
    assert m.schedule_needs() == 6
    per, fade = m.fitted_epochs()
    assert per == pytest.approx([2 / 3] * 3) and fade == pytest.approx(1 / 3)
    assert m.schedule(0) == (0, 1.0) and m.schedule(0, 0.7)[0] == 1 and m.schedule(1, 0.4)[0] == 2
    assert m.schedule(1, 0.99) == (2, 1.0)                           # a stable phase at full size ends the run
    assert _progan(epochs=2, fit_schedule=False).schedule(1, 0.99) == (0, 1.0)   # the unfitted one stays at 4x4
    assert _progan(epochs=10).fitted_epochs() == ([2.0, 2.0, 2.0], 1.0)          # long enough: unchanged
    mnist = _progan(size=28, epochs=2)                               # 4 -> 7 -> 14 -> 28 in 2 epochs
    assert mnist.schedule(1, 0.5) == (3, 0.0) and mnist.schedule(1, 0.75) == (3, 1.0)  # a quarter-epoch fade ...
    assert mnist.schedule(1, 0.99) == (3, 1.0) and mnist.resolutions[3] == 28           # ... then stable at 28x28
    # through the trainer: 2 epochs of 4 steps reach 16x16, faded in fully; resuming longer stays there
    data = _images()
    run = train("progan", data, out=tmp_path / "r", overrides={**PG, "epochs": 2}, **QUIET)
    assert (run.model.stage, run.model.alpha, int(run.model.step)) == (2, 1.0, 8)
    loaded = load_run(tmp_path / "r").model
    assert (loaded.stage, int(loaded.schedule_epochs)) == (2, 2)
    more = train("progan", data, out=tmp_path / "r", overrides={"epochs": 3}, resume=True, **QUIET)
    assert (more.model.stage, more.model.alpha, int(more.model.schedule_epochs)) == (2, 1.0, 2)


def test_ema_restarts_as_a_mean_of_g_at_each_new_rung():
    m = _progan(size=28, epochs=2, ema=0.99)                         # 4 rungs of half an epoch
    m._steps_per_epoch = 100
    m.step.fill_(1)
    assert m.ema_decay() == 0.0                                      # the first step: the EMA is G
    m.step.fill_(10)
    assert m.ema_decay() == pytest.approx(0.9)                       # the mean of 10 steps
    m.set_progress(3, 1.0)                                           # the 28x28 rung starts at step 150
    m.step.fill_(151)
    assert m.ema_decay() == 0.0
    m.step.fill_(160)
    assert m.ema_decay() == pytest.approx(0.9)
    m.step.fill_(1000)
    assert m.ema_decay() == 0.99                                     # then the configured decay


def test_runs_saved_before_fit_schedule_load_unfitted():
    from latentforge.train.run import with_legacy_defaults
    from latentforge.models import get_model_class
    cls = get_model_class("progan")
    assert with_legacy_defaults(cls, {"epochs": 2})["fit_schedule"] is False
    assert with_legacy_defaults(cls, {"epochs": 2, "fit_schedule": True})["fit_schedule"] is True


# ============================================================================== stylegan
def _stylegan(**kw):
    torch.manual_seed(0)
    return build_model("stylegan", input_shape=[1, 16, 16], **{**SG, **kw})


def test_mapping_network_and_styles_shapes():
    m = _stylegan()
    g = m.generator
    lins = [mod for mod in g.mapping if isinstance(mod, EqualizedLinear)]
    assert len(lins) == 8 and all(lin.out_features == 8 for lin in lins)
    z = torch.randn(5, 8)
    assert g.mapping(z).shape == (5, 8)
    g.eval()
    ws = g.styles(z)
    assert ws.shape == (5, 2 * 3, 8) and torch.equal(ws[:, 0], ws[:, -1])   # 2 styles per rung 4, 8, 16
    assert g.synthesis.const.shape == (1, 8, 4, 4)
    for shape in ((1, 28, 28), (3, 32, 32)):
        s = build_model("stylegan", input_shape=list(shape), **SG)
        assert s.sample(2).shape == (2, *shape)


def test_adain_normalises_then_applies_the_style():
    torch.manual_seed(0)
    ada = AdaIN(6, w_dim=4)
    with torch.no_grad():
        ada.affine.weight.normal_()
    x, w = torch.randn(3, 6, 5, 5) * 4 + 3, torch.randn(3, 4)
    ys, yb = ada.style(w)
    out = ada(x, w)
    assert torch.allclose(out.mean((2, 3)), yb, atol=1e-4)
    assert torch.allclose(out.std((2, 3), unbiased=False), ys.abs(), atol=1e-4)
    fresh = AdaIN(6, w_dim=4)                                        # initial style: scale 1, bias 0
    ys0, yb0 = fresh.style(torch.zeros(1, 4))
    assert torch.allclose(ys0, torch.ones(1, 6)) and torch.allclose(yb0, torch.zeros(1, 6))


def test_modulated_conv_modulates_then_demodulates():
    """StyleGAN2's replacement for AdaIN: the style scales the weights per sample and input
    channel, then each output filter is rescaled to unit norm (unit-variance outputs for
    unit-variance inputs), so only the style's direction matters."""
    torch.manual_seed(0)
    mc = ModulatedConv2d(6, 5, w_dim=4)
    with torch.no_grad():
        mc.affine.weight.normal_()
    x, w = torch.randn(3, 6, 9, 9), torch.randn(3, 4)
    out = mc(x, w)
    s = mc.affine(w)
    for i in range(3):                                               # = a conv per sample, weights modulated
        wt = mc.weight * mc.scale * s[i].view(1, -1, 1, 1)
        wt = wt / wt.square().sum((1, 2, 3), keepdim=True).sqrt()
        assert torch.allclose(out[i:i + 1], F.conv2d(x[i:i + 1], wt, padding=1), atol=1e-5)
    big = torch.randn(4, 6, 40, 40)
    inner = mc(big, torch.randn(4, 4))[:, :, 1:-1, 1:-1]
    assert abs(inner.var().item() - 1) < 0.1                         # demodulated: unit variance
    with torch.no_grad():
        mc.affine.weight.mul_(3)
        mc.affine.bias.mul_(3)
    assert torch.allclose(mc(x, w), out, atol=1e-5)                  # a scaled style changes nothing
    fresh = ModulatedConv2d(6, 5, w_dim=4)                           # initial style: 1 per input channel
    assert torch.allclose(fresh.affine(torch.zeros(1, 4)), torch.ones(1, 6))
    plain = ModulatedConv2d(6, 5, w_dim=4, demodulate=False)
    assert not torch.allclose(plain(big[:1], torch.zeros(1, 4)).var(), torch.tensor(1.0), atol=0.1)


def test_stylegan_demod_mode_builds_trains_and_samples():
    m = _stylegan(style_mode="demod")
    layers = m.generator.synthesis.layers
    assert all(isinstance(layer.modconv, ModulatedConv2d) for layer in layers)
    assert not any(isinstance(mod, AdaIN) for mod in m.generator.modules())
    tr = AdversarialTrainer(m, m.config, progress=False, **QUIET)
    before = layers[0].modconv.weight.clone()
    out = tr.train_step(torch.rand(8, 1, 16, 16), None)
    assert torch.isfinite(out.loss) and not torch.equal(layers[0].modconv.weight, before)
    x = m.sample(3, generator=torch.Generator().manual_seed(0), truncation=0.5)
    assert x.shape == (3, 1, 16, 16) and 0 <= x.min() and x.max() <= 1
    assert build_model("stylegan", input_shape=[1, 28, 28], style_mode="demod", **SG).sample(2).shape == (2, 1, 28, 28)
    with pytest.raises(ConfigError, match="style_mode"):
        _stylegan(style_mode="instance")


def test_learned_constant_is_not_flat():
    """A spatially uniform constant (e.g. all ones) would be erased by the first AdaIN's instance
    normalisation: every image would then start from the style bias alone, its layout made only
    by the convolutions' zero padding. Random like the paper, it reaches layer 0's output as a
    unit-variance map per channel, scaled by the style."""
    m = _stylegan(style_mode="adain", style_mixing=0.0)
    syn = m.generator.synthesis.eval()
    assert (syn.const.std((2, 3)) > 0.1).all()
    w = torch.randn(3, 8)
    layer = syn.layers[0]
    out = layer(syn.const.expand(3, -1, -1, -1), w)
    ys, _ = layer.adain.style(w)
    assert torch.allclose(out.std((2, 3), unbiased=False), ys.abs(), atol=1e-3)


def test_grouped_minibatch_std_separates_fakes_from_reals():
    """D scores [fakes; reals] in one batch: a whole-batch std would give every sample the same
    extra channel; per group of 4, a collapsed fake half gets ~0 and a varied real half does not."""
    fakes = torch.rand(1, 1, 16, 16).expand(8, -1, -1, -1)        # a collapsed generator
    both = torch.cat([fakes, torch.rand(8, 1, 16, 16)])
    whole = MinibatchStd()(both)[:, -1]
    assert torch.allclose(whole, whole[:1].expand_as(whole))
    grouped = GroupedMinibatchStd(4)(both)[:, -1]
    assert grouped[:8].max() < 1e-3 and grouped[8:].min() > 0.1
    assert GroupedMinibatchStd(4)(both[:6]).shape == (6, 2, 16, 16)  # 6 = 2 groups of 3
    m = _stylegan()
    d = m.discriminator
    assert isinstance(d.mbstd, GroupedMinibatchStd) and m.config.mbstd_group == 4
    x = torch.rand(8, 1, 16, 16)
    other = x.clone()
    other[4:] = torch.rand(4, 1, 16, 16)
    assert torch.allclose(d(x)[:4], d(other)[:4], atol=1e-6)        # a score depends on its group only
    other[1] = torch.rand(1, 16, 16)
    assert not torch.allclose(d(x)[0], d(other)[0])
    assert not isinstance(_stylegan(minibatch_std=False).discriminator.mbstd, GroupedMinibatchStd)


def test_noise_changes_the_output_only_with_a_nonzero_scale():
    m = _stylegan(style_mixing=0.0)
    g, z = m.generator, torch.randn(3, 8)
    g.train()
    assert torch.equal(g(z), g(z))                                   # scales start at 0
    with torch.no_grad():
        g.synthesis.layers[3].noise.weight.fill_(0.5)
    assert not torch.allclose(g(z), g(z))                            # fresh noise at each call
    g.eval()
    assert torch.equal(g(z), g(z))                                   # eval: the stored constant noise


def test_style_mixing_in_training_only():
    m = _stylegan(style_mixing=1.0)
    g, z = m.generator, torch.randn(4, 8)
    g.train()
    ws = g.styles(z)
    k = g.last_crossover
    w1 = g.mapping(z)
    assert 1 <= k < 6
    assert all(torch.allclose(ws[:, i], w1) for i in range(k))
    assert all(not torch.allclose(ws[:, i], w1) and torch.equal(ws[:, i], ws[:, k]) for i in range(k, 6))
    g.eval()
    assert torch.equal(g.styles(z), w1.unsqueeze(1).expand(-1, 6, -1)) and g.last_crossover is None
    g.train()
    off = _stylegan(style_mixing=0.0).generator.train()
    off.styles(z)
    assert off.last_crossover is None
    tr = AdversarialTrainer(m, m.config, progress=False, **QUIET)    # used by the training loop
    tr.train_step(torch.rand(8, 1, 16, 16), None)
    assert m.generator.last_crossover is not None


def test_w_avg_and_truncation():
    m = _stylegan()
    g = m.generator
    z = torch.randn(6, 8)
    g.train()
    before = g.w_avg.clone()
    g.styles(z)
    expected = before + (1 - 0.995) * (g.mapping(z).detach().mean(0) - before)
    assert torch.allclose(g.w_avg, expected, atol=1e-6) and not torch.equal(g.w_avg, before)
    tr = AdversarialTrainer(m, m.config, progress=False, **QUIET)
    for _ in range(3):
        tr.train_step(torch.rand(8, 1, 16, 16), None)
    g = m.sampling_generator                                         # the EMA copy (default ema > 0)
    assert g is m.g_ema and torch.equal(g.w_avg, m.generator.w_avg)
    with torch.no_grad():                                            # make every layer's noise matter
        for layer in g.synthesis.layers:
            layer.noise.weight.fill_(0.3)
    gen = lambda: torch.Generator().manual_seed(3)                  # noqa: E731
    plain = m.sample(4, generator=gen())
    assert torch.equal(m.sample(4, generator=gen(), truncation=1.0), plain)
    zero = m.sample(4, generator=gen(), truncation=0.0)
    assert torch.equal(zero, zero[:1].expand_as(zero))               # psi = 0: every sample is w_avg's image
    g.eval()
    w_avg_image = m.from_internal(g.synthesis(g.w_avg.expand(1, 6, -1)))
    assert torch.allclose(zero[:1], w_avg_image, atol=1e-6)
    ws = torch.randn(4, 6, 8)
    assert torch.allclose(g.truncate(ws, 0.5), g.w_avg + 0.5 * (ws - g.w_avg), atol=1e-6)
    with pytest.raises(ConfigError, match="truncation"):
        m.sample(2, truncation=-1.0)


def test_lazy_r1_every_kth_d_step_weighted_k(monkeypatch):
    """StyleGAN2's lazy regularisation: R1 only at every ``r1_every``-th D step, times ``r1_every``."""
    import latentforge.train.adversarial as adv
    calls = []
    monkeypatch.setattr(adv, "r1_penalty", lambda D, real, y: calls.append(1) or torch.tensor(1.0))  # no gradient
    losses = {}
    for r1 in (0.0, 2.0):                               # a constant penalty: the same updates with and without
        m = _stylegan(r1=r1, r1_every=3)
        tr = AdversarialTrainer(m, m.config, progress=False, **QUIET)
        torch.manual_seed(1)
        x = torch.rand(8, 1, 16, 16)
        losses[r1] = [float(tr.train_step(x, None).parts["d_loss"].detach()) for _ in range(7)]
    assert len(calls) == 3 and tr.d_updates == 7
    assert [b - a for a, b in zip(losses[0.0], losses[2.0])] == pytest.approx([6, 0, 0, 6, 0, 0, 6], abs=1e-4)
    with pytest.raises(ConfigError, match="r1_every"):
        _stylegan(r1_every=0)


def test_stylegan_adam_betas_and_legacy_training_fields():
    """StyleGAN trains with Adam(beta1 = 0, beta2 = 0.99); other models keep PyTorch's betas; runs
    saved before ``betas``/``r1_every`` existed keep the training they had (R1 every step)."""
    from latentforge.models.gan import GANConfig
    from latentforge.models.stylegan import StyleGAN
    from latentforge.train.run import with_legacy_defaults
    from latentforge.train.trainer import build_optimizer
    m = _stylegan()
    opt = build_optimizer(m.generator.parameters(), m.config)
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["betas"] == (0.0, 0.99)
    plain = build_optimizer(m.generator.parameters(), GANConfig(optimizer="adam"))
    assert plain.param_groups[0]["betas"] == (0.9, 0.999)
    for bad in ([1.0, 0.99], [0.5], [-0.1, 0.9]):
        with pytest.raises(ConfigError, match="betas"):
            _stylegan(betas=bad)
    old = with_legacy_defaults(StyleGAN, {"optimizer": "rmsprop"})
    assert old["r1_every"] == 1 and old["betas"] == [0.9, 0.999] and old["optimizer"] == "rmsprop"


def test_stylegan_trains_resumes_and_generates_with_truncation(tmp_path, tiny_images, run_cli):
    cfg = {**SG, "channels": [4], "sample_every": 1, "r1_every": 3}   # the lazy-R1 clock crosses the resume
    straight = train("stylegan", tiny_images, out=tmp_path / "s", overrides={**cfg, "epochs": 3}, **QUIET)
    train("stylegan", tiny_images, out=tmp_path / "r", overrides={**cfg, "epochs": 2}, **QUIET)
    resumed = train("stylegan", tiny_images, out=tmp_path / "r", overrides={"epochs": 3}, resume=True, **QUIET)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resume differs from the uninterrupted run"
    assert straight.model.generator.w_avg.abs().sum() > 0
    assert sorted(p.name for p in (tmp_path / "s" / "samples").iterdir()) == [f"epoch_00{i}.png" for i in (1, 2, 3)]
    out = tmp_path / "g.npy"
    code, _, err = run_cli("generate", tmp_path / "s", "--n", "4", "--out", out, "--truncation", "0.7")
    assert code == 0, err
    arr = np.load(out)
    assert arr.shape == (4, 8, 8) and arr.min() >= 0 and arr.max() <= 1
