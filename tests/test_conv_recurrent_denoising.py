"""The convolutional (SPEC 8), recurrent (SPEC 9) and denoising (SPEC 10) autoencoders."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import mnist4k_path
from latentforge.errors import ConfigError, DataError
from latentforge.models import build_model
from latentforge.models.conv_ae import ConvAE
from latentforge.models.dense_ae import StackedAE
from latentforge.models.denoising_ae import DenoisingAE
from latentforge.train import Trainer


def _quiet_trainer(model):
    return Trainer(model, model.config, progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def digits():
    """MNIST-4k as a (4000, 1, 28, 28) tensor in [0, 1]."""
    from latentforge.data import load_data
    return torch.from_numpy(load_data(str(mnist4k_path())).x)


# ------------------------------------------------------------------------------------------ conv-ae
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 16, 16), (3, 8, 12), (2, 9, 13)])
def test_conv_ae_output_has_the_input_shape(shape):
    torch.manual_seed(0)
    m = build_model("conv-ae", input_shape=list(shape))
    x = torch.rand(4, *shape)
    out = m(x)
    assert out.recon.shape == (4, int(np.prod(shape))) and torch.isfinite(out.loss)
    m.eval()
    with torch.no_grad():
        z = m.encode(x)
        assert z.shape == (4, m.config.coding_size) == (4, m.coding_size)
        rec = m.decode(z)
    assert rec.shape == x.shape and rec.min() >= 0 and rec.max() <= 1
    with torch.no_grad():
        assert torch.equal(m.reconstruct(x.reshape(4, -1)), rec)      # flat samples of the right size too


def test_conv_ae_layers_are_the_chapters_for_28x28():
    m = build_model("conv-ae", input_shape=[1, 28, 28])
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in m.enc] == \
        [(1, 16, (3, 3)), (16, 32, (3, 3)), (32, 64, (3, 3))]
    assert m.code_shape == (64, 3, 3) and m.config.coding_size == 576
    assert [(d.in_channels, d.out_channels, d.stride) for d in m.dec] == [(64, 32, (2, 2)), (32, 16, (2, 2)), (16, 1, (2, 2))]
    # the first transposed conv is "valid" (3 -> 7), the next two "same" (7 -> 14 -> 28)
    assert m.dec[0].padding == (0, 0) and m.dec[0].output_padding == (0, 0)
    sizes, h = [], torch.zeros(2, 576).reshape(2, 64, 3, 3)
    for d in m.dec:
        h = d(h)
        sizes.append(tuple(h.shape[1:]))
    assert sizes == [(32, 7, 7), (16, 14, 14), (1, 28, 28)]
    enc_sizes, h = [], torch.zeros(2, 1, 28, 28)
    for c in m.enc:
        h = m.pool(m.act(c(h)))
        enc_sizes.append(tuple(h.shape[1:]))
    assert enc_sizes == [(16, 14, 14), (32, 7, 7), (64, 3, 3)]
    cfg = m.config
    assert (cfg.epochs, cfg.batch_size, cfg.optimizer, cfg.lr, cfg.loss) == (5, 32, "sgd", 1.0, "bce")


def test_conv_ae_refuses_bad_shapes():
    with pytest.raises(DataError, match=r"4x4 pixels are too small for 3 2x2 max-pools"):
        build_model("conv-ae", input_shape=[1, 4, 4])
    with pytest.raises(DataError, match=r"needs images \(C, H, W\); got samples of shape \(64,\)"):
        build_model("conv-ae", input_shape=[64])
    build_model("conv-ae", input_shape=[1, 4, 4], filters=[8, 8])        # fewer pools: fine
    with pytest.raises(ConfigError, match="kernel_size"):
        build_model("conv-ae", input_shape=[1, 28, 28], kernel_size=1)


def test_conv_ae_refuses_tabular_data_via_cli(tmp_path, run_cli):
    p = tmp_path / "tab.npy"
    np.save(p, np.random.default_rng(0).random((50, 12)).astype(np.float32))
    code, _, err = run_cli("train", "conv-ae", "--data", p, "--out", tmp_path / "r")
    assert code == 2 and "needs images" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_conv_ae_cli_train_and_reconstruct(tmp_path, run_cli, digits):
    data, out, rec = mnist4k_path(), tmp_path / "conv", tmp_path / "rec.npy"
    code, _, err = run_cli("train", "conv-ae", "--data", data, "--limit", "300", "--epochs", "1", "--out", out)
    assert code == 0, err
    few = tmp_path / "few.npy"                     # 64 of the digits as (N, 28, 28): quicker than all 4,000
    np.save(few, digits[:64, 0].numpy())
    code, _, err = run_cli("reconstruct", out, "--data", few, "--out", rec)
    assert code == 0, err
    r = np.load(rec)
    assert r.shape == (64, 28, 28) and r.min() >= 0 and r.max() <= 1


# ------------------------------------------------------------------------------------- recurrent-ae
def test_recurrent_ae_shapes():
    torch.manual_seed(0)
    m = build_model("recurrent-ae", input_shape=[1, 28, 28])
    assert (m.steps, m.features) == (28, 28)
    assert (m.enc1.hidden_size, m.enc2.hidden_size, m.dec1.hidden_size, m.out.out_features) == (100, 30, 100, 28)
    x = torch.rand(5, 1, 28, 28)
    m.eval()
    with torch.no_grad():
        z = m.encode(x)
        assert z.shape == (5, 30) and z.abs().max() <= 1          # an LSTM's last hidden state
        assert m.decode(z).shape == x.shape
    # colour images: H steps of W*C values, reassembled in the input's layout
    c = build_model("recurrent-ae", input_shape=[3, 8, 12], hidden_size=8, coding_size=4)
    xc = torch.rand(2, 3, 8, 12)
    seq = c._to_sequence(xc.reshape(2, -1))
    assert seq.shape == (2, 8, 36) and torch.equal(seq[:, 5, :3], xc[:, :, 5, 0])
    assert torch.equal(c._from_sequence(seq), xc.reshape(2, -1))
    assert c.reconstruct(xc).shape == xc.shape
    s = build_model("recurrent-ae", input_shape=[10, 6], hidden_size=8, coding_size=4)   # (T, F) sequences
    assert s.reconstruct(torch.rand(2, 10, 6)).shape == (2, 10, 6)
    with pytest.raises(DataError, match="recurrent-ae reads each sample as a sequence"):
        build_model("recurrent-ae", input_shape=[64])


def test_recurrent_ae_learns_digits(digits):
    torch.manual_seed(0)
    x = digits[:384]
    m = build_model("recurrent-ae", input_shape=[1, 28, 28], epochs=3)
    tr = _quiet_trainer(m)
    before = tr.evaluate(x)["loss"]
    tr.fit(x)
    after = tr.evaluate(x)["loss"]
    assert after < before - 0.3, (before, after)


# -------------------------------------------------------------------------------------- denoising-ae
def test_denoising_ae_defaults_and_architectures():
    d = build_model("denoising-ae", input_shape=[1, 28, 28])
    cfg = d.config
    assert (cfg.arch, cfg.noise, cfg.noise_std, cfg.dropout_rate, cfg.epochs) == ("dense", "dropout", 0.2, 0.5, 20)
    assert (cfg.optimizer, cfg.lr, cfg.loss, cfg.hidden_sizes, cfg.coding_size) == ("sgd", 1.0, "bce", [100], 30)
    assert isinstance(d, DenoisingAE) and isinstance(d, StackedAE) and d.name == "denoising-ae"
    s = build_model("stacked-ae", input_shape=[1, 28, 28])
    assert d.state_dict().keys() == s.state_dict().keys()                 # same weights as the plain model
    from latentforge.engine import select_step
    assert select_step(d, d.config) is None                               # the noise needs the autograd path
    c = build_model("denoising-ae", input_shape=[1, 28, 28], arch="conv", epochs=1)
    assert isinstance(c, ConvAE) and c.code_shape == (64, 3, 3) and c.coding_size == 576
    assert c.state_dict().keys() == build_model("conv-ae", input_shape=[1, 28, 28]).state_dict().keys()
    x = torch.rand(8, 1, 28, 28)
    out = c(x)
    out.loss.backward()
    assert out.recon.shape == (8, 784) and torch.isfinite(out.loss)
    assert c.reconstruct(x).shape == x.shape
    with pytest.raises(ConfigError, match="arch"):
        build_model("denoising-ae", input_shape=[1, 28, 28], arch="rnn")
    with pytest.raises(ConfigError, match="dropout_rate"):
        build_model("denoising-ae", input_shape=[1, 28, 28], dropout_rate=1.0)


@pytest.mark.parametrize("noise", ["gaussian", "dropout"])
def test_denoising_noise_only_in_training(noise):
    torch.manual_seed(0)
    m = build_model("denoising-ae", input_shape=[1, 8, 8], hidden_sizes=[16], coding_size=4, noise=noise)
    x = torch.rand(16, 1, 8, 8)
    m.eval()
    with torch.no_grad():
        a, b = m(x), m(x)
        assert torch.equal(a.recon, b.recon) and torch.equal(a.loss, b.loss)
        assert torch.equal(m.corrupt(x.reshape(16, -1)), x.reshape(16, -1))
    m.train()
    with torch.no_grad():
        a, b = m(x), m(x)
        assert not torch.equal(a.recon, b.recon)
        # the target is the clean input: the loss is that of the clean-input reconstruction error
        assert torch.allclose(a.loss, F.binary_cross_entropy_with_logits(a.recon, x.reshape(16, -1)))


def test_denoising_noise_statistics():
    torch.manual_seed(0)
    big = torch.full((1000, 1000), 0.5)
    g = build_model("denoising-ae", input_shape=[1, 8, 8], noise="gaussian", noise_std=0.2)
    noise = g.corrupt(big) - big
    assert abs(noise.mean().item()) < 1e-3 and abs(noise.std().item() - 0.2) < 1e-3
    d = build_model("denoising-ae", input_shape=[1, 8, 8], noise="dropout", dropout_rate=0.3)
    out = d.corrupt(big)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - 0.3) < 3e-3
    assert torch.allclose(out[out != 0], torch.tensor(0.5 / 0.7))       # kept values rescaled, as Keras
    d.eval()
    assert torch.equal(d.corrupt(big), big)


def test_denoising_ae_denoises_better_than_a_stacked_ae(digits):
    """The chapter's claim, in its setting: held-out digits with half their pixels dropped (the
    chapter's figure: ``Dropout(0.5)(x, training=True)``, kept pixels doubled) are reconstructed
    closer to the clean digits by the denoising AE (its defaults: dropout 0.5, 784-100-30-100-784,
    SGD lr 1.0, batch 32, 20 epochs) than by the plain stacked AE of the same size trained the same
    way. Measured with other seeds (0, 1): 4 % and 3.5 % lower MSE at 20 epochs, 13 % at 40 (table in
    ``models/denoising_ae.py``'s module doc); the noise costs it far less than the plain AE.
    """
    train, held = digits[:3600], digits[3600:]
    keep = torch.rand(held.shape, generator=torch.Generator().manual_seed(1)) > 0.5
    noisy = held * keep * 2.0
    mse = {}
    for name in ("stacked-ae", "denoising-ae"):
        torch.manual_seed(3)
        m = build_model(name, input_shape=[1, 28, 28], optimizer="sgd", lr=1.0, batch_size=32, epochs=20)
        assert (m.config.hidden_sizes, m.config.coding_size) == ([100], 30)
        _quiet_trainer(m).fit(train)
        m.eval()
        with torch.no_grad():
            mse[name] = (F.mse_loss(m.reconstruct(noisy), held).item(), F.mse_loss(m.reconstruct(held), held).item())
    (den_noisy, den_clean), (plain_noisy, plain_clean) = mse["denoising-ae"], mse["stacked-ae"]
    assert den_noisy < 0.985 * plain_noisy, mse
    assert den_noisy - den_clean < 0.7 * (plain_noisy - plain_clean), mse     # noise costs it less
