"""Response times of ``latentforge explore`` under concurrent local requests (decode and sample).

Trains the chapter's stacked AE (dense), conv AE and VAE briefly on mnist-4k (response times do not
depend on how well they are trained), starts the real command (``latentforge explore ... --port 0``,
waiting for its ``serving`` line), then for each scenario runs ``--clients`` threads (20), each with
its own keep-alive HTTP connection to 127.0.0.1, sending ``--requests`` requests (25) one after the
other: ``POST /api/runs/{i}/decode`` with n codes (n = 1, 16, 64) and ``POST /api/runs/{i}/sample``
(n = 16, 64). Bounded: at most clients x requests per scenario, and a scenario stops at
``--max-seconds``. Prints p50 / p95 / max latency (ms) and requests/s per scenario, with the issue's
target (p95 <= 100 ms for the dense and conv models at n <= 64 under 20 concurrent requests), and,
first, the median of 20 requests sent by one client alone (the service time of one request).
"(server)" and "server p95" are the server's own time per request (its ``Server-Timing`` header:
from the request reaching the app to the response, queueing for a core included), which leaves
out the client's and the kernel's share, large on a loaded machine.

    PYTHONPATH=. python bench/explore_load.py [--clients 20] [--requests 25]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "mnist-4k"
TARGET_MS = 100.0


def train_runs(base: Path) -> list[Path]:
    from latentforge.train import train
    dirs = []
    for name, over in (("stacked-ae", {"epochs": 1}), ("conv-ae", {"epochs": 1}), ("vae", {"epochs": 1})):
        train(name, str(DATA), out=base / name, overrides=over, progress=False, device="cpu", log=lambda m: None)
        dirs.append(base / name)
    return dirs


def scenario(host: str, port: int, path: str, bodies: list[bytes], clients: int, requests: int,
             max_seconds: float) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    server_ms: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds
    start = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        conn.connect()        # no Nagle delay between a request's header and body writes (browsers set it too)
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mine = []
        start.wait()
        for r in range(requests):
            if time.perf_counter() > deadline:
                break
            body = bodies[(k * requests + r) % len(bodies)]
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            mine.append((time.perf_counter() - t0) * 1000)
            timing = resp.getheader("Server-Timing", "")
            if "dur=" in timing:
                with lock:
                    server_ms.append(float(timing.split("dur=")[1]))
            if resp.status != 200:
                with lock:
                    errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - t0, errors[0], server_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=25)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--only", default="", help="run only the scenarios whose name contains this text (e.g. conv)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = train_runs(Path(tmp))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-m", "latentforge", "explore", *map(str, dirs), "--method", "pca",
                                 "--max-points", "1000", "--port", "0"], stdout=subprocess.PIPE, text=True, env=env)
        line = proc.stdout.readline()
        try:
            if not line.startswith("serving "):
                raise SystemExit(f"the server did not start: {line!r}")
            host, port = line.split("//")[1].rstrip("/\n").rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            conn.request("GET", "/api/runs")
            runs = json.loads(conn.getresponse().read())
            conn.close()
            rng = np.random.default_rng(0)
            print(f"{args.clients} concurrent clients x {args.requests} requests each, 127.0.0.1; "
                  f"load average {tuple(round(v, 2) for v in os.getloadavg())}")
            print(f"{'scenario':<28} {'alone ms':>8} {'(server)':>9} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8}"
                  f" {'max ms':>8} {'server p95':>10} {'req/s':>7} {'target':>8}")
            cases = []
            for r in runs:
                for n in (1, 16, 64):
                    bodies = [json.dumps({"codes": rng.normal(size=(n, r["code_width"])).round(4).tolist()}).encode()
                              for _ in range(8)]
                    cases.append((f"{r['model']} decode n={n}", f"/api/runs/{r['index']}/decode", bodies, True))
                if r["capabilities"]["sample"]:
                    for n in (16, 64):
                        bodies = [json.dumps({"n": n, "seed": s}).encode() for s in range(8)]
                        cases.append((f"{r['model']} sample n={n}", f"/api/runs/{r['index']}/sample", bodies, False))
            for name, path, bodies, _is_decode in cases:
                if args.only not in name:
                    continue
                # first one client alone (the service time of one request), then the concurrent load
                alone, _, _, alone_server = scenario(host, int(port), path, bodies, 1, 20, args.max_seconds)
                lat, wall, errs, server = scenario(host, int(port), path, bodies, args.clients, args.requests, args.max_seconds)
                q = np.percentile(lat, [50, 95])
                ok = ("met" if q[1] <= TARGET_MS else "NOT met") if ("stacked" in name or "conv" in name) else ""
                sq = np.percentile(server, 95) if server else float("nan")
                print(f"{name:<28} {np.median(alone):>8.1f} {np.median(alone_server):>9.1f} {len(lat):>8} {q[0]:>8.1f}"
                      f" {q[1]:>8.1f} {max(lat):>8.1f} {sq:>10.1f} {len(lat) / wall:>7.0f}"
                      f" {ok:>8}" + (f"  ({errs} errors)" if errs else ""), flush=True)
            print(f"load average after {tuple(round(v, 2) for v in os.getloadavg())}")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
