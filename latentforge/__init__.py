"""latentforge: the autoencoders, VAEs, GANs and diffusion models of the classic chapter, as a
PyTorch library and a command-line tool.

    >>> import latentforge as lf
    >>> run = lf.train("stacked-ae", "digits", out="runs/demo", overrides={"epochs": 5})
    >>> codes = run.encode(lf.load_data("digits").x)
"""
__version__ = "0.1.0"

from .errors import (CheckpointError, ConfigError, DataError, DownloadError, LatentforgeError,  # noqa: E402
                     TrainingError)


def __getattr__(name):  # lazy public API: importing latentforge stays cheap for the CLI's --help
    if name in ("train", "load_run", "Run"):
        from .train import run as _run
        return getattr(_run, name)
    if name in ("load_data", "train_valid_split", "Dataset", "list_datasets"):
        from . import data as _data
        return getattr(_data, name)
    if name in ("build_model", "model_names", "get_model_class"):
        from . import models as _models
        return getattr(_models, name)
    raise AttributeError(f"module 'latentforge' has no attribute {name!r}")


__all__ = ["__version__", "train", "load_run", "Run", "load_data", "train_valid_split", "Dataset",
           "list_datasets", "build_model", "model_names", "get_model_class", "LatentforgeError",
           "DataError", "DownloadError", "ConfigError", "CheckpointError", "TrainingError"]
