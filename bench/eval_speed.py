"""Speed of the generative metrics: FID + KID + precision/recall/density/coverage on N vs N features.

    python bench/eval_speed.py [--n 10000] [--dim 128] [--threads 2] [--repeats 3]

The issue's target: 10,000 vs 10,000 samples of dimension ~128 in <= 5 s on 2 CPU cores. The
features are synthetic (two shifted Gaussians, non-negative like ReLU features); the time does not
depend on their values. Prints the best wall time of each part over the repeats, and the CPU time
divided by the threads (the wall time on that many free cores; this machine is shared, so the wall
time under load overstates it), and the total.
"""
from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    from latentforge.eval.generative import fid, pairwise_metrics

    rng = np.random.default_rng(0)
    real = np.maximum(rng.standard_normal((args.n, args.dim)), 0).astype(np.float32)
    fake = np.maximum(rng.standard_normal((args.n, args.dim)) + 0.1, 0).astype(np.float32)
    # what `evaluate` runs: FID, then KID + precision/recall/density/coverage in one fused pass
    parts = {"fid": lambda: fid(real, fake), "kid+prdc": lambda: pairwise_metrics(real, fake)}
    wall: dict[str, list[float]] = {k: [] for k in parts}
    cpu: dict[str, list[float]] = {k: [] for k in parts}
    values: dict[str, object] = {}
    load = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for name, fn in parts.items():
            t0, c0 = time.perf_counter(), time.process_time()
            values[name] = fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
        load.append(os.getloadavg()[0])
    best = {k: min(v) for k, v in wall.items()}
    best_cpu = {k: min(v) for k, v in cpu.items()}
    print(json.dumps({
        "n": args.n, "dim": args.dim, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_avg_1min": [round(x, 2) for x in load],
        "wall_seconds_best": {k: round(v, 3) for k, v in best.items()}, "wall_total": round(sum(best.values()), 3),
        # CPU seconds / threads: what the wall time would be on `threads` free cores (the machine
        # is shared: under load the wall time is stretched by the other processes)
        "cpu_seconds_best": {k: round(v, 3) for k, v in best_cpu.items()},
        "cpu_total_per_thread": round(sum(best_cpu.values()) / torch.get_num_threads(), 3),
        "values": values}, indent=2))


if __name__ == "__main__":
    main()
