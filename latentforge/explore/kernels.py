"""Which CPU kernel the server's transposed convolutions use, chosen by measuring them once.

PyTorch computes ``nn.ConvTranspose2d`` on the CPU with oneDNN when it is available. For the small
layers of the chapter's conv AE decoder (64 -> 32 -> 16 -> 1 channels on 3x3 to 28x28 maps)
oneDNN's deconvolution is about 2x slower, on one thread, than PyTorch's own kernel
(``aten::slow_conv_transpose2d``, an im2col GEMM, the one PyTorch picks with oneDNN turned off),
while for wider layers (DCGAN's) it is the faster one. The switch
``torch.backends.mkldnn.flags`` is global to the process, so it cannot be set per layer or per
request; :func:`choose_transposed_conv_kernels` instead times both kernels on each layer's real
input (a probe batch through the model) and routes a layer to PyTorch's kernel only where that is
clearly faster (``min_gain``). Both kernels compute the same transposed convolution (they differ
by float rounding, ~1e-6 here), and a layer keeps its choice for the life of the process, so every
route of one server decodes alike.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def _native(layer: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.slow_conv_transpose2d(x, layer.weight, layer.kernel_size, layer.bias, layer.stride,
                                                layer.padding, layer.output_padding, layer.dilation)


def _eligible(layer: nn.Module) -> bool:
    """A plain transposed convolution PyTorch's own kernel computes exactly as the module does."""
    return (type(layer) is nn.ConvTranspose2d and layer.groups == 1 and layer.padding_mode == "zeros"
            and hasattr(torch.ops.aten, "slow_conv_transpose2d") and torch.backends.mkldnn.is_available()
            and layer.weight.device.type == "cpu" and layer.weight.dtype == torch.float32)


def _seconds(fn: Callable[..., Any], *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def choose_transposed_conv_kernels(model: nn.Module, probe: Callable[[], Any], *, min_gain: float = 1.3,
                                   reps: int = 5) -> list[str]:
    """Run ``probe()`` (a typical inference call of ``model``) once to record each transposed
    convolution's input, time oneDNN against PyTorch's own kernel on it (best of ``reps``, the two
    interleaved), and make the layers where PyTorch's kernel is at least ``min_gain`` times faster
    use it from now on. Returns the names of the layers switched."""
    layers = {name: m for name, m in model.named_modules() if _eligible(m)}
    if not layers:
        return []
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, args, name=name: inputs.setdefault(name, args[0]))
             for name, m in layers.items()]
    try:
        with torch.inference_mode():
            probe()
    finally:
        for h in hooks:
            h.remove()
    switched = []
    with torch.inference_mode():
        for name, layer in layers.items():
            x = inputs.get(name)
            if x is None:
                continue
            layer(x), _native(layer, x)                   # warm both (oneDNN builds its primitive)
            t_onednn = t_native = float("inf")
            for _ in range(reps):                         # interleaved: a busy spell hits both
                t_onednn = min(t_onednn, _seconds(layer, x))
                t_native = min(t_native, _seconds(_native, layer, x))
            if t_native * min_gain <= t_onednn:
                _use_native(layer)
                switched.append(name)
    return switched


def _use_native(layer: nn.ConvTranspose2d) -> None:
    """Make ``layer`` compute with PyTorch's own kernel (an explicit ``output_size`` still goes
    through the module's own forward, which works out the output padding for it)."""
    original = layer.forward

    def forward(x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is not None or x.dim() != 4:
            return original(x, output_size)
        return _native(layer, x)

    layer.forward = forward
