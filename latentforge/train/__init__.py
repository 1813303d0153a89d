"""Training: the trainer, checkpoints, and the high-level ``train`` / ``load_run`` API."""
from .run import Run, load_run, train
from .trainer import Trainer, build_optimizer

__all__ = ["Run", "load_run", "train", "Trainer", "build_optimizer"]
