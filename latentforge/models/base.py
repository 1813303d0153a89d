"""The model contract every latentforge model follows, and the pieces autoencoders share.

Contract (pythae style): ``model(x, y=None)`` returns a :class:`ModelOutput` whose ``.loss`` is
the scalar to minimise and whose ``.parts`` names its components, so one trainer serves every
autoencoder. Autoencoders also have ``encode`` / ``decode`` / ``reconstruct``, all working in the
units of the data (the model normalises internally where its config asks for it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TrainConfig, check_choice, check_positive
from ..errors import ConfigError, DataError
from .capabilities import LEGACY_FLAGS, Capability, CapabilityAlias

ACTIVATIONS = ("selu", "relu", "elu", "gelu", "tanh", "sigmoid", "leaky_relu", "linear")
INITS = ("lecun_normal", "glorot_uniform", "he_normal", "default")


@dataclass
class ModelOutput:
    """What ``forward`` returns: the loss to minimise, its named parts, and useful tensors."""

    loss: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)
    recon: Tensor | None = None      # reconstruction in the model's internal units (pre-output for logits)
    codes: Tensor | None = None


def activation(name: str) -> nn.Module:
    """An activation module by name (``linear`` is the identity)."""
    check_choice("activation", name, ACTIVATIONS)
    return {
        "selu": nn.SELU, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid, "leaky_relu": lambda: nn.LeakyReLU(0.2), "linear": nn.Identity,
    }[name]()


def init_weight(weight: Tensor, scheme: str) -> None:
    """Initialise a kernel in place as Keras would (``lecun_normal`` is a truncated normal)."""
    check_choice("init", scheme, INITS)
    fan_out, fan_in = weight.shape[0], weight[0].numel()
    with torch.no_grad():
        if scheme == "lecun_normal":
            # Keras: truncated normal at 2 std, rescaled so that the std is sqrt(1 / fan_in)
            std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
            nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)
        elif scheme == "glorot_uniform":
            receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
            limit = math.sqrt(6.0 / ((fan_in + fan_out * receptive)))
            nn.init.uniform_(weight, -limit, limit)
        elif scheme == "he_normal":
            nn.init.kaiming_normal_(weight, nonlinearity="relu")
        # "default": keep PyTorch's own initialisation


def dense(n_in: int, n_out: int, init: str = "glorot_uniform") -> nn.Linear:
    """A Linear layer with Keras-style init and zero bias."""
    layer = nn.Linear(n_in, n_out)
    if init != "default":
        init_weight(layer.weight, init)
        nn.init.zeros_(layer.bias)
    return layer


def fit_normalizer(shift: Tensor, scale: Tensor, x: Tensor, rms: float) -> None:
    """Fill the normalisation buffers in place: centre each feature, then scale all of them by one
    factor so that the data's global RMS becomes ``rms`` (one factor keeps PCA's geometry)."""
    flat = x.reshape(len(x), -1).double()
    mean = flat.mean(0)
    shift.copy_(mean.float())
    scale.copy_(((flat - mean).pow(2).mean().sqrt() / rms).clamp_min(1e-12).float())


def fit_standardizer(shift: Tensor, scale: Tensor, x: Tensor) -> None:
    """Per-feature standardisation, in place: each feature centred on its mean and divided by its
    standard deviation (a constant feature keeps scale 1). The buffers travel in the checkpoint and
    :meth:`Autoencoder.from_pre` undoes them, so decoded values are in the data's units."""
    flat = x.reshape(len(x), -1).double()
    mean = flat.mean(0)
    std = flat.std(0, unbiased=False)
    shift.copy_(mean.float())
    scale.copy_(torch.where(std > 1e-8 * (1 + mean.abs()), std, torch.ones_like(std)).float())


def value_range(x) -> tuple[float, float]:
    """``(min, max)`` of an array or tensor. A float32 array (or tensor) is read once, by
    ``torch.aminmax`` on PyTorch's threads: a third of the time of numpy's ``min`` + ``max`` on
    50,000 MNIST-sized images. Anything else (a read-only memory map, a streamed array that
    samples its rows, another dtype) uses its own ``min`` / ``max``."""
    if isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.writeable:
        x = torch.from_numpy(x)
    if isinstance(x, Tensor) and x.is_floating_point():
        lo, hi = torch.aminmax(x.detach())
        return float(lo), float(hi)
    return float(x.min()), float(x.max())


