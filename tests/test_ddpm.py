"""The diffusion model (SPEC 20): the process against closed forms, the network's shapes, the
pipeline's loss, and the samplers against an oracle noise predictor (independent of training)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from latentforge.config import make_config
from latentforge.errors import ConfigError, DataError, Interrupted
from latentforge.models import build_model
from latentforge.models.ddpm import (DDPMConfig, GaussianDiffusion, UNet, cosine_alpha_bar, strided_timesteps,
                                     timestep_embedding)
from latentforge.train import Trainer, load_run, train

TINY = dict(channels=8, channel_mult=[1, 2], steps=50, sample_steps=5, batch_size=8)


def _f(t, T, s=0.008):
    return np.cos(((t / T) + s) / (1 + s) * np.pi / 2) ** 2


# ------------------------------------------------------------------------------ the process
@pytest.mark.parametrize("T", [50, 1000, 4000])
def test_cosine_schedule(T):
    d = GaussianDiffusion.cosine(T)
    ab, betas = d.alpha_bar.numpy(), d.betas.numpy()
    assert len(ab) == len(betas) == T
    assert ab[0] > 0.99 and ab[-1] < 1e-5                      # from ~1 to ~0
    assert np.all(np.diff(ab) < 0)                             # strictly decreasing
    assert np.all(betas > 0) and np.all(betas <= 0.999) and betas[-1] == pytest.approx(0.999)
    closed = _f(np.arange(1, T + 1), T) / _f(0, T)             # alpha_bar(t) = f(t) / f(0), t = 1..T
    np.testing.assert_allclose(ab[:-1], closed[:-1], rtol=1e-9)   # the last beta is clipped
    np.testing.assert_allclose(cosine_alpha_bar(np.arange(T + 1), T).numpy(), _f(np.arange(T + 1), T) / _f(0, T))
    np.testing.assert_allclose(d.alphas.numpy(), 1 - betas)


def test_q_sample_statistics():
    torch.manual_seed(0)
    d = GaussianDiffusion.cosine(1000)
    n = 200_000
    x0 = torch.tensor([-0.9, -0.2, 0.4, 1.0]).expand(n, 4)
    for step in (0, 100, 500, 900, 999):
        t = torch.full((n,), step)
        xt = d.q_sample(x0, t, torch.randn(n, 4))
        ab = float(d.alpha_bar[step])
        se = math.sqrt((1 - ab) / n)
        np.testing.assert_allclose(xt.mean(0).numpy(), math.sqrt(ab) * x0[0].numpy(), atol=5 * se + 1e-6)
        np.testing.assert_allclose(xt.var(0).numpy(), np.full(4, 1 - ab), rtol=0.02, atol=1e-6)


def test_posterior_matches_gaussian_conditioning():
    """q(x_{t-1} | x_t, x_0) by conditioning the joint Gaussian of (x_{t-1}, x_t) given x_0."""
    d = GaussianDiffusion.cosine(200)
    x0, xt = torch.tensor([[0.3, -0.7]]), torch.tensor([[1.2, 0.1]])
    for step in (1, 7, 100, 199):
        ab_prev, a = float(d.alpha_bar[step - 1]), float(d.alphas[step])
        m1, v1 = math.sqrt(ab_prev) * x0, 1 - ab_prev              # x_{t-1} | x_0
        var_t = a * v1 + (1 - a)                                  # x_t = sqrt(a) x_{t-1} + sqrt(1 - a) e
        mean = m1 + math.sqrt(a) * v1 / var_t * (xt - math.sqrt(a) * m1)
        var = v1 - a * v1 ** 2 / var_t
        got_mean, got_var = d.q_posterior(x0, xt, torch.tensor([step]))
        assert torch.allclose(got_mean, mean, atol=1e-6)
        assert float(got_var) == pytest.approx(var, rel=1e-6)
    # the first step is deterministic: q(x_{-1} | x_0, x_0) puts everything on x_0
    m, v = d.q_posterior(x0, xt, torch.tensor([0]))
    assert torch.allclose(m, x0) and float(v) == 0
    # the unclipped reverse mean is the chapter's (x_t - beta / sqrt(1 - ab) eps) / sqrt(alpha)
    eps = torch.tensor([[0.5, -1.5]])
    for step in (3, 150):
        mean, var = d.p_mean_variance(eps, xt, torch.tensor([step]), "beta", clip=False)
        b, ab = float(d.betas[step]), float(d.alpha_bar[step])
        assert torch.allclose(mean, (xt - b / math.sqrt(1 - ab) * eps) / math.sqrt(1 - b), atol=1e-5)
        assert float(var) == pytest.approx(b)


def test_respaced_process_keeps_alpha_bar():
    d = GaussianDiffusion.cosine(100)
    keep = strided_timesteps(100, 10)
    assert keep[0] == 0 and keep[-1] == 99 and len(keep) == 10
    r = d.respace(keep)
    assert torch.allclose(r.alpha_bar, d.alpha_bar[keep]) and torch.equal(r.timestep_map, keep)
    assert torch.equal(strided_timesteps(100, 1), torch.tensor([99]))
    assert len(strided_timesteps(100, 500)) == 100


# ------------------------------------------------------------------------------ the network
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (1, 30, 30), (2, 7, 9)])
def test_unet_output_shape_equals_input(shape):
    torch.manual_seed(0)
    net = UNet(shape[0], channels=8, channel_mult=(1, 2, 4))
    x = torch.randn(2, *shape)
    assert net(x, torch.tensor([0, 3999])).shape == x.shape


def test_attention_block_starts_as_the_identity_and_mixes_positions():
    from latentforge.models.ddpm import SelfAttention
    torch.manual_seed(0)
    att = SelfAttention(16, groups=8)
    x = torch.randn(2, 16, 7, 7)
    assert torch.equal(att(x), x)                                # zero-initialised projection
    nn.init.normal_(att.proj.weight, std=0.1)
    y = att(x)
    x2 = x.clone()
    x2[:, :, 0, 0] += 1.0                                        # one position moves every other one
    assert (att(x2) - y)[:, :, 6, 6].abs().max() > 0
    net = UNet(1, channels=8, channel_mult=(1, 2), attention=True)
    assert any(isinstance(m, SelfAttention) for m in net.mid)
    assert net(torch.randn(2, 1, 28, 28), torch.tensor([0, 9])).shape == (2, 1, 28, 28)


def test_min_snr_weighting():
    """Min-SNR-gamma: each sample's loss weighted by min(snr, gamma) / (snr + 1) for v (/ snr for eps)."""
    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8)
    for prediction in ("v", "eps"):
        m = build_model("ddpm", input_shape=[1, 8, 8], prediction=prediction, min_snr_gamma=5.0, **TINY).eval()
        nn.init.normal_(m.net.conv_out.weight, std=0.1)
        g = torch.Generator().manual_seed(m.config.seed)
        t = torch.randint(0, 50, (6,), generator=g)
        noise = torch.randn(6, 1, 8, 8, generator=g)
        x0 = x * 2 - 1
        with torch.no_grad():
            pred = m.net(m.diffusion.q_sample(x0, t, noise), t)
        target = noise if prediction == "eps" else m.diffusion.v_target(x0, t, noise)
        ab = m.diffusion.alpha_bar[t].float()
        snr = ab / (1 - ab)
        w = snr.clamp(max=5.0) / (snr + 1 if prediction == "v" else snr)
        want = ((pred - target).square().reshape(6, -1).mean(1) * w).mean()
        assert torch.allclose(m(x).loss, want, rtol=1e-5)
        assert (w <= 1 + 1e-6).all() and (prediction == "eps" or w.max() < 1)


