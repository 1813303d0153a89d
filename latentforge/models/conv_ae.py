"""The chapter's convolutional autoencoder.

SPEC 8  conv-ae: encoder Conv 16/32/64 (3x3, same, SELU), each followed by a 2x2 max-pool
                 (28 -> 14 -> 7 -> 3: a 3x3x64 bottleneck); decoder ConvTranspose 32 (3x3, stride 2,
                 valid: 3 -> 7), 16 (stride 2, same: 7 -> 14), C (stride 2, same: 14 -> 28), sigmoid
                 out, BCE, SGD lr 1.0, batch 32, 5 epochs.

Any image size the pooling allows works, grey or colour: the encoder records the size after each
pool, and each transposed convolution (stride = the pool size) gets the padding / output_padding
that brings it back to exactly that size. A target of ``2n + 1`` from ``n`` is Keras' "valid"
(padding 0), a target of ``2n`` is Keras' "same" (PyTorch has no "same" for stride 2: padding 1
plus output_padding 1 gives the same size). So 28x28 reproduces the chapter's valid/same/same.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..config import check_positive
from ..errors import ConfigError, DataError
from .base import ACTIVATIONS, INITS, AEConfig, Autoencoder, activation, check_choice, init_weight


@dataclass
class ConvAEConfig(AEConfig):
    filters: list[int] = field(default_factory=lambda: [16, 32, 64])   # one conv + pool per entry
    kernel_size: int = 3
    pool_size: int = 2                 # max-pool size, and the decoder's stride
    activation: str = "selu"           # every conv / transposed conv but the output layer
    init: str = "glorot_uniform"       # the chapter's Keras layers keep Keras' default init
    # the chapter's defaults for training
    epochs: int = 5
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 1.0

    @property
    def coding_size(self) -> int | None:
        """Length of the flat code: filters[-1] x the bottleneck's height x width (576 for 28x28)."""
        if self.input_shape is None:
            return None
        _, sizes = conv_geometry(self.input_shape, self.filters, self.pool_size)
        h, w = sizes[-1]
        return self.filters[-1] * h * w

    def validate(self) -> None:
        super().validate()
        check_positive(self, "filters", "kernel_size")
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("init", self.init, INITS)
        if self.pool_size < 2:
            raise ConfigError(f"config field 'pool_size' = {self.pool_size!r}: must be >= 2")
        if self.kernel_size < self.pool_size:
            raise ConfigError(f"config field 'kernel_size' = {self.kernel_size!r}: must be >= pool_size "
                              f"= {self.pool_size} for the decoder to reach every image size")


def conv_geometry(input_shape, filters, pool_size: int) -> tuple[int, list[tuple[int, int]]]:
    """Channels of an image input shape and its (H, W) after each pool: [(H, W), (H1, W1), ...].

    (C, H, W) images; an (H, W) shape is one channel. DataError for tabular shapes and for images
    too small for the pooling.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise DataError(f"conv-ae needs images (C, H, W); got samples of shape {shape} "
                        f"(tabular data: use stacked-ae)")
    c, h, w = shape
    sizes = [(h, w)]
    for _ in filters:
        h, w = h // pool_size, w // pool_size
        if h == 0 or w == 0:
            raise DataError(f"images of {shape[1]}x{shape[2]} pixels are too small for {len(filters)} "
                            f"{pool_size}x{pool_size} max-pools (they pool to {h}x{w}); use larger images "
                            f"or fewer filters")
        sizes.append((h, w))
    return c, sizes


def transpose_padding(n: int, target: int, kernel: int, stride: int) -> tuple[int, int]:
    """(padding, output_padding) of a ConvTranspose2d taking size ``n`` to ``target``.

    Without padding the output is ``(n - 1) * stride + kernel``; padding p crops p on each side and
    output_padding adds back up to ``stride - 1`` at the end.
    """
    excess = (n - 1) * stride + kernel - target
    if excess >= 0:
        pad = (excess + 1) // 2
        return pad, 2 * pad - excess
    if -excess < stride:
        return 0, -excess
    raise ConfigError(f"kernel_size {kernel} with stride {stride} cannot grow {n} to {target}")


class ConvAE(Autoencoder):
    """Convolutional autoencoder: conv + max-pool encoder, strided transposed-conv decoder."""

    name = "conv-ae"
    config_class = ConvAEConfig
    config: ConvAEConfig

    def __init__(self, config: ConvAEConfig):
        super().__init__(config)
        k, s = config.kernel_size, config.pool_size
        c, sizes = conv_geometry(self.input_shape, config.filters, s)     # e.g. 1, [28, 14, 7, 3]
        self.image_shape = (c, *sizes[0])
        self.code_shape = (config.filters[-1], *sizes[-1])                # e.g. (64, 3, 3)
        self.act = activation(config.activation)
        self.pool = nn.MaxPool2d(s)                                       # floors, like Keras' "valid" pool
        chans = [c, *config.filters]                                      # e.g. [1, 16, 32, 64]
        same = k // 2 if k % 2 else "same"                                # "same" copies the input for even k
        self.enc = nn.ModuleList(nn.Conv2d(a, b, k, padding=same) for a, b in zip(chans[:-1], chans[1:]))
        # decoder layer j undoes pool L-1-j: channels 64 -> 32 -> 16 -> C, sizes 3 -> 7 -> 14 -> 28
        rev_chans, rev_sizes = chans[::-1], sizes[::-1]
        dec = []
        for j in range(len(config.filters)):
            (h, w), (th, tw) = rev_sizes[j], rev_sizes[j + 1]
            (ph, oh), (pw, ow) = transpose_padding(h, th, k, s), transpose_padding(w, tw, k, s)
            dec.append(nn.ConvTranspose2d(rev_chans[j], rev_chans[j + 1], k, stride=s,
                                          padding=(ph, pw), output_padding=(oh, ow)))
        self.dec = nn.ModuleList(dec)
        for layer in [*self.enc, *self.dec]:
            if config.init != "default":
                init_weight(layer.weight, config.init)
                nn.init.zeros_(layer.bias)
        # Speed (CPU, batch 32, measured 1.4x together): channels-last kernels, which oneDNN's
        # convolutions use without reordering, and for a monotone activation the max-pool first:
        # max(act(a), act(b)) = act(max(a, b)), so the activation runs on a quarter of the values.
        self.to(memory_format=torch.channels_last)
        self.pool_first = config.activation != "gelu"     # the one non-monotone activation

    @property
    def coding_size(self) -> int:
        return self.code_shape[0] * self.code_shape[1] * self.code_shape[2]

    def _encode(self, x: Tensor) -> Tensor:          # (N, C*H*W) -> (N, 64*3*3)
        h = x.reshape(len(x), *self.image_shape)     # (N, C, H, W)
        for conv in self.enc:                        # (N, 16, 14, 14) -> (N, 32, 7, 7) -> (N, 64, 3, 3)
            h = self.act(self.pool(conv(h))) if self.pool_first else self.pool(self.act(conv(h)))
        return h.flatten(1)

    def _decode_pre(self, z: Tensor) -> Tensor:      # (N, 64*3*3) -> (N, C*H*W) pre-activation
        h = z.reshape(len(z), *self.code_shape)
        n = len(self.dec)
        for j, deconv in enumerate(self.dec):
            h = deconv(h)                            # (N, 32, 7, 7) -> (N, 16, 14, 14) -> (N, C, 28, 28)
            if j < n - 1:
                h = self.act(h)
        return h.flatten(1)
