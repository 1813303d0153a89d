"""What stops a run that has gone wrong: non-finite losses (``nan_policy``) and a diverging loss
(``divergence_policy``). Each stop is a :class:`~latentforge.errors.TrainingError` (exit 2) that
says what happened, what is kept on disk, and what to change."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from ..config import OPTIMIZER_DEFAULT_LR
from ..errors import TrainingError, collective
from . import distributed as ddp
from .losses import StepLosses

if TYPE_CHECKING:
    from .trainer import Trainer

#: a loss this many times its start (the first step's loss) has diverged
DIVERGENCE_FACTOR = 10.0


def kept(trainer: "Trainer") -> str:
    """What a stopped run leaves: the last good checkpoint, or nothing."""
    done = trainer._saved_epoch if trainer.run_dir is not None else 0
    if not done:
        return "no checkpoint was written"
    return f"the last good checkpoint (epoch {done}) is kept in {trainer.run_dir / 'checkpoint.safetensors'}"


class NanGuard:
    """Applies ``cfg.nan_policy`` after each step (or chunk of steps) of an epoch:

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

    def __init__(self, trainer: "Trainer"):
        self.trainer = trainer
        self.policy = trainer.cfg.nan_policy
        self.skipped_batches = 0          # batches skipped under skip, in this process
        self._skips_in_row = 0
        self._skipped_epoch = 0
        self._step_skipped = False
        self._checked = 0

    def start_epoch(self) -> None:
        self._checked = self._skipped_epoch = 0
        if self.policy == "skip":
            self.guard_optimizers()       # no-op unless the optimizers were rebuilt since

    def error(self, value: Any, epoch: int, batch: int | None = None, why: str = "") -> TrainingError:
        """The error for a non-finite loss: what happened, what is kept, what to try."""
        tr = self.trainer
        where = f"epoch {epoch + 1}" + (f", batch {batch + 1}" if batch is not None else "")
        tips = "--nan-policy skip to drop such batches" if self.policy != "skip" else "cleaner data"
        return collective(TrainingError(
            f"{tr.desc}: the loss became {value} during {where}{why}; training stopped and {kept(tr)}. "
            f"Try a lower learning rate (now {tr.optimizer.param_groups[0]['lr']:g}, --lr), "
            f"a smaller batch size, or {tips}"))

    def check_epoch(self, value: float, epoch: int) -> None:
        if not math.isfinite(value):
            raise self.error(value, epoch)

    def after_step(self, losses: StepLosses, epoch: int, b: int, n_batches: int) -> None:
        """Apply the policy after step ``b`` (the last row of ``losses``; the chunked path calls
        it after each chunk, so ``stop`` and ``raise`` check whole chunks)."""
        if self.policy == "skip":
            self._after_skip_step(losses, epoch, b, n_batches)
            return
        every = 1 if self.policy == "raise" else max(1, n_batches // 50)
        if b + 1 - self._checked < every and b + 1 != n_batches:
            return
        new = losses.table(self._checked)[:, 0]
        bad = ~torch.isfinite(new)
        if self.trainer.dist.world > 1:   # decided together: one process may see the NaN a step before the others
            anywhere = bool(ddp.all_reduce_sum(bad.any().float().reshape(1)))
            if anywhere and not bool(bad.any()):
                raise self.error("non-finite", epoch, None, " (in another process)")
        if bool(bad.any()):                               # the one sync of this check
            first = int(bad.nonzero()[0, 0])
            raise self.error(new[first].item(), epoch, self._checked + first)
        self._checked = losses.rows

    def _after_skip_step(self, losses: StepLosses, epoch: int, b: int, n_batches: int) -> None:
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
                raise self.error(row[0].item(), epoch, b, f" ({self._skips_in_row} batches in a row skipped, "
                                                          f"more than the {limit} allowed)")
        else:
            self._skips_in_row = 0
        if b + 1 == n_batches:
            if not losses.rows:
                raise self.error("non-finite", epoch, None, " (every batch of the epoch)")
            if self._skipped_epoch:
                self.trainer.log(f"{self.trainer.desc} epoch {epoch + 1}: skipped {self._skipped_epoch} of "
                                 f"{n_batches} batches with a non-finite loss or gradient (--nan-policy skip)")

    def guard_optimizers(self) -> None:
        """For ``skip``: each optimizer's ``step`` first checks that every gradient is finite, and
        does nothing (flagging the step as skipped) when one is not."""
        for opt in self.trainer.optimizers.values():
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


class DivergenceGuard:
    """Applies ``cfg.divergence_policy`` at the end of each epoch: an epoch whose mean training
    loss is more than :data:`DIVERGENCE_FACTOR` times the loss at the start (the first step's,
    computed before any update, kept in the checkpoint) has diverged.

    A healthy run's loss falls from its start (an untrained model's loss is about the largest it
    sees), so ten times the start is far outside anything a working run reaches; a learning rate
    too large for the optimizer crosses it at once (Adam at SGD's 1.5 on the digits: the first
    step's BCE 0.69, the first epoch's mean 30,064, recovering later to a blurred 0.46). Only for
    models trained on one loss: a GAN's two losses trade places by design (its trainer turns
    the guard off). ``stop`` (default) raises a TrainingError, ``warn`` says it once and goes
    on, ``off`` does nothing.
    """

    def __init__(self, trainer: "Trainer"):
        self.trainer = trainer
        self.policy = trainer.cfg.divergence_policy
        self.warned = False

    def note_start(self, losses: StepLosses) -> None:
        """Take the start from the first epoch's first step (all processes agree on it)."""
        st = self.trainer.state
        if st.start_loss is not None or not losses.rows:
            return
        first = losses.table()[:1, 0].double()
        total = torch.stack([first.sum(), torch.tensor(float(len(first)), dtype=torch.float64, device=first.device)])
        if self.trainer.dist.world > 1:
            total = ddp.all_reduce_sum(total.to(self.trainer.device))
        st.start_loss = float(total[0] / total[1])

    def check(self, record: dict[str, Any], epoch: int) -> None:
        st, tr = self.trainer.state, self.trainer
        start = st.start_loss
        loss = record.get("train_loss")
        if (self.policy == "off" or start is None or loss is None or not math.isfinite(start) or start <= 0
                or loss <= DIVERGENCE_FACTOR * start):
            return
        cfg = tr.cfg
        lr = tr.optimizer.param_groups[0]["lr"]
        customary = OPTIMIZER_DEFAULT_LR.get(cfg.optimizer)
        hint = (f" ({cfg.optimizer}'s customary lr is {customary:g})" if customary is not None and lr > customary
                else "")
        what = (f"{tr.desc}: the loss diverged: epoch {epoch + 1}'s mean training loss {loss:.4g} is "
                f"{loss / start:,.0f}x the loss at the start ({start:.4g})")
        advice = (f"The likely cause is the learning rate, {lr:g} with {cfg.optimizer}{hint}: lower it with "
                  f"--lr (or --set lr=...)")
        if self.policy == "warn":
            if not self.warned:
                tr.log(f"{what}. {advice}; training goes on (--set divergence_policy=warn)")
                self.warned = True
            return
        raise collective(TrainingError(f"{what}; training stopped and {kept(tr)}. {advice}, or train on "
                                       f"regardless with --set divergence_policy=off"))
