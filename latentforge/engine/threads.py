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

A step on one thread can still use several cores: :func:`batch_parts` shares the batch itself
out, as sub-batches whose forward and backward passes run on threads of their own
(:mod:`.split`), for models where that computes the same gradient (:func:`batch_separable`) and
steps of at least :data:`SPLIT_MIN_FLOPS` (the conv and recurrent AEs at batch 32, the seed AE
from batch 128; not at 32, where handing work to a thread costs more than it saves). Two parts
where the process may use two cores or more.

The choice depends on the model, the batch size, the wait policy and the cores the process may
use, never on the machine's load, so runs stay reproducible. The engine config's ``threads``
(``--set threads=N``) or ``LATENTFORGE_THREADS=N`` sets the thread count for every step (``0``
leaves PyTorch's setting, whatever the size); an explicit ``OMP_NUM_THREADS`` is respected as
well, and either turns the batch split off. ``batch_split`` (``--set batch_split=N``) or
``LATENTFORGE_BATCH_SPLIT=N`` sets the number of parts (``1``: no split). The config wins over
the environment.
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import torch
from torch import Tensor, nn

from ..models.conv_ae import ConvAE
from ..models.dense_ae import LinearAE, StackedAE, TiedAE
from ..models.recurrent_ae import RecurrentAE
from .split import MIN_PART

ENV = "LATENTFORGE_THREADS"
SPLIT_ENV = "LATENTFORGE_BATCH_SPLIT"
#: steps below this many FLOPs (forward + backward, whole batch) train on one thread: every model
#: of the chapter at its batch size (the DCGAN at batch 32: 4 GFLOP, 1 thread 5x faster than 2 on
#: the loaded VM), not DDPM's U-Net (13 GFLOP)
SMALL_STEP_FLOPS = 1e10
#: with passive OpenMP waiting, steps from this many FLOPs keep PyTorch's threads (on 2 idle cores
#: the DCGAN at batch 32, ~4 GFLOP a step, trains 1.2-1.4x faster on 2 threads than on 1; the
#: conv AE, 0.45 GFLOP, 1.1x; the seed AE at batch 256, 0.25 GFLOP, 0.9x)
PASSIVE_MULTI_THREAD_FLOPS = 2e9
#: one-thread steps from this many FLOPs share their batch out over two threads (:mod:`.split`);
#: measured on 2 cores: the conv AE at batch 32 (0.45 GFLOP) 1.2-1.6x, the recurrent AE (0.65
#: GFLOP) 1.5-2x, the stacked AE with Adam at batch 256 (0.25 GFLOP) 1.35x, at batch 32 (0.03
#: GFLOP) 0.74x; its fused SGD step at batch 256 1.25-1.6x, 128 (0.125 GFLOP) 1.1-1.2x, 64 0.64x
SPLIT_MIN_FLOPS = 1e8
#: the most parts chosen without ``LATENTFORGE_BATCH_SPLIT`` (only two cores measured)
MAX_AUTO_PARTS = 2


#: the exact model classes whose loss is a mean over samples that do not see each other and whose
#: forward pass draws no random numbers (given no batch-coupled layer): a subclass, which may add
#: noise or a batch-level penalty, is not in it
SEPARABLE = (StackedAE, LinearAE, TiedAE, ConvAE, RecurrentAE)


def _batch_coupled(m: nn.Module) -> bool:
    """A layer whose training-mode output for one sample depends on the others or on the RNG."""
    if isinstance(m, nn.modules.dropout._DropoutNd):
        return m.p > 0
    if isinstance(m, nn.RNNBase):
        return m.dropout > 0
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def batch_separable(model: nn.Module) -> bool:
    """Whether a batch's gradient is the sample-weighted sum of its sub-batches' gradients,
    computed in any order (so a step's batch may be shared out over threads, :mod:`.split`):
    ``model`` is exactly one of :data:`SEPARABLE` and no layer draws random numbers or keeps
    batch statistics."""
    return type(model) in SEPARABLE and not any(_batch_coupled(m) for m in model.modules())


def passive_wait() -> bool:
    """Whether OpenMP's waiting threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``;
    the OpenMP runtime reads it when PyTorch is imported)."""
    return os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"


def _rnn_flops(module: nn.RNNBase, x: Tensor) -> int:
    """Matrix-product FLOPs of a recurrent layer on input ``x`` (PyTorch's fused RNN kernels are
    invisible to ``FlopCounterMode``): 2 x gates x hidden x (input + hidden) per step and layer."""
    if isinstance(x, nn.utils.rnn.PackedSequence):
        rows = int(x.batch_sizes.sum())                      # steps x samples, summed
    else:
        rows = x.shape[0] * x.shape[1] if x.dim() == 3 else x.shape[0]
    gates = {"LSTM": 4, "GRU": 3}.get(module.mode, 1)
    dirs = 2 if module.bidirectional else 1
    h, total = module.hidden_size, 0
    for layer in range(module.num_layers):
        n_in = module.input_size if layer == 0 else h * dirs
        total += 2 * gates * h * (n_in + h) * dirs * rows
    return total


def forward_flops(model: nn.Module) -> int | None:
    """FLOPs of one forward pass on one sample (for a GAN: G then D), or None if unknown.

    Runs the model on two zero samples in eval mode, without gradients and with the RNG state
    restored afterwards, so training is not affected.
    """
    from torch.utils.flop_counter import FlopCounterMode

    shape = getattr(model, "input_shape", None)
    if shape is None:
        return None
    rnn = [0]
    hooks = [m.register_forward_hook(lambda m, args, out: rnn.__setitem__(0, rnn[0] + _rnn_flops(m, args[0])))
             for m in model.modules() if isinstance(m, nn.RNNBase)]
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
        for hook in hooks:
            hook.remove()
    return (counter.get_total_flops() + rnn[0]) // 2


def _env_int(name: str, what: str) -> int | None:
    env = os.environ.get(name, "").strip()
    if not env:
        return None
    try:
        return int(env)
    except ValueError:
        from ..errors import ConfigError
        raise ConfigError(f"{name}={env!r}: expected {what}") from None


def _on_cpu(model: nn.Module) -> bool:
    p = next(model.parameters(), None)
    return p is not None and p.device.type == "cpu"


def step_flops(model: nn.Module, batch_size: int) -> float | None:
    """FLOPs of one training step, forward + backward (~2x forward), or None if unknown."""
    flops = forward_flops(model)
    return None if flops is None else 3.0 * flops * batch_size


def _step_flops_once(model: nn.Module, batch_size: int) -> Callable[[], float | None]:
    """:func:`step_flops`, computed at the first call only."""
    return functools.cache(lambda: step_flops(model, batch_size))


def training_threads(model: nn.Module, batch_size: int, flops: Callable[[], float | None] | None = None,
                     setting: int | None = None) -> int | None:
    """The intra-op thread count to train ``model`` at ``batch_size`` with (None: leave it).
    ``flops``: a function giving the step's FLOPs (default :func:`step_flops`); ``setting``: the
    engine config's ``threads`` (None: :data:`ENV`, else the choice of the module docstring)."""
    n = setting if setting is not None else _env_int(ENV, "a number of threads (0 = PyTorch's default)")
    if n is not None:
        return n if n > 0 else None
    if os.environ.get("OMP_NUM_THREADS") or not _on_cpu(model):
        return None
    f = (flops or _step_flops_once(model, batch_size))()
    if f is None:
        return None
    limit = PASSIVE_MULTI_THREAD_FLOPS if passive_wait() else SMALL_STEP_FLOPS
    return 1 if f < limit else None


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):           # not on Linux
        return os.cpu_count() or 1


