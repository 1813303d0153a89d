"""How many CPU threads a training step uses: one for the chapter's small models.

A small model's step is a few dozen short kernels. Spread over several OpenMP threads, every
kernel ends at a barrier where all threads must arrive; on a busy machine one of them is often
descheduled, and the step waits a whole scheduler slice for it. Measured on a 2-core VM shared
with other jobs (load 5-8), the seed stacked AE's plain PyTorch loop ran at 400 samples/s with 2
threads and 8,100 with 1, and a DCGAN step took 1.4 s with 2 threads, 0.26 s with 1
(``bench/README.md``). So training uses one intra-op thread when the step
is small (fewer than :data:`SMALL_STEP_FLOPS` floating-point operations, estimated from one
forward pass), and leaves PyTorch's setting alone otherwise.

The stalls come from OpenMP's busy waiting: a thread that reaches a barrier first spins, taking
the core the late thread needs. With ``OMP_WAIT_POLICY=PASSIVE`` waiting threads sleep at once.
Measured on the same 2-core VM, a DCGAN step then took as long on 2 threads as on 1 with one or
two busy processes beside it (204 vs 176-227 ms; 288-361 vs 256-405 ms), where spinning threads
made it 2-7x slower; on the idle VM it took 137-146 ms on 2 threads, 168-193 ms on 1 (spinning
threads: 117-150). Sleeping costs a wake-up per kernel, so a small step still runs best on one
thread (the seed AE at batch 32: 1.37 ms on 1 thread, 1.64 ms on 2). The ``latentforge``
command therefore sets ``OMP_WAIT_POLICY=PASSIVE`` before it imports PyTorch (unless it is set),
and where waiting is passive, steps of at least :data:`PASSIVE_MULTI_THREAD_FLOPS` (the DCGAN's
and the conditional GAN's at their batch size) keep PyTorch's thread count too.

The choice depends on the model, the batch size and the wait policy, never on the machine's
load, so runs stay reproducible. ``LATENTFORGE_THREADS=N`` sets the thread count for every step
(``0`` leaves PyTorch's setting, whatever the size); an explicit ``OMP_NUM_THREADS`` is respected
as well.
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
#: with passive OpenMP waiting, steps from this many FLOPs keep PyTorch's threads (on 2 idle cores
#: the DCGAN at batch 32, ~4 GFLOP a step, trains 1.2-1.4x faster on 2 threads than on 1; the
#: conv AE, 0.45 GFLOP, 1.1x; the seed AE at batch 256, 0.25 GFLOP, 0.9x)
PASSIVE_MULTI_THREAD_FLOPS = 2e9


def passive_wait() -> bool:
    """Whether OpenMP's waiting threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``;
    the OpenMP runtime reads it when PyTorch is imported)."""
    return os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


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
    limit = PASSIVE_MULTI_THREAD_FLOPS if passive_wait() else SMALL_STEP_FLOPS
    return 1 if 3 * flops * batch_size < limit else None                # backward ~ 2x forward


def apply_training_threads(model: nn.Module, batch_size: int) -> int:
    """Set PyTorch's intra-op thread count for training (see the module docstring); returns it."""
    n = training_threads(model, batch_size)
    if n is not None and n != torch.get_num_threads():
        torch.set_num_threads(n)
    return torch.get_num_threads()
