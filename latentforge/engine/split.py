"""A training step on several CPU threads: its batch shared out as sub-batches.

A chapter model's step on CPU runs on one intra-op thread (:mod:`.threads`): its kernels are too
short to share out over OpenMP threads, which meet at a barrier after every kernel. The batch
itself shares out better. :class:`BatchSplit` cuts it into ``parts`` contiguous sub-batches and
runs the forward and backward pass of each on its own thread (the calling one and ``parts - 1``
workers; PyTorch releases the GIL inside its kernels, and autograd runs a CPU backward pass on
the thread that asks for it):

* the autograd step (:meth:`BatchSplit.forward_backward`): the gradients are summed in a fixed
  order into ``.grad``, and the optimizer steps once, on the calling thread;
* the dense AEs' hand-fused SGD step (``dense_sgd.py``): each thread computes its
  sub-batch's layer inputs and gradients, then each thread applies the updates of a share of
  the layers (:meth:`BatchSplit.run`, twice a step).

It computes what one pass over the whole batch computes, up to float rounding, for models whose
loss is a mean over samples that do not see each other and whose forward pass draws no random
numbers (``threads.batch_separable``: exact classes, no batch norm, no dropout, no noise).

Splitting has a cost per step: handing the parts to the threads and back, and the two threads'
turns at Python's GIL around each short kernel (~1 ms for the seed AE's ~30 kernels on the
2-core VM of ``bench/README.md``), so only steps from ``threads.SPLIT_MIN_FLOPS`` split. Measured
there (two parts, one thread each, against the whole batch on one thread): the conv AE's step
at batch 32 1.2-1.6x faster, the recurrent AE's 1.5-2x, the seed AE's fused SGD step at batch
256 1.25-1.6x (batch 128: 1.1-1.2x; batch 32: 0.5x, so it stays whole); with one or two busy
processes beside it about as fast as one thread (0.95-1.75x), where OpenMP threads that meet
after every kernel were up to 7x slower.
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import torch
from torch import Tensor, nn

from ..models.base import ModelOutput

#: the fewest samples a part may have: smaller batches (e.g. an epoch's last) run whole
MIN_PART = 8
T = TypeVar("T")


def _without_grad(fn: Callable[[], T]) -> T:
    with torch.no_grad():
        return fn()


class BatchSplit:
    """A step's work on ``parts`` threads: the calling one and ``parts - 1`` workers.

    :meth:`forward_backward` is the autograd step's forward and backward pass on sub-batches;
    :meth:`run` runs any functions at once, one per thread (the dense AEs' hand-fused SGD step
    uses it for its sub-batches, then for its weight updates: ``dense_sgd.py``). Call
    :meth:`close` when done (the trainer does at the end of each fit).
    """

    def __init__(self, parts: int):
        if parts < 2:
            raise ValueError(f"BatchSplit needs at least 2 parts, got {parts}")
        self.parts = parts
        self._pool = ThreadPoolExecutor(parts - 1, thread_name_prefix="latentforge-part")

    def rows(self, x: Tensor) -> tuple[Tensor, ...]:
        """``x`` cut into blocks of contiguous rows, one per thread; fewer for a small batch (at
        least :data:`MIN_PART` rows each): one block for a batch too small to share out."""
        return x.tensor_split(max(1, min(self.parts, len(x) // MIN_PART)))

    def run(self, fns: Sequence[Callable[[], T]], grad: bool = True) -> list[T]:
        """``[fn() for fn in fns]``, the first on the calling thread and the others on workers, at
        once (at most ``parts`` functions), with gradients recorded or not (``grad``: a thread's
        own setting); an exception in any reaches the caller."""
        if len(fns) > self.parts:
            raise ValueError(f"{len(fns)} functions for {self.parts} threads")
        if not grad:
            fns = [functools.partial(_without_grad, fn) for fn in fns]
        futures = [self._pool.submit(fn) for fn in fns[1:]]
        first = fns[0]()
        return [first] + [f.result() for f in futures]

    def forward_backward(self, model: nn.Module, params: Sequence[Tensor], xb: Tensor,
                         yb: Tensor | None = None) -> ModelOutput:
        """``model``'s output for the whole batch (loss and parts: sample-weighted means of the
        sub-batches'); each trainable tensor of ``params`` gets the batch's gradient in ``.grad``
        (those the loss does not reach keep theirs: zero them before)."""
        n = len(xb)
        xs = self.rows(xb)                                   # (n / parts, ...) each
        if len(xs) == 1:                                     # too few samples to share out
            out = model(xb, yb)
            out.loss.backward()
            return out
        trainable = [p for p in params if p.requires_grad]
        ys = yb.tensor_split(len(xs)) if yb is not None else [None] * len(xs)

        def part(x: Tensor, y: Tensor | None):
            """One sub-batch: its output and the gradients of its share of the batch's mean loss."""
            out = model(x, y)
            return out, torch.autograd.grad(out.loss * (len(x) / n), trainable, allow_unused=True)

        results = self.run([functools.partial(part, x, y) for x, y in zip(xs, ys)])
        with torch.no_grad():
            for j, p in enumerate(trainable):
                grads = [r[1][j] for r in results if r[1][j] is not None]
                if grads:
                    total = grads[0]
                    for g in grads[1:]:
                        total.add_(g)                        # a fixed order: reproducible
                    p.grad = total
        outs = [r[0] for r in results]
        weights = [len(x) / n for x in xs]
        loss = sum(w * o.loss.detach() for w, o in zip(weights, outs))
        parts_ = {k: sum(w * o.parts[k].detach() for w, o in zip(weights, outs)) for k in outs[0].parts}
        return ModelOutput(loss=loss, parts=parts_)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
