"""Feeding the trainer: in-memory data placed on the device once, an epoch's batches gathered in
its seeded random order (no per-sample Python work, no DataLoader collation), each process's
share of a global batch, and evaluation batches."""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch import Tensor

from ..errors import ConfigError


def share(size: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous part [lo, hi) of a batch of ``size``, split as evenly as possible."""
    base, extra = divmod(int(size), world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def place(t: Tensor | None, device: torch.device) -> Tensor | None:
    """In-memory data goes to the device when it fits in half its free memory; otherwise it
    stays in host memory and each gathered batch is copied over."""
    if t is None or t.device == device:
        return t
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if t.element_size() * t.numel() > free // 2:
            return t
    return t.to(device)


def samples_per_epoch(n: int, batch_size: int, world: int, steps_per_epoch: int) -> int:
    """Samples used per epoch: all of them, less a last batch too small to give every process a
    sample, capped at ``steps_per_epoch`` batches (0: no cap)."""
    if batch_size < world:
        raise ConfigError(f"config field 'batch_size' = {batch_size}: the global batch must hold at least one "
                          f"sample per process ({world} processes)")
    n_use = n
    tail = n % batch_size
    if world > 1 and 0 < tail < world:
        n_use -= tail
    if steps_per_epoch:
        n_use = min(n_use, steps_per_epoch * batch_size)
    return n_use


def epoch_order(generator: torch.Generator, n: int, n_use: int, device: torch.device) -> Tensor:
    """This epoch's seeded random order of the samples (the first ``n_use`` of a permutation)."""
    order = torch.randperm(n, generator=generator)
    return (order[:n_use] if n_use < n else order).to(device)


def memory_batches(x: Tensor, y: Tensor | None, order: Tensor, batch_size: int, device: torch.device,
                   rank: int = 0, world: int = 1) -> Iterator[tuple[Tensor, Tensor | None, float]]:
    """An epoch's batches from in-memory tensors in ``order``: a gather per batch (cheaper than a
    shuffled copy of the whole set per epoch); with several processes, each takes its contiguous
    part of every global batch. Yields ``(xb, yb, share)``."""
    copy = x.device != device
    for b in range(math.ceil(len(order) / batch_size)):
        idx = order[b * batch_size:(b + 1) * batch_size]
        part = 1.0
        if world > 1:
            lo, hi = share(len(idx), rank, world)
            part, idx = (hi - lo) / len(idx), idx[lo:hi]
        xb = x.index_select(0, idx)
        yb = y.index_select(0, idx) if y is not None else None
        if copy:
            xb = xb.to(device, non_blocking=True)
            yb = yb.to(device, non_blocking=True) if yb is not None else None
        yield xb, yb, part


def eval_batches(x: Any, y: Tensor | None, batch_size: int, device: torch.device):
    """Evaluation batches of a tensor or a stream (which brings its own labels)."""
    if not isinstance(x, Tensor):
        yield from x.eval_batches(batch_size, device)
        return
    for i in range(0, len(x), batch_size):
        yield (x[i:i + batch_size].to(device, non_blocking=True),
               y[i:i + batch_size].to(device, non_blocking=True) if y is not None else None)


@torch.no_grad()
def mean_losses(model: torch.nn.Module, feed: Iterator[tuple[Tensor, Tensor | None]], n: int) -> dict[str, float]:
    """``model``'s mean loss and parts over the ``n`` samples of ``feed``, in eval mode (each
    batch weighted by its size)."""
    was_training = model.training
    model.eval()
    total: Tensor | None = None
    names: list[str] = []
    try:
        for xb, yb in feed:
            out = model(xb, yb)
            vec = torch.stack([out.loss.detach(), *(p.detach() for p in out.parts.values())]) * len(xb)
            total, names = (vec, list(out.parts)) if total is None else (total + vec, names)
    finally:
        model.train(was_training)
    assert total is not None
    vals = (total / n).tolist()
    return {"loss": vals[0], **{k: v for k, v in zip(names, vals[1:]) if k != "loss"}}
