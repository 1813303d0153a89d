"""Response times of ``latentforge explore`` under concurrent local requests (decode and sample).

Trains the chapter's stacked AE (dense), conv AE and VAE briefly on mnist-4k (response times do not
depend on how well they are trained), starts the real command (``latentforge explore ... --port 0``,
waiting for its ``serving`` line), then for each scenario runs ``--clients`` threads (20), each with
its own keep-alive connection to 127.0.0.1, sending ``--requests`` requests (25) one after the
other and reading each full response before the next: ``POST /api/runs/{i}/decode`` with n codes
(n = 1, 16, 64) in both request formats, ``json`` (the public ``{"codes": [[...], ...]}``, one
number per value as ``round(v, 4)`` prints it) and ``f32`` (``Content-Type:
application/octet-stream``, n x width little-endian float32 and ``?n=N``: what the page sends), and
``POST /api/runs/{i}/sample`` (n = 16, 64). Bounded: at most clients x requests per scenario, and a
scenario stops at ``--max-seconds``. Prints p50 / p95 / max latency (ms) and requests/s per
scenario, with the issue's target (p95 <= 100 ms for the dense and conv models at n <= 64 under 20
concurrent requests), and, first, the median of 20 requests sent by one client alone (the service
time of one request). "(server)" and "server p95" are the server's own time per request (its
``Server-Timing`` header: from the request reaching the app to the response, queueing for a core
included), which leaves out the client's and the kernel's share, large on a loaded machine.

Where the CPU goes, per request, during the concurrent run: "srv cpu" is the server process's
CPU time (user + system, from /proc), "cli cpu" this process's (the 20 client threads), and
"others" the share of the machine's CPUs that other processes used meanwhile (from /proc/stat:
0% on a quiet machine; the figures of a run with a large share are not the machine's speed).

The clients are cheap on purpose, since they share the machine's cores with the server: each
request's bytes (request line, headers and body) are built once before the clock starts and sent
with one ``sendall`` on a raw socket (TCP_NODELAY, like a browser), and the response is read with
``recv_into`` up to its ``Content-Length``, parsing only the status line and the two headers
needed. ``--client http.client`` uses the standard library's ``http.client`` instead (the earlier
load generator: a parsed header block and file-object reads per response, about 2x this one's CPU
per request), for comparison.

    PYTHONPATH=. python bench/explore_load.py [--clients 20] [--requests 25] [--only TEXT]
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
TICK = os.sysconf("SC_CLK_TCK")


def train_runs(base: Path) -> list[Path]:
    from latentforge.train import train
    dirs = []
    for name, over in (("stacked-ae", {"epochs": 1}), ("conv-ae", {"epochs": 1}), ("vae", {"epochs": 1})):
        train(name, str(DATA), out=base / name, overrides=over, progress=False, device="cpu", log=lambda m: None)
        dirs.append(base / name)
    return dirs


class Request:
    """One request, ready to send: its raw bytes (for the raw client) and its parts (for http.client)."""

    def __init__(self, host: str, port: int, path: str, body: bytes, content_type: str):
        self.path, self.body, self.content_type = path, body, content_type
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("ascii")
        self.raw = head + body


def raw_exchange(sock: socket.socket, req: Request, buf: bytearray) -> tuple[int, str]:
    """Send ``req`` and read its whole response (keep-alive, Content-Length framing): status and
    the Server-Timing header."""
    sock.sendall(req.raw)
    view = memoryview(buf)
    got = 0
    while True:                                   # the header block
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError("the server closed the connection")
        got += k
        end = buf.find(b"\r\n\r\n", 0, got)
        if end >= 0:
            break
        if got == len(buf):
            raise ConnectionError("response header block too large")
    head = bytes(buf[:end]).decode("latin-1").lower().split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    length, timing = None, ""
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name == "content-length":
            length = int(value)
        elif name == "server-timing":
            timing = value
    if length is None:
        raise ConnectionError("response without Content-Length")
    left = end + 4 + length - got                 # body bytes still to read
    while left > 0:
        k = sock.recv_into(view, min(left, len(buf)))
        if k == 0:
            raise ConnectionError("the server closed the connection mid-response")
        left -= k
    return status, timing


def cpu_ticks(pid: int) -> int:
    """User + system CPU ticks of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v[:8]) - idle, sum(v[:8])


