"""One training step's forward and backward passes as sub-batches on several CPU threads.

A chapter model's step on CPU runs on one intra-op thread (:mod:`.threads`): its kernels are too
short to share out over OpenMP threads, which meet at a barrier after every kernel. The
batch itself shares out better. :class:`BatchSplit` cuts it into ``parts`` contiguous
sub-batches, runs the forward and backward pass of each on its own thread (the calling one and
``parts - 1`` workers; PyTorch releases the GIL inside its kernels, and autograd runs a CPU
backward pass on the thread that asks for it), and sums the gradients in a fixed order into
``.grad``; the optimizer then steps once, on the calling thread. Measured on the 2-core VM of
``bench/README.md`` (two parts, one thread each, against the whole batch on one thread): the
conv AE's step at batch 32 1.2-1.6x faster, the recurrent AE's 1.5-2x; with one or two busy
processes beside it about as fast as one thread (0.95-1.75x), where threads that meet after
every kernel were up to 7x slower.

It computes what one backward pass over the whole batch computes, up to float rounding, for
models whose loss is a mean over samples that do not see each other and whose forward pass
draws no random numbers (``batch_separable()``: no batch norm, no dropout, no noise, no
batch-level penalty). Workers only read the parameters; every update happens on the calling
thread, so an interrupted step leaves the weights as they were.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import torch
from torch import Tensor, nn

from ..models.base import ModelOutput

#: the fewest samples a part may have: smaller batches (e.g. an epoch's last) run whole
MIN_PART = 8


class BatchSplit:
    """Forward + backward of ``model`` on a batch as ``parts`` sub-batches on as many threads.

    ``params`` are the trainable tensors whose gradients the step needs (those that do not
    require gradients, or that the loss does not reach, keep ``grad = None``). Call
    :meth:`close` when done (the trainer does at the end of each fit).
    """

    def __init__(self, model: nn.Module, params: Sequence[Tensor], parts: int):
        if parts < 2:
            raise ValueError(f"BatchSplit needs at least 2 parts, got {parts}")
        self.model, self.params, self.parts = model, list(params), parts
        self._pool = ThreadPoolExecutor(parts - 1, thread_name_prefix="latentforge-part")

    def __call__(self, xb: Tensor, yb: Tensor | None = None) -> ModelOutput:
        """The model's output for the whole batch (loss and parts: sample-weighted means of the
        sub-batches'); each trainable parameter's ``.grad`` is set to the batch's gradient."""
        n = len(xb)
        parts = min(self.parts, n // MIN_PART)
        if parts < 2:                                        # too few samples to share out
            out = self.model(xb, yb)
            out.loss.backward()
            return out
        trainable = [p for p in self.params if p.requires_grad]
        xs = xb.tensor_split(parts)                          # (n / parts, ...) each, contiguous rows
        ys = yb.tensor_split(parts) if yb is not None else [None] * parts
        futures = [self._pool.submit(self._part, xs[i], ys[i], n, trainable) for i in range(1, parts)]
        results = [self._part(xs[0], ys[0], n, trainable)]
        results += [f.result() for f in futures]
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

    def _part(self, x: Tensor, y: Tensor | None, n: int, trainable: list[Tensor]):
        """One sub-batch: its output and the gradients of its share of the batch's mean loss."""
        out = self.model(x, y)
        grads = torch.autograd.grad(out.loss * (len(x) / n), trainable, allow_unused=True)
        return out, grads

    def close(self) -> None:
        self._pool.shutdown(wait=True)
