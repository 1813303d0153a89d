"""Shared fixtures: tiny datasets, the shared MNIST-4k folder, a CLI runner."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MNIST4K = SHARED / "data" / "mnist-4k"

os.environ.setdefault("CI", "1")           # no progress bars in tests
torch.set_num_threads(1)                   # the suite runs under xdist on 2 cores
# a data cache of the tests' own (cached feature networks, downloads), never the user's
_CACHE = tempfile.mkdtemp(prefix="latentforge-test-cache-")
os.environ["LATENTFORGE_DATA"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


def mnist4k_path() -> Path:
    if not (MNIST4K / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"{MNIST4K} is missing: CI must have ../shared beside the clone")
    return MNIST4K


@pytest.fixture
def tiny_images():
    """64 random 'images' (N,1,8,8) in [0,1] with 4 labels, as a Dataset."""
    from latentforge.data import Dataset
    rng = np.random.default_rng(0)
    y = np.arange(64) % 4
    base = rng.random((4, 1, 8, 8)).astype(np.float32)
    x = np.clip(base[y] + 0.1 * rng.standard_normal((64, 1, 8, 8)), 0, 1).astype(np.float32)
    return Dataset(x=x, y=y.astype(np.int64), name="tiny", sample_shape=(8, 8), is_image=True)


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process; returns (exit_code, stdout, stderr)."""
    from latentforge.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out = capsys.readouterr()
        return code, out.out, out.err
    return run
