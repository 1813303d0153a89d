"""Training: the trainer, checkpoints, and the high-level ``train`` / ``load_run`` API.

This package is callable: ``latentforge.train(model, data, ...)`` is
:func:`latentforge.train.run.train`. (The package and the public function share the name
``latentforge.train``; Python binds that name to this package on the first import of anything
under it, so the package itself is what answers the call.)
"""
import inspect as _inspect
import sys as _sys
import types as _types

from . import run
from .run import Run, load_run, train
from .trainer import Trainer, build_optimizer


class _CallablePackage(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        return run.train(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
__signature__ = _inspect.signature(train)

__all__ = ["Run", "load_run", "train", "Trainer", "build_optimizer"]