def scenario(host: str, port: int, requests_: list[Request], clients: int, requests: int, max_seconds: float,
             client_kind: str = "raw", server_pid: int | None = None) -> dict:
    latencies: list[float] = []
    server_ms: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds
    start = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        mine, timings, bad = [], [], 0
        if client_kind == "raw":
            sock = socket.create_connection((host, port), timeout=60)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = bytearray(1 << 20)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=60)
            conn.connect()    # no Nagle delay between a request's header and body writes (browsers set it too)
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start.wait()
        for r in range(requests):
            if time.perf_counter() > deadline:
                break
            req = requests_[(k * requests + r) % len(requests_)]
            t0 = time.perf_counter()
            if client_kind == "raw":
                status, timing = raw_exchange(sock, req, buf)
            else:
                conn.request("POST", req.path, body=req.body, headers={"Content-Type": req.content_type})
                resp = conn.getresponse()
                resp.read()
                status, timing = resp.status, resp.getheader("Server-Timing", "")
            mine.append((time.perf_counter() - t0) * 1000)
            if "dur=" in timing:
                timings.append(float(timing.split("dur=")[1]))
            bad += status != 200
        (sock if client_kind == "raw" else conn).close()
        with lock:
            latencies.extend(mine)
            server_ms.extend(timings)
            errors[0] += bad

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    cpu0, srv0, (busy0, total0) = time.process_time(), cpu_ticks(server_pid) if server_pid else 0, machine_ticks()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cpu1, srv1, (busy1, total1) = time.process_time(), cpu_ticks(server_pid) if server_pid else 0, machine_ticks()
    n = max(len(latencies), 1)
    srv_s, cli_s = (srv1 - srv0) / TICK, cpu1 - cpu0
    others = max(0.0, (busy1 - busy0) / TICK - srv_s - cli_s) / max((total1 - total0) / TICK, 1e-9)
    return {"lat": latencies, "wall": wall, "errors": errors[0], "server": server_ms,
            "srv_cpu_ms": srv_s * 1000 / n, "cli_cpu_ms": cli_s * 1000 / n, "others": others}


def cases_for(runs: list[dict], host: str, port: int, rng: np.random.Generator) -> list[tuple[str, list[Request]]]:
    cases = []
    for r in runs:
        path = f"/api/runs/{r['index']}/decode"
        for n in (1, 16, 64):
            codes = [rng.normal(size=(n, r["code_width"])).round(4) for _ in range(8)]
            cases.append((f"{r['model']} decode n={n} json",
                          [Request(host, port, path, json.dumps({"codes": c.tolist()}).encode(), "application/json")
                           for c in codes]))
            cases.append((f"{r['model']} decode n={n} f32",
                          [Request(host, port, f"{path}?n={n}", c.astype("<f4").tobytes(), "application/octet-stream")
                           for c in codes]))
        if r["capabilities"]["sample"]:
            for n in (16, 64):
                cases.append((f"{r['model']} sample n={n}",
                              [Request(host, port, f"/api/runs/{r['index']}/sample",
                                       json.dumps({"n": n, "seed": s}).encode(), "application/json")
                               for s in range(8)]))
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=25)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--only", default="", help="run only the scenarios whose name contains this text (e.g. conv)")
    ap.add_argument("--client", choices=("raw", "http.client"), default="raw",
                    help="the load generator's HTTP client (default raw: pre-built requests on raw sockets)")
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
            print(f"{args.clients} concurrent clients x {args.requests} requests each, 127.0.0.1, {args.client} "
                  f"client; load average {tuple(round(v, 2) for v in os.getloadavg())}")
            print(f"{'scenario':<28} {'alone ms':>8} {'(server)':>9} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8}"
                  f" {'max ms':>8} {'server p95':>10} {'req/s':>7} {'srv cpu':>7} {'cli cpu':>7} {'others':>6}"
                  f" {'target':>8}")
            for name, reqs in cases_for(runs, host, int(port), np.random.default_rng(0)):
                if args.only not in name:
                    continue
                # first one client alone (the service time of one request), then the concurrent load
                alone = scenario(host, int(port), reqs, 1, 20, args.max_seconds, args.client)
                res = scenario(host, int(port), reqs, args.clients, args.requests, args.max_seconds, args.client,
                               server_pid=proc.pid)
                lat = res["lat"]
                q = np.percentile(lat, [50, 95])
                ok = ("met" if q[1] <= TARGET_MS else "NOT met") if ("stacked" in name or "conv" in name) else ""
                sq = np.percentile(res["server"], 95) if res["server"] else float("nan")
                errs = res["errors"] + alone["errors"]
                print(f"{name:<28} {np.median(alone['lat']):>8.1f} {np.median(alone['server']):>9.1f} {len(lat):>8}"
                      f" {q[0]:>8.1f} {q[1]:>8.1f} {max(lat):>8.1f} {sq:>10.1f} {len(lat) / res['wall']:>7.0f}"
                      f" {res['srv_cpu_ms']:>7.2f} {res['cli_cpu_ms']:>7.2f} {res['others'] * 100:>5.0f}%"
                      f" {ok:>8}" + (f"  ({errs} errors)" if errs else ""), flush=True)
            print("srv cpu / cli cpu: CPU ms per request of the server / the clients; others: the share of the "
                  "machine's CPUs other processes used meanwhile")
            print(f"load average after {tuple(round(v, 2) for v in os.getloadavg())}")
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