class LatentModel(nn.Module):
    """Base of every model: holds the validated config and states the contract."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[TrainConfig]] = TrainConfig
    #: what the model can do (see models/capabilities.py): declared once per class
    capabilities: ClassVar[Capability] = Capability(0)
    # the older flag names, read-only aliases of ``capabilities``
    uses_labels = CapabilityAlias(Capability.CONDITIONAL)
    labels_optional = CapabilityAlias(Capability.LABELS_OPTIONAL)
    adversarial = CapabilityAlias(Capability.ADVERSARIAL)
    gaussian_latent = CapabilityAlias(Capability.GAUSSIAN_LATENT)
    codes_in_unit_interval = CapabilityAlias(Capability.UNIT_CODES)
    #: True when samples of the right size but another shape (flat vs image) are accepted.
    accepts_flat: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for attr, flag in LEGACY_FLAGS.items():          # e.g. ``uses_labels = True`` in a class body
            value = cls.__dict__.get(attr)
            if isinstance(value, bool):
                cls.capabilities = (cls.capabilities | flag) if value else (cls.capabilities & ~flag)
                setattr(cls, attr, CapabilityAlias(flag))

    def __init__(self, config: TrainConfig):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ConfigError(f"{self.name} needs a {self.config_class.__name__}, got {type(config).__name__}")
        if config.input_shape is None:
            raise ConfigError(f"{self.name}: config.input_shape is not set (it comes from the data)")
        config.validate()
        self.config = config

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.config.input_shape)

    @property
    def input_dim(self) -> int:
        return math.prod(self.input_shape)

    # -- data checks ---------------------------------------------------------------------
    def check_data(self, x, source: str = "data") -> None:
        """Raise DataError when ``x`` (canonical (N, ...) array) does not fit this model."""
        shape = tuple(x.shape[1:])
        if shape != self.input_shape and (math.prod(shape) != self.input_dim or not self.accepts_flat):
            raise DataError(f"{source}: samples have shape {shape} but this {self.name} model was built "
                            f"for {self.input_shape}")

    def check_unit_interval(self, x, source: str, needs: str) -> None:
        """Raise DataError when values of ``x`` lie outside [0, 1]; ``needs`` ends the message."""
        if len(x):
            lo, hi = value_range(x)
            if lo < 0.0 or hi > 1.0:
                raise DataError(f"{source}: values lie in [{lo:.4g}, {hi:.4g}] but {self.name} {needs}")

    def prepare(self, x: Tensor) -> None:
        """Fit data-dependent state (e.g. normalisation) before the first epoch. Default: none."""

    def forward(self, x: Tensor, y: Tensor | None = None) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class AEConfig(TrainConfig):
    """Fields shared by autoencoders: the output layer and the reconstruction loss."""

    output_activation: str = "sigmoid"   # sigmoid (data in [0,1]) | linear (any range)
    loss: str = "bce"                    # bce | mse
    normalize: bool = True               # linear outputs: centre per feature, scale to a global RMS of
    normalize_rms: float = 0.5           # this value (0.5, like the chapter's toy cloud, keeps SGD lr 1 stable)
    #: linear outputs: ``global`` (above: one scale, keeps PCA's geometry) or ``feature`` (each
    #: feature standardised to mean 0, std 1: tabular data, whose columns have unrelated units;
    #: the default for continuous non-image data, see ``latentforge/continuous.py``)
    normalize_scale: str = "global"

    def validate(self) -> None:
        super().validate()
        check_choice("output_activation", self.output_activation, ("sigmoid", "linear"))
        check_choice("loss", self.loss, ("bce", "mse"))
        check_positive(self, "normalize_rms")
        check_choice("normalize_scale", self.normalize_scale, ("global", "feature"))
        if self.loss == "bce" and self.output_activation != "sigmoid":
            raise ConfigError("config field 'loss' = 'bce' needs output_activation = 'sigmoid' "
                              "(use loss=mse with a linear output)")


class Autoencoder(LatentModel):
    """Shared autoencoder machinery: normalisation, the output layer and the reconstruction loss.

    Subclasses implement ``encode(x_internal)`` → codes and ``_decode_pre(codes)`` → the output
    layer's pre-activation (flat, shape (N, D)). ``x_internal`` is the flattened, normalised input.
    """

    config: AEConfig
    capabilities = Capability.ENCODES | Capability.DECODES | Capability.RECONSTRUCTS

    def __init__(self, config: AEConfig):
        super().__init__(config)
        d = self.input_dim
        # Normalisation for linear outputs, in buffers so it travels with the checkpoint.
        self.register_buffer("data_shift", torch.zeros(d))
        self.register_buffer("data_scale", torch.ones(d) if self.feature_scaled else torch.ones(()))

    @property
    def feature_scaled(self) -> bool:
        """True when a linear output standardises each feature (``normalize_scale = feature``)."""
        return self.config.output_activation == "linear" and self.config.normalize_scale == "feature"

    def mse_in_reported_units(self, mse_internal: Tensor) -> Tensor:
        """The MSE part as reported: in the data's units with one global scale, in standardised
        units (each feature's error over its variance) with per-feature scaling, where raw units
        would let the largest columns drown the others."""
        return mse_internal if self.feature_scaled else mse_internal * self.data_scale.square()

    @property
    def needs_unit_interval(self) -> bool:
        return self.config.output_activation == "sigmoid"

    def check_data(self, x, source: str = "data") -> None:
        super().check_data(x, source)
        if self.needs_unit_interval:
            self.check_unit_interval(x, source, "has a sigmoid output and needs data in [0, 1]; rescale it, "
                                                "or use --set output_activation=linear --set loss=mse")

    def prepare(self, x: Tensor) -> None:
        if self.config.output_activation == "linear" and self.config.normalize:
            if self.feature_scaled:
                fit_standardizer(self.data_shift, self.data_scale, x)
            else:
                fit_normalizer(self.data_shift, self.data_scale, x, self.config.normalize_rms)

    # -- internal <-> data units ----------------------------------------------------------
    def to_internal(self, x: Tensor) -> Tensor:
        flat = x.reshape(len(x), -1)
        if self.config.output_activation == "linear":
            flat = (flat - self.data_shift) / self.data_scale
        return flat

    def from_pre(self, pre: Tensor) -> Tensor:
        """Output pre-activation (N, D) → data units, shaped like the input samples."""
        if self.config.output_activation == "sigmoid":
            out = torch.sigmoid(pre)
        else:
            out = pre * self.data_scale + self.data_shift
        return out.reshape((len(pre),) + self.input_shape)

    def reconstruction_loss(self, pre: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean per-value loss between the output pre-activation and the internal target."""
        if self.config.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(pre, target)
            return loss, {"bce": loss}
        out = torch.sigmoid(pre) if self.config.output_activation == "sigmoid" else pre
        loss = F.mse_loss(out, target)
        # report the MSE in the data's own units (standardised units with per-feature scaling)
        return loss, {"mse": self.mse_in_reported_units(loss)}

    # -- the contract ----------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        return self._encode(self.to_internal(x))

    def decode(self, z: Tensor) -> Tensor:
        return self.from_pre(self._decode_pre(z))

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def forward(self, x: Tensor, y: Tensor | None = None) -> ModelOutput:
        target = self.to_internal(x)
        codes = self._encode(self.corrupt(target))
        pre = self._decode_pre(codes)
        loss, parts = self.reconstruction_loss(pre, target)
        extra = self.regularization(codes)
        for k, v in extra.items():
            loss = loss + v
            parts[k] = v
        return ModelOutput(loss=loss, parts=parts, recon=pre, codes=codes)

    # hooks for the AE family (denoising, sparse, ...): identity / nothing by default
    def corrupt(self, x: Tensor) -> Tensor:
        return x

    def regularization(self, codes: Tensor) -> dict[str, Tensor]:
        return {}

    def _encode(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode_pre(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
