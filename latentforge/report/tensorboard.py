"""TensorBoard logging of a training run (``latentforge train MODEL --tensorboard``).

:class:`TensorBoardLogger` is a trainer callback, called as ``cb(trainer, record)`` after every
epoch. Into ``RUN_DIR/tensorboard`` it writes every numeric field of the epoch's history record as
a scalar (tag = the field name, as in ``history.json``; step = the epoch) and, for image data, two
image grids: ``samples`` (generative models, from the same latents every epoch) and
``reconstructions`` (autoencoders: held-out originals over their reconstructions). When training
ends, models with an encoder also get the held-out codings (at most :data:`N_PROJECTOR`) in the
embedding projector's format (:mod:`latentforge.report.projector`). The plain ``history.json`` is
written either way. Logging draws its noise from its own generator inside
``torch.random.fork_rng``, so a run trains exactly the same with or without it.

TensorBoard is an optional dependency: ``pip install 'latentforge[tensorboard]'``; without it,
asking for TensorBoard is a :class:`~latentforge.errors.ConfigError` raised before training starts.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..models.capabilities import Capability, has

TB_DIR = "tensorboard"
N_SAMPLES = 64      # 8 x 8 grid of samples per epoch
N_RECON = 8         # reconstructions per epoch (originals over reconstructions)
N_PROJECTOR = 5000  # held-out codings written for the embedding projector when training ends


def summary_writer_class():
    """``torch.utils.tensorboard.SummaryWriter``, or ConfigError when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install 'latentforge[tensorboard]' "
                          "(or pip install tensorboard)") from None
    return SummaryWriter


def _as_uint8_grid(images: np.ndarray, sample_shape, nrows: int, ncols: int) -> np.ndarray | None:
    """A mosaic (H, W) or (H, W, C) uint8 of ``images``, or None for data that are not images."""
    from .grids import _mosaic, to_display_images
    disp = to_display_images(images, sample_shape)
    if disp is None:
        return None
    h = disp.shape[1]
    return (_mosaic(disp, nrows, ncols, pad=max(1, round(h / 14))) * 255).round().astype(np.uint8)


class TensorBoardLogger:
    """Trainer callback writing scalars and image grids to ``RUN_DIR/tensorboard``.

    ``reference``: a Dataset (normally the held-out split) whose first :data:`N_RECON` samples are
    reconstructed every epoch; ``seed`` fixes the latents of the sample grid; ``fresh`` removes an
    earlier run's events from the folder before the first epoch's are written.
    """

    def __init__(self, reference=None, *, seed: int = 0, n_samples: int = N_SAMPLES, fresh: bool = False):
        self._writer_cls = summary_writer_class()          # fail before training, not after epoch 1
        self.fresh = fresh
        self.reference = reference
        self.seed = seed
        self.n_samples = n_samples
        self.writer = None
        self.log_dir: Path | None = None
        self._model = None

    def __call__(self, trainer, record: dict[str, Any]) -> None:
        if trainer.run_dir is None:
            return
        self._model = trainer.model
        if self.writer is None:
            self.log_dir = Path(trainer.run_dir) / TB_DIR
            if self.fresh:
                shutil.rmtree(self.log_dir, ignore_errors=True)
            self.writer = self._writer_cls(log_dir=str(self.log_dir))
        step = int(record["epoch"])
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, float(value), step)
        devices = [trainer.device] if trainer.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            modes = [(m, m.training) for m in trainer.model.modules()]
            trainer.model.eval()
            try:
                for tag, grid in self.grids(trainer.model, trainer.device):
                    self.writer.add_image(tag, grid, step, dataformats="HW" if grid.ndim == 2 else "HWC")
            finally:
                for m, training in modes:          # exactly as they were (e.g. an EMA copy stays in eval)
                    m.training = training
        self.writer.flush()

    def grids(self, model, device: torch.device) -> list[tuple[str, np.ndarray]]:
        """The image grids of this epoch: ``samples`` and/or ``reconstructions`` (image data only)."""
        out = []
        shape = tuple(model.config.input_shape)
        if has(model, Capability.SAMPLES):
            n, labels, ncols = min(self.n_samples, getattr(model, "epoch_grid", self.n_samples)), None, 8
            if has(model, Capability.CONDITIONAL):             # one row per class
                k = int(model.config.n_classes)
                labels = torch.arange(k).repeat_interleave(ncols).to(device)
                n = len(labels)
            gen = torch.Generator().manual_seed(self.seed)
            images = model.sample(n, labels, generator=gen).float().cpu().numpy()
            grid = _as_uint8_grid(images, shape, -(-n // ncols), ncols)
            if grid is not None:
                out.append(("samples", grid))
        ref = self.reference
        if has(model, Capability.RECONSTRUCTS) and ref is not None and len(ref):
            x = torch.as_tensor(ref.x[:N_RECON]).to(device)
            kw = {}
            if has(model, Capability.CONDITIONAL):
                if ref.y is None:
                    return out
                kw["y"] = torch.as_tensor(ref.y[:N_RECON]).to(device)
            recon = model.reconstruct(x, **kw).float().cpu().numpy().reshape(x.shape)
            both = np.concatenate([x.cpu().numpy(), recon])
            grid = _as_uint8_grid(both, shape, 2, len(x))
            if grid is not None:
                out.append(("reconstructions", grid))
        return out

    def projector(self) -> None:
        """The reference data's codings for the embedding projector, into the log folder."""
        model, ref = self._model, self.reference
        if model is None or self.log_dir is None or ref is None or not len(ref) \
                or not callable(getattr(model, "encode", None)):
            return
        n = min(len(ref), N_PROJECTOR)
        kw = {}
        if getattr(model, "uses_labels", False):
            if ref.y is None:
                return
            kw["y"] = torch.as_tensor(ref.y[:n])
        from .projector import write_projector
        dev = next(model.parameters()).device
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                codes = torch.cat([model.encode(torch.as_tensor(ref.x[i:i + 1024]).to(dev),
                                                **{k: v[i:i + 1024].to(dev) for k, v in kw.items()}).float().cpu()
                                   for i in range(0, n, 1024)]).numpy()
        finally:
            model.train(was)
        write_projector(self.log_dir, codes.reshape(n, -1), labels=ref.y[:n] if ref.y is not None else None,
                        images=ref.x[:n] if ref.is_image else None, sample_shape=ref.sample_shape,
                        class_names=ref.class_names)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.projector()


# ------------------------------------------------------------------------------ reading back
def _accumulator(log_dir: str | Path):
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return None
    if not Path(log_dir).is_dir():
        return None
    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def read_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of the event files in ``log_dir`` ({} without tensorboard)."""
    acc = _accumulator(log_dir)
    if acc is None:
        return {}
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags().get("scalars", [])}


def read_images(log_dir: str | Path, tag: str) -> list[tuple[int, bytes]]:
    """``[(step, PNG bytes), ...]`` logged under ``tag`` in ``log_dir`` ([] when there are none)."""
    acc = _accumulator(log_dir)
    if acc is None or tag not in acc.Tags().get("images", []):
        return []
    return [(e.step, e.encoded_image_string) for e in acc.Images(tag)]
