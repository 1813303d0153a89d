"""Training throughput of the seed stacked AE: latentforge's trainer vs the references, in one run.

Runs, alternately and ``--repeats`` times, each as its own subprocess on the same data
(``../shared/bench/mnist4k.py``, training part tiled ``--tile`` times; 15 -> 54,000 images):
  - latentforge's trainer (``--worker``; the model from the registry with the chapter's defaults),
  - ``../shared/bench/torch_plain_ae.py`` (a typical plain-PyTorch DataLoader loop),
  - ``../shared/bench/keras_seed_ae.py`` when ``--keras-python`` names a Python with TensorFlow.
Prints samples/s and held-out BCE for each, then the ratios of the medians. These machines are
shared and noisy: only ratios measured in the same run mean anything.

    python bench/train_throughput.py --epochs 3 --tile 15 --batch 32 --repeats 3 \
        [--keras-python /tmp/keras-env/bin/python]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCH = REPO.parent / "shared" / "bench"
LINE = re.compile(r"samples_per_s=(\d+).*val_bce=([\d.]+)")


def worker(epochs: int, tile: int, batch: int, seed: int) -> None:
    """Train with latentforge's trainer; print one line like the reference scripts."""
    sys.path.insert(0, str(SHARED_BENCH))
    import torch
    from mnist4k import load

    from latentforge.models import build_model
    from latentforge.train import Trainer

    x_train, _, x_valid, _ = load(tile)
    x = torch.from_numpy(x_train).unsqueeze(1)
    xv = torch.from_numpy(x_valid).unsqueeze(1)
    torch.manual_seed(seed)
    model = build_model("stacked-ae", input_shape=[1, 28, 28], epochs=epochs, batch_size=batch, seed=seed)
    trainer = Trainer(model, model.config, progress=False, log=lambda m: None)
    t0 = time.perf_counter()
    trainer.fit(x)                      # timed like the references: training epochs only
    dt = time.perf_counter() - t0
    val = trainer.evaluate(xv)["loss"]
    print(f"latentforge batch={batch} n={len(x)} epochs={epochs} seconds={dt:.2f} "
          f"samples_per_s={epochs * len(x) / dt:.0f} val_bce={val:.4f}")


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    text = (out.stdout + out.stderr).strip().splitlines()
    line = next((l for l in reversed(text) if LINE.search(l)), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"{' '.join(cmd)} failed:\n" + "\n".join(text[-15:]))
    m = LINE.search(line)
    return float(m.group(1)), float(m.group(2)), line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--tile", type=int, default=15)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keras-python", help="a Python with TensorFlow/Keras (see ../shared/bench/keras_seed_ae.py)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.epochs, a.tile, a.batch, a.seed)
        return
    if not (SHARED_BENCH / "mnist4k.py").exists():
        raise SystemExit(f"{SHARED_BENCH} is missing: run with ../shared beside the repository")
    env = {**os.environ, "EPOCHS": str(a.epochs), "TILE": str(a.tile), "BATCH": str(a.batch), "SEED": str(a.seed),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    contenders = {
        "latentforge": [sys.executable, __file__, "--worker", "--epochs", str(a.epochs), "--tile", str(a.tile),
                        "--batch", str(a.batch), "--seed", str(a.seed)],
        "torch-plain": [sys.executable, str(SHARED_BENCH / "torch_plain_ae.py")],
    }
    if a.keras_python:
        contenders["keras"] = [a.keras_python, str(SHARED_BENCH / "keras_seed_ae.py")]
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in contenders}
    for r in range(a.repeats):
        for name, cmd in contenders.items():
            sps, bce, line = run(cmd, env)
            results[name].append((sps, bce))
            print(f"[{r + 1}/{a.repeats}] {line}", flush=True)
    med = {k: statistics.median(s for s, _ in v) for k, v in results.items()}
    print(f"\nmedian samples/s (batch {a.batch}, {a.epochs} epochs x {a.tile * 3600} images, {os.cpu_count()} CPUs):")
    for k, v in med.items():
        print(f"  {k:<12} {v:>10,.0f}   held-out BCE {statistics.median(b for _, b in results[k]):.4f}")
    for ref in [k for k in med if k != "latentforge"]:
        print(f"ratio latentforge / {ref}: {med['latentforge'] / med[ref]:.2f}x")


if __name__ == "__main__":
    main()
