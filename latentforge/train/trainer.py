"""One trainer for every non-adversarial model (every model whose forward returns ``.loss``).

Fast by construction for the chapter's small models, which are bound by per-step overhead:
the whole training set is one in-memory tensor, each epoch gathers it once in a seeded random
order, and batches are zero-copy slices of that buffer (no per-sample Python work, no
DataLoader collation). Losses are accumulated on the device and read back only when the
progress bar refreshes, not at every step.

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
from ..errors import CheckpointError, TrainingError
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
    if name == "adam":
        return torch.optim.Adam(params, **kw)
    if name == "adamw":
        return torch.optim.AdamW(params, **kw)
    if name == "nadam":
        return torch.optim.NAdam(params, **kw)
    if name == "rmsprop":  # Keras' RMSprop defaults: rho 0.9, eps 1e-7
        return torch.optim.RMSprop(params, alpha=0.9, eps=1e-7, momentum=cfg.momentum, **kw)
    raise AssertionError(name)  # validated by the config


def progress_enabled(flag: bool | None) -> bool:
    """Progress bars only on a terminal and not under CI, unless forced."""
    if flag is not None:
        return flag
    return sys.stderr.isatty() and not os.environ.get("CI")


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
        self.desc = desc
        self.eval_batch_size = eval_batch_size
        self.callbacks = list(callbacks)   # called as cb(trainer, record) after each epoch, before the checkpoint
        self.state = TrainerState()
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self._best_weights: dict[str, Tensor] | None = None
        self._fused = None

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
        best = split_prefix(tensors, "best")
        self._best_weights = best or None
        self.state = TrainerState(epoch=int(tr["epoch"]), history=list(tr.get("history", [])),
                                  best_loss=tr.get("best_loss") if tr.get("best_loss") is not None else math.inf,
                                  best_epoch=int(tr.get("best_epoch", 0)), bad_epochs=int(tr.get("bad_epochs", 0)),
                                  stopped_early=bool(tr.get("stopped_early", False)))

    # ------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor | None = None) -> dict[str, float]:
        """Mean loss and parts over ``x`` in eval mode (large batches, weighted by batch size)."""
        was_training = self.model.training
        self.model.eval()
        total: Tensor | None = None
        names: list[str] = []
        n = len(x)
        for i in range(0, n, self.eval_batch_size):
            xb = x[i:i + self.eval_batch_size].to(self.device, non_blocking=True)
            yb = y[i:i + self.eval_batch_size].to(self.device, non_blocking=True) if y is not None else None
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
    def fit(self, x: Tensor, x_valid: Tensor | None = None, y: Tensor | None = None,
            y_valid: Tensor | None = None) -> list[dict[str, Any]]:
        """Train from ``self.state.epoch`` up to ``self.epochs``; returns the history."""
        cfg, model = self.cfg, self.model
        n, bs = len(x), cfg.batch_size
        x = x.to(self.device)
        y = y.to(self.device) if y is not None else None
        n_batches = math.ceil(n / bs)
        if self.state.stopped_early:
            self.log(f"{self.desc}: early stopping had ended this run at epoch {self.state.epoch}")
            return self.state.history
        for epoch in range(self.state.epoch, self.epochs):
            self._set_lr(epoch)
            hook = getattr(model, "on_epoch_start", None)
            if callable(hook):
                hook(epoch)                               # e.g. unfreeze an encoder after E epochs
            model.train()
            t0 = time.perf_counter()
            order = torch.randperm(n, generator=self.generator).to(self.device)
            bar = self._bar(epoch, n_batches)
            steps: list[tuple[Tensor, dict[str, Tensor]]] = []   # per-step losses, read back at refreshes
            refresh = max(1, n_batches // 50)
            self._fused = self._fused_step()
            for b in range(n_batches):
                idx = order[b * bs:(b + 1) * bs]          # a gather per batch: cheaper than a
                xb = x.index_select(0, idx)               # shuffled copy of the whole set per epoch
                yb = y.index_select(0, idx) if y is not None else None
                out = self.train_step(xb, yb)
                steps.append((out.loss.detach(), {k: v.detach() for k, v in out.parts.items()}))
                if bar is not None and ((b + 1) % refresh == 0 or b + 1 == n_batches):
                    running = self._mean_losses(steps, n, bs)["loss"]
                    self._check_finite(running, epoch)
                    bar.update(b + 1 - bar.n)
                    bar.set_postfix(loss=f"{running:.4f}",
                                    samples_s=f"{min((b + 1) * bs, n) / max(time.perf_counter() - t0, 1e-9):,.0f}")
            if bar is not None:
                bar.close()
            train_vals = self._mean_losses(steps, n, bs)
            self._check_finite(train_vals["loss"], epoch)
            seconds = time.perf_counter() - t0
            record: dict[str, Any] = {"epoch": epoch + 1}
            record.update({f"train_{k}": v for k, v in train_vals.items()})
            if x_valid is not None and len(x_valid):
                record.update({f"valid_{k}": v for k, v in self.evaluate(x_valid, y_valid).items()})
            record.update({"seconds": seconds, "samples_per_s": n / seconds, "lr": self.optimizer.param_groups[0]["lr"]})
            self.state.history.append(record)
            self.state.epoch = epoch + 1
            self.on_epoch_end(epoch + 1)
            for cb in self.callbacks:
                cb(self, record)
            stop = self._early_stopping(record)
            self._log_epoch(record)
            if self.run_dir is not None:
                self.save()
            if stop:
                break
        if self._best_weights is not None and self.cfg.early_stopping:
            self.model.load_state_dict(self._best_weights)   # keep the best epoch's weights
        return self.state.history

    def train_step(self, xb: Tensor, yb: Tensor | None) -> Any:
        """One optimisation step on a batch; returns the model's output (``.loss``, ``.parts``)."""
        if self._fused is not None:
            out = self._fused(xb, self.optimizer.param_groups[0]["lr"])
            if out is not None:
                return out
        out = self.model(xb, yb)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        return out

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each epoch's record is appended, before the checkpoint is written."""

    # ------------------------------------------------------------------------------ helpers
    @staticmethod
    def _mean_losses(steps: list[tuple[Tensor, dict[str, Tensor]]], n: int, bs: int) -> dict[str, float]:
        """Sample-weighted mean of the per-step losses so far (one device sync)."""
        weights = torch.full((len(steps),), float(bs))
        weights[-1] = min(bs, n - bs * (len(steps) - 1))
        names = list(steps[0][1])
        table = torch.stack([torch.stack([loss, *(parts[k] for k in names)]) for loss, parts in steps]).cpu()
        vals = (weights @ table / weights.sum()).tolist()
        return {"loss": vals[0], **{k: v for k, v in zip(names, vals[1:]) if k != "loss"}}

    def _fused_step(self):
        """The model's hand-fused SGD step, where it applies: plain SGD (no momentum, no weight
        decay) on all of the model's parameters, and the config leaves ``fused_step`` on."""
        fn = getattr(self.model, "fused_sgd_step", None)
        cfg = self.cfg
        if (fn is None or not getattr(cfg, "fused_step", True) or cfg.optimizer != "sgd" or cfg.momentum
                or cfg.weight_decay or len(self.optimizer.param_groups) != 1):
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
        if math.isfinite(value):
            return
        done = self.state.epoch
        kept = (f"the last good checkpoint (epoch {done}) is kept in {self.run_dir}" if self.run_dir and done
                else "no checkpoint was written")
        raise TrainingError(f"{self.desc}: the loss became {value} during epoch {epoch + 1}; {kept}. "
                            f"Try a lower learning rate (now {self.optimizer.param_groups[0]['lr']:g}, --lr) "
                            f"or a smaller batch size")

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
