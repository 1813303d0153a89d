"""The engine: everything that makes a training step fast, behind one call.

The trainer calls :func:`start` once per fit and gets an :class:`Engine`: the step to run on a
batch, the autocast context, the fast epoch of a hand-fused step where one applies, and the CPU
threads. Nothing else in latentforge knows how a step is made fast, and models carry no flags
for it.

What is fast is decided by **allowlists** of exact model classes and settings, never by a list
of exceptions: a subclass (which may override any method), an activation, loss or layer the
fast code was not written for, a config field it does not know (unless at its default), another
optimizer or precision: all of them train by plain autograd + the optimizer. Each fast path
computes what autograd + the optimizer compute, up to float rounding
(``tests/test_engine_contract.py`` checks it over the whole registry).

* :mod:`.dense_sgd`: the hand-fused SGD step of the dense AEs (:func:`select_step`), run in
  chunks of steps (:mod:`.chunks`), replayed as CUDA graphs on a GPU when ``cuda_graphs`` is on.
* :mod:`.threads`, :mod:`.split`: one intra-op thread for small steps on CPU, and the batch of a
  batch-separable model (an exact-class table) shared out over threads.
* :mod:`.precision`: autocast (bf16, 16-mixed with a GradScaler) and ``torch.compile``.
* :mod:`.kernels`: faster CPU convolution and dropout kernels for the exact DCGAN classes.

Its settings are the :class:`~latentforge.config.EngineConfig` (``config.engine``), apart from
the model's hyper-parameters.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..config import EngineConfig, TrainConfig
from . import dense_sgd
from .chunks import ChunkedSteps, graph_safe_params
from .kernels import swap_in
from .precision import autocast, check_precision, grad_scaler, maybe_compile
from .split import BatchSplit
from .threads import apply_training_threads, batch_separable

__all__ = ["Engine", "EngineConfig", "FastStep", "start", "select_step", "check_precision", "grad_scaler",
           "autocast", "batch_separable"]


class FastStep:
    """An allowlisted hand-fused step (today: :class:`.dense_sgd.DenseSGDStep`): ``step(xb, lr)``
    runs one step on a batch; :meth:`epoch` runs a whole epoch of them in chunks (CUDA graphs on
    a GPU when ``graphs``)."""

    def __init__(self, name: str, fn: Callable[[Tensor, float], Any], model: nn.Module, *, graphs: bool = False,
                 log: Callable[[str], None] = print):
        self.name, self.fn, self.model, self.graphs, self.log = name, fn, model, graphs, log
        self._chunks: tuple[float, ChunkedSteps] | None = None   # (lr, chunked runner) of the last epoch

    def __call__(self, xb: Tensor, lr: float) -> Any:
        return self.fn(xb, lr)

    def chunks(self, x: Tensor, lr: float) -> ChunkedSteps:
        """The chunked runner over ``x`` at ``lr`` (rebuilt when either changes: the lr is baked
        into the CUDA graphs)."""
        if self._chunks is None or self._chunks[0] != lr or self._chunks[1].x is not x:
            fn = self.fn
            self._chunks = (lr, ChunkedSteps(lambda xb: fn(xb, lr), x, graph_safe_params(self.model),
                                             graphs=self.graphs, log=self.log))
        return self._chunks[1]

    def epoch(self, x: Tensor, order: Tensor, batch_size: int, lr: float) -> Iterator[tuple[int, Tensor, list[str]]]:
        """An epoch over ``x[order]``: yields, after each chunk, the index of its last step, its
        ``(steps, 1 + parts)`` loss table and the parts' names."""
        chunks = self.chunks(x, lr)
        for last, table in chunks.epoch(order, batch_size):
            yield last, table, list(chunks.names or ())


