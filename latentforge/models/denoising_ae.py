"""The chapter's denoising autoencoder: corrupt the inputs in training, reconstruct the clean ones.

SPEC 10 denoising-ae: Gaussian noise (std 0.2, ``noise=gaussian``) or dropout (rate 0.5,
        ``noise=dropout``) on the inputs, in training mode only; the target is the clean input.
        ``arch=dense`` (default) is the stacked AE 784 -> 100 -> 30 -> 100 -> 784 (SELU, sigmoid out,
        BCE); ``arch=conv`` is the conv-ae (SPEC 8). Training defaults are the chapter's (2nd ed.)
        for its denoising AEs: SGD lr 1.0, batch 32, 10 epochs.

As in Keras, the noise layers act on the encoder's input only while training: ``GaussianNoise``
adds unclipped N(0, std^2) noise, ``Dropout`` zeroes each value with probability ``rate`` and scales
the kept ones by 1 / (1 - rate). In eval mode (``encode``/``reconstruct``, validation) the model is
deterministic and equals the underlying architecture.

The denoising model *is* a stacked-ae (or a conv-ae) with a ``corrupt`` hook: ``build_model`` /
``DenoisingAE(config)`` returns a subclass of both :class:`DenoisingAE` and the architecture, so its
weights have the same names as the plain model's (its encoder can be reused the same way).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import check_fraction, check_nonnegative
from ..errors import ConfigError
from .base import Autoencoder, check_choice
from .conv_ae import ConvAE, ConvAEConfig
from .dense_ae import StackedAE, StackedAEConfig

ARCHS = ("dense", "conv")
NOISES = ("gaussian", "dropout")


@dataclass
class DenoisingAEConfig(StackedAEConfig, ConvAEConfig):
    """The stacked-ae fields (``arch=dense``) and the conv-ae fields (``arch=conv``), plus the noise.

    Shared fields (``activation``, ``init``) serve either architecture; ``hidden_sizes`` and
    ``coding_size`` apply to ``arch=dense`` only (the conv code is filters[-1] x the pooled size).
    """

    arch: str = "dense"                # dense (stacked-ae) | conv (conv-ae)
    noise: str = "gaussian"            # gaussian | dropout
    noise_std: float = 0.2             # gaussian noise
    dropout_rate: float = 0.5          # dropout noise
    # the chapter's defaults for training its denoising AEs
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 1.0

    def validate(self) -> None:
        super().validate()
        check_choice("arch", self.arch, ARCHS)
        check_choice("noise", self.noise, NOISES)
        check_nonnegative(self, "noise_std")
        check_fraction(self, "dropout_rate")


class DenoisingAE(Autoencoder):
    """Denoising autoencoder: noisy inputs in training (Gaussian or dropout), clean targets."""

    name = "denoising-ae"
    config_class = DenoisingAEConfig
    config: DenoisingAEConfig

    def __new__(cls, config: DenoisingAEConfig | None = None, *args, **kwargs):
        # DenoisingAE(config) builds the architecture the config names (copies/unpickling pass no config)
        if cls is DenoisingAE and config is not None:
            arch = getattr(config, "arch", None)
            if arch not in _ARCH_CLASSES:
                raise ConfigError(f"config field 'arch' = {arch!r}: must be one of {', '.join(ARCHS)}")
            cls = _ARCH_CLASSES[arch]
        return super().__new__(cls)

    @property
    def coding_size(self) -> int:
        return self.config.coding_size if self.config.arch == "dense" else ConvAE.coding_size.fget(self)

    def corrupt(self, x: Tensor) -> Tensor:
        """The encoder's noisy input (training mode only; ``x`` is the flat internal input)."""
        if not self.training:
            return x
        cfg = self.config
        if cfg.noise == "gaussian":
            return x + torch.randn_like(x) * cfg.noise_std if cfg.noise_std > 0 else x
        return F.dropout(x, cfg.dropout_rate, training=True)


class DenseDenoisingAE(DenoisingAE, StackedAE):
    """Denoising stacked autoencoder (``arch=dense``)."""


class ConvDenoisingAE(DenoisingAE, ConvAE):
    """Denoising convolutional autoencoder (``arch=conv``)."""


_ARCH_CLASSES = {"dense": DenseDenoisingAE, "conv": ConvDenoisingAE}
