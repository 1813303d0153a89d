"""What the training loop calls at the end of each epoch, each one piece: the sample grid, the
user's callbacks, early stopping, the log line and the checkpoint (:func:`epoch_end_hooks`, in
that order); and the progress bar and the message after Ctrl-C."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from .state import CHECKPOINT

if TYPE_CHECKING:
    from .trainer import Trainer

Hook = Callable[["Trainer", dict[str, Any]], None]


def progress_enabled(flag: bool | None) -> bool:
    """Progress bars only on a terminal and not under CI, unless forced."""
    if flag is not None:
        return flag
    return sys.stderr.isatty() and not os.environ.get("CI")


def sample_grid(tr: "Trainer", record: dict[str, Any]) -> None:
    """The sample grid of a generative model every ``sample_every`` epochs (and after the last)
    in ``RUN_DIR/samples/epoch_NNN.png``, so progress can be watched while it trains (tabular
    data: a heat map, one line per sample)."""
    epoch, every = record["epoch"], tr.cfg.sample_every
    if tr.run_dir is None or not tr.dist.main or not every or (epoch % every and epoch != tr.epochs):
        return
    with torch.no_grad():
        images = tr.epoch_samples()
    if images is None:
        return
    from ..report import plot_image_grid
    folder = Path(tr.run_dir) / "samples"
    folder.mkdir(exist_ok=True)
    plot_image_grid(images.float().cpu().numpy(), folder / f"epoch_{epoch:03d}.png", ncols=8,
                    title=f"{tr.meta.get('model', type(tr.model).__name__)}: epoch {epoch}")


def model_samples(tr: "Trainer") -> torch.Tensor | None:
    """Samples of a model with ``sample(n, labels, generator)`` (VAEs, DDPM) for the epoch's
    grid, from the same noise every epoch and without touching the training RNG; None for
    other models. The model's ``epoch_grid`` (default 64) sets how many."""
    m = tr.model
    if not callable(getattr(m, "sample", None)):
        return None
    n, labels = getattr(m, "epoch_grid", 64), None
    if getattr(m, "uses_labels", False):
        labels = (torch.arange(n) % m.config.n_classes).to(tr.device)
    was = m.training
    m.eval()
    try:
        return m.sample(n, labels, generator=torch.Generator().manual_seed(tr.cfg.seed + 1))
    finally:
        m.train(was)


def user_callbacks(tr: "Trainer", record: dict[str, Any]) -> None:
    """The callbacks given to the trainer (e.g. TensorBoard), on the main process only."""
    if tr.dist.main:
        for cb in tr.callbacks:
            cb(tr, record)


def patience(tr: "Trainer", record: dict[str, Any]) -> bool:
    """Whether to stop after this epoch: no better validation loss (else training loss) for
    ``early_stopping`` epochs; the best epoch's weights are kept."""
    if not tr.cfg.early_stopping:
        return False
    metric = record.get("valid_loss", record["train_loss"])
    st = tr.state
    if metric < st.best_loss:
        st.best_loss, st.best_epoch, st.bad_epochs = metric, record["epoch"], 0
        tr._best_weights = {k: v.detach().clone() for k, v in tr.model.state_dict().items()}
        return False
    st.bad_epochs += 1
    if st.bad_epochs < tr.cfg.early_stopping:
        return False
    tr.log(f"{tr.desc}: early stopping at epoch {record['epoch']}: no improvement for "
           f"{st.bad_epochs} epochs; keeping epoch {st.best_epoch} (loss {st.best_loss:.4f})")
    return True


def early_stopping(tr: "Trainer", record: dict[str, Any]) -> None:
    if tr._early_stopping(record):      # patience(), unless the trainer has its own rule
        tr.state.stopped_early = True


def log_epoch(tr: "Trainer", r: dict[str, Any]) -> None:
    parts = [f"{k}={v:.4f}" for k, v in r.items() if k.startswith(("train_", "valid_")) and isinstance(v, float)]
    tr.log(f"{tr.desc} epoch {r['epoch']}/{tr.epochs}: " + " ".join(parts)
           + f" ({r['seconds']:.1f}s, {r['samples_per_s']:,.0f} samples/s)")


def checkpoint(tr: "Trainer", record: dict[str, Any]) -> None:
    if tr.run_dir is not None and tr.dist.main:
        tr.save()


def epoch_end_hooks() -> list[Hook]:
    return [sample_grid, user_callbacks, early_stopping, log_epoch, checkpoint]


def progress_bar(tr: "Trainer", epoch: int, total: int):
    if not tr.progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=f"{tr.desc} {epoch + 1}/{tr.epochs}", unit="batch",
                leave=False, file=sys.stderr, dynamic_ncols=True)


def interrupted_message(tr: "Trainer") -> str:
    """What Ctrl-C left on disk and how to continue."""
    if tr.run_dir is None:
        return f"{tr.desc}: interrupted; this stage writes no checkpoint"
    done = tr._saved_epoch
    if not done:
        return f"{tr.desc}: interrupted before the first epoch finished; no checkpoint was written"
    model = tr.meta.get("model", "MODEL")
    source = tr.meta.get("data", {}).get("source", "DATA")
    return (f"{tr.desc}: interrupted; the checkpoint of epoch {done} of {tr.epochs} is in "
            f"{tr.run_dir / CHECKPOINT}; continue with: "
            f"latentforge train {model} --data {source} --out {tr.run_dir} --resume")
