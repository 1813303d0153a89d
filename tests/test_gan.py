"""The adversarial loop and its stabilisers, each checked against an independent computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from latentforge.config import make_config
from latentforge.errors import ConfigError, DataError
from latentforge.models import build_model
from latentforge.models.gan import DenseGANConfig, MinibatchDiscrimination, MinibatchStd
from latentforge.train import load_run, train
from latentforge.train.adversarial import (AdversarialTrainer, ReplayBuffer, d_loss_fn, g_loss_fn,
                                           gradient_penalty, r1_penalty)

TINY = {"g_hidden_sizes": [16], "d_hidden_sizes": [16], "coding_size": 4, "batch_size": 8, "sample_every": 0}


class LinearCritic(nn.Module):
    """D(x) = w.x + b: its input gradient is w everywhere, so the penalties have closed forms."""

    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, 1)

    def forward(self, x, y=None):
        return self.lin(x.reshape(len(x), -1)).squeeze(1)


def test_gradient_penalty_closed_form():
    torch.manual_seed(0)
    d = LinearCritic(12)
    real, fake = torch.rand(5, 3, 2, 2), torch.rand(5, 3, 2, 2)
    w_norm = d.lin.weight.norm().item()
    assert gradient_penalty(d, real, fake, None).item() == pytest.approx((w_norm - 1) ** 2, rel=1e-5)
    assert r1_penalty(d, real, None).item() == pytest.approx(0.5 * w_norm ** 2, rel=1e-5)


def test_gradient_penalty_matches_per_sample_autograd():
    torch.manual_seed(0)
    d = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 1))
    disc = lambda x, y=None: d(x).squeeze(1)   # noqa: E731
    real, fake = torch.rand(4, 6), torch.rand(4, 6)
    torch.manual_seed(1)
    gp = gradient_penalty(disc, real, fake, None)
    torch.manual_seed(1)                       # the same interpolation points
    eps = torch.rand(4, 1)
    norms = []
    for i in range(4):
        xi = (eps[i] * real[i] + (1 - eps[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        (g,) = torch.autograd.grad(disc(xi).sum(), xi)
        norms.append(g.norm().item())
    assert gp.item() == pytest.approx(float(np.mean([(n - 1) ** 2 for n in norms])), rel=1e-5)


def test_spectral_norm_largest_singular_value_is_one():
    torch.manual_seed(0)
    m = build_model("gan", input_shape=[1, 8, 8], spectral_norm=True, **TINY)
    x = torch.rand(8, 1, 8, 8)
    for _ in range(30):                        # power iterations run in training-mode forwards
        m.discriminator(x)
    m.eval()
    for layer in m.discriminator.layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach(), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.02)


def test_losses_against_hand_computed_values():
    s_real, s_fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sp = torch.nn.functional.softplus
    bce = ((sp(-s_real).sum() + sp(s_fake).sum()) / 4).item()
    assert d_loss_fn("bce", s_real, s_fake).item() == pytest.approx(bce, rel=1e-6)
    smooth = (-(0.9 * torch.log(torch.sigmoid(s_real)) + 0.1 * torch.log(1 - torch.sigmoid(s_real)))).sum()
    assert d_loss_fn("bce", s_real, s_fake, 0.1).item() == pytest.approx(((smooth + sp(s_fake).sum()) / 4).item(), rel=1e-5)
    assert d_loss_fn("hinge", s_real, s_fake).item() == pytest.approx(((0 + 2) / 2 + (1.5 + 0) / 2), rel=1e-6)
    assert d_loss_fn("wgan-gp", s_real, s_fake).item() == pytest.approx(-1.25 - 0.5, rel=1e-6)
    assert d_loss_fn("lsgan", s_real, s_fake, sigmoid=False).item() == pytest.approx(0.5 * ((1 + 4) / 2 + (0.25 + 9) / 2))
    assert g_loss_fn("bce", s_fake).item() == pytest.approx(sp(-s_fake).mean().item(), rel=1e-6)
    assert g_loss_fn("hinge", s_fake).item() == pytest.approx(1.25)


def test_minibatch_layers():
    torch.manual_seed(0)
    mbd = MinibatchDiscrimination(6, n_kernels=3, kernel_dim=2)
    same = torch.ones(4, 6)
    out = mbd(same)
    assert out.shape == (4, 9) and torch.allclose(out[:, 6:], torch.full((4, 3), 3.0))   # N-1 identical others
    h = torch.randn(4, 6)
    m = (h @ mbd.T).detach().view(4, 3, 2)
    expected = torch.tensor([[sum(float(torch.exp(-(m[i, b] - m[j, b]).abs().sum())) for j in range(4) if j != i)
                              for b in range(3)] for i in range(4)])
    assert torch.allclose(mbd(h)[:, 6:], expected, atol=1e-5)
    std = MinibatchStd()
    assert torch.allclose(std(same)[:, -1], torch.full((4,), 1e-4), atol=1e-6)           # sqrt(0 + 1e-8)
    img = torch.randn(5, 2, 3, 3)
    assert std(img).shape == (5, 3, 3, 3)


def test_replay_buffer_mixes_and_holds_its_size():
    torch.manual_seed(0)
    buf = ReplayBuffer(size=10, ratio=0.5)
    first = torch.zeros(8, 2)
    assert torch.equal(buf.mix(first), first) and buf.count == 8        # empty buffer: nothing replaced
    new = torch.ones(8, 2)
    mixed = buf.mix(new)
    assert int((mixed[:, 0] == 0).sum()) == 4                           # half from the (all-zero) past
    assert buf.count == 10 and buf.buffer.shape == (10, 2)


@pytest.mark.parametrize("values,needle", [
    ({"loss": "wgan-gp"}, "unbounded critic"),
    ({"loss": "hinge"}, "d_output=linear"),
    ({"label_smoothing": 0.6}, "label_smoothing"),
    ({"loss": "hinge", "d_output": "linear", "label_smoothing": 0.1}, "'bce' only"),
    ({"ema": 1.0}, "ema"),
    ({"early_stopping": 3}, "early_stopping"),
])
def test_bad_option_combinations(values, needle):
    with pytest.raises(ConfigError, match=needle):
        make_config(DenseGANConfig, values)


def test_ema_and_d_steps():
    torch.manual_seed(0)
    m = build_model("gan", input_shape=[1, 8, 8], ema=0.9, d_steps=2, **TINY)
    tr = AdversarialTrainer(m, m.config, progress=False, log=lambda s: None)
    before_ema = {k: v.clone() for k, v in m.g_ema.state_dict().items()}
    tr.train_step(torch.rand(8, 1, 8, 8), None)
    for (k, e), g in zip(m.g_ema.state_dict().items(), m.generator.state_dict().values()):
        assert torch.allclose(e, 0.9 * before_ema[k] + 0.1 * g, atol=1e-6), k
    opt_d, opt_g = tr.optimizers["optim_d"], tr.optimizers["optim_g"]
    step = lambda o: int(next(iter(o.state.values()))["step"])   # noqa: E731
    assert step(opt_d) == 2 and step(opt_g) == 1


@pytest.mark.parametrize("name,extra", [
    ("gan", {}),
    ("gan", {"loss": "wgan-gp", "d_output": "linear", "experience_replay": 32, "minibatch_discrimination": 4}),
    ("gan", {"loss": "hinge", "d_output": "linear", "spectral_norm": True, "ema": 0.99, "r1": 1.0}),
    ("gan", {"loss": "lsgan", "minibatch_std": True, "label_smoothing": 0.0}),
    ("dcgan", {"g_channels": 8, "d_channels": 4, "label_smoothing": 0.1}),
    ("conditional-gan", {"g_channels": 8, "d_channels": 4}),
])
def test_every_gan_trains_and_resumes_exactly(tmp_path, tiny_images, name, extra):
    cfg = {"coding_size": 4, "batch_size": 8, "sample_every": 1, **extra}
    if name == "gan":
        cfg.update(g_hidden_sizes=[16], d_hidden_sizes=[16])
    straight = train(name, tiny_images, out=tmp_path / "s", overrides={**cfg, "epochs": 3}, log=lambda m: None)
    train(name, tiny_images, out=tmp_path / "r", overrides={**cfg, "epochs": 2}, log=lambda m: None)
    resumed = train(name, tiny_images, out=tmp_path / "r", overrides={"epochs": 3}, resume=True, log=lambda m: None)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resume differs from the uninterrupted run"
    h = straight.history[-1]
    assert {"train_d_loss", "train_g_loss", "train_d_real", "train_d_fake"} <= set(h)
    assert sorted(p.name for p in (tmp_path / "s" / "samples").iterdir()) == [f"epoch_00{i}.png" for i in (1, 2, 3)]
    run = load_run(tmp_path / "s")
    labels = torch.arange(5) % 4 if run.model.uses_labels else None
    x = run.model.sample(5, labels, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 1, 8, 8) and x.min() >= 0 and x.max() <= 1


def test_dcgan_adapts_to_colour_and_refuses_bad_sizes():
    m = build_model("dcgan", input_shape=[3, 32, 32], g_channels=8, d_channels=4)
    assert m.sample(2).shape == (2, 3, 32, 32)
    with pytest.raises(DataError, match="divisible by 4"):
        build_model("dcgan", input_shape=[1, 30, 30])
    with pytest.raises(DataError, match=r"\(C, H, W\)"):
        build_model("dcgan", input_shape=[64])


def test_gan_refuses_data_outside_unit_interval():
    m = build_model("gan", input_shape=[4], **TINY)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        m.check_data(np.array([[0, 2, 0, 0]], np.float32))


def test_cli_gan_samples_and_conditional_label(tmp_path, run_cli, tiny_images):
    p = tmp_path / "tiny.npz"
    np.savez(p, x=tiny_images.x[:, 0], y=tiny_images.y)
    out = tmp_path / "cg"
    code, _, err = run_cli("train", "conditional-gan", "--data", p, "--epochs", "1", "--out", out,
                           "--set", "g_channels=8", "--set", "d_channels=4", "--set", "n_classes=4", "--batch-size", "8")
    assert code == 0, err
    code, _, err = run_cli("plot", "samples", out, "--out", tmp_path / "s.png", "--n", "8")
    assert code == 0 and (tmp_path / "s.png").exists(), err
    code, _, err = run_cli("plot", "samples", out, "--out", tmp_path / "s3.png", "--label", "3")
    assert code == 0, err
    code, _, err = run_cli("plot", "samples", out, "--out", tmp_path / "s9.png", "--label", "9")
    assert code == 2 and "out of range" in err and not (tmp_path / "s9.png").exists()
    code, _, err = run_cli("train", "gan", "--data", p, "--set", "loss=wgan-gp", "--out", tmp_path / "bad")
    assert code == 2 and "unbounded critic" in err and len(err.strip().splitlines()) == 1
