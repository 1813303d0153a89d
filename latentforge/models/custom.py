"""Autoencoders and VAEs around your own encoder and decoder networks.

:class:`ModuleAE` and :class:`ModuleVAE` take ``encoder`` / ``decoder`` :class:`torch.nn.Module`
instances (or build them in ``build_encoder`` / ``build_decoder``, which a run needs to be loaded
again) and add what the library's autoencoders share: the data checks, the normalisation of
linear outputs, the reconstruction loss, and for the VAE the reparameterised Gaussian codes, the
KL term, sampling and the importance-weighted likelihood::

    class MyAE(ModuleAE):
        def build_encoder(self, config):
            return nn.Sequential(nn.Flatten(), nn.Linear(self.input_dim, 64), nn.ReLU(),
                                 nn.Linear(64, config.coding_size))
        def build_decoder(self, config):
            return nn.Sequential(nn.Linear(config.coding_size, 64), nn.ReLU(),
                                 nn.Linear(64, self.input_dim))

    latentforge.register_model("my-ae", MyAE)       # then: latentforge.train("my-ae", "digits")

The networks see and return:

* encoder: samples shaped like the data, ``(N, *input_shape)`` (normalised for linear outputs)
  -> codes ``(N, coding_size)``; a VAE's encoder returns ``(mean, log_var)`` or one tensor
  ``(N, 2 * coding_size)`` holding both.
* decoder: codes -> the output layer's pre-activation (logits for a sigmoid output), any shape
  with ``prod(input_shape)`` values per sample.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..config import check_positive
from ..errors import ConfigError
from .base import AEConfig, Autoencoder
from .vae import VAE, VAEConfig


@dataclass
class ModuleAEConfig(AEConfig):
    coding_size: int = 32
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3

    def validate(self) -> None:
        super().validate()
        check_positive(self, "coding_size")


def _module(value, what: str, owner: str) -> nn.Module:
    if not isinstance(value, nn.Module):
        raise ConfigError(f"{owner}: the {what} must be a torch.nn.Module, got {type(value).__name__}")
    return value


class _UserNetworks:
    """The two user networks: given, or built by ``build_encoder`` / ``build_decoder``."""

    def _set_networks(self, encoder: nn.Module | None, decoder: nn.Module | None) -> None:
        owner = type(self).__name__
        self.encoder = _module(encoder if encoder is not None else self.build_encoder(self.config), "encoder", owner)
        self.decoder = _module(decoder if decoder is not None else self.build_decoder(self.config), "decoder", owner)

    def build_encoder(self, config) -> nn.Module:
        raise ConfigError(f"{type(self).__name__}: give encoder=... or override build_encoder(config)")

    def build_decoder(self, config) -> nn.Module:
        raise ConfigError(f"{type(self).__name__}: give decoder=... or override build_decoder(config)")

    def _shaped(self, flat: Tensor) -> Tensor:
        return flat.reshape((len(flat),) + self.input_shape)

    def _pre(self, z: Tensor) -> Tensor:
        pre = self.decoder(z)
        if pre.numel() != len(z) * self.input_dim:
            raise ConfigError(f"{type(self).__name__}: the decoder returned {tuple(pre.shape)} for {len(z)} codes; "
                              f"it must return {self.input_dim} values per sample (shape {self.input_shape})")
        return pre.reshape(len(z), self.input_dim)


class ModuleAE(_UserNetworks, Autoencoder):
    """An autoencoder around your own encoder and decoder modules."""

    name = "module-ae"
    config_class = ModuleAEConfig
    config: ModuleAEConfig

    def __init__(self, config: ModuleAEConfig, encoder: nn.Module | None = None, decoder: nn.Module | None = None):
        super().__init__(config)
        self._set_networks(encoder, decoder)

    def _encode(self, x: Tensor) -> Tensor:
        return self.encoder(self._shaped(x))

    def _decode_pre(self, z: Tensor) -> Tensor:
        return self._pre(z)


class ModuleVAE(_UserNetworks, VAE):
    """A variational autoencoder around your own encoder (-> mean, log variance) and decoder."""

    name = "module-vae"
    config_class = VAEConfig
    config: VAEConfig

    def __init__(self, config: VAEConfig, encoder: nn.Module | None = None, decoder: nn.Module | None = None):
        Autoencoder.__init__(self, config)          # not VAE's dense layers: the networks are the user's
        self._set_networks(encoder, decoder)

    def _stats(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out = self.encoder(self._shaped(x))
        if isinstance(out, (tuple, list)) and len(out) == 2:
            mean, log_var = out
        elif isinstance(out, Tensor) and out.dim() == 2 and out.shape[1] == 2 * self.config.coding_size:
            mean, log_var = out.chunk(2, dim=1)
        else:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ConfigError(f"{type(self).__name__}: the encoder must return (mean, log_var) or one "
                              f"(N, {2 * self.config.coding_size}) tensor, got {got}")
        return mean, log_var

    def _decode_pre(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        return self._pre(z)


__all__ = ["ModuleAE", "ModuleAEConfig", "ModuleVAE"]
