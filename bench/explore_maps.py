"""Map time and peak memory of the shared mapping code (``latentforge.report.embedding``): the maps of
``latentforge explore``, ``plot tsne`` and the report.

The codings: a stacked AE (784-100-30, the chapter's) trained for ``--epochs`` on mnist-4k encodes
its 4,000 digits to 30-d codings; larger sets replicate those 4,000 codings with Gaussian jitter
(each copy adds noise of ``--jitter`` x each coding unit's standard deviation), so the 70,000- and
1,000,000-point sets keep the ten digit clusters of real codings. Each case runs in its own process
(``--case``) and reports its wall time and its peak resident memory (``ru_maxrss``), after the
codings are in memory (the baseline RSS is printed too).

    PYTHONPATH=. python bench/explore_maps.py                      # t-SNE 5k/20k/70k, PCA 70k and 1M
    PYTHONPATH=. python bench/explore_maps.py --million-tsne      # + t-SNE of 1M (fit 100k, place the rest)
    PYTHONPATH=. python bench/explore_maps.py --cases tsne:5000   # one case

The issue's reference on the same kind of 2-core machine: openTSNE's FFT method took 19 s for 5,000,
50 s for 20,000 and 149 s for 70,000 30-d codings (scikit-learn's t-SNE 27 s for 5,000).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "mnist-4k"
REFERENCE = {("tsne", 5000): 19.0, ("tsne", 20000): 50.0, ("tsne", 70000): 149.0}


def base_codings(cache: Path, epochs: int) -> np.ndarray:
    """The 4,000 mnist-4k codings of a stacked AE (trained once, cached as .npy)."""
    if cache.exists():
        return np.load(cache)
    import tempfile

    from latentforge.data import load_data
    from latentforge.train import train
    ds = load_data(str(DATA))
    with tempfile.TemporaryDirectory() as d:
        run = train("stacked-ae", ds, out=Path(d) / "ae", overrides={"epochs": epochs}, progress=False,
                    device="cpu", log=lambda m: None)
        codes = run.encode(ds.x).astype(np.float32)
    np.save(cache, codes)
    return codes


def replicate(base: np.ndarray, n: int, jitter: float, seed: int = 0) -> np.ndarray:
    """``n`` codings: ``base`` repeated, each copy plus Gaussian noise (jitter x per-unit std), float32."""
    rng = np.random.default_rng(seed)
    std = base.std(0).astype(np.float32) * jitter
    out = np.empty((n, base.shape[1]), np.float32)
    for i in range(0, n, len(base)):
        m = min(len(base), n - i)
        out[i:i + m] = base[:m]
        if i:                      # the first copy is the real codings
            out[i:i + m] += rng.standard_normal((m, base.shape[1]), dtype=np.float32) * std
    return out


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(method: str, n: int, args) -> dict:
    from latentforge.report.embedding import embed
    codes = replicate(base_codings(Path(args.cache), args.epochs), n, args.jitter)
    before = rss_mb()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    m = embed(codes, method, seed=0, fit_max=args.fit_max)
    wall = time.perf_counter() - t0
    assert m.xy.shape == (n, 2) and np.isfinite(m.xy).all()
    # how well the map keeps the digit clusters: share of points whose nearest map neighbour (among
    # a 2,000-point sample) is a copy of a digit of the same class
    return {"method": method, "n": n, "seconds": round(wall, 1), "cpu_seconds": round(time.process_time() - cpu0, 1),
            "fitted": m.fitted, "rss_codings_mb": round(before), "peak_rss_mb": round(rss_mb()),
            "codings_mb": round(codes.nbytes / 2**20)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="tsne:5000,tsne:20000,tsne:70000,pca:70000,pca:1000000")
    ap.add_argument("--million-tsne", action="store_true", help="add t-SNE of 1,000,000 codings")
    ap.add_argument("--fit-max", type=int, default=None, help="t-SNE subsample size (default: the library's)")
    ap.add_argument("--jitter", type=float, default=0.05)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--cache", default="/tmp/latentforge-bench-codings.npy")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fit_max is None:
        from latentforge.report.embedding import TSNE_FIT_MAX
        args.fit_max = TSNE_FIT_MAX
    if args.case:
        method, n = args.case.split(":")
        print(json.dumps(run_case(method, int(n), args)), flush=True)
        return
    base_codings(Path(args.cache), args.epochs)
    cases = args.cases.split(",") + (["tsne:1000000"] if args.million_tsne else [])
    print(f"map jobs: {os.environ.get('LATENTFORGE_MAP_JOBS', '1')} thread(s); load average {os.getloadavg()}")
    print(f"{'method':<6} {'N':>9} {'wall s':>8} {'cpu s':>8} {'fitted':>8} {'codings MB':>10} {'peak RSS MB':>11}"
          f" {'vs issue':>9}")
    for case in cases:
        cmd = [sys.executable, __file__, "--case", case, "--fit-max", str(args.fit_max), "--jitter", str(args.jitter),
               "--epochs", str(args.epochs), "--cache", args.cache]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
        if out.returncode:
            print(f"{case}: failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        ref = REFERENCE.get((r["method"], r["n"]))
        ratio = f"{ref / r['seconds']:.2f}x" if ref else ""
        print(f"{r['method']:<6} {r['n']:>9,} {r['seconds']:>8} {r['cpu_seconds']:>8} {r['fitted']:>8,} "
              f"{r['codings_mb']:>10} {r['peak_rss_mb']:>11} {ratio:>9}", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
