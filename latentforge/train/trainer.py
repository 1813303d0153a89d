"""One trainer for every non-adversarial model (every model whose forward returns ``.loss``).

Fast by construction for the chapter's small models, which are bound by per-step overhead:
the whole training set is one in-memory tensor (on the GPU when it fits), each batch is one
gather from it in the epoch's seeded random order (no per-sample Python work, no DataLoader
collation), and models with a hand-fused SGD step run their epochs in chunks of steps, replayed
as CUDA graphs on a GPU (``graphs.py``). Losses stay on the device (:class:`StepLosses`) and are
read back only at the NaN checks, progress-bar refreshes and the end of the epoch.

State that makes ``--resume`` exact: model and optimizer tensors, the data-order generator, the
global torch RNG (dropout, noise, sampling), the history, and early-stopping counters; all saved
at the end of every epoch in one atomically written safetensors checkpoint.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from .. import __version__
from ..config import TrainConfig
from ..errors import CheckpointError, ConfigError, Interrupted, TrainingError, collective
from . import distributed as ddp
from .accel import autocast, check_precision, grad_scaler, maybe_compile
from .graphs import ChunkedSteps, graph_safe_params
from .split import BatchSplit
from .threads import apply_training_threads
from .checkpoint import (load_module_state, load_optimizer_state, optimizer_state, save_checkpoint,
                         split_prefix)

CHECKPOINT = "checkpoint.safetensors"


def build_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """The optimizer named by the config, with the multi-tensor (``foreach``) kernels."""
    lr = cfg.lr if lr is None else lr
    params = list(params)
    kw = dict(lr=lr, weight_decay=cfg.weight_decay, foreach=True)
    name = cfg.optimizer
    if name == "sgd":
        return torch.optim.SGD(params, momentum=cfg.momentum, **kw)
    betas = tuple(cfg.betas)
    if name == "adam":
        return torch.optim.Adam(params, betas=betas, **kw)
    if name == "adamw":
        return torch.optim.AdamW(params, betas=betas, **kw)
    if name == "nadam":
        return torch.optim.NAdam(params, betas=betas, **kw)
    if name == "rmsprop":  # Keras' RMSprop defaults: rho 0.9, eps 1e-7
        return torch.optim.RMSprop(params, alpha=0.9, eps=1e-7, momentum=cfg.momentum, **kw)
    raise AssertionError(name)  # validated by the config


def progress_enabled(flag: bool | None) -> bool:
    """Progress bars only on a terminal and not under CI, unless forced."""
    if flag is not None:
        return flag
    return sys.stderr.isatty() and not os.environ.get("CI")


def _share(size: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous part [lo, hi) of a batch of ``size``, split as evenly as possible."""
    base, extra = divmod(int(size), world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


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


@dataclass
class TrainerState:
    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False


class Trainer:
    """Trains ``model`` (anything whose ``forward(x, y)`` returns an output with ``.loss``).

    ``params`` restricts training to some parameters (greedy stages, frozen encoders);
    ``checkpoint_meta`` is stored in every checkpoint (model name, config, data description);
    ``run_dir`` None trains without checkpoints.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, *, run_dir: Path | None = None,
                 params: Iterable[nn.Parameter] | None = None, lr: float | None = None,
                 epochs: int | None = None, checkpoint_meta: dict[str, Any] | None = None,
                 progress: bool | None = None, log: Callable[[str], None] | None = None,
                 device: torch.device | str = "cpu", desc: str = "train", eval_batch_size: int = 2048,
                 callbacks: Iterable[Callable[["Trainer", dict[str, Any]], None]] = ()):
        self.model = model
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.epochs = cfg.epochs if epochs is None else epochs
        # all parameters, frozen ones included: a model may unfreeze some later (``on_epoch_start``);
        # optimizers skip parameters whose grad is None
        self.params = list(params) if params is not None else list(model.parameters())
        self.optimizers = self.build_optimizers(lr)     # name -> optimizer; the name prefixes its tensors
        self.meta = dict(checkpoint_meta or {})
        self.progress = progress_enabled(progress)
        self.log = log if log is not None else (lambda msg: print(msg, file=sys.stderr))
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:   # "cuda" is the current GPU, by index
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.desc = desc
        self.eval_batch_size = eval_batch_size
        self.threads: int | None = None    # intra-op threads of the last fit (restored after it)
        self.batch_parts = 1               # sub-batches on threads of their own, per step (see split.py)
        self._split: BatchSplit | None = None
        self.callbacks = list(callbacks)   # called as cb(trainer, record) after each epoch, before the checkpoint
        self.state = TrainerState()
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self._best_weights: dict[str, Tensor] | None = None
        self._fused = None
        self._chunks: tuple[float, ChunkedSteps] | None = None    # (lr, the chunked path), see _chunked
        # NaN/Inf policy and interruption bookkeeping (see _nan_guard, fit)
        self.skipped_batches = 0          # batches skipped under --nan-policy skip, in this process
        self._skips_in_row = 0
        self._skipped_epoch = 0
        self._step_skipped = False
        self._checked = 0
        self._saved_epoch = 0             # epoch of the checkpoint last written to run_dir
        if cfg.nan_policy == "skip":
            self._guard_optimizers()
        # scale: other processes (torchrun), mixed precision, compilation (see _start_fit)
        self.dist = ddp.info()
        if not self.dist.main:            # only rank 0 logs, shows progress and writes
            self.log, self.progress = (lambda msg: None), False
        check_precision(cfg.precision, self.device, adversarial=type(self).train_step is not Trainer.train_step)
        self._scaler = grad_scaler(cfg.precision, self.device)
        self._sync: ddp.GradSync | None = None
        self._rank_rng: list[Any] = []
        self._rank_rng_restored = False
        self._compiled = False
        self._plain = True

    def build_optimizers(self, lr: float | None) -> dict[str, torch.optim.Optimizer]:
        return {"optim": build_optimizer(self.params, self.cfg, lr)}

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The first optimizer (the only one, except for adversarial training)."""
        return next(iter(self.optimizers.values()))

    # ------------------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, Tensor]:
        """Tensors a subclass needs to resume exactly (e.g. a GAN's replay buffer)."""
        return {}

    def load_extra_state(self, tensors: dict[str, Tensor], source: str) -> None:
        pass

    def checkpoint_tensors(self) -> dict[str, Tensor]:
        t = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        for name, opt in self.optimizers.items():
            opt_t, _ = optimizer_state(opt)
            t.update({f"{name}.{k}": v for k, v in opt_t.items()})
        t.update({f"extra.{k}": v for k, v in self.extra_state().items()})
        t["rng.data"] = self.generator.get_state()
        t["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            t["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        for r, (cpu, cuda) in enumerate(self._rank_rng[1:], 1):   # the other processes' RNGs
            t[f"rng.torch.r{r}"] = cpu
            if cuda is not None:
                t[f"rng.cuda.r{r}"] = cuda
        if self._scaler is not None:
            t["amp.scale"] = torch.tensor(float(self._scaler.get_scale()), dtype=torch.float64)
            t["amp.growth_tracker"] = torch.tensor(int(self._scaler.state_dict().get("_growth_tracker", 0)))
        if self._best_weights is not None:
            t.update({f"best.{k}": v for k, v in self._best_weights.items()})
        return t

    def save(self, path: Path | None = None) -> Path:
        assert self.run_dir is not None or path is not None
        path = Path(path) if path is not None else self.run_dir / CHECKPOINT
        opt_info = {name: optimizer_state(opt)[1] for name, opt in self.optimizers.items()}
        st = self.state
        meta = {**self.meta, "version": __version__,
                "trainer": {"epoch": st.epoch, "epochs": self.epochs, "history": st.history,
                            "best_loss": st.best_loss if math.isfinite(st.best_loss) else None,
                            "best_epoch": st.best_epoch, "bad_epochs": st.bad_epochs,
                            "stopped_early": st.stopped_early, "optimizers": opt_info}}
        save_checkpoint(path, self.checkpoint_tensors(), meta)
        if self.run_dir is not None and path == self.run_dir / CHECKPOINT:
            self._saved_epoch = st.epoch      # what an interrupted run can resume from
        return path

    def restore(self, tensors: dict[str, Tensor], meta: dict[str, Any], source: str) -> None:
        """Restore everything needed to continue exactly where the checkpoint left off."""
        tr = meta.get("trainer")
        if not isinstance(tr, dict):
            raise CheckpointError(f"{source}: checkpoint has no trainer state; it cannot be resumed")
        load_module_state(self.model, split_prefix(tensors, "model"), source)
        infos = tr.get("optimizers", {})
        for name, opt in self.optimizers.items():
            load_optimizer_state(opt, split_prefix(tensors, name), infos.get(name, {}), source)
        self.load_extra_state(split_prefix(tensors, "extra"), source)
        try:
            self.generator.set_state(tensors["rng.data"])
            torch.set_rng_state(tensors["rng.torch"])
        except (KeyError, RuntimeError) as e:
            raise CheckpointError(f"{source}: random-number state missing or invalid ({e})") from None
        self._restore_scale_state(tensors)
        best = split_prefix(tensors, "best")
        self._best_weights = best or None
        try:
            self.state = TrainerState(epoch=int(tr["epoch"]), history=list(tr.get("history", [])),
                                      best_loss=float(tr["best_loss"]) if tr.get("best_loss") is not None else math.inf,
                                      best_epoch=int(tr.get("best_epoch", 0)), bad_epochs=int(tr.get("bad_epochs", 0)),
                                      stopped_early=bool(tr.get("stopped_early", False)))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: trainer state is incomplete or invalid ({type(e).__name__}: {e})") from None
        if not 0 <= self.state.epoch <= 10**9:
            raise CheckpointError(f"{source}: trainer state has an invalid epoch {self.state.epoch}")
        self._saved_epoch = self.state.epoch

    # ------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor | None = None) -> dict[str, float]:
        """Mean loss and parts over ``x`` in eval mode (large batches, weighted by batch size)."""
        was_training = self.model.training
        self.model.eval()
        total: Tensor | None = None
        names: list[str] = []
        n = len(x)
        for xb, yb in self._eval_batches(x, y):
            out = self.model(xb, yb)
            vec = torch.stack([out.loss.detach(), *(p.detach() for p in out.parts.values())]) * len(xb)
            if total is None:
                total, names = vec, list(out.parts)
            else:
                total += vec
        self.model.train(was_training)
        assert total is not None
        vals = (total / n).tolist()
        return {"loss": vals[0], **{k: v for k, v in zip(names, vals[1:]) if k != "loss"}}

    # ------------------------------------------------------------------------------ training
    def fit(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """Train from ``self.state.epoch`` up to ``self.epochs``; returns the history.

        Ctrl-C (SIGINT) stops at once: the checkpoint on disk stays the one of the last completed
        epoch (so ``--resume`` is exact), and :class:`~latentforge.errors.Interrupted` is raised,
        saying where it is and how to resume (the CLI prints it and exits with status 130).
        """
        try:
            return self._fit(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted(self._interrupted_message()) from None

    def _fit(self, x: Any, x_valid: Any = None, y: Tensor | None = None,
             y_valid: Tensor | None = None) -> list[dict[str, Any]]:
        """``x`` is a tensor (in memory: batches are gathered from it, on the device when it fits)
        or a :class:`~latentforge.data.large.StreamingDataset` (read in shuffled blocks, with its
        own labels; ``y`` is then unused); the same for ``x_valid``."""
        cfg, model = self.cfg, self.model
        bs = cfg.batch_size
        streaming = not isinstance(x, Tensor)
        if not streaming:
            x, y = self._place(x), self._place(y)
        n = len(x)
        n_use = self._samples_per_epoch(n)
        n_batches = math.ceil(n_use / bs)
        if self.state.stopped_early:
            self.log(f"{self.desc}: early stopping had ended this run at epoch {self.state.epoch}")
            return self.state.history
        self._start_fit()
        try:
            for epoch in range(self.state.epoch, self.epochs):
                self._set_lr(epoch)
                hook = getattr(model, "on_epoch_start", None)
                if callable(hook):
                    hook(epoch)                               # e.g. unfreeze an encoder after E epochs
                if self._sync is not None:
                    self._sync.refresh()                      # gradients of newly unfrozen parameters too
                model.train()
                t0 = time.perf_counter()
                bar = self._bar(epoch, n_batches)
                losses = StepLosses()                     # on the device, read back at refreshes
                self._checked = self._skipped_epoch = 0   # the NaN guard's counts (_nan_guard)
                if cfg.nan_policy == "skip":
                    self._guard_optimizers()              # no-op unless the optimizers were rebuilt since __init__
                refresh = max(1, n_batches // 50)
                for b in self._epoch_steps(x, y, n_use, epoch, losses):
                    self._nan_guard(losses, epoch, b, n_batches)
                    if bar is not None and (b + 1 - bar.n >= refresh or b + 1 == n_batches):
                        running = losses.means(n_use, bs)["loss"]     # (the NaN guard has checked it)
                        bar.update(b + 1 - bar.n)
                        bar.set_postfix(loss=f"{running:.4f}",
                                        samples_s=f"{min((b + 1) * bs, n_use) / max(time.perf_counter() - t0, 1e-9):,.0f}")
                if bar is not None:
                    bar.close()
                train_vals = self._epoch_losses(losses, n_use, bs)
                self._check_finite(train_vals["loss"], epoch)
                seconds = time.perf_counter() - t0
                record: dict[str, Any] = {"epoch": epoch + 1}
                record.update({f"train_{k}": v for k, v in train_vals.items()})
                if x_valid is not None and len(x_valid):
                    record.update({f"valid_{k}": v for k, v in self._evaluate_shared(x_valid, y_valid).items()})
                record.update({"seconds": seconds, "samples_per_s": n_use / seconds,
                               "lr": self.optimizer.param_groups[0]["lr"]})
                self.state.history.append(record)
                self.state.epoch = epoch + 1
                self._sync_ranks()
                self.on_epoch_end(epoch + 1)
                if self.dist.main:
                    for cb in self.callbacks:
                        cb(self, record)
                stop = self._early_stopping(record)
                self._log_epoch(record)
                if self.run_dir is not None and self.dist.main:
                    self.save()
                if stop:
                    break
        finally:
            self._end_fit()
        if self._best_weights is not None and self.cfg.early_stopping:
            self.model.load_state_dict(self._best_weights)   # keep the best epoch's weights
        return self.state.history

    # ------------------------------------------------------------------------------ data feeding
    def _place(self, t: Tensor | None) -> Tensor | None:
        """In-memory data goes to the device when it fits in half its free memory; otherwise it
        stays in host memory and each gathered batch is copied over."""
        if t is None or t.device == self.device:
            return t
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if t.element_size() * t.numel() > free // 2:
                return t
        return t.to(self.device)

    def _samples_per_epoch(self, n: int) -> int:
        """Samples used per epoch: all of them, less a last batch too small to give every process a
        sample, capped at ``steps_per_epoch`` batches."""
        bs, world = self.cfg.batch_size, self.dist.world
        if bs < world:
            raise ConfigError(f"config field 'batch_size' = {bs}: the global batch must hold at least one "
                              f"sample per process ({world} processes)")
        n_use = n
        tail = n % bs
        if world > 1 and 0 < tail < world:
            n_use -= tail
        if self.cfg.steps_per_epoch:
            n_use = min(n_use, self.cfg.steps_per_epoch * bs)
        return n_use

    def _epoch_steps(self, x: Any, y: Tensor | None, n_use: int, epoch: int, losses: StepLosses):
        """Run this epoch's training steps, recording their losses in ``losses``; yields the index
        of the last step done, after each step or, on the chunked path, after each chunk of
        steps (CUDA graphs on a GPU, see :mod:`.graphs`)."""
        cfg = self.cfg
        self._fused = self._fused_step() if self._plain else None   # it bypasses autograd and autocast
        chunks = self._chunked(x)
        if chunks is not None:
            for b, table in chunks.epoch(self._epoch_order(len(x), n_use, x.device), cfg.batch_size):
                losses.names = chunks.names
                losses.add_block(table)
                yield b
            return
        if isinstance(x, Tensor):
            batches = self._memory_batches(x, y, n_use)
        else:
            batches = x.epoch_batches(cfg.batch_size, cfg.seed, epoch, n_use, rank=self.dist.rank,
                                      world=self.dist.world, device=self.device)
        step = self._scaled_step if self._scaler is not None else self.train_step
        for b, (xb, yb, share) in enumerate(batches):
            if self._sync is not None:
                self._sync.share = share              # this rank's part of the global batch
            if self._compiled:
                torch.compiler.cudagraph_mark_step_begin()
            with autocast(cfg.precision, self.device):
                out = step(xb, yb)
            # with several processes the losses are scaled by share * world, so that their mean
            # over the ranks is the global batch's mean (1 for evenly split batches)
            losses.add(out, share * self.dist.world, copy=self._compiled)
            yield b

    def _chunked(self, x: Any) -> ChunkedSteps | None:
        """The chunked path (:class:`.graphs.ChunkedSteps`) where it applies: a hand-fused step
        (plain SGD, precision 32, one process, this trainer's own ``train_step``) on in-memory
        data on the training device. Rebuilt when the learning rate changes (it is baked into
        the CUDA graphs)."""
        if (self._fused is None or getattr(self.train_step, "__func__", None) is not Trainer.train_step
                or not isinstance(x, Tensor) or x.device != self.device):
            return None
        lr = self.optimizer.param_groups[0]["lr"]
        if self._chunks is None or self._chunks[0] != lr or self._chunks[1].x is not x:
            fused = self._fused                # (this fit's threads: a fit's BatchSplit ends with it)
            self._chunks = (lr, ChunkedSteps(lambda xb: fused(xb, lr, threads=self._split), x,
                                             graph_safe_params(self.model),
                                             graphs=self.cfg.cuda_graphs, log=self.log))
        return self._chunks[1]

    def _epoch_order(self, n: int, n_use: int, device: torch.device) -> Tensor:
        """This epoch's seeded random order of the samples (the first ``n_use`` of a permutation)."""
        order = torch.randperm(n, generator=self.generator)
        return (order[:n_use] if n_use < n else order).to(device)

    def _memory_batches(self, x: Tensor, y: Tensor | None, n_use: int):
        """This epoch's batches from the in-memory tensors, in a seeded random order: a gather per
        batch (cheaper than a shuffled copy of the whole set per epoch); with several processes,
        each takes its contiguous part of every global batch. Yields ``(xb, yb, share)``."""
        bs, d = self.cfg.batch_size, self.dist
        order = self._epoch_order(len(x), n_use, x.device)
        copy = x.device != self.device
        for b in range(math.ceil(n_use / bs)):
            idx = order[b * bs:(b + 1) * bs]
            share = 1.0
            if d.world > 1:
                lo, hi = _share(len(idx), d.rank, d.world)
                share, idx = (hi - lo) / len(idx), idx[lo:hi]
            xb = x.index_select(0, idx)
            yb = y.index_select(0, idx) if y is not None else None
            if copy:
                xb = xb.to(self.device, non_blocking=True)
                yb = yb.to(self.device, non_blocking=True) if yb is not None else None
            yield xb, yb, share

    def _eval_batches(self, x: Any, y: Tensor | None):
        """Evaluation batches of a tensor or a stream (which brings its own labels)."""
        if not isinstance(x, Tensor):
            yield from x.eval_batches(self.eval_batch_size, self.device)
            return
        for i in range(0, len(x), self.eval_batch_size):
            yield (x[i:i + self.eval_batch_size].to(self.device, non_blocking=True),
                   y[i:i + self.eval_batch_size].to(self.device, non_blocking=True) if y is not None else None)

    # ------------------------------------------------------------------------------ scale
    def _start_fit(self) -> None:
        """Compilation, and with several processes: rank 0's weights everywhere, gradient averaging,
        and a torch RNG of each rank's own (unless restored from the checkpoint)."""
        cfg, d = self.cfg, self.dist
        self._threads_before = torch.get_num_threads()
        # one thread for small models on CPU; their batch shared out over threads where that pays
        self.threads, parts = apply_training_threads(self.model, cfg.batch_size)
        self._compiled = maybe_compile(self.model, cfg.compile, self.device, self.log)
        self._plain = cfg.precision == "32" and d.world == 1 and not self._compiled
        self.batch_parts = parts if self._plain and type(self).train_step is Trainer.train_step else 1
        if self.batch_parts > 1:
            self._split = BatchSplit(self.batch_parts)
        if d.world > 1:
            ddp.broadcast_module(self.model)
            self._sync = ddp.GradSync(self.params)
            if d.rank > 0 and not self._rank_rng_restored:
                torch.manual_seed(ddp.rank_seed(cfg.seed, d.rank, self.state.epoch))

    def _end_fit(self) -> None:
        torch.set_num_threads(self._threads_before)
        if self._split is not None:
            self._split.close()
            self._split = None
        if self._sync is not None:
            self._sync.remove()
            self._sync = None

    def _sync_ranks(self) -> None:
        """End of an epoch with several processes: rank 0's buffers (e.g. batch-norm statistics)
        everywhere, as DistributedDataParallel does, and every rank's RNG state for the checkpoint."""
        if self.dist.world == 1:
            return
        import torch.distributed as tdist
        with torch.no_grad():
            for buf in self.model.buffers():
                tdist.broadcast(buf, src=0)
        if self.run_dir is not None:
            cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
            self._rank_rng = ddp.all_gather_objects((torch.get_rng_state(), cuda))

    def _epoch_losses(self, losses: StepLosses, n: int, bs: int) -> dict[str, float]:
        """The epoch's mean losses over all processes (one all-reduce)."""
        world = self.dist.world
        if world == 1 or not losses.rows:
            return losses.means(n, bs)
        return losses.means(n, bs, ddp.all_reduce_sum(losses.table().float()) / world)

    def _evaluate_shared(self, x: Any, y: Tensor | None) -> dict[str, float]:
        """``evaluate`` under the run's precision; with several processes each evaluates its part of
        the held-out data and the means are combined."""
        d = self.dist
        n = len(x)
        with autocast(self.cfg.precision, self.device):
            if d.world == 1 or n < d.world:
                return self.evaluate(x, y)
            lo, hi = (int(v) for v in _share(n, d.rank, d.world))
            part = x[lo:hi] if isinstance(x, Tensor) else x.subset(slice(lo, hi))
            vals = self.evaluate(part, y[lo:hi] if y is not None else None)
        sums = torch.tensor([v * (hi - lo) for v in vals.values()], dtype=torch.float64, device=self.device)
        return dict(zip(vals, (ddp.all_reduce_sum(sums) / n).tolist()))

    def _scaled_step(self, xb: Tensor, yb: Tensor | None) -> Any:
        """``train_step`` with float16 loss scaling (``precision = 16-mixed``, CUDA)."""
        out = self.model(xb, yb)
        opt, scaler = self.optimizer, self._scaler
        opt.zero_grad(set_to_none=True)
        scaler.scale(out.loss).backward()
        scaler.step(opt)
        scaler.update()
        return out

    def _restore_scale_state(self, tensors: dict[str, Tensor]) -> None:
        """This rank's RNG (several processes), the CUDA RNG and the loss scale from a checkpoint."""
        d = self.dist
        if d.rank > 0 and f"rng.torch.r{d.rank}" in tensors:
            torch.set_rng_state(tensors[f"rng.torch.r{d.rank}"])
            self._rank_rng_restored = True
        if self.device.type == "cuda":
            key = "rng.cuda" if d.rank == 0 else f"rng.cuda.r{d.rank}"
            if key in tensors:
                torch.cuda.set_rng_state(tensors[key], self.device)
        if self._scaler is not None and "amp.scale" in tensors:
            state = self._scaler.state_dict()
            state.update(scale=float(tensors["amp.scale"]), _growth_tracker=int(tensors["amp.growth_tracker"]))
            self._scaler.load_state_dict(state)

    def train_step(self, xb: Tensor, yb: Tensor | None) -> Any:
        """One optimisation step on a batch; returns the model's output (``.loss``, ``.parts``)."""
        if self._fused is not None:
            out = self._fused(xb, self.optimizer.param_groups[0]["lr"], threads=self._split)
            if out is not None:
                return out
        self.optimizer.zero_grad(set_to_none=True)
        if self._split is not None:
            out = self._split.forward_backward(self.model, self.params, xb, yb)   # sets the batch's .grad
        else:
            out = self.model(xb, yb)
            out.loss.backward()
        self.optimizer.step()
        return out

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each epoch's record is appended, before the checkpoint is written: saves
        the sample grid of a generative model every ``sample_every`` epochs (and after the last)
        to ``RUN_DIR/samples/epoch_NNN.png``, so progress can be watched while it trains (tabular
        data: a heat map, one line per sample)."""
        every = self.cfg.sample_every
        if self.run_dir is None or not self.dist.main or not every or (epoch % every and epoch != self.epochs):
            return
        with torch.no_grad():
            images = self.epoch_samples()
        if images is None:
            return
        from ..report import plot_image_grid
        folder = Path(self.run_dir) / "samples"
        folder.mkdir(exist_ok=True)
        plot_image_grid(images.float().cpu().numpy(), folder / f"epoch_{epoch:03d}.png", ncols=8,
                        title=f"{self.meta.get('model', type(self.model).__name__)}: epoch {epoch}")

    def epoch_samples(self) -> Tensor | None:
        """Samples of a model with ``sample(n, labels, generator)`` (VAEs, DDPM), from the same
        noise every epoch and without touching the training RNG; None for other models. The
        model's ``epoch_grid`` (default 64) sets how many."""
        m = self.model
        if not callable(getattr(m, "sample", None)):
            return None
        n, labels = getattr(m, "epoch_grid", 64), None
        if getattr(m, "uses_labels", False):
            labels = (torch.arange(n) % m.config.n_classes).to(self.device)
        was = m.training
        m.eval()
        try:
            return m.sample(n, labels, generator=torch.Generator().manual_seed(self.cfg.seed + 1))
        finally:
            m.train(was)

    # ------------------------------------------------------------------------------ helpers
    def _fused_step(self):
        """The model's hand-fused SGD step, where it applies: plain SGD (no momentum, no weight
        decay) on all of the model's parameters, and the config leaves ``fused_step`` on."""
        fn = getattr(self.model, "fused_sgd_step", None)
        cfg = self.cfg
        if (fn is None or not self.model.fused_sgd_applies() or not cfg.fused_step or cfg.optimizer != "sgd" or cfg.momentum
                or cfg.weight_decay or len(self.optimizer.param_groups) != 1
                or cfg.nan_policy == "skip"):        # skip must see the gradients before the update
            return None
        if not all(p.requires_grad for p in self.params):
            return None
        own = {id(p) for p in self.model.parameters()}
        if own != {id(p) for p in self.params} or len(own) != len(self.params):
            return None
        return fn

    def _set_lr(self, epoch: int) -> None:
        """The learning rate of ``epoch``: a pure function of the epoch, so resume stays exact."""
        if self.cfg.lr_schedule == "constant":
            return
        factor = 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))   # cosine: 1 at epoch 0, ~0 at the end
        for opt in self.optimizers.values():
            for g in opt.param_groups:
                g.setdefault("initial_lr", g["lr"])
                g["lr"] = g["initial_lr"] * factor

    def _early_stopping(self, record: dict[str, Any]) -> bool:
        if not self.cfg.early_stopping:
            return False
        metric = record.get("valid_loss", record["train_loss"])
        st = self.state
        if metric < st.best_loss:
            st.best_loss, st.best_epoch, st.bad_epochs = metric, record["epoch"], 0
            self._best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            return False
        st.bad_epochs += 1
        if st.bad_epochs >= self.cfg.early_stopping:
            st.stopped_early = True
            self.log(f"{self.desc}: early stopping at epoch {record['epoch']}: no improvement for "
                     f"{st.bad_epochs} epochs; keeping epoch {st.best_epoch} (loss {st.best_loss:.4f})")
            return True
        return False

    def _check_finite(self, value: float, epoch: int) -> None:
        if not math.isfinite(value):
            raise self._nonfinite_error(value, epoch)

    # ------------------------------------------------------------------------------ NaN/Inf policy
    def _nonfinite_error(self, value: Any, epoch: int, batch: int | None = None, why: str = "") -> TrainingError:
        """The error for a non-finite loss: what happened, what is kept, what to try."""
        done = self._saved_epoch if self.run_dir is not None else 0
        kept = (f"the last good checkpoint (epoch {done}) is kept in {self.run_dir / CHECKPOINT}" if done
                else "no checkpoint was written")
        where = f"epoch {epoch + 1}" + (f", batch {batch + 1}" if batch is not None else "")
        tips = "--nan-policy skip to drop such batches" if self.cfg.nan_policy != "skip" else "cleaner data"
        return collective(TrainingError(
            f"{self.desc}: the loss became {value} during {where}{why}; training stopped and {kept}. "
            f"Try a lower learning rate (now {self.optimizer.param_groups[0]['lr']:g}, --lr), "
            f"a smaller batch size, or {tips}"))

    def _nan_guard(self, losses: StepLosses, epoch: int, b: int, n_batches: int) -> None:
        """Apply ``cfg.nan_policy`` after step ``b`` (the last row of ``losses``; the chunked path
        calls it after each chunk, so ``stop`` and ``raise`` check whole chunks).

        * ``stop`` (default): every ``n_batches // 50`` steps, one ``isfinite`` over the losses since
          the last check (a single device sync, none per step); a non-finite loss stops training
          with a TrainingError; the checkpoint on disk stays the last good epoch's.
        * ``raise``: the same check at every step (one sync per step), so the error names the
          first bad batch.
        * ``skip``: the optimizers skip an update whose gradients are not finite (checked before
          the step, one sync per step); the batch is left out of the epoch's mean loss. More than
          ``max(1, n_batches // 10)`` skipped batches in a row, or a whole epoch of them, stop
          training with a TrainingError.
        """
        policy = self.cfg.nan_policy
        if policy == "skip":
            row = losses.last()
            finite = bool(torch.isfinite(row).all())
            if self._step_skipped or not finite:
                self._step_skipped = False
                losses.pop()
                self._skipped_epoch += 1
                self.skipped_batches += 1
                self._skips_in_row += 1
                limit = max(1, n_batches // 10)
                if self._skips_in_row > limit:
                    raise self._nonfinite_error(
                        row[0].item(), epoch, b, f" ({self._skips_in_row} batches in a row skipped, more than "
                                               f"the {limit} allowed)")
            else:
                self._skips_in_row = 0
            if b + 1 == n_batches:
                if not losses.rows:
                    raise self._nonfinite_error("non-finite", epoch, None, " (every batch of the epoch)")
                if self._skipped_epoch:
                    self.log(f"{self.desc} epoch {epoch + 1}: skipped {self._skipped_epoch} of {n_batches} "
                             f"batches with a non-finite loss or gradient (--nan-policy skip)")
            return
        every = 1 if policy == "raise" else max(1, n_batches // 50)
        if b + 1 - self._checked < every and b + 1 != n_batches:
            return
        new = losses.table(self._checked)[:, 0]
        bad = ~torch.isfinite(new)
        if self.dist.world > 1:       # decided together: one process may see the NaN a step before the others
            anywhere = bool(ddp.all_reduce_sum(bad.any().float().reshape(1)))
            if anywhere and not bool(bad.any()):
                raise self._nonfinite_error("non-finite", epoch, None, " (in another process)")
        if bool(bad.any()):                               # the one sync of this check
            first = int(bad.nonzero()[0, 0])
            raise self._nonfinite_error(new[first].item(), epoch, self._checked + first)
        self._checked = losses.rows

    def _guard_optimizers(self) -> None:
        """For ``--nan-policy skip``: each optimizer's ``step`` first checks that every gradient
        is finite, and does nothing (flagging the step as skipped) when one is not."""
        for opt in self.optimizers.values():
            if getattr(opt, "_latentforge_guarded", False):
                continue
            step = opt.step

            def guarded(*args: Any, _opt=opt, _step=step, **kwargs: Any):
                grads = [p.grad for g in _opt.param_groups for p in g["params"] if p.grad is not None]
                if grads and not bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
                    self._step_skipped = True
                    return None
                return _step(*args, **kwargs)

            opt.step = guarded
            opt._latentforge_guarded = True

    def _interrupted_message(self) -> str:
        """What Ctrl-C left on disk and how to continue."""
        if self.run_dir is None:
            return f"{self.desc}: interrupted; this stage writes no checkpoint"
        done = self._saved_epoch
        if not done:
            return f"{self.desc}: interrupted before the first epoch finished; no checkpoint was written"
        model = self.meta.get("model", "MODEL")
        source = self.meta.get("data", {}).get("source", "DATA")
        return (f"{self.desc}: interrupted; the checkpoint of epoch {done} of {self.epochs} is in "
                f"{self.run_dir / CHECKPOINT}; continue with: "
                f"latentforge train {model} --data {source} --out {self.run_dir} --resume")

    def _bar(self, epoch: int, total: int):
        if not self.progress:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=f"{self.desc} {epoch + 1}/{self.epochs}", unit="batch",
                    leave=False, file=sys.stderr, dynamic_ncols=True)

    def _log_epoch(self, r: dict[str, Any]) -> None:
        parts = [f"{k}={v:.4f}" for k, v in r.items()
                 if k.startswith(("train_", "valid_")) and isinstance(v, float)]
        self.log(f"{self.desc} epoch {r['epoch']}/{self.epochs}: " + " ".join(parts)
                 + f" ({r['seconds']:.1f}s, {r['samples_per_s']:,.0f} samples/s)")
