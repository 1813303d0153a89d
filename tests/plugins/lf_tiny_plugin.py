"""A model from outside the package, served to latentforge as an installed plugin would be:
tests/test_extending.py writes a dist-info whose ``latentforge.models`` entry point names
:class:`TinyVAE`, and puts it and this folder on the path of a ``latentforge`` process."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from latentforge.models.custom import ModuleVAE
from latentforge.models.vae import VAEConfig


@dataclass
class TinyVAEConfig(VAEConfig):
    width: int = 16
    coding_size: int = 2
    epochs: int = 2
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 3e-3


class TinyVAE(ModuleVAE):
    """A two-layer VAE of the user's own (the networks come from build_encoder / build_decoder)."""

    name = "tiny-vae"
    config_class = TinyVAEConfig

    def build_encoder(self, config):
        return nn.Sequential(nn.Flatten(), nn.Linear(self.input_dim, config.width), nn.ReLU(),
                             nn.Linear(config.width, 2 * config.coding_size))

    def build_decoder(self, config):
        return nn.Sequential(nn.Linear(config.coding_size, config.width), nn.ReLU(),
                             nn.Linear(config.width, self.input_dim))
