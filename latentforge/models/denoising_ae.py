"""The chapter's denoising autoencoder: corrupt the inputs in training, reconstruct the clean ones.

SPEC 10 denoising-ae: dropout (rate 0.5, ``noise=dropout``, the default) or Gaussian noise (std 0.2,
        ``noise=gaussian``) on the inputs, in training mode only; the target is the clean input.
        ``arch=dense`` (default) is the stacked AE 784 -> 100 -> 30 -> 100 -> 784 (SELU, sigmoid out,
        BCE); ``arch=conv`` is the conv-ae (SPEC 8). Training: the chapter's SGD lr 1.0, batch 32,
        for 20 epochs (the chapter's denoising AEs train 10 on 55,000 images; see below).

Which setting does what the chapter says (reconstruct noisy inputs better than a plain AE of the
same size trained the same way). Measured on mnist-4k (3,600 train, the 400 others held out and
corrupted; MSE to the clean digits; the plain stacked AE with the same SGD lr 1.0, batch 32):

    epochs  plain AE on dropout-noisy  dropout DAE   plain AE on Gaussian-noisy  Gaussian DAE
      10            0.0364               0.0368               0.0321                0.0328
      20            0.0311               0.0298               0.0241                0.0247
      40            0.0295               0.0256               0.0198                0.0197

With Gaussian noise of std 0.2 the 30-unit bottleneck already removes the noise (the plain AE's
reconstructions of noisy digits are within 7 % of its clean ones), so the Gaussian DAE has
nothing to gain and is a little behind on every input. Dropout at 0.5, the corruption of the
chapter's figure (half the pixels off, inputs scaled by 2 as Keras' ``Dropout(0.5)(x,
training=True)``), is where the plain AE fails and the DAE fills the strokes in, once it has had
about 2,000 steps (10 epochs of 55,000 Fashion-MNIST images are 17,000): hence dropout and 20
epochs by default (``--set noise=gaussian``, ``--epochs 10`` restore the former defaults; runs
saved with them keep them, both are in their config).

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
    noise: str = "dropout"             # dropout | gaussian (dropout: the chapter's figure; see the module doc)
    noise_std: float = 0.2             # gaussian noise
    dropout_rate: float = 0.5          # dropout noise
    # the chapter's optimizer for its denoising AEs; 20 epochs (see the module doc)
    epochs: int = 20
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
