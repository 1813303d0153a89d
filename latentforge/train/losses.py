"""An epoch's per-step losses, kept on the device and read back in one transfer."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class StepLosses:
    """An epoch's per-step losses, kept on the device as rows ``[loss, *parts]`` (one row per
    step; a chunk of steps adds its block of rows at once) and read back in one transfer.

    A single step's losses are kept as they are (detached scalars) until the table is needed (a
    NaN check, a progress refresh, the epoch's end): then one ``stack`` makes their rows, instead
    of a stack, a cast and a reshape per step (three launches per step on a GPU)."""

    def __init__(self) -> None:
        self.blocks: list[Tensor] = []
        self.pending: list[tuple[list[Tensor], float]] = []   # steps not yet stacked: (values, scale)
        self.names: list[str] | None = None      # the parts, in row order
        self.rows = 0

    def add(self, out: Any, scale: float = 1.0, copy: bool = False) -> None:
        """One step's output (``.loss``, ``.parts``), its losses scaled by ``scale``. ``copy``: the
        values are overwritten later (outputs of a compiled model's CUDA graphs, which the next
        replay reuses), so they are copied now (one stack) instead of kept until the table is read."""
        if self.names is None:
            self.names = list(out.parts)
        vals = [out.loss.detach(), *(out.parts[k].detach() for k in self.names)]
        if copy:
            vals = list(torch.stack(vals).unbind())
        self.pending.append((vals, scale))
        self.rows += 1

    def add_block(self, table: Tensor) -> None:
        self._stack_pending()
        self.blocks.append(table)
        self.rows += len(table)

    def pop(self) -> None:
        """Drop the last step (added alone by ``add``)."""
        self.rows -= 1
        self.pending.pop()

    def last(self) -> Tensor:
        """The last step's row (added alone by ``add``)."""
        vals, scale = self.pending[-1]
        return torch.stack(vals).float() * scale

    def _stack_pending(self) -> None:
        if not self.pending:
            return
        width = 1 + len(self.names or ())
        block = torch.stack([v for vals, _ in self.pending for v in vals]).float().view(-1, width)
        scales = [scale for _, scale in self.pending]
        if any(sc != 1.0 for sc in scales):
            block = block * torch.tensor(scales, dtype=block.dtype).to(block.device, non_blocking=True).unsqueeze(1)
        self.blocks.append(block)
        self.pending = []

    def table(self, start: int = 0) -> Tensor:
        """Rows ``start:`` as one ``(steps, 1 + parts)`` tensor on the device."""
        self._stack_pending()
        if len(self.blocks) > 1:
            self.blocks = [torch.cat(self.blocks)]
        return self.blocks[0][start:] if self.blocks else torch.empty(0, 1 + len(self.names or ()))

    def means(self, n: int, bs: int, table: Tensor | None = None) -> dict[str, float]:
        """Sample-weighted means over the steps of an epoch of ``n`` samples in batches of ``bs``
        (the last batch may be short); one device sync."""
        table = self.table() if table is None else table
        weights = torch.full((len(table),), float(bs), dtype=torch.float64)
        weights[-1] = min(bs, n - bs * (len(table) - 1))
        vals = (weights @ table.cpu().double() / weights.sum()).tolist()
        return {"loss": vals[0], **{k: v for k, v in zip(self.names or (), vals[1:]) if k != "loss"}}
