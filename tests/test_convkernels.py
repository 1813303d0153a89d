"""The faster CPU conv kernels and dropout of ``latentforge.engine.kernels`` against PyTorch's own."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from latentforge.engine.kernels import ImageConv2d, ImageConvTranspose2d, MaskDropout


def _grads(layer, x, needs_x: bool, needs_w: bool, g=None):
    x = x.clone().requires_grad_(needs_x)
    layer.requires_grad_(needs_w)
    y = layer(x)
    g = torch.randn_like(y) if g is None else g
    ins = [t for t in (x, layer.weight, layer.bias) if t.requires_grad]
    return y, g, (torch.autograd.grad(y, ins, g) if ins else ())


def _close(a, b):
    scale = b.abs().max().clamp_min(1e-6)
    assert a.shape == b.shape and a.dtype == b.dtype
    assert ((a - b).abs().max() / scale) < 2e-5, float((a - b).abs().max() / scale)


CONV = [(1, 64, 5, 2, 2, 28), (2, 16, 3, 1, 1, 28), (3, 8, 5, 2, 2, 32), (1, 4, 3, 2, 0, 9)]
CONVT = [(64, 1, 5, 2, 2, 1, 14), (16, 1, 3, 2, 1, 1, 14), (32, 3, 3, 2, 0, 0, 3), (8, 2, 5, 2, 2, 1, 8)]


@pytest.mark.parametrize("cin,cout,k,s,p,hw", CONV)
@pytest.mark.parametrize("needs_x,needs_w", [(True, True), (False, True), (True, False)])
def test_image_conv2d_matches_conv2d(cin, cout, k, s, p, hw, needs_x, needs_w):
    torch.manual_seed(0)
    ref = nn.Conv2d(cin, cout, k, s, p)
    new = ImageConv2d(cin, cout, k, s, p)
    new.load_state_dict(ref.state_dict())
    x = torch.randn(5, cin, hw, hw)
    y0, g, r = _grads(ref, x, needs_x, needs_w)
    y1, _, n = _grads(new, x, needs_x, needs_w, g)
    _close(y1, y0)
    assert len(r) == len(n)
    for a, b in zip(n, r):
        _close(a, b)


@pytest.mark.parametrize("cin,cout,k,s,p,op,hw", CONVT)
@pytest.mark.parametrize("needs_x,needs_w", [(True, True), (False, True), (True, False)])
def test_image_conv_transpose2d_matches_conv_transpose2d(cin, cout, k, s, p, op, hw, needs_x, needs_w):
    torch.manual_seed(0)
    ref = nn.ConvTranspose2d(cin, cout, k, s, p, output_padding=op)
    new = ImageConvTranspose2d(cin, cout, k, s, p, output_padding=op)
    new.load_state_dict(ref.state_dict())
    x = torch.randn(5, cin, hw, hw)
    y0, g, r = _grads(ref, x, needs_x, needs_w)
    y1, _, n = _grads(new, x, needs_x, needs_w, g)
    _close(y1, y0)
    for a, b in zip(n, r):
        _close(a, b)
    with torch.no_grad():
        _close(new(x), y0)


def test_image_convs_fall_back_to_pytorch_outside_float32_cpu():
    """float64 (and autocast, string padding, groups) use nn.Conv2d's own path: gradcheck passes."""
    torch.manual_seed(0)
    conv = ImageConv2d(2, 3, 3, 2, 1).double()
    convt = ImageConvTranspose2d(3, 2, 3, 2, 1, output_padding=1).double()
    x = torch.randn(2, 2, 6, 6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: convt(conv(t)), (x,))
    same = ImageConv2d(1, 2, 3, padding="same")
    assert same(torch.randn(1, 1, 5, 5)).shape == (1, 2, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv.float()(torch.randn(2, 2, 6, 6)).dtype == torch.bfloat16


def test_mask_dropout_is_dropout_with_another_mask():
    torch.manual_seed(0)
    p = 0.4
    drop = MaskDropout(p)
    x = torch.rand(200_000) + 0.5                            # no zeros: kept values are recognisable
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.005  # Bernoulli(0.6): 5 sigma is 0.0055
    scale = torch.ones(()).div_(1 - p)                       # the value nn.Dropout's mask holds
    assert torch.equal(y[kept], x[kept] * scale)
    xr = x.clone().requires_grad_(True)
    torch.manual_seed(1)
    (g,) = torch.autograd.grad(drop(xr).sum(), xr)
    torch.manual_seed(1)                                      # the global generator: same seed, same mask
    again = drop(x)
    assert torch.equal(g != 0, again != 0) and torch.equal(g[g != 0], scale.expand(int((g != 0).sum())))
    drop.eval()
    assert drop(x) is x
    assert torch.equal(MaskDropout(0.0).train()(x), x) and not MaskDropout(1.0).train()(x).any()
    assert not nn.Dropout(1.0)(x).any()
    inplace = MaskDropout(p, inplace=True)
    z = x.clone()
    assert inplace(z) is z


def test_dcgan_step_equals_the_step_with_pytorchs_own_layers():
    """One adversarial step of the DCGAN (dropout 0: the masks are the one intended difference)
    with the kernels above swapped in by the engine and with the model's own nn.Conv2d /
    nn.ConvTranspose2d: the same updated weights. The swap lasts as long as it is wanted, and a
    subclass of the DCGAN keeps PyTorch's layers."""
    import copy

    from latentforge.engine import kernels as ck
    from latentforge.models import build_model
    from latentforge.models.dcgan import DCGAN
    from latentforge.train.adversarial import AdversarialTrainer

    torch.manual_seed(0)
    model = build_model("dcgan", input_shape=[1, 12, 12], coding_size=8, g_channels=16, d_channels=8,
                        dropout=0.0, batch_size=8, sample_every=0)
    plain = copy.deepcopy(model)
    restore = ck.swap_in(model)
    kinds = {type(m) for m in model.modules()}
    assert {ck.ImageConv2d, ck.ImageConvTranspose2d, ck.MaskDropout} <= kinds
    assert not {ck.ImageConv2d, ck.ImageConvTranspose2d, ck.MaskDropout} & {type(m) for m in plain.modules()}
    sub = type("MyDCGAN", (DCGAN,), {})(plain.config)
    ck.swap_in(sub)
    assert not {ck.ImageConv2d, ck.ImageConvTranspose2d, ck.MaskDropout} & {type(m) for m in sub.modules()}
    x = torch.rand(8, 1, 12, 12)
    for m in (model, plain):
        trainer = AdversarialTrainer(m, m.config, progress=False, log=lambda s: None)
        m.train()
        torch.manual_seed(1)
        for _ in range(2):
            trainer.train_step(x, None)
    a, b = model.state_dict(), plain.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), k
    restore()
    assert not {ck.ImageConv2d, ck.ImageConvTranspose2d, ck.MaskDropout} & {type(m) for m in model.modules()}
