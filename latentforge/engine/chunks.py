"""Many training steps per launch: chunks of steps replayed as CUDA graphs.

The chapter's dense autoencoders take ~26 tiny kernels per step. On a GPU each step then costs
what Python and the kernel launches cost (a few hundred µs), not what the arithmetic costs
(microseconds). :class:`ChunkedSteps` runs an epoch as chunks of up to ``chunk`` consecutive
steps. Each chunk gathers its batches from the in-memory data with a static index buffer,
calls the step function, and collects the losses in one ``(steps, 1 + parts)`` table. On CUDA
each distinct chunk (at most two per epoch: full chunks and the last, shorter one) is captured
once as a CUDA graph and then replayed: one launch per chunk instead of ~26 per step, and no
Python in between. Elsewhere the same chunk function runs eagerly, so the CPU test suite checks
exactly what the graphs replay.

CUDA graphs are off by default (``cuda_graphs = false`` in the engine config) until a GPU run
has verified them (``bench/gpu_check.py``); ``--set cuda_graphs=true`` turns them on.

A graph is trusted only after it has shown that it computes what the eager chunk computes: the
first replay of each captured chunk is checked against the same chunk run eagerly from the same
weights (losses and every updated tensor, within float tolerance); a capture that fails or a
replay that differs is reported in one line, and training goes on eagerly.

Only steps that are graph-safe go through here: the engine's hand-fused SGD step
(:mod:`.dense_sgd`), which draws no random numbers, never syncs with the host and updates the
parameters in place (so the captured addresses stay valid). The learning rate is baked into a
graph, so a new learning rate (an lr schedule) captures new graphs.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

Step = Callable[[Tensor], Any]          # a batch -> an output with ``.loss`` and ``.parts``
#: a chunk's batches are gathered at once only up to this many bytes (128 steps of batch 32 of
#: MNIST: 13 MB; of batch 4096 they would be 1.6 GB)
CHUNK_GATHER_BYTES = 64 << 20


class ChunkedSteps:
    """An epoch of ``step`` calls on batches of ``x``, run as chunks of up to ``chunk`` steps.

    ``params`` are the tensors the step updates in place: CUDA graph capture needs warm-up steps,
    whose updates are undone. ``graphs`` captures CUDA graphs (on a CUDA ``x`` only).
    ``gather_chunks`` gathers a chunk's batches at once (default: on CUDA, see :meth:`_run`).
    """

    def __init__(self, step: Step, x: Tensor, params: list[Tensor], *, chunk: int = 128, graphs: bool = False,
                 gather_chunks: bool | None = None, log: Callable[[str], None] = print):
        self.step, self.x, self.params, self.log = step, x, params, log
        self.names: list[str] | None = None       # the step's loss parts, in table order
        self.chunk = chunk
        self.use_graphs = graphs and x.is_cuda
        self.gather_chunks = x.is_cuda if gather_chunks is None else gather_chunks
        self._graphs: dict[tuple[int, ...], tuple[Any, Tensor, Tensor]] = {}   # sizes -> (graph, idx, table)
        self._pool = None

    # -------------------------------------------------------------------------------- epochs
    def plan(self, n: int, batch_size: int) -> list[tuple[int, ...]]:
        """The batch sizes of each chunk of an epoch of ``n`` samples."""
        sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
        return [tuple(sizes[i:i + self.chunk]) for i in range(0, len(sizes), self.chunk)]

    def epoch(self, order: Tensor, batch_size: int) -> Iterator[tuple[int, Tensor]]:
        """Run one epoch over ``x[order]`` (``order`` on ``x``'s device); yields, after each chunk,
        the index of its last step and its losses, a ``(steps, 1 + len(names))`` table."""
        start, last = 0, -1
        for sizes in self.plan(len(order), batch_size):
            idx = order[start:start + sum(sizes)]
            table = self._replay(sizes, idx) if self.use_graphs else self._run(sizes, idx)
            start += sum(sizes)
            last += len(sizes)
            yield last, table

    def gathers_whole(self, rows: int) -> bool:
        """Whether a chunk of ``rows`` samples is gathered by one kernel (see :meth:`_run`)."""
        return self.gather_chunks and rows * self.x[:1].numel() * self.x.element_size() <= CHUNK_GATHER_BYTES

    def _run(self, sizes: tuple[int, ...], idx: Tensor) -> Tensor:
        """The chunk itself: gather each batch, step, and stack the losses (one kernel).

        On CUDA the whole chunk is gathered by one kernel and each step takes a slice of it (one
        launch less per step; up to :data:`CHUNK_GATHER_BYTES`); on a CPU each batch is gathered
        just before its step, while the rest of the chunk would not stay in cache."""
        vals: list[Tensor] = []
        whole = self.x.index_select(0, idx) if self.gathers_whole(len(idx)) else None   # (sum(sizes), ...)
        off = 0
        for s in sizes:
            xb = whole[off:off + s] if whole is not None else self.x.index_select(0, idx[off:off + s])
            out = self.step(xb)                                             # (s, ...) batch
            off += s
            if self.names is None:
                self.names = list(out.parts)
            vals.append(out.loss)
            vals.extend(out.parts[k] for k in self.names)
        return torch.stack(vals).view(len(sizes), 1 + len(self.names)).float()

    # -------------------------------------------------------------------------------- CUDA graphs
    def _replay(self, sizes: tuple[int, ...], idx: Tensor) -> Tensor:
        # graphs capture and launch on the current device (a CPU: the tests' stand-in graphs)
        with torch.cuda.device(self.x.device) if self.x.is_cuda else contextlib.nullcontext():
            return self._replay_here(sizes, idx)

    def _replay_here(self, sizes: tuple[int, ...], idx: Tensor) -> Tensor:
        if sizes not in self._graphs:
            try:
                captured = self._capture(sizes)
            except RuntimeError as e:                       # e.g. an op that cannot be captured
                return self._give_up(f"capture failed ({str(e).splitlines()[0][:200]})", sizes, idx)
            self._graphs[sizes] = captured
            return self._first_replay(captured, sizes, idx)
        graph, static_idx, table = self._graphs[sizes]
        static_idx.copy_(idx)
        graph.replay()
        return table.clone()           # the next replay overwrites the graph's output

    def _first_replay(self, captured, sizes: tuple[int, ...], idx: Tensor) -> Tensor:
        """Replay a new graph once, then run the same chunk eagerly from the same weights; keep the
        graph only if both give the same losses and updated tensors (float tolerance)."""
        graph, static_idx, table = captured
        before = [p.detach().clone() for p in self.params]
        static_idx.copy_(idx)
        graph.replay()
        replayed, replayed_table = [p.detach().clone() for p in self.params], table.clone()
        with torch.no_grad():
            for p, v in zip(self.params, before):
                p.copy_(v)
        eager = self._run(sizes, idx)                       # the chunk's result either way
        now = [p.detach() for p in self.params]
        diff = max([float((a - p).abs().max()) for a, p in zip(replayed, now)]
                   + [float((replayed_table - eager).abs().max())])
        same = all(torch.allclose(a, p, rtol=1e-4, atol=1e-5) for a, p in zip(replayed, now))
        if not (same and torch.allclose(replayed_table, eager, rtol=1e-4, atol=1e-5)):
            self._graphs.clear()
            self.use_graphs = False
            self.log(f"CUDA graphs: a replay differs from the eager steps (max difference {diff:.3g}); "
                     f"training without CUDA graphs (--set cuda_graphs=false hides this check)")
        return eager

    def _give_up(self, why: str, sizes: tuple[int, ...], idx: Tensor) -> Tensor:
        self._graphs.clear()
        self.use_graphs = False
        self.log(f"CUDA graphs: {why}; training without CUDA graphs")
        return self._run(sizes, idx)

    def _capture(self, sizes: tuple[int, ...]):
        """Capture one chunk as a CUDA graph, after warm-up steps (cuBLAS handles and workspaces
        are created outside the capture) whose parameter updates are undone."""
        idx = torch.zeros(sum(sizes), dtype=torch.long, device=self.x.device)   # valid rows until filled
        saved = [p.detach().clone() for p in self.params]
        side = torch.cuda.Stream(device=self.x.device)
        side.wait_stream(torch.cuda.current_stream(self.x.device))
        with torch.cuda.stream(side):
            for s in sorted(set(sizes)):
                self.step(self.x.index_select(0, idx[:s]))
        torch.cuda.current_stream(self.x.device).wait_stream(side)
        with torch.no_grad():
            for p, v in zip(self.params, saved):
                p.copy_(v)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            table = self._run(sizes, idx)
        return graph, idx, table


def graph_safe_params(model: nn.Module) -> list[Tensor]:
    """What a fused step updates in place: every parameter and buffer of ``model``."""
    return [*model.parameters(), *model.buffers()]
