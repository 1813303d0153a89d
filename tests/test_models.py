"""The contract every registered model follows, on tiny configs (one test, every model)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentforge.errors import DataError
from latentforge.models import REGISTRY, Autoencoder, ModelOutput, build_model, get_model_class
from latentforge.train import Trainer
from latentforge.train.checkpoint import load_checkpoint, load_module_state, save_checkpoint, split_prefix

# A tiny config per model; a model missing here fails test_every_model_has_a_tiny_config.
TINY: dict[str, dict] = {
    "linear-ae": dict(coding_size=2),
    "stacked-ae": dict(hidden_sizes=[16], coding_size=4),
    "tied-ae": dict(hidden_sizes=[16], coding_size=4),
    "conv-ae": dict(filters=[4, 8, 8]),
    "recurrent-ae": dict(hidden_size=8, coding_size=4),
    "denoising-ae": dict(hidden_sizes=[16], coding_size=4),
    "classifier": dict(hidden_sizes=[16], coding_size=4, n_classes=4),
    "sparse-ae": dict(hidden_sizes=[16], coding_size=12),
    "hashing-ae": dict(hidden_sizes=[16], coding_size=4),
    "vae": dict(hidden_sizes=[16, 8], coding_size=3),
    "conditional-vae": dict(hidden_sizes=[16, 8], coding_size=3, n_classes=2),
    "gan": dict(g_hidden_sizes=[16], d_hidden_sizes=[16], coding_size=4),
    "dcgan": dict(g_channels=8, d_channels=4, coding_size=4),
    "conditional-gan": dict(g_channels=8, d_channels=4, coding_size=4, n_classes=4),
    "ddpm": dict(channels=8, channel_mult=[1, 2], steps=50, sample_steps=5),
    "features": dict(conv_filters=[4, 8], feature_size=8, n_classes=4),
    "progan": dict(channels=[8, 4], coding_size=4),
    "stylegan": dict(channels=[4], coding_size=4, w_dim=4),
}
SHAPE = (1, 8, 8)


def test_every_model_has_a_tiny_config():
    assert sorted(TINY) == sorted(REGISTRY)


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *SHAPE), generator=g)


def _labels(model, n):
    """Labels for models trained on them (``uses_labels``), else None."""
    if not getattr(model, "uses_labels", False):
        return None
    return torch.arange(n) % getattr(model.config, "n_classes", 10)


def _label_kw(model, n):
    """``y=labels`` for encode / decode / reconstruct of conditional models, else nothing."""
    return {"y": _labels(model, n)} if getattr(model, "uses_labels", False) else {}


def _names(pred) -> list[str]:
    return sorted(n for n in REGISTRY if pred(get_model_class(n)))


ADVERSARIAL = _names(lambda c: getattr(c, "adversarial", False))
WITH_LOSS = _names(lambda c: not getattr(c, "adversarial", False))      # forward(x, y) -> .loss
ENCODERS = _names(lambda c: hasattr(c, "encode"))
GENERATIVE = _names(lambda c: hasattr(c, "sample"))


def _build(name):
    torch.manual_seed(0)
    return build_model(name, input_shape=list(SHAPE), **TINY[name])


@pytest.fixture(params=sorted(REGISTRY))
def model(request):
    return _build(request.param)


@pytest.fixture(params=WITH_LOSS)
def loss_model(request):
    return _build(request.param)


@pytest.fixture(params=ENCODERS)
def encoder_model(request):
    return _build(request.param)


def test_forward_returns_loss_and_parts(loss_model):
    model = loss_model
    x = _batch()
    model.prepare(x)
    out = model(x, _labels(model, len(x)))
    assert isinstance(out, ModelOutput)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.parts and all(p.ndim == 0 and torch.isfinite(p) for p in out.parts.values())
    out.loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:                       # frozen copies (e.g. DDPM's EMA weights) learn no gradient
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_encode_decode_shapes_and_range(encoder_model):
    model = encoder_model
    x = _batch()
    model.prepare(x)
    model.eval()
    with torch.no_grad():
        kw = _label_kw(model, len(x))
        z = model.encode(x, **kw)
        assert z.shape == (16, model.config.coding_size)
        rec = model.decode(z, **kw)
        assert rec.shape == x.shape
        assert torch.allclose(model.reconstruct(x, **kw), rec)
        if isinstance(model, Autoencoder) and model.needs_unit_interval:
            assert rec.min() >= 0 and rec.max() <= 1


def test_training_lowers_the_loss(loss_model):
    model = loss_model
    x = _batch(64)
    model.prepare(x)
    cfg = model.config
    cfg.epochs, cfg.batch_size = 15, 16
    if cfg.optimizer == "sgd":
        cfg.lr = min(cfg.lr, 0.5)
    y = _labels(model, len(x))
    tr = Trainer(model, cfg, progress=False, log=lambda m: None)
    before = tr.evaluate(x, y)["loss"]
    tr.fit(x, y=y)
    assert tr.evaluate(x, y)["loss"] < before


def test_save_load_same_outputs(model, tmp_path):
    x = _batch()
    model.prepare(x * 3 - 1)  # non-trivial normalisation buffers for linear outputs
    save_checkpoint(tmp_path / "c.safetensors", {f"model.{k}": v for k, v in model.state_dict().items()},
                    {"model": model.name})
    tensors, meta = load_checkpoint(tmp_path / "c.safetensors")
    other = get_model_class(meta["model"])(model.config)
    load_module_state(other, split_prefix(tensors, "model"), "c")
    model.eval(), other.eval()
    with torch.no_grad():
        if hasattr(model, "reconstruct"):
            kw = _label_kw(model, len(x))
            assert torch.equal(model.reconstruct(x, **kw), other.reconstruct(x, **kw))
        elif hasattr(model, "sample"):
            y = _labels(model, 4)
            a = model.sample(4, y, generator=torch.Generator().manual_seed(1))
            assert torch.equal(a, other.sample(4, y, generator=torch.Generator().manual_seed(1)))
        else:
            y = _labels(model, len(x))
            assert torch.equal(model(x, y).loss, other(x, y).loss)


@pytest.mark.parametrize("name", GENERATIVE)
def test_samples_are_images_in_unit_interval(name):
    model = _build(name)
    model.eval()
    with torch.no_grad():
        x = model.sample(5, _labels(model, 5), generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, *SHAPE) and x.min() >= 0 and x.max() <= 1


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_one_adversarial_step_trains_both_networks(name):
    from latentforge.train.adversarial import AdversarialTrainer
    model = _build(name)
    tr = AdversarialTrainer(model, model.config, progress=False, log=lambda m: None)
    g0 = [p.clone() for p in model.generator.parameters()]
    d0 = [p.clone() for p in model.discriminator.parameters()]
    out = tr.train_step(_batch(8), _labels(model, 8))
    assert torch.isfinite(out.loss) and {"d_loss", "g_loss"} <= set(out.parts)
    assert any(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters()))


def test_wrong_shape_is_refused(model):
    with pytest.raises(DataError, match=r"shape \(1, 7, 7\)"):
        model.check_data(np.zeros((2, 1, 7, 7), np.float32))
    flat = np.zeros((2, 64), np.float32)
    if model.accepts_flat:
        model.check_data(flat)      # the same size, flat, is fine for dense models
    else:
        with pytest.raises(DataError, match=r"shape \(64,\)"):
            model.check_data(flat)


def test_sigmoid_models_refuse_data_outside_unit_interval():
    m = build_model("stacked-ae", input_shape=[4], hidden_sizes=[3], coding_size=2)
    with pytest.raises(DataError, match=r"values lie in \[-2, 5\].*sigmoid"):
        m.check_data(np.array([[0, 1, -2, 5]], np.float32), "cloud.npy")
    lin = build_model("linear-ae", input_shape=[4])
    lin.check_data(np.array([[0, 1, -2, 5]], np.float32))


def test_lecun_normal_init_statistics():
    torch.manual_seed(0)
    m = build_model("stacked-ae", input_shape=[784], hidden_sizes=[1000], coding_size=30)
    w = m.enc[0].weight
    assert abs(w.std().item() - math.sqrt(1 / 784)) < 0.02 * math.sqrt(1 / 784) * 10
    assert w.abs().max().item() <= 2 * math.sqrt(1 / 784) / 0.8796 + 1e-6   # truncated at 2 std
    assert torch.all(m.enc[0].bias == 0)


def test_tied_ae_shares_kernels():
    t = build_model("tied-ae", input_shape=[784])
    s = build_model("stacked-ae", input_shape=[784])
    n_t = sum(p.numel() for p in t.parameters())
    n_s = sum(p.numel() for p in s.parameters())
    assert n_t <= 0.55 * n_s
    # the decoder's output layer really is the transposed first encoder kernel
    z = torch.randn(3, 100)
    assert torch.allclose(t._dec_layer(1, z), z @ t.enc[0].weight + t.dec_bias[1])


def test_linear_ae_output_in_input_units():
    x = torch.randn(200, 3) * 50 + 1000
    m = build_model("linear-ae", input_shape=[3], coding_size=3, epochs=30, batch_size=32, lr=1.0)
    m.prepare(x)
    Trainer(m, m.config, progress=False, log=lambda s: None).fit(x)
    with torch.no_grad():
        rec = m.reconstruct(x)
    # a full-rank linear AE reconstructs almost exactly, in the data's own units
    assert (rec - x).abs().mean() < 2.0