def batch_parts(model: nn.Module, batch_size: int, threads: int,
                flops: Callable[[], float | None] | None = None, setting: int | None = None,
                threads_set: bool = False) -> int:
    """Into how many sub-batches on their own threads a step on ``threads`` intra-op threads
    shares its batch (see the module docstring and :mod:`.split`); 1: none. ``setting``: the
    engine config's ``batch_split`` (None: :data:`SPLIT_ENV`, else the automatic choice);
    ``threads_set``: the config fixed the thread count (which turns the automatic split off)."""
    n = setting if setting is not None else _env_int(SPLIT_ENV, "a number of sub-batches (1 = no split)")
    if not (_on_cpu(model) and batch_separable(model)):
        return 1
    if n is not None:
        return max(n, 1)
    if threads != 1 or threads_set or os.environ.get(ENV) or os.environ.get("OMP_NUM_THREADS"):
        return 1
    f = (flops or _step_flops_once(model, batch_size))()
    if f is None or f < SPLIT_MIN_FLOPS:
        return 1
    return max(1, min(MAX_AUTO_PARTS, usable_cores(), batch_size // MIN_PART))


def apply_training_threads(model: nn.Module, batch_size: int, threads: int | None = None,
                           split: int | None = None) -> tuple[int, int]:
    """Set PyTorch's intra-op thread count for training (see the module docstring); returns it
    and the number of sub-batches each step's batch is shared out in (:func:`batch_parts`).
    ``threads``, ``split``: the engine config's settings (None: automatic)."""
    flops = _step_flops_once(model, batch_size)              # one estimate for both choices
    n = training_threads(model, batch_size, flops, threads)
    if n is not None and n != torch.get_num_threads():
        torch.set_num_threads(n)
    used = torch.get_num_threads()
    return used, batch_parts(model, batch_size, used, flops, split, threads_set=threads is not None)
