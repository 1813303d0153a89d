"""The model registry: registry name -> "module:Class", one line per built-in model (imported
lazily), plus the models added from outside the package: :func:`register_model` from Python, and
installed plugins through the ``latentforge.models`` entry-point group (loaded on first use)."""
from __future__ import annotations

import dataclasses
import importlib
import re
from importlib.metadata import entry_points
from typing import Any

from ..config import TrainConfig, make_config
from ..errors import ConfigError
from .base import Autoencoder, LatentModel, ModelOutput
from .capabilities import Capability, check_declared

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


#: the entry-point group of installed plugins: ``NAME = "package.module:ModelClass"``
ENTRY_POINT_GROUP = "latentforge.models"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_registered: dict[str, type[LatentModel]] = {}     # register_model() and the loaded plugins
_plugin_errors: dict[str, str] = {}                # plugin name -> why it did not load
_plugins_loaded = False


def register_model(name: str, cls: type[LatentModel], *, replace: bool = False) -> type[LatentModel]:
    """Make ``cls`` (a :class:`LatentModel` subclass with a ``config_class`` and declared
    ``capabilities``) trainable, loadable and reportable as ``name``; returns ``cls``.

    ConfigError when the name is taken (a built-in, or another class unless ``replace``), or when
    the class breaks the contract (its declared capabilities must match its methods). A run of the
    model records the name; loading it later needs the model registered again (imported code
    only: a run folder never names code to import).
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"model name {name!r}: use lower-case letters, digits, '-', '_' or '.'")
    if not (isinstance(cls, type) and issubclass(cls, LatentModel)):
        raise ConfigError(f"register_model({name!r}): {cls!r} is not a latentforge.models.LatentModel subclass")
    if not (isinstance(cls.config_class, type) and issubclass(cls.config_class, TrainConfig)
            and dataclasses.is_dataclass(cls.config_class)):
        raise ConfigError(f"register_model({name!r}): {cls.__name__}.config_class must be a dataclass "
                          f"subclass of latentforge.config.TrainConfig")
    problems = check_declared(cls)
    if problems:
        raise ConfigError(f"register_model({name!r}): {cls.__name__} {'; '.join(problems)}")
    if name in REGISTRY:
        raise ConfigError(f"register_model({name!r}): a built-in model has that name")
    old = _registered.get(name)
    if old is not None and old is not cls and not replace:
        raise ConfigError(f"register_model({name!r}): already registered as {_qualname(old)} "
                          f"(pass replace=True to replace it)")
    _registered[name] = cls
    _plugin_errors.pop(name, None)
    return cls


def unregister_model(name: str) -> None:
    """Forget a model added by :func:`register_model` (built-in models stay)."""
    _registered.pop(name, None)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def load_plugins() -> None:
    """Register the models of installed plugins (entry-point group ``latentforge.models``) once.
    A plugin that fails to load is remembered with its error, which names it when asked for."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in REGISTRY or ep.name in _registered:
            continue
        try:
            register_model(ep.name, ep.load())
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the other models
            _plugin_errors[ep.name] = f"plugin {ep.value!r} failed to load: {type(e).__name__}: {e}"


def model_names() -> list[str]:
    """The built-in models, then the registered ones (including installed plugins)."""
    load_plugins()
    return [*REGISTRY, *_registered]


def get_model_class(name: str) -> type[LatentModel]:
    """The model class registered as ``name`` (ConfigError listing the names if unknown)."""
    target = REGISTRY.get(name)
    if target is not None:
        module, _, cls = target.partition(":")
        return getattr(importlib.import_module(module), cls)
    load_plugins()
    if name in _registered:
        return _registered[name]
    if name in _plugin_errors:
        raise ConfigError(f"model {name!r}: {_plugin_errors[name]}")
    raise ConfigError(f"unknown model {name!r}; available: {', '.join(model_names())} (a model of your own: "
                      f"latentforge.register_model(name, cls), or an installed plugin's "
                      f"'{ENTRY_POINT_GROUP}' entry point)")


def model_class_path(name: str) -> str:
    """``module:Class`` of model ``name`` (what a run folder records about its code)."""
    return _qualname(get_model_class(name))


def make_model_config(name: str, values: dict[str, Any] | None = None, *, strict: bool = True):
    """The config of model ``name`` with the chapter's defaults, overridden by ``values``."""
    return make_config(get_model_class(name).config_class, values, strict=strict)


def build_model(name: str, config=None, **overrides) -> LatentModel:
    """Build model ``name`` from a config object or from keyword overrides of its defaults."""
    cls = get_model_class(name)
    if config is None:
        config = make_config(cls.config_class, overrides)
    return cls(config)


__all__ = ["REGISTRY", "ENTRY_POINT_GROUP", "model_names", "get_model_class", "make_model_config", "build_model",
           "register_model", "unregister_model", "load_plugins", "model_class_path",
           "LatentModel", "Autoencoder", "ModelOutput", "Capability"]