def test_time_embedding_distinguishes_steps():
    t = torch.arange(4000)
    e = timestep_embedding(t, 16)
    assert e.shape == (4000, 16)
    assert (e[1:] - e[:-1]).norm(dim=1).min() > 1e-3           # neighbours differ
    assert torch.cdist(e[::37], e[::37]).add(torch.eye(len(e[::37])) * 9).min() > 1e-3
    torch.manual_seed(0)
    net = UNet(1, channels=8, channel_mult=(1, 2))
    nn.init.normal_(net.conv_out.weight, std=0.1)                 # zero-initialised: make the output show t
    x = torch.randn(1, 1, 8, 8).expand(3, 1, 8, 8)
    out = net(x, torch.tensor([0, 1, 2000]))
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])


def test_model_needs_images_and_unit_interval():
    with pytest.raises(DataError, match=r"\(C, H, W\)"):
        build_model("ddpm", input_shape=[64])
    m = build_model("ddpm", input_shape=[8, 8], **TINY)          # (H, W) means one channel
    assert m.input_shape == (1, 8, 8)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        m.check_data(np.full((2, 1, 8, 8), 2.0, np.float32))
    with pytest.raises(ConfigError, match="sampler"):
        make_config(DDPMConfig, {"sampler": "euler"})
    with pytest.raises(ConfigError, match="loss"):
        make_config(DDPMConfig, {"loss": "bce"})
    with pytest.raises(ConfigError, match="prediction"):
        make_config(DDPMConfig, {"prediction": "x0"})
    cfg = make_config(DDPMConfig, {})                            # the CPU-sized defaults (issue 17)
    assert (cfg.steps, cfg.loss, cfg.prediction, cfg.optimizer, cfg.batch_size) == (1000, "mse", "v", "adam", 64)
    assert (cfg.sampler, cfg.sample_steps, cfg.lr_schedule, cfg.guidance, cfg.guide_after) == ("ddim", 25, "cosine", 3.0, 0.3)
    chapter = make_config(DDPMConfig, {"steps": 4000, "loss": "huber", "prediction": "eps"})   # still reachable
    assert (chapter.steps, chapter.loss, chapter.prediction) == (4000, "huber", "eps")


