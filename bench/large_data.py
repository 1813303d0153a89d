"""Training from data larger than memory: a ~10 GB memory-mapped .npy, peak RSS and throughput.

1. Writes ``--size-gb`` of float32 784-pixel "images" (a smooth 10-factor model through a
   sigmoid, so the autoencoder has something to learn) to ``--path`` in 64 MB chunks, after
   checking the free space of its folder (it keeps 15 GB free: with less room the size shrinks
   to what fits, and the script says so).
2. Trains the seed stacked AE from it (``latentforge train stacked-ae --data BIG.npy``, streamed
   because it exceeds a quarter of the RAM) for one epoch, or ``--steps`` batches of it, under
   ``/usr/bin/time -v``: prints the peak resident set size of the whole process and the samples/s.
3. Compares the throughput of the same training from a smaller file (``--compare-rows``), read
   in memory vs streamed from the memory map (``LATENTFORGE_STREAM_BYTES=0``), alternately
   ``--repeats`` times; medians and the ratio.

    python bench/large_data.py                        # 10 GB, one full epoch
    python bench/large_data.py --steps 2000 --keep    # a capped epoch; keep the file for reruns
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

D = 784
CHUNK_ROWS = (64 << 20) // (4 * D)
MARGIN = 15 << 30


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Write ``rows`` samples chunk by chunk through ``np.lib.format.open_memmap``."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((10, D)).astype(np.float32) * 1.5
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, D))
    t0 = time.perf_counter()
    for i in range(0, rows, CHUNK_ROWS):
        n = min(CHUNK_ROWS, rows - i)
        z = rng.standard_normal((n, 10)).astype(np.float32)
        np.negative(z @ w, out=out[i:i + n])
        np.exp(out[i:i + n], out=out[i:i + n])
        out[i:i + n] += 1
        np.reciprocal(out[i:i + n], out=out[i:i + n])          # sigmoid(z @ w), in place
        out.flush()
    del out
    print(f"wrote {path}: {rows:,} x {D} float32 = {path.stat().st_size / 1e9:.2f} GB "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)


def train(data: Path, out: Path, *, steps: int, batch: int, stream: bool | None, timed: bool) -> dict:
    """One ``latentforge train`` subprocess; returns its run.json metrics (+ peak RSS when timed)."""
    env = dict(os.environ)
    if stream is True:
        env["LATENTFORGE_STREAM_BYTES"] = "0"
    elif stream is False:
        env["LATENTFORGE_STREAM_BYTES"] = str(1 << 50)
    cmd = [sys.executable, "-m", "latentforge", "train", "stacked-ae", "--data", str(data), "--epochs", "1",
           "--batch-size", str(batch), "--valid-fraction", "0.001", "--out", str(out), "--overwrite",
           "--device", "cpu", "--no-progress"]
    if steps:
        cmd += ["--set", f"steps_per_epoch={steps}"]
    if timed and Path("/usr/bin/time").exists():
        cmd = ["/usr/bin/time", "-v", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"training failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    run = json.loads((out / "run.json").read_text())
    m = run["metrics"]
    res = {"samples_per_s": m["samples_per_s"], "epoch_seconds": m["seconds"], "wall_seconds": wall,
           "train_loss": m["train_loss"], "valid_loss": m.get("valid_loss"), "streamed": run["data"].get("streamed", False),
           "n_train": run["data"]["n_train"]}
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if rss:
        res["peak_rss_mb"] = int(rss.group(1)) / 1024
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=10.0)
    ap.add_argument("--path", type=Path, default=Path(tempfile.gettempdir()) / "latentforge-large.npy")
    ap.add_argument("--steps", type=int, default=0, help="cap the epoch at this many batches (0: whole epoch)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--compare-rows", type=int, default=200_000)
    ap.add_argument("--compare-steps", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args()

    rows = int(args.size_gb * 1e9) // (4 * D)
    have = args.path.exists() and args.path.stat().st_size >= rows * 4 * D
    if not have:
        free = shutil.disk_usage(args.path.parent).free
        fit = max(0, free - MARGIN) // (4 * D)
        print(f"free space in {args.path.parent}: {free / 1e9:.1f} GB", flush=True)
        if fit < rows:
            print(f"only {free / 1e9:.1f} GB free: writing {fit * 4 * D / 1e9:.1f} GB instead of "
                  f"{args.size_gb:g} GB (keeping 15 GB free)", flush=True)
            rows = fit
        generate(args.path, rows)
    work = Path(tempfile.mkdtemp(prefix="lf-large-"))
    if hasattr(os, "posix_fadvise"):                 # start from disk, not from the page cache
        fd = os.open(args.path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    try:
        big = train(args.path, work / "big", steps=args.steps, batch=args.batch, stream=None, timed=True)
        print(f"\n## {args.path.stat().st_size / 1e9:.2f} GB .npy, stacked-ae, batch {args.batch}, "
              f"{'whole epoch' if not args.steps else f'{args.steps} steps'}")
        print(f"streamed: {big['streamed']}, training samples: {big['n_train']:,}")
        print(f"peak RSS: {big.get('peak_rss_mb', float('nan')):,.0f} MB; {big['samples_per_s']:,.0f} samples/s; "
              f"epoch {big['epoch_seconds']:.0f} s, wall {big['wall_seconds']:.0f} s; "
              f"train BCE {big['train_loss']:.4f}, held-out BCE {big['valid_loss']:.4f}", flush=True)

        small = work / "small.npy"
        mm = np.load(args.path, mmap_mode="r")
        np.save(small, np.asarray(mm[:args.compare_rows]))
        del mm
        sps: dict[str, list[float]] = {"in memory": [], "memory-mapped, streamed": []}
        rss: dict[str, list[float]] = {k: [] for k in sps}
        for _ in range(args.repeats):
            for name, stream in (("in memory", False), ("memory-mapped, streamed", True)):
                r = train(small, work / "cmp", steps=args.compare_steps, batch=args.batch, stream=stream, timed=True)
                assert r["streamed"] == stream
                sps[name].append(r["samples_per_s"])
                rss[name].append(r.get("peak_rss_mb", float("nan")))
        med = {k: statistics.median(v) for k, v in sps.items()}
        print(f"\n## throughput, {args.compare_rows:,} rows ({small.stat().st_size / 1e6:.0f} MB), batch {args.batch}, "
              f"median of {args.repeats}, alternating")
        print("| data | samples/s | peak RSS (MB) |\n|---|---|---|")
        for k in sps:
            print(f"| {k} | {med[k]:,.0f} | {statistics.median(rss[k]):,.0f} |")
        print(f"| **streamed / in memory** | **{med['memory-mapped, streamed'] / med['in memory']:.2f}x** | |")
        print(f"load average: {os.getloadavg()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            args.path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
