"""The GPU path: mixed precision and compilation, chosen by the config and checked against the device.

* ``precision = "32"``: plain float32.
* ``precision = "bf16"``: ``torch.autocast`` to bfloat16 on any device (CPU included); no
  loss scaling is needed (bfloat16 has float32's exponent range).
* ``precision = "16-mixed"``: ``torch.autocast`` to float16 with a ``torch.amp.GradScaler``;
  CUDA only (a :class:`~latentforge.errors.ConfigError` elsewhere: use bf16 on CPU), and not
  for the GAN loop, whose two optimizers step inside the adversarial step (use bf16).
* ``compile = true``: ``module.compile(mode="reduce-overhead")`` (CUDA graphs) on CUDA; on
  other devices it is left off with a note, since it does not pay there for these models.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError


def check_precision(precision: str, device: torch.device, *, adversarial: bool = False) -> None:
    """Raise ConfigError when ``precision`` cannot run on ``device`` (before anything is written)."""
    if precision == "16-mixed":
        if device.type != "cuda":
            raise ConfigError(f"--precision 16-mixed needs a CUDA device (this run uses {device.type}); "
                              f"use --precision bf16 on {device.type}")
        if adversarial:
            raise ConfigError("--precision 16-mixed is not supported for GANs (their step drives two "
                              "optimizers); use --precision bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("--precision bf16: this GPU does not support bfloat16; use 16-mixed")


def autocast(precision: str, device: torch.device):
    """The autocast context for ``precision`` (a no-op context for ``32``)."""
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> "torch.amp.GradScaler | None":
    """A GradScaler for float16 training on CUDA, else None."""
    if precision == "16-mixed" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def maybe_compile(model: nn.Module, wanted: bool, device: torch.device, log: Callable[[str], None]) -> bool:
    """Compile ``model`` in place with CUDA graphs (``reduce-overhead``) when asked and on CUDA."""
    if not wanted:
        return False
    if device.type != "cuda":
        log(f"compile=true is only used on CUDA; training uncompiled on {device.type}")
        return False
    if not getattr(model, "_latentforge_compiled", False):
        model.compile(mode="reduce-overhead")
        model._latentforge_compiled = True
    return True