def select_step(model: nn.Module, cfg: TrainConfig, device: torch.device | str = "cpu", *,
                params: Sequence[nn.Parameter] | None = None,
                optimizer: torch.optim.Optimizer | None = None, world: int = 1,
                split: BatchSplit | None = None, log: Callable[[str], None] = print) -> FastStep | None:
    """The hand-fused step for ``model`` trained under ``cfg``, or None (train by autograd).

    An allowlist: the model is exactly a class a fast step was written for and everything it
    computes is known to that step (:func:`.dense_sgd.refusal`); the settings are exactly
    plain SGD (no momentum, no weight decay, one parameter group) on all of the model's
    parameters, float32, uncompiled, one process, ``fused_step`` on, and a NaN policy that need
    not see the gradients (``skip`` must)."""
    eng: EngineConfig = cfg.engine
    compiled = eng.compile and torch.device(device).type == "cuda"      # as maybe_compile decides
    if not (eng.fused_step and eng.precision == "32" and not compiled and world == 1):
        return None
    if not (cfg.optimizer == "sgd" and cfg.momentum == 0 and cfg.weight_decay == 0 and cfg.nan_policy != "skip"):
        return None
    own = list(model.parameters())
    params = own if params is None else list(params)
    if {id(p) for p in params} != {id(p) for p in own} or len(params) != len(own):
        return None
    if not all(p.requires_grad for p in own):
        return None
    if optimizer is not None:
        groups = optimizer.param_groups
        if (type(optimizer) is not torch.optim.SGD or len(groups) != 1 or groups[0]["momentum"]
                or groups[0]["weight_decay"] or groups[0].get("nesterov") or groups[0].get("maximize")):
            return None
    if dense_sgd.refusal(model) is not None:
        return None
    return FastStep("dense-sgd", dense_sgd.DenseSGDStep(model, split), model,
                    graphs=eng.cuda_graphs and torch.device(device).type == "cuda", log=log)


class Engine:
    """What the engine chose for one fit of ``model``; :func:`start` makes it, :meth:`close` ends it.

    * :attr:`fast`: the hand-fused step (:func:`select_step`) or None;
    * :meth:`step`: one optimisation step on a batch by whatever applies (the fast step, else
      autograd on the whole batch or on sub-batches on threads, with loss scaling for 16-mixed);
    * :meth:`autocast`: the precision's autocast context;
    * :attr:`threads`, :attr:`batch_parts`: the intra-op threads and sub-batches a step uses
      (recorded in run.json).
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device, *,
                 params: Sequence[nn.Parameter], optimizer: torch.optim.Optimizer, world: int = 1,
                 own_step: bool = True, scaler: "torch.amp.GradScaler | None" = None,
                 log: Callable[[str], None] = print):
        eng = cfg.engine
        self.model, self.cfg, self.device, self.params, self.optimizer = model, cfg, device, list(params), optimizer
        self.precision = eng.precision
        self.scaler = scaler           # the trainer's (its state is checkpointed): grad_scaler(precision, device)
        self._threads_before = torch.get_num_threads()
        # one thread for small models on CPU; their batch shared out over threads where that pays
        self.threads, parts = apply_training_threads(model, cfg.batch_size, eng.threads, eng.batch_split)
        self.compiled = maybe_compile(model, eng.compile, device, log)
        plain = eng.precision == "32" and world == 1 and not self.compiled
        self.batch_parts = parts if plain and own_step else 1
        self.split = BatchSplit(self.batch_parts) if self.batch_parts > 1 else None
        self.fast = (select_step(model, cfg, device, params=params, optimizer=optimizer, world=world,
                                 split=self.split, log=log) if plain else None)
        self._restore_kernels = swap_in(model) if eng.fused_step else (lambda: None)

    def autocast(self):
        """The autocast context of the run's precision (a no-op context for ``32``)."""
        return autocast(self.precision, self.device)

    def step(self, xb: Tensor, yb: Tensor | None) -> Any:
        """One optimisation step on a batch; returns the model's output (``.loss``, ``.parts``)."""
        if self.fast is not None:
            return self.fast(xb, self.optimizer.param_groups[0]["lr"])
        opt = self.optimizer
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:                      # float16 loss scaling (16-mixed, CUDA)
            out = self.model(xb, yb)
            self.scaler.scale(out.loss).backward()
            self.scaler.step(opt)
            self.scaler.update()
            return out
        if self.split is not None:
            out = self.split.forward_backward(self.model, self.params, xb, yb)   # sets the batch's .grad
        else:
            out = self.model(xb, yb)
            out.loss.backward()
        opt.step()
        return out

    def close(self) -> None:
        """Give back the threads, the split's workers and the model's own layers."""
        torch.set_num_threads(self._threads_before)
        if self.split is not None:
            self.split.close()
            self.split = None
        self._restore_kernels()


def start(model: nn.Module, cfg: TrainConfig, device: torch.device | str, *, params: Sequence[nn.Parameter],
          optimizer: torch.optim.Optimizer, world: int = 1, own_step: bool = True,
          scaler: "torch.amp.GradScaler | None" = None, log: Callable[[str], None] = print) -> Engine:
    """The engine for one fit (the trainer's one call into this package). ``own_step``: the
    trainer runs the engine's :meth:`Engine.step` (a trainer with a step of its own, e.g. the
    GAN's, gets the threads, autocast and kernels but no fast step or batch split)."""
    return Engine(model, cfg, torch.device(device), params=params, optimizer=optimizer, world=world,
                  own_step=own_step, scaler=scaler, log=log)