# ------------------------------------------------------------------------------ the pipeline
@pytest.mark.parametrize("loss,prediction", [("huber", "eps"), ("mse", "eps"), ("mse", "v"), ("huber", "v")])
def test_loss_is_noise_or_velocity_prediction_on_scaled_data(loss, prediction):
    torch.manual_seed(0)
    m = build_model("ddpm", input_shape=[1, 8, 8], loss=loss, prediction=prediction, **TINY)
    x = torch.rand(6, 1, 8, 8)
    m.eval()                                 # eval: (t, noise) from a generator seeded with config.seed
    out = m(x)
    assert set(out.parts) == {loss} and torch.equal(out.parts[loss], out.loss)
    g = torch.Generator().manual_seed(m.config.seed)
    t = torch.randint(0, 50, (6,), generator=g)
    noise = torch.randn(6, 1, 8, 8, generator=g)
    xt = m.diffusion.q_sample(x * 2 - 1, t, noise)
    with torch.no_grad():
        pred = m.net(xt, t)
    fn = F.huber_loss if loss == "huber" else F.mse_loss
    ab = m.diffusion.alpha_bar[t].float().view(6, 1, 1, 1)
    target = noise if prediction == "eps" else ab.sqrt() * noise - (1 - ab).sqrt() * (x * 2 - 1)
    assert torch.allclose(out.loss, fn(pred, target))
    # the noise a velocity implies: eps = sqrt(ab) v + sqrt(1 - ab) x_t, exact for the true v
    v = ab.sqrt() * noise - (1 - ab).sqrt() * (x * 2 - 1)
    assert torch.allclose(m.diffusion.eps_from_v(xt, t, v), noise, atol=1e-5)
    assert torch.equal(m(x).loss, out.loss)                      # the validation loss is reproducible
    assert torch.equal(m(x.reshape(6, 64)).loss, out.loss)       # flat samples of the right size work


def test_tiny_training_lowers_the_loss():
    torch.manual_seed(0)
    base = torch.rand(4, 1, 8, 8)
    x = (base[torch.arange(64) % 4] + 0.05 * torch.randn(64, 1, 8, 8)).clamp(0, 1)
    m = build_model("ddpm", input_shape=[1, 8, 8], **{**TINY, "epochs": 16, "batch_size": 16})
    tr = Trainer(m, m.config, progress=False, log=lambda s: None)
    before = tr.evaluate(x)["loss"]
    hist = tr.fit(x)
    assert tr.evaluate(x)["loss"] < 0.8 * before
    assert {"train_loss", "train_mse"} <= set(hist[-1])


