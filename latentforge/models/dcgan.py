"""Deep convolutional GANs: the chapter's DCGAN and its conditional version (the exercise).

SPEC 17 ``dcgan``: coding size 100; G: Dense (H/4)x(W/4)x128 -> reshape -> BatchNorm ->
ConvTranspose 64 (5x5, stride 2, same, SELU) -> BatchNorm -> ConvTranspose C (5x5, stride 2, same,
tanh); D: Conv 64 (5x5, stride 2, same, LeakyReLU 0.2) -> Dropout 0.4 -> Conv 128 (same) ->
Dropout 0.4 -> Flatten -> Dense 1 (sigmoid). Data rescaled to [-1, 1] inside the model; samples come
back in [0, 1]. Adapts to the data's size and channels (28x28 grey, 32x32 colour, any H, W divisible
by 4). RMSprop, batch 32, 50 epochs.

``conditional-gan``: the class label is embedded and fed to G (concatenated to z) and to D (as an
extra input channel), so ``generate --label K`` draws class K.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import check_positive
from ..errors import ConfigError, DataError
from .base import init_weight
from .gan import GAN, GANConfig, discriminator_head
from .capabilities import Capability


@dataclass
class DCGANConfig(GANConfig):
    coding_size: int = 100
    g_channels: int = 128            # channels after the first dense layer (then 64)
    d_channels: int = 64             # first conv's channels (then 128)
    kernel_size: int = 5
    dropout: float = 0.4
    leaky_slope: float = 0.2
    label_dim: int = 16              # conditional-gan: size of the label embedding fed to G
    n_classes: int = 10              # conditional-gan: number of classes

    def validate(self) -> None:
        super().validate()
        check_positive(self, "g_channels", "d_channels", "kernel_size", "label_dim", "n_classes")
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"config field 'kernel_size' = {self.kernel_size}: must be odd ('same' padding)")


def _conv_init(m: nn.Module) -> nn.Module:
    init_weight(m.weight, "glorot_uniform")
    nn.init.zeros_(m.bias)
    return m


class _Generator(nn.Module):
    def __init__(self, cfg: DCGANConfig, shape: tuple[int, int, int], conditional: bool):
        super().__init__()
        c, h, w = shape
        self.h4, self.w4, self.ch = h // 4, w // 4, cfg.g_channels
        k, p = cfg.kernel_size, cfg.kernel_size // 2
        self.embed = nn.Embedding(cfg.n_classes, cfg.label_dim) if conditional else None
        n_in = cfg.coding_size + (cfg.label_dim if conditional else 0)
        self.fc = nn.Linear(n_in, self.ch * self.h4 * self.w4)
        init_weight(self.fc.weight, "glorot_uniform")
        nn.init.zeros_(self.fc.bias)
        self.net = nn.Sequential(
            nn.BatchNorm2d(self.ch, momentum=0.01, eps=1e-3),                 # Keras' BatchNorm defaults
            _conv_init(nn.ConvTranspose2d(self.ch, self.ch // 2, k, 2, p, output_padding=1)), nn.SELU(),
            nn.BatchNorm2d(self.ch // 2, momentum=0.01, eps=1e-3),
            _conv_init(nn.ConvTranspose2d(self.ch // 2, c, k, 2, p, output_padding=1)), nn.Tanh())

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:    # (N, coding) -> (N, C, H, W)
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], 1)
        h = self.fc(z).view(-1, self.ch, self.h4, self.w4)                # (N, 128, H/4, W/4)
        return self.net(h)                                                # -> (N, 64, H/2, W/2) -> (N, C, H, W)


class _Discriminator(nn.Module):
    def __init__(self, cfg: DCGANConfig, shape: tuple[int, int, int], conditional: bool):
        super().__init__()
        c, h, w = shape
        k, p, ch = cfg.kernel_size, cfg.kernel_size // 2, cfg.d_channels
        self.shape = shape
        self.label_map = nn.Embedding(cfg.n_classes, h * w) if conditional else None
        self.net = nn.Sequential(
            _conv_init(nn.Conv2d(c + (1 if conditional else 0), ch, k, 2, p)), nn.LeakyReLU(cfg.leaky_slope),
            nn.Dropout(cfg.dropout),
            _conv_init(nn.Conv2d(ch, 2 * ch, k, 2, p)), nn.LeakyReLU(cfg.leaky_slope),
            nn.Dropout(cfg.dropout), nn.Flatten())
        n_feat = 2 * ch * (h // 4) * (w // 4)                             # two stride-2 convs
        self.head = discriminator_head(cfg, n_feat)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:    # (N, C, H, W) -> (N,) logits
        if self.label_map is not None:
            _, h, w = self.shape
            x = torch.cat([x, self.label_map(y).view(-1, 1, h, w)], 1)
        return self.head(self.net(x)).squeeze(1)


class DCGAN(GAN):
    """The chapter's DCGAN: strided (transposed) convolutions, BatchNorm in G, LeakyReLU in D."""

    name = "dcgan"
    config_class = DCGANConfig
    config: DCGANConfig
    g_range = "symmetric"
    accepts_flat = False

    def __init__(self, config: DCGANConfig):
        shape = tuple(config.input_shape or ())
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
            raise DataError(f"{self.name} needs images of shape (C, H, W) with H and W divisible by 4, "
                            f"got samples of shape {tuple(config.input_shape or ())}")
        config.input_shape = list(shape)
        super().__init__(config)

    def build_generator(self) -> nn.Module:
        return _Generator(self.config, self.input_shape, self.uses_labels)

    def build_discriminator(self) -> nn.Module:
        return _Discriminator(self.config, self.input_shape, self.uses_labels)


class ConditionalGAN(DCGAN):
    """DCGAN with the class label fed to G and D (the chapter's exercise): generate a chosen class."""

    name = "conditional-gan"
    capabilities = DCGAN.capabilities | Capability.CONDITIONAL

    def sample(self, n, labels=None, generator=None, truncation=None):
        if labels is not None and (int(labels.min()) < 0 or int(labels.max()) >= self.config.n_classes):
            raise ConfigError(f"--label must be in 0..{self.config.n_classes - 1}")
        return super().sample(n, labels, generator, truncation)
