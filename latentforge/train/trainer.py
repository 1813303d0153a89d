"""One trainer for every model whose forward returns ``.loss`` (and, subclassed, for GANs).

The loop reads top to bottom in :meth:`Trainer._fit`: per epoch, set the lr, run the steps
(:meth:`Trainer._steps`), turn the steps' losses into the epoch's record, then the end-of-epoch
hooks. Everything else is a piece of its own:

* how a step runs (fused steps, CUDA graphs, threads, precision): :mod:`latentforge.engine`,
  one call (``engine.start``) per fit;
* the epoch's losses on the device: :mod:`.losses`; the NaN and divergence policies: :mod:`.guards`;
* batches (in memory, on the device when it fits; or streamed): :mod:`.batches`;
* the end-of-epoch hooks (sample grids, callbacks such as TensorBoard, early stopping, the log
  line, the checkpoint): :mod:`.callbacks`; the checkpoint that makes ``--resume`` exact:
  :mod:`.state`; several processes: :mod:`.distributed`.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from .. import engine as engine_
from ..config import TrainConfig
from ..engine import Engine, check_precision, grad_scaler
from ..errors import Interrupted
from . import batches
from . import callbacks as cb_
from . import distributed as ddp
from . import state as state_
from .callbacks import progress_enabled
from .guards import DivergenceGuard, NanGuard
from .losses import StepLosses
from .optim import build_optimizer, set_lr
from .state import CHECKPOINT, TrainerState

__all__ = ["Trainer", "TrainerState", "StepLosses", "build_optimizer", "progress_enabled", "CHECKPOINT"]


class Trainer:
    """Trains ``model`` (anything whose ``forward(x, y)`` returns an output with ``.loss``).

    ``params`` restricts training to some parameters (greedy stages, frozen encoders);
    ``checkpoint_meta`` is stored in every checkpoint (model name, config, data description);
    ``run_dir`` None trains without checkpoints; ``callbacks`` are called as ``cb(trainer,
    record)`` after each epoch, before the checkpoint.
    """

    #: whether a loss far above its start stops the run (:class:`.guards.DivergenceGuard`)
    guards_divergence = True

    def __init__(self, model: nn.Module, cfg: TrainConfig, *, run_dir: Path | None = None,
                 params: Iterable[nn.Parameter] | None = None, lr: float | None = None,
                 epochs: int | None = None, checkpoint_meta: dict[str, Any] | None = None,
                 progress: bool | None = None, log: Callable[[str], None] | None = None,
                 device: torch.device | str = "cpu", desc: str = "train", eval_batch_size: int = 2048,
                 callbacks: Iterable[Callable[["Trainer", dict[str, Any]], None]] = ()):
        self.model, self.cfg, self.desc, self.eval_batch_size = model, cfg, desc, eval_batch_size
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.epochs = cfg.epochs if epochs is None else epochs
        # all parameters, frozen ones included: a model may unfreeze some later (``on_epoch_start``)
        self.params = list(params) if params is not None else list(model.parameters())
        self.optimizers = self.build_optimizers(lr)     # name -> optimizer; the name prefixes its tensors
        self.meta = dict(checkpoint_meta or {})
        self.callbacks = list(callbacks)
        self.hooks = cb_.epoch_end_hooks()              # after each epoch, in order (callbacks.py)
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:   # "cuda" is the current GPU, by index
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.dist = ddp.info()
        main = self.dist.main                           # only rank 0 logs, shows progress and writes
        self.log = (log if log is not None else (lambda msg: print(msg, file=sys.stderr))) if main else (lambda m: None)
        self.progress = progress_enabled(progress) and main
        self.state = TrainerState()
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.engine: Engine | None = None  # how this fit's steps run (latentforge.engine), during a fit
        self.threads: int | None = None    # intra-op threads of the last fit (restored after it)
        self.batch_parts = 1               # sub-batches on threads of their own, per step (engine/split.py)
        self.fast_step: str | None = None  # the engine's fast step of the last fit (e.g. "dense-sgd"), or None
        self.nan_guard, self.divergence_guard = NanGuard(self), DivergenceGuard(self)
        if cfg.nan_policy == "skip":
            self.nan_guard.guard_optimizers()
        check_precision(cfg.engine.precision, self.device, adversarial=not self._own_step())
        self._scaler = grad_scaler(cfg.engine.precision, self.device)   # checkpointed state, like the optimizer's
        self._best_weights: dict[str, Tensor] | None = None
        self._saved_epoch = 0             # epoch of the checkpoint last written to run_dir
        self._sync: ddp.GradSync | None = None
        self._rank_rng: list[Any] = []
        self._rank_rng_restored = False

    def build_optimizers(self, lr: float | None) -> dict[str, torch.optim.Optimizer]:
        return {"optim": build_optimizer(self.params, self.cfg, lr)}

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The first optimizer (the only one, except for adversarial training)."""
        return next(iter(self.optimizers.values()))

    @property
    def skipped_batches(self) -> int:
        """Batches skipped under ``--nan-policy skip``, in this process."""
        return self.nan_guard.skipped_batches

    # ---------------------------------------------------------------- checkpoints (state.py)
    def extra_state(self) -> dict[str, Tensor]:
        """Tensors a subclass needs to resume exactly (e.g. a GAN's replay buffer)."""
        return {}

    def load_extra_state(self, tensors: dict[str, Tensor], source: str) -> None:
        pass

    def checkpoint_tensors(self) -> dict[str, Tensor]:
        return state_.checkpoint_tensors(self)

    def save(self, path: Path | None = None) -> Path:
        return state_.save(self, path)

    def restore(self, tensors: dict[str, Tensor], meta: dict[str, Any], source: str) -> None:
        state_.restore(self, tensors, meta, source)

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, x: Any, y: Tensor | None = None) -> dict[str, float]:
        """Mean loss and parts over ``x`` in eval mode (large batches, weighted by batch size)."""
        return batches.mean_losses(self.model, batches.eval_batches(x, y, self.eval_batch_size, self.device), len(x))

    # ---------------------------------------------------------------- training
    def fit(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """Train from ``self.state.epoch`` up to ``self.epochs``; returns the history.

        Ctrl-C (SIGINT) stops at once: the checkpoint on disk stays the one of the last completed
        epoch (so ``--resume`` is exact), and :class:`~latentforge.errors.Interrupted` is raised,
        saying where it is and how to resume (the CLI prints it and exits with status 130).
        """
        try:
            return self._fit(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted(cb_.interrupted_message(self)) from None

    def _fit(self, x: Any, x_valid: Any = None, y: Tensor | None = None,
             y_valid: Tensor | None = None) -> list[dict[str, Any]]:
        """``x`` is a tensor (in memory: batches are gathered from it, on the device when it fits)
        or a :class:`~latentforge.data.large.StreamingDataset` (read in shuffled blocks, with its
        own labels; ``y`` is then unused); the same for ``x_valid``."""
        if isinstance(x, Tensor):
            x, y = batches.place(x, self.device), batches.place(y, self.device)
        n_use = batches.samples_per_epoch(len(x), self.cfg.batch_size, self.dist.world, self.cfg.steps_per_epoch)
        if self.state.stopped_early:
            self.log(f"{self.desc}: early stopping had ended this run at epoch {self.state.epoch}")
            return self.state.history
        self._start_fit()
        try:
            for epoch in range(self.state.epoch, self.epochs):
                self._begin_epoch(epoch)
                t0 = time.perf_counter()
                losses = self._steps(x, y, n_use, epoch, t0)
                train = ddp.epoch_losses(self, losses, n_use)
                self.nan_guard.check_epoch(train["loss"], epoch)
                seconds = time.perf_counter() - t0
                record: dict[str, Any] = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in train.items()}}
                if x_valid is not None and len(x_valid):
                    record.update({f"valid_{k}": v for k, v in ddp.evaluate_shared(self, x_valid, y_valid).items()})
                record.update({"seconds": seconds, "samples_per_s": n_use / seconds,
                               "lr": self.optimizer.param_groups[0]["lr"]})
                if self.guards_divergence:
                    self.divergence_guard.check(record, epoch)    # before the checkpoint: the last good one stays
                self.state.history.append(record)
                self.state.epoch = epoch + 1
                ddp.sync_ranks(self)
                for hook in self.hooks:                           # grids, callbacks, early stop, log, checkpoint
                    hook(self, record)
                if self.state.stopped_early:
                    break
        finally:
            self._end_fit()
        if self._best_weights is not None and self.cfg.early_stopping:
            self.model.load_state_dict(self._best_weights)   # keep the best epoch's weights
        return self.state.history

    def _begin_epoch(self, epoch: int) -> None:
        self._set_lr(epoch)
        hook = getattr(self.model, "on_epoch_start", None)
        if callable(hook):
            hook(epoch)                               # e.g. unfreeze an encoder after E epochs
        if self._sync is not None:
            self._sync.refresh()                      # gradients of newly unfrozen parameters too
        self.model.train()
        self.nan_guard.start_epoch()

    def _steps(self, x: Any, y: Tensor | None, n_use: int, epoch: int, t0: float) -> StepLosses:
        """Run this epoch's training steps; returns their losses (on the device). The NaN guard
        looks after each step (or chunk of steps), the progress bar at its refreshes."""
        losses, bs = StepLosses(), self.cfg.batch_size
        n_batches = math.ceil(n_use / bs)
        bar, refresh = cb_.progress_bar(self, epoch, n_batches), max(1, n_batches // 50)
        for b in self._epoch_steps(x, y, n_use, epoch, losses):
            self.nan_guard.after_step(losses, epoch, b, n_batches)
            if bar is not None and (b + 1 - bar.n >= refresh or b + 1 == n_batches):
                bar.update(b + 1 - bar.n)
                bar.set_postfix(loss=f"{losses.means(n_use, bs)['loss']:.4f}",
                                samples_s=f"{min((b + 1) * bs, n_use) / max(time.perf_counter() - t0, 1e-9):,.0f}")
        if bar is not None:
            bar.close()
        if epoch == 0:
            self.divergence_guard.note_start(losses)
        return losses

    def _epoch_steps(self, x: Any, y: Tensor | None, n_use: int, epoch: int, losses: StepLosses):
        """Run the epoch's steps, recording their losses in ``losses``; yields the index of the
        last step done, after each step or, on the engine's chunked path, after each chunk."""
        cfg, d, eng = self.cfg, self.dist, self.engine
        if isinstance(x, Tensor):
            order = batches.epoch_order(self.generator, len(x), n_use, x.device)
            if eng.fast is not None and self._own_step() and x.device == self.device:
                lr = self.optimizer.param_groups[0]["lr"]
                for b, table, names in eng.fast.epoch(x, order, cfg.batch_size, lr):
                    losses.names = names
                    losses.add_block(table)
                    yield b
                return
            feed = batches.memory_batches(x, y, order, cfg.batch_size, self.device, d.rank, d.world)
        else:
            feed = x.epoch_batches(cfg.batch_size, cfg.seed, epoch, n_use, rank=d.rank, world=d.world,
                                   device=self.device)
        for b, (xb, yb, share) in enumerate(feed):
            if self._sync is not None:
                self._sync.share = share              # this rank's part of the global batch
            if eng.compiled:
                torch.compiler.cudagraph_mark_step_begin()
            with eng.autocast():
                out = self.train_step(xb, yb)
            # several processes: losses scaled by share * world, so that their mean over the ranks
            # is the global batch's mean (1 for evenly split batches)
            losses.add(out, share * d.world, copy=eng.compiled)
            yield b

    def train_step(self, xb: Tensor, yb: Tensor | None) -> Any:
        """One optimisation step on a batch; returns the model's output (``.loss``, ``.parts``).
        During a fit the engine runs it (a fast step where one applies); outside, plain autograd."""
        if self.engine is not None:
            return self.engine.step(xb, yb)
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(xb, yb)
        out.loss.backward()
        self.optimizer.step()
        return out

    def _own_step(self) -> bool:
        """Whether this trainer's steps are :meth:`Trainer.train_step` (the engine's), not a
        subclass's or an instance's own."""
        return getattr(self.train_step, "__func__", None) is Trainer.train_step

    def _start_fit(self) -> None:
        """The engine (threads, precision, compilation, fast steps), and with several processes:
        rank 0's weights everywhere, gradient averaging, and a torch RNG of each rank's own."""
        self.engine = engine_.start(self.model, self.cfg, self.device, params=self.params, optimizer=self.optimizer,
                                    world=self.dist.world, own_step=self._own_step(), scaler=self._scaler,
                                    log=self.log)
        self.threads, self.batch_parts = self.engine.threads, self.engine.batch_parts
        self.fast_step = self.engine.fast.name if self.engine.fast is not None and self._own_step() else None
        ddp.start_fit(self)

    def _end_fit(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        if self._sync is not None:
            self._sync.remove()
            self._sync = None

    # ---------------------------------------------------------------- per-model pieces
    def epoch_samples(self) -> Tensor | None:
        """The images of the epoch's sample grid (callbacks.sample_grid), or None."""
        return cb_.model_samples(self)

    def _set_lr(self, epoch: int) -> None:
        set_lr(self.optimizers.values(), self.cfg.lr_schedule, epoch, self.epochs)

    def _early_stopping(self, record: dict[str, Any]) -> bool:
        """Whether to stop after this epoch (patience on the validation loss; keeps the best weights)."""
        return cb_.patience(self, record)