@pytest.mark.parametrize("sampler,steps,calls", [("ancestral", 0, 50), ("ancestral", 10, 10), ("ddim", 7, 7)])
def test_sampling_shape_range_and_schedule(sampler, steps, calls):
    torch.manual_seed(0)
    m = build_model("ddpm", input_shape=[1, 8, 8], **{**TINY, "ema": 0.0})    # sample with m.net itself
    nn.init.normal_(m.net.conv_out.weight, std=0.1)
    m.net = wrapped = _Wrap(m.net)                              # records the steps the network is asked
    x = m.sample(5, generator=torch.Generator().manual_seed(0), sample_steps=steps, sampler=sampler)
    assert x.shape == (5, 1, 8, 8) and x.min() >= 0 and x.max() <= 1 and m.training
    assert len(wrapped.steps) == calls
    assert int(wrapped.steps[0][0]) == 49 and int(wrapped.steps[-1][0]) == 0   # from the noisiest step down to 0
    again = m.sample(5, generator=torch.Generator().manual_seed(0), sample_steps=steps, sampler=sampler)
    assert torch.equal(x, again)                                # same seed, same samples
    assert m.sample(0).shape == (0, 1, 8, 8)


class _Wrap(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.inner, self.steps = net, []

    def forward(self, x, t):
        self.steps.append(t.clone())
        return self.inner(x, t)


def test_sample_refuses_truncation_and_labels():
    m = build_model("ddpm", input_shape=[1, 8, 8], **TINY)
    with pytest.raises(ConfigError, match="truncation"):
        m.sample(2, truncation=0.5)
    with pytest.raises(ConfigError, match="unconditional"):
        m.sample(2, labels=torch.zeros(2, dtype=torch.long))


# ------------------------------------------------------------------------------ oracle samplers
class _OracleImage(nn.Module):
    """The exact noise of x_t when the data is one fixed image x0: (x_t - sqrt(ab) x0) / sqrt(1 - ab),
    or (``prediction`` v) its velocity sqrt(ab) eps - sqrt(1 - ab) x0."""

    def __init__(self, x0, diffusion, prediction="eps"):
        super().__init__()
        self.x0, self.d, self.prediction = x0, diffusion, prediction

    def forward(self, xt, t):
        x0 = self.x0.expand_as(xt)
        eps = self.d.predict_eps(xt, t, x0)
        return eps if self.prediction == "eps" else self.d.v_target(x0, t, eps)


@pytest.mark.parametrize("sampler,steps,variance,prediction", [
    ("ancestral", 0, "beta", "eps"), ("ancestral", 0, "posterior", "eps"), ("ancestral", 40, "beta", "eps"),
    ("ddim", 25, "beta", "eps"), ("ddim", 25, "beta", "v"), ("ancestral", 40, "beta", "v")])
def test_oracle_sampler_reproduces_a_single_image(sampler, steps, variance, prediction):
    torch.manual_seed(0)
    m = build_model("ddpm", input_shape=[1, 8, 8], **{**TINY, "steps": 400, "variance": variance, "ema": 0.0,
                                                      "prediction": prediction})
    image = torch.rand(1, 1, 8, 8)
    m.net = _OracleImage(image * 2 - 1, m.diffusion, prediction)
    out = m.sample(6, generator=torch.Generator().manual_seed(1), sample_steps=steps, sampler=sampler)
    assert torch.allclose(out, image.expand(6, 1, 8, 8), atol=1e-4)


@pytest.mark.parametrize("sampler,steps,variance,lo,hi", [
    ("ancestral", 0, "beta", 0.97, 1.03), ("ancestral", 0, "posterior", 0.96, 1.03),   # the full chain: exact
    ("ancestral", 100, "beta", 0.98, 1.06), ("ddim", 100, "beta", 0.93, 1.02),
    ("ancestral", 100, "posterior", 0.88, 0.98),    # strided, the small variance loses spread (~6 %)
])
def test_oracle_sampler_reproduces_a_gaussian(sampler, steps, variance, lo, hi):
    """Data N(mu, s² I): the exact E[eps | x_t] = sqrt(1-ab) (x_t - sqrt(ab) mu) / (ab s² + 1 - ab), so
    the reverse process must give back samples with mean mu and a std near s."""
    d = GaussianDiffusion.cosine(400)
    mu = torch.tensor([-0.5, 0.0, 0.3, 0.6])
    s = 0.25

    def eps_fn(xt, t):
        ab = d.alpha_bar[t].float()[:, None]
        return (1 - ab).sqrt() * (xt - ab.sqrt() * mu) / (ab * s * s + 1 - ab)

    x = d.sample(eps_fn, (8000, 4), generator=torch.Generator().manual_seed(0), sampler=sampler,
                 sample_steps=steps, variance=variance, clip=False)
    np.testing.assert_allclose(x.mean(0).numpy(), mu.numpy(), atol=0.015)
    ratio = float(x.std(0).mean()) / s
    assert lo < ratio < hi


# ------------------------------------------------------------------------------ runs and CLI
def test_resume_is_exact(tmp_path, tiny_images):
    """Extending a run (2 epochs, then --resume to 3) under a constant lr; the default cosine lr is
    a function of ``epochs`` (extending it changes the schedule), so there: an interrupted run."""
    cfg = {**TINY, "sample_steps": 3, "lr_schedule": "constant"}
    straight = train("ddpm", tiny_images, out=tmp_path / "s", overrides={**cfg, "epochs": 3}, log=lambda m: None)
    train("ddpm", tiny_images, out=tmp_path / "r", overrides={**cfg, "epochs": 2}, log=lambda m: None)
    resumed = train("ddpm", tiny_images, out=tmp_path / "r", overrides={"epochs": 3}, resume=True, log=lambda m: None)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resume differs"
    assert straight.history[-1]["valid_loss"] == resumed.history[-1]["valid_loss"]

    def stop_after_two(trainer, record):           # Ctrl-C during epoch 2's end: its checkpoint is epoch 1's
        if record["epoch"] == 2:
            raise KeyboardInterrupt
    cos = {**TINY, "sample_steps": 3, "epochs": 3}
    straight = train("ddpm", tiny_images, out=tmp_path / "cs", overrides=cos, log=lambda m: None)
    with pytest.raises(Interrupted):
        train("ddpm", tiny_images, out=tmp_path / "cr", overrides=cos, log=lambda m: None, callbacks=[stop_after_two])
    resumed = train("ddpm", tiny_images, out=tmp_path / "cr", resume=True, log=lambda m: None)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert straight.model.config.lr_schedule == "cosine" and all(torch.equal(a[k], b[k]) for k in a), "resume differs"
    run = load_run(tmp_path / "r")
    x = run.model.sample(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 8, 8)


def test_cli_train_generate_and_plot(tmp_path, run_cli, tiny_images):
    p = tmp_path / "tiny.npz"
    np.savez(p, x=tiny_images.x[:, 0])
    out = tmp_path / "run"
    code, _, err = run_cli("train", "ddpm", "--data", p, "--epochs", "2", "--out", out, "--batch-size", "8",
                           "--set", "steps=50", "--set", "channels=8", "--set", "channel_mult=1,2",
                           "--set", "sample_steps=10")
    assert code == 0, err
    code, stdout, err = run_cli("generate", out, "-n", "4", "--out", tmp_path / "s.npy", "--grid", tmp_path / "g.png")
    assert code == 0, err
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (4, 8, 8) and s.min() >= 0 and s.max() <= 1 and (tmp_path / "g.png").exists()
    code, _, err = run_cli("plot", "samples", out, "--out", tmp_path / "p.png", "-n", "4")
    assert code == 0 and (tmp_path / "p.png").exists(), err
    code, _, err = run_cli("generate", out, "-n", "2", "--out", tmp_path / "t.npy", "--truncation", "0.7")
    assert code != 0 and "truncation" in err
    # the guide (taken after epoch 1 of 2) steers sampling; --guidance 1 samples with the network alone
    code, _, err = run_cli("generate", out, "-n", "4", "--out", tmp_path / "u.npy", "--guidance", "1")
    assert code == 0, err
    unguided = np.load(tmp_path / "u.npy")
    assert unguided.shape == s.shape and not np.allclose(unguided, s)
    code, _, err = run_cli("generate", out, "-n", "4", "--out", tmp_path / "w.npy", "--guidance", "3")
    assert code == 0 and np.array_equal(np.load(tmp_path / "w.npy"), s), err     # 3: the run's own
    code, _, err = run_cli("generate", out, "-n", "2", "--out", tmp_path / "v.npy", "--guidance", "-1")
    assert code == 2 and "guidance" in err


def test_ema_weights_follow_the_network_and_are_what_sample_uses():
    torch.manual_seed(0)
    m = build_model("ddpm", input_shape=[1, 8, 8], **{**TINY, "ema": 0.9})
    assert m.sampling_net is m.net_ema and not any(p.requires_grad for p in m.net_ema.parameters())
    opt = torch.optim.SGD(m.net.parameters(), lr=0.5)
    x = torch.rand(8, 1, 8, 8)
    before = [p.clone() for p in m.net_ema.parameters()]
    for _ in range(3):
        loss = m(x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert int(m.ema_updates) == 3                                   # one update per training forward
    m.eval()
    m(x)                                                             # a validation pass leaves it alone
    assert int(m.ema_updates) == 3
    moved = [(e - b).abs().max() for e, b in zip(m.net_ema.parameters(), before)]
    lag = [(e - p).abs().max() for e, p in zip(m.net_ema.parameters(), m.net.parameters())]
    assert max(moved) > 0 and max(lag) > 0                            # between the start and the live weights
    # the legacy default: runs saved before the field existed had no EMA
    from latentforge.train.run import with_legacy_defaults
    assert with_legacy_defaults(type(m), {"steps": 50})["ema"] == 0.0
    assert not hasattr(build_model("ddpm", input_shape=[1, 8, 8], **{**TINY, "ema": 0.0}), "net_ema")


def test_a_run_saved_with_the_earlier_defaults_loads_and_resumes_with_them(tmp_path, tiny_images):
    """Runs trained before issue 17's CPU-sized defaults saved every field of their config but
    ``prediction`` (added then) and, older still, ``ema``: they load with the values they were
    trained with (noise prediction, Huber, T = 4000, Nadam, batch 32, ancestral sampling), not
    with today's defaults, and resume with them."""
    import json

    from latentforge.io import CHECKPOINT_NAME
    from latentforge.train.checkpoint import load_checkpoint, save_checkpoint
    from latentforge.train.run import with_legacy_defaults
    old = {"channels": 8, "channel_mult": [1, 2], "steps": 4000, "loss": "huber", "optimizer": "nadam", "lr": 1e-3,
           "lr_schedule": "constant", "batch_size": 32, "epochs": 1, "sampler": "ancestral", "sample_steps": 4,
           "ema": 0.0, "prediction": "eps", "guidance": 1.0, "sample_every": 0}
    run_dir = tmp_path / "old"
    before = train("ddpm", tiny_images, out=run_dir, overrides=old, log=lambda m: None)
    x_before = before.model.sample(4, generator=torch.Generator().manual_seed(0))
    path = run_dir / CHECKPOINT_NAME
    tensors, meta = load_checkpoint(path)
    meta = json.loads(json.dumps(meta))
    meta["config"] = {k: v for k, v in meta["config"].items()                                  # as saved then
                      if k not in ("prediction", "ema", "guidance", "guide_after")}
    save_checkpoint(path, dict(tensors), {k: v for k, v in meta.items() if k != "format"})
    run = load_run(run_dir)
    c = run.model.config
    assert (c.prediction, c.ema, c.steps, c.loss, c.optimizer, c.batch_size, c.sampler, c.sample_steps, c.guidance) == \
        ("eps", 0.0, 4000, "huber", "nadam", 32, "ancestral", 4, 1.0)
    assert torch.equal(run.model.sample(4, generator=torch.Generator().manual_seed(0)), x_before)
    resumed = train("ddpm", tiny_images, out=run_dir, overrides={"epochs": 2}, resume=True, log=lambda m: None)
    assert resumed.model.config.prediction == "eps" and resumed.model.config.loss == "huber"
    assert len(resumed.history) == 2
    # a config missing any field whose default changed takes the value it had before
    legacy = with_legacy_defaults(type(before.model), {})
    assert (legacy["steps"], legacy["loss"], legacy["prediction"], legacy["sampler"], legacy["sample_steps"]) == \
        (4000, "huber", "eps", "ancestral", 100)


# ------------------------------------------------------------------------------ autoguidance
class _Const(nn.Module):
    """A "network" predicting a constant noise (prediction eps)."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x, t):
        return torch.full_like(x, self.value)


def test_guide_is_the_sampling_network_frozen_after_guide_after_of_the_epochs(tiny_images):
    m = build_model("ddpm", input_shape=[1, 8, 8], **{**TINY, "epochs": 10, "guide_after": 0.3})
    assert m.guide_epochs() == 3 and int(m.guide_epoch) == 0 and not any(p.requires_grad for p in m.net_guide.parameters())
    with torch.no_grad():
        m.net_ema.conv_out.bias.fill_(0.5)
    m.on_epoch_start(2)                                           # not yet
    assert int(m.guide_epoch) == 0 and float(m.net_guide.conv_out.bias[0]) == 0.0
    m.on_epoch_start(3)                                           # after 3 of the 10 epochs
    assert int(m.guide_epoch) == 3 and float(m.net_guide.conv_out.bias[0]) == 0.5
    with torch.no_grad():
        m.net_ema.conv_out.bias.fill_(0.7)
    m.on_epoch_start(4)
    assert float(m.net_guide.conv_out.bias[0]) == 0.5             # frozen from then on
    # in a real run: taken after epoch 1 of 3, then the sampling network trains on; saved and loaded with the run
    run = train("ddpm", tiny_images, overrides={**TINY, "epochs": 3, "guide_after": 0.34, "lr_schedule": "constant"},
                log=lambda s: None)
    g, e = run.model.net_guide.state_dict(), run.model.net_ema.state_dict()
    assert int(run.model.guide_epoch) == 1 and any(not torch.equal(g[k], e[k]) for k in g)
    # a one-epoch run never takes it: sampling is unguided
    one = build_model("ddpm", input_shape=[1, 8, 8], **{**TINY, "epochs": 1})
    one.on_epoch_start(0)                                         # the only epoch a one-epoch run starts
    assert one.guide_epochs() == 1 and int(one.guide_epoch) == 0


@pytest.mark.parametrize("w", [0.0, 2.0, 3.5])
def test_autoguidance_extrapolates_from_the_guide(w):
    """eps_guide + w (eps - eps_guide): w = 1 the sampling network alone, 0 the guide alone."""
    m = build_model("ddpm", input_shape=[1, 8, 8], **{**TINY, "ema": 0.0, "prediction": "eps", "guidance": w})
    m.net, m.net_guide = _Const(0.3), _Const(0.1)
    x, t = torch.zeros(2, 1, 8, 8), torch.tensor([5, 9])
    assert torch.allclose(m.guided_predictor()(x, t), torch.full_like(x, 0.3))   # no guide taken yet: unguided
    m.guide_epoch.fill_(1)
    assert torch.allclose(m.guided_predictor()(x, t), torch.full_like(x, 0.1 + w * 0.2))
    assert torch.allclose(m.guided_predictor(1.0)(x, t), torch.full_like(x, 0.3))  # sample(guidance=1) overrides
    g = torch.Generator                                            # sampling follows the guided noise
    assert not torch.equal(m.sample(2, generator=g().manual_seed(0)), m.sample(2, generator=g().manual_seed(0), guidance=1.0))


def test_guidance_config_and_legacy_default():
    from latentforge.train.run import with_legacy_defaults
    with pytest.raises(ConfigError, match="guidance"):
        make_config(DDPMConfig, {"guidance": -1.0})
    with pytest.raises(ConfigError, match="guide_after"):
        make_config(DDPMConfig, {"guide_after": 1.5})
    m = build_model("ddpm", input_shape=[1, 8, 8], **{**TINY, "guidance": 1.0})
    assert not hasattr(m, "net_guide")                             # no guide: nothing extra saved
    with pytest.raises(ConfigError, match="no guide"):             # asked for, not there: said, not ignored
        m.sample(2, guidance=3.0)
    assert m.sample(2, guidance=1.0).shape == (2, 1, 8, 8)
    assert with_legacy_defaults(type(m), {"steps": 50})["guidance"] == 1.0     # runs saved before it: unguided
