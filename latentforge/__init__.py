"""latentforge: the autoencoders, VAEs, GANs and diffusion models of the classic chapter, as a
PyTorch library and a command-line tool.

    >>> import latentforge as lf
    >>> run = lf.train("stacked-ae", "digits", out="runs/demo", overrides={"epochs": 5})
    >>> codes = run.encode(lf.load_data("digits").x)

The public names below are served lazily (``import latentforge`` stays cheap for the CLI's
``--help``) and, once served, stay bound: importing any submodule later changes none of them.
``lf.train`` is the :mod:`latentforge.train` package itself, which is callable (a call is
:func:`latentforge.train.run.train`): Python binds the package attribute ``train`` to that
subpackage whenever anything under ``latentforge.train`` is imported, so a separate function of
the same name would be replaced by the first such import.
"""
from __future__ import annotations

import importlib

from ._version import __version__
from .errors import CheckpointError, ConfigError, DataError, DownloadError, LatentforgeError, TrainingError

#: public name -> (module, attribute; None: the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "train": ("latentforge.train", None),
    "load_run": ("latentforge.train.run", "load_run"),
    "Run": ("latentforge.train.run", "Run"),
    "load_data": ("latentforge.data", "load_data"),
    "train_valid_split": ("latentforge.data", "train_valid_split"),
    "Dataset": ("latentforge.data", "Dataset"),
    "list_datasets": ("latentforge.data", "list_datasets"),
    "build_model": ("latentforge.models", "build_model"),
    "model_names": ("latentforge.models", "model_names"),
    "get_model_class": ("latentforge.models", "get_model_class"),
    "register_model": ("latentforge.models", "register_model"),
    "Capability": ("latentforge.models.base", "Capability"),
}


def __getattr__(name: str):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'latentforge' has no attribute {name!r}") from None
    mod = importlib.import_module(module)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value          # served once; later lookups are plain attributes
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["__version__", *_LAZY, "LatentforgeError", "DataError", "DownloadError", "ConfigError",
           "CheckpointError", "TrainingError"]
