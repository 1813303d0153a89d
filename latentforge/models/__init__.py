"""The model registry: registry name -> "module:Class". One line per model; imported lazily."""
from __future__ import annotations

import importlib
from typing import Any

from ..config import make_config
from ..errors import ConfigError
from .base import Autoencoder, LatentModel, ModelOutput

REGISTRY: dict[str, str] = {
    "linear-ae": "latentforge.models.dense_ae:LinearAE",
    "stacked-ae": "latentforge.models.dense_ae:StackedAE",
    "tied-ae": "latentforge.models.dense_ae:TiedAE",
    "conv-ae": "latentforge.models.conv_ae:ConvAE",
    "recurrent-ae": "latentforge.models.recurrent_ae:RecurrentAE",
    "denoising-ae": "latentforge.models.denoising_ae:DenoisingAE",
    "sparse-ae": "latentforge.models.sparse_ae:SparseAE",
    "hashing-ae": "latentforge.models.hashing_ae:HashingAE",
    "vae": "latentforge.models.vae:VAE",
    "conditional-vae": "latentforge.models.vae:ConditionalVAE",
    "classifier": "latentforge.models.classifier:Classifier",
    "gan": "latentforge.models.gan:DenseGAN",
    "dcgan": "latentforge.models.dcgan:DCGAN",
    "conditional-gan": "latentforge.models.dcgan:ConditionalGAN",
    "progan": "latentforge.models.progan:ProGAN",
    "stylegan": "latentforge.models.stylegan:StyleGAN",
    "ddpm": "latentforge.models.ddpm:DDPM",
    "features": "latentforge.models.features:FeatureNet",
}


def model_names() -> list[str]:
    return list(REGISTRY)


def get_model_class(name: str) -> type[LatentModel]:
    """The model class registered as ``name`` (ConfigError listing the names if unknown)."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(REGISTRY)}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def make_model_config(name: str, values: dict[str, Any] | None = None, *, strict: bool = True):
    """The config of model ``name`` with the chapter's defaults, overridden by ``values``."""
    return make_config(get_model_class(name).config_class, values, strict=strict)


def build_model(name: str, config=None, **overrides) -> LatentModel:
    """Build model ``name`` from a config object or from keyword overrides of its defaults."""
    cls = get_model_class(name)
    if config is None:
        config = make_config(cls.config_class, overrides)
    return cls(config)


__all__ = ["REGISTRY", "model_names", "get_model_class", "make_model_config", "build_model",
           "LatentModel", "Autoencoder", "ModelOutput"]
