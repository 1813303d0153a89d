"""Inference throughput: images/s of encoding, decoding, reconstruction and generation, in one run.

The seed stacked AE (784-100-30-100-784) through the public path, ``Run.encode`` /
``Run.decode`` / ``Run.reconstruct`` (numpy in the data's units -> batches in inference mode ->
numpy), and the bare model call on one tensor (``model.encode(x)``) to show what the Run adds;
then generation by the VAE and the DCGAN (``model.sample``). Weights are freshly initialised:
the arithmetic, and so the timing, does not depend on their values. Medians of ``--repeats``
alternating rounds; the machine's load average is printed (it is shared: compare with care).

    python bench/inference.py --threads 2 --n 100000 --batch 4096 16384 --repeats 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from latentforge.models import build_model  # noqa: E402
from latentforge.train.run import Run  # noqa: E402


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=100_000, help="images per measurement")
    ap.add_argument("--batch", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((a.n, 1, 28, 28), dtype=np.float32)
    xt = torch.from_numpy(x)
    ae = build_model("stacked-ae", input_shape=[1, 28, 28]).eval()
    run = Run(run_dir=Path("."), name="stacked-ae", model=ae)
    codes = run.encode(x[:a.n])
    ct = torch.from_numpy(codes)
    vae = build_model("vae", input_shape=[1, 28, 28]).eval()
    gan = build_model("dcgan", input_shape=[1, 28, 28]).eval()
    n_gan = max(1, a.n // 20)                                   # DCGAN generation is ~100x the work

    def sample(model, n, bs):
        with torch.inference_mode():
            for i in range(0, n, bs):
                model.sample(min(bs, n - i))

    def bare(fn, t, bs):
        with torch.inference_mode():
            for i in range(0, len(t), bs):
                fn(t[i:i + bs])

    tasks = {}
    for bs in a.batch:
        tasks[f"encode       Run.encode        batch {bs}"] = (a.n, lambda bs=bs: run.encode(x, batch_size=bs))
        tasks[f"encode       model.encode      batch {bs}"] = (a.n, lambda bs=bs: bare(ae.encode, xt, bs))
        tasks[f"decode       Run.decode        batch {bs}"] = (a.n, lambda bs=bs: run.decode(codes, batch_size=bs))
        tasks[f"decode       model.decode      batch {bs}"] = (a.n, lambda bs=bs: bare(ae.decode, ct, bs))
        tasks[f"reconstruct  Run.reconstruct   batch {bs}"] = (a.n, lambda bs=bs: run.reconstruct(x, batch_size=bs))
        tasks[f"generate     vae.sample        batch {bs}"] = (a.n, lambda bs=bs: sample(vae, a.n, bs))
    bs = min(a.batch)
    tasks[f"generate     dcgan.sample      batch {bs}"] = (n_gan, lambda: sample(gan, n_gan, bs))
    for _, fn in tasks.values():                                # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in tasks}
    for _ in range(a.repeats):
        for k, (n, fn) in tasks.items():
            times[k].append(n / timed(fn))
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"{a.threads} threads, {a.n:,} images, median of {a.repeats}, load average {load} "
          f"({os.cpu_count()} CPUs, torch {torch.__version__})")
    for k, v in times.items():
        print(f"  {k}  {statistics.median(v):>12,.0f} images/s")


if __name__ == "__main__":
    main()
