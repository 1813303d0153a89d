"""Faster CPU kernels for the chapter's DCGAN: the same functions, computed another way.

The DCGAN is built from PyTorch's own layers; for the exact classes of :data:`TYPES`, training
swaps the layers below in place for the length of a fit (:func:`swap_in`: the same parameters,
the same state dict, only the module's class changes; a subclass keeps PyTorch's layers):

* :class:`ImageConv2d` / :class:`ImageConvTranspose2d`: ``nn.Conv2d`` / ``nn.ConvTranspose2d``
  (same parameters, same state dict) for the layers that read or write the image itself, with one
  or a few channels (the DCGAN's first discriminator conv and last generator transposed conv).
  For these, oneDNN's direct kernels (PyTorch's default on CPU) run at
  2-5 GFLOP/s on a 2-core AVX2 VM; each pass here takes the faster of two kernels PyTorch
  already has: oneDNN for a convolution's forward pass (and so for a transposed convolution's
  input gradient, which is that convolution), PyTorch's im2col + GEMM kernels
  (``_slow_conv2d_*``, ``slow_conv_transpose2d``) for the rest: 1.6-3.4x faster per layer for
  the DCGAN (``bench/README.md``). Not for channels-last models (the conv AE): the layout copies
  cost more than the kernels save there.
* :class:`MaskDropout`: ``nn.Dropout`` whose keep mask comes, on CPU, from ``rand_like(x) >= p``
  instead of ``bernoulli_``: the same Bernoulli(1 - p) mask distribution and the same values
  (``x * (mask / (1 - p))``), drawn from the same global generator (so checkpoints resume exactly),
  a 3-4x cheaper mask on CPU (``bernoulli_`` draws each element serially in double precision).

``tests/test_convkernels.py`` compares every value and gradient with PyTorch's own layers.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.dcgan import DCGAN, ConditionalGAN

aten = torch.ops.aten


class _ImageConv2d(torch.autograd.Function):
    """conv2d: forward by oneDNN (``F.conv2d``), backward by im2col + GEMM."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None, stride: list[int], padding: list[int]) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.geom = (stride, padding, b is not None)
        return F.conv2d(x, w, b, stride, padding)                      # (N, C, H, W) -> (N, O, Ho, Wo)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, w = ctx.saved_tensors
        stride, padding, has_b = ctx.geom
        need = ctx.needs_input_grad
        gx, gw, gb = aten._slow_conv2d_backward(g.contiguous(), x.contiguous(), w.contiguous(), list(w.shape[2:]),
                                                stride, padding, [need[0], need[1], has_b and need[2]])
        return gx, gw, gb, None, None


class _ImageConvTranspose2d(torch.autograd.Function):
    """conv_transpose2d: forward and weight gradient by GEMM + col2im / im2col + GEMM; input
    gradient (the convolution with the same weight) by oneDNN."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None, stride: list[int], padding: list[int],
                output_padding: list[int]) -> Tensor:
        x, w = x.contiguous(), w.contiguous()
        ctx.save_for_backward(x, w)
        ctx.geom = (stride, padding, b is not None)
        return aten.slow_conv_transpose2d(x, w, list(w.shape[2:]), b, stride, padding, output_padding, [1, 1])

    @staticmethod
    def backward(ctx, g: Tensor):
        x, w = ctx.saved_tensors                                       # w: (C_in, C_out, kh, kw)
        stride, padding, has_b = ctx.geom
        need = ctx.needs_input_grad
        g = g.contiguous()
        gx = F.conv2d(g, w, None, stride, padding) if need[0] else None     # (N, C_out, Ho, Wo) -> (N, C_in, H, W)
        gw = (aten._slow_conv2d_backward(x, g, w, list(w.shape[2:]), stride, padding, [False, True, False])[1]
              if need[1] else None)
        gb = g.sum((0, 2, 3)) if has_b and need[2] else None
        return gx, gw, gb, None, None, None


def _plain(m: nn.Module, x: Tensor) -> bool:
    """Whether ``m`` runs PyTorch's own kernels: off CPU, not in float32 (autocast included), a
    configuration these functions do not cover (string padding, groups, dilation), or while
    ``torch.export`` / ``torch.compile`` trace it (``latentforge export``: the exported graph holds
    the standard convolution, which ONNX and TorchScript know)."""
    return (x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_autocast_enabled("cpu")
            or torch.compiler.is_compiling() or isinstance(m.padding, str) or m.groups != 1
            or m.dilation != (1, 1) or m.padding_mode != "zeros")


class ImageConv2d(nn.Conv2d):
    """``nn.Conv2d`` with the faster CPU kernels of the module docstring (for few input channels)."""

    def forward(self, x: Tensor) -> Tensor:
        if _plain(self, x):
            return super().forward(x)
        return _ImageConv2d.apply(x, self.weight, self.bias, list(self.stride), list(self.padding))


class ImageConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with the faster CPU kernels of the module docstring (for few output
    channels)."""

    def forward(self, x: Tensor, output_size=None) -> Tensor:
        if _plain(self, x) or output_size is not None:
            return super().forward(x, output_size)
        return _ImageConvTranspose2d.apply(x, self.weight, self.bias, list(self.stride), list(self.padding),
                                           list(self.output_padding))


class MaskDropout(nn.Dropout):
    """``nn.Dropout`` with the keep mask drawn as ``rand_like(x) >= p`` (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1 or x.device.type != "cpu":                     # CUDA's fused dropout kernel is fast
            return super().forward(x)
        mask = torch.rand_like(x).ge_(self.p).div_(1 - self.p)       # 1 / (1 - p) where kept, else 0
        return x.mul_(mask) if self.inplace else x * mask


#: the exact model classes whose layers :func:`swap_in` replaces
TYPES = (DCGAN, ConditionalGAN)
#: the image-side convolutions: at most this many image channels (grey, RGB, RGBA + a label map)
IMAGE_CHANNELS = 5


def _swaps(model: nn.Module) -> list[tuple[nn.Module, type]]:
    """The layers of ``model`` to swap and their faster class: the discriminator's convolutions
    that read the image, the generator's transposed convolutions that write it, the
    discriminator's dropout."""
    if type(model) not in TYPES:
        return []
    out: list[tuple[nn.Module, type]] = []
    for m in model.discriminator.modules():
        if type(m) is nn.Conv2d and m.in_channels <= IMAGE_CHANNELS:
            out.append((m, ImageConv2d))
        elif type(m) is nn.Dropout:
            out.append((m, MaskDropout))
    for m in model.generator.modules():
        if type(m) is nn.ConvTranspose2d and m.out_channels <= IMAGE_CHANNELS:
            out.append((m, ImageConvTranspose2d))
    return out


def swap_in(model: nn.Module) -> Callable[[], None]:
    """Give the layers of an exact :data:`TYPES` model the faster classes of this module (in
    place); returns the function that gives them back their own. Other models: nothing changes."""
    swaps = _swaps(model)
    done = [(m, type(m)) for m, _ in swaps]
    for m, fast in swaps:
        m.__class__ = fast

    def restore() -> None:
        for m, cls in done:
            m.__class__ = cls
    return restore
