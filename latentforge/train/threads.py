"""How many CPU threads a training step uses: one for the chapter's small models.

A small model's step is a few dozen short kernels. Spread over several OpenMP threads, every
kernel ends at a barrier where all threads must arrive; on a busy machine one of them is often
descheduled, and the step waits a whole scheduler slice for it. Measured on a 2-core VM shared
with other jobs (load 5-8), the seed stacked AE's plain PyTorch loop ran at 400 samples/s with 2
threads and 8,100 with 1, and a DCGAN step took 1.4 s with 2 threads, 0.26 s with 1
(``bench/README.md``). So training uses one intra-op thread when the step
is small (fewer than :data:`SMALL_STEP_FLOPS` floating-point operations, estimated from one
forward pass), and leaves PyTorch's setting alone otherwise.

The choice depends on the model and the batch size only, never on the machine's load, so runs
stay reproducible. ``LATENTFORGE_THREADS=N`` sets the thread count for every step (``0`` leaves
PyTorch's setting, whatever the size); an explicit ``OMP_NUM_THREADS`` is respected as well.
"""
from __future__ import annotations

import os

import torch
from torch import nn

ENV = "LATENTFORGE_THREADS"
#: steps below this many FLOPs (forward + backward, whole batch) train on one thread: every model
#: of the chapter at its batch size (the DCGAN at batch 32: 4 GFLOP, 1 thread 5x faster than 2 on
#: the loaded VM), not DDPM's U-Net (13 GFLOP)
SMALL_STEP_FLOPS = 1e10


def forward_flops(model: nn.Module) -> int | None:
    """FLOPs of one forward pass on one sample (for a GAN: G then D), or None if unknown.

    Runs the model on two zero samples in eval mode, without gradients and with the RNG state
    restored afterwards, so training is not affected.
    """
    from torch.utils.flop_counter import FlopCounterMode

    shape = getattr(model, "input_shape", None)
    if shape is None:
        return None
    was = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad(), FlopCounterMode(display=False) as counter:
            dev = next(model.parameters()).device
            y = torch.zeros(2, dtype=torch.long, device=dev) if getattr(model, "uses_labels", False) else None
            if getattr(model, "adversarial", False):
                model.discriminator(model.generator(model.latent(2, device=dev), y), y)
            else:
                model(torch.zeros((2, *shape), device=dev), y)
    except Exception:          # a model whose forward needs more than a batch of zeros: unknown size
        return None
    finally:
        model.train(was)
    return counter.get_total_flops() // 2


def training_threads(model: nn.Module, batch_size: int) -> int | None:
    """The intra-op thread count to train ``model`` at ``batch_size`` with (None: leave it)."""
    env = os.environ.get(ENV, "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            from ..errors import ConfigError
            raise ConfigError(f"{ENV}={env!r}: expected a number of threads (0 = PyTorch's default)") from None
        return n if n > 0 else None
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    try:
        dev = next(model.parameters()).device
    except StopIteration:
        return None
    if dev.type != "cpu":
        return None
    flops = forward_flops(model)
    if flops is None:
        return None
    return 1 if 3 * flops * batch_size < SMALL_STEP_FLOPS else None     # backward ~ 2x forward


def apply_training_threads(model: nn.Module, batch_size: int) -> int:
    """Set PyTorch's intra-op thread count for training (see the module docstring); returns it."""
    n = training_threads(model, batch_size)
    if n is not None and n != torch.get_num_threads():
        torch.set_num_threads(n)
    return torch.get_num_threads()
