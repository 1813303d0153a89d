"""The GPU path in one run: the issue's H100 target, CUDA graphs vs eager, AMP, compile, nccl.

    PYTHONPATH=. python bench/gpu_check.py --data DIR_OF_MNIST4K [--out results.json]

What it measures (each a separate section in the printed table; all in one process unless noted):

* **target**: the seed stacked AE (784-100-30-100-784, SELU, BCE, SGD lr 1.5) on 55,000 images
  (the 3,600 training digits of mnist-4k tiled), batch 32, 20 epochs, through ``Trainer.fit``:
  wall time including placement and CUDA-graph capture, and the sum of the epochs' times;
  held-out BCE on the 400 other digits. Also at batch 256.
* the same with ``cuda_graphs=false`` (eager fused step; the default until this check has passed
  on a GPU), with the autograd path
  (``fused_step=false``), and a plain PyTorch loop (data on the GPU, autograd, torch.optim.SGD),
  for ratios measured in the same run;
* **kernels** (first): the fused step's cost per step in chunks of 128, eager and replayed as a
  CUDA graph, and a profile of eager steps (kernels per step, their summed device time: the
  floor under graph replays; the costliest kernels);
* **graphs == eager**: one epoch from the same weights with and without CUDA graphs: the
  largest weight difference and the loss tables;
* **resume**: ``latentforge train`` 2 epochs vs 1 epoch + ``--resume``: weights compared;
* the CLI on CUDA: ``--device auto``, ``--precision bf16|16-mixed``, ``--set compile=true``,
  DCGAN / conv AE / DDPM epochs, ``evaluate`` and ``generate``;
* **nccl**: a one-process nccl group, latentforge's gradient all-reduce hooks (``GradSync``) and
  ``broadcast_module`` on CUDA tensors.

``--device cpu --quick`` runs the same code on a CPU with tiny sizes (to check the script).

On the workplace's lent GPU machine (only the repository travels, not ``../shared``): once,
``echo /.gpu/ >> .git/info/exclude; mkdir -p .gpu; cp -r ../shared/data/mnist-4k .gpu/``; then run
``PYTHONPATH=$PWD python3 bench/gpu_check.py --data .gpu/mnist-4k`` carrying ``.gpu`` (about 4
minutes; each section's result is printed as it ends, so a cut run still reports).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from latentforge.models import build_model
from latentforge.train import Trainer

RESULTS: list[tuple[str, str]] = []


def note(what: str, value: str) -> None:
    RESULTS.append((what, value))
    print(f"[gpu_check] {what}: {value}", flush=True)


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.open(path, "rb").read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def fit_seed_ae(x: torch.Tensor, xv: torch.Tensor, dev: torch.device, epochs: int, batch: int, **cfg) -> dict:
    """Train the seed AE with Trainer.fit; wall time (placement and graph capture included)."""
    torch.manual_seed(42)
    model = build_model("stacked-ae", input_shape=[784], batch_size=batch, epochs=epochs, **cfg).to(dev)
    model.prepare(x)
    tr = Trainer(model, model.config, device=dev, progress=False, log=lambda m: None)
    sync(dev)
    t0 = time.perf_counter()
    hist = tr.fit(x)
    sync(dev)
    wall = time.perf_counter() - t0
    with torch.no_grad():
        model.eval()
        valid = float(model(xv.to(dev)).loss)
    return {"wall": wall, "epochs_s": sum(h["seconds"] for h in hist), "first_epoch_s": hist[0]["seconds"],
            "last_epoch_s": hist[-1]["seconds"], "valid_bce": valid, "train_bce": hist[-1]["train_loss"],
            "samples_per_s": epochs * len(x) / wall, "model": model, "trainer": tr}


def plain_loop(x: torch.Tensor, xv: torch.Tensor, dev: torch.device, epochs: int, batch: int) -> dict:
    """What a user writes by hand: data on the device, a shuffled gather per batch, autograd."""
    from torch import nn
    torch.manual_seed(42)
    model = nn.Sequential(nn.Linear(784, 100), nn.SELU(), nn.Linear(100, 30), nn.SELU(),
                          nn.Linear(30, 100), nn.SELU(), nn.Linear(100, 784)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1.5)
    loss_fn = nn.BCEWithLogitsLoss()
    xd = x.to(dev)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(xd), device=dev)
        for i in range(0, len(xd), batch):
            xb = xd[perm[i:i + batch]]
            opt.zero_grad()
            loss = loss_fn(model(xb), xb)
            loss.backward()
            opt.step()
    sync(dev)
    wall = time.perf_counter() - t0
    with torch.no_grad():
        valid = float(loss_fn(model(xv.to(dev)), xv.to(dev)))
    return {"wall": wall, "valid_bce": valid, "samples_per_s": epochs * len(x) / wall}


def cli(*args: str, check: bool = True, timeout: int = 600) -> tuple[float, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "latentforge", *args], capture_output=True, text=True,
                       env=env, timeout=timeout)
    dt = time.perf_counter() - t0
    if check and p.returncode != 0:
        raise RuntimeError(f"latentforge {' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return dt, (p.stdout + p.stderr)


def section(name: str, fn) -> None:
    """Run one section; a failure is recorded and the next section still runs."""
    t0 = time.perf_counter()
    try:
        fn()
    except Exception as e:                      # noqa: BLE001 (report and go on: one device call)
        note(f"{name} FAILED", f"{type(e).__name__}: {str(e)[-1500:]}")
    print(f"[gpu_check] -- {name}: {time.perf_counter() - t0:.1f}s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder of mnist-4k (IDX gz)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (to check the script on a CPU)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--skip", nargs="*", default=[], help="sections to skip")
    a = ap.parse_args()
    dev = torch.device(a.device)
    quick = a.quick
    X = read_idx(a.data / "train-images-idx3-ubyte.gz").astype(np.float32).reshape(-1, 784) / 255.0
    n = 2_000 if quick else 55_000
    x = torch.from_numpy(np.concatenate([X[:3600]] * (n // 3600 + 1))[:n])
    xv = torch.from_numpy(X[3600:])
    epochs = 2 if quick else 20
    note("torch", f"{torch.__version__}, cuda {torch.version.cuda}, "
         + (torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"))
    work = Path(tempfile.mkdtemp(prefix="lf-gpu-"))

    def target():
        for batch in (32, 256):
            r = fit_seed_ae(x, xv, dev, epochs, batch, cuda_graphs=True)
            note(f"target b{batch} graphs: {epochs} epochs x {n}",
                 f"wall {r['wall']:.2f}s (epochs {r['epochs_s']:.2f}s; first {r['first_epoch_s']:.3f}s, "
                 f"last {r['last_epoch_s']:.3f}s), {r['samples_per_s']:,.0f} samples/s, "
                 f"train BCE {r['train_bce']:.4f}, held-out BCE {r['valid_bce']:.4f}")
            # a second run in the same process: no first-use costs (cuBLAS handles, allocator)
            r2 = fit_seed_ae(x, xv, dev, epochs, batch, cuda_graphs=True)
            note(f"target b{batch} graphs (again)", f"wall {r2['wall']:.2f}s, held-out BCE {r2['valid_bce']:.4f}")
            e_ep = epochs if batch == 256 else max(1, epochs // 10)
            e = fit_seed_ae(x, xv, dev, e_ep, batch, cuda_graphs=False)
            note(f"b{batch} eager fused step ({e_ep} ep)",
                 f"{e['samples_per_s']:,.0f} samples/s; graphs/eager = {r2['samples_per_s'] / e['samples_per_s']:.2f}x")
            g = fit_seed_ae(x, xv, dev, 1, batch, fused_step=False)
            note(f"b{batch} autograd path (1 ep)",
                 f"{g['samples_per_s']:,.0f} samples/s; graphs/autograd = {r2['samples_per_s'] / g['samples_per_s']:.2f}x")
            p = plain_loop(x, xv, dev, e_ep, batch)
            note(f"b{batch} plain PyTorch loop ({e_ep} ep)",
                 f"{p['samples_per_s']:,.0f} samples/s, held-out BCE {p['valid_bce']:.4f} (at {e_ep} ep); "
                 f"graphs/plain = {r2['samples_per_s'] / p['samples_per_s']:.2f}x")

    def kernels():
        """Per-step cost of the fused step in chunks of 128 (eager, and replayed as a CUDA graph),
        and what a profile of eager steps says: kernels per step and their summed device time,
        the floor that graph replays cannot go below."""
        from torch.profiler import ProfilerActivity, profile

        from latentforge.engine.chunks import ChunkedSteps, graph_safe_params
        from latentforge.engine.dense_sgd import DenseSGDStep
        torch.manual_seed(0)
        m = build_model("stacked-ae", input_shape=[784]).to(dev)
        xd = x.to(dev)
        order = torch.randperm(len(xd), device=dev)[:128 * 32]
        steps = len(order) // 32                                    # one chunk (fewer with --quick)
        order = order[:steps * 32]

        def chunks(graphs: bool) -> ChunkedSteps:
            step = DenseSGDStep(m)
            return ChunkedSteps(lambda xb: step(xb, 1.5), xd, graph_safe_params(m), graphs=graphs,
                                log=lambda s: note("kernels: graphs", s))
        for graphs in ((False, True) if dev.type == "cuda" else (False,)):
            ch = chunks(graphs)
            list(ch.epoch(order, 32))                               # warm-up (and capture)
            sync(dev)
            t0 = time.perf_counter()
            for _ in range(5):
                list(ch.epoch(order, 32))
            sync(dev)
            per = (time.perf_counter() - t0) / (5 * steps)
            note(f"kernels: batch 32, chunk of {steps} steps, {'CUDA graph' if graphs and ch.use_graphs else 'eager'}",
                 f"{per * 1e6:.1f} us/step; 20 epochs of 55,000 would take {per * 34_375:.2f} s")
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        ch = chunks(False)
        list(ch.epoch(order[:32 * 16], 32))
        sync(dev)
        with profile(activities=acts) as prof:
            list(ch.epoch(order[:32 * 16], 32))
            sync(dev)
        dev_type = torch.autograd.DeviceType.CUDA if dev.type == "cuda" else torch.autograd.DeviceType.CPU
        evs = [e for e in prof.events() if e.device_type == dev_type
               and (dev.type == "cuda" or e.cpu_parent is None)]
        us = [e.time_range.elapsed_us() for e in evs]
        top: dict[str, list[float]] = {}
        for e, t in zip(evs, us):
            top.setdefault(e.name[:60], []).append(t)
        worst = sorted(top.items(), key=lambda kv: -sum(kv[1]))[:6]
        note("kernels: profile of 16 eager steps",
             f"{len(evs) / 16:.1f} {'kernels' if dev.type == 'cuda' else 'top-level ops'}/step, "
             f"{sum(us) / 16:.1f} us/step of {'device' if dev.type == 'cuda' else 'CPU'} time; top: "
             + "; ".join(f"{k} x{len(v) / 16:g} {sum(v) / len(v):.1f} us" for k, v in worst))

    def equality():
        runs = []
        for graphs in (True, False):
            r = fit_seed_ae(x, xv, dev, 1, 32, cuda_graphs=graphs)
            runs.append((r["model"].state_dict(), r["trainer"].state.history[0]["train_loss"]))
        diff = max(float((a - b).abs().max()) for a, b in zip(runs[0][0].values(), runs[1][0].values()))
        note("graphs == eager after 1 epoch", f"max |weight diff| {diff:.3g}; train BCE {runs[0][1]:.6f} vs {runs[1][1]:.6f}")

    np.save(work / "d.npy", X[:2000].reshape(-1, 1, 28, 28))
    dev_flag = dev.type

    def resume():
        from safetensors.torch import load_file
        cli("train", "stacked-ae", "--data", str(work / "d.npy"), "--device", dev_flag,
            "--epochs", "2", "--out", str(work / "full"), "--no-progress", "--set", "cuda_graphs=true")
        cli("train", "stacked-ae", "--data", str(work / "d.npy"), "--device", dev_flag,
            "--epochs", "1", "--out", str(work / "part"), "--no-progress", "--set", "cuda_graphs=true")
        cli("train", "stacked-ae", "--data", str(work / "d.npy"), "--device", dev_flag,
            "--epochs", "2", "--out", str(work / "part"), "--resume", "--no-progress")
        a_, b_ = (load_file(work / r / "checkpoint.safetensors") for r in ("full", "part"))
        diff = max(float((a_[k].float() - b_[k].float()).abs().max()) for k in a_ if k.startswith("model."))
        note("resume == uninterrupted (CLI, graphs)", f"max |weight diff| {diff:.3g}")

    d = str(work / "d.npy")

    def cli_auto():
        dt, out = cli("train", "stacked-ae", "--data", d, "--device", "auto", "--epochs", "1",
                      "--out", str(work / "auto"), "--no-progress")
        meta = json.loads((work / "auto" / "run.json").read_text())
        note("--device auto", f"run.json device = {meta['hardware']['device']} ({dt:.1f}s)")
        dt, out = cli("evaluate", str(work / "auto"), "--data", d)
        try:
            res = json.loads(out[out.index("{"):])
            note("evaluate (stacked-ae)", ", ".join(f"{k}={v:.4g}" for k, v in res.items() if isinstance(v, float))[:300])
        except ValueError:
            note("evaluate (stacked-ae) output", out.strip()[-300:])

    def cli_train(tag: str, model: str, data: str, *extra: str) -> tuple[float, list | None]:
        """`latentforge train` into work/TAG; (seconds, history), or a note and None if it failed."""
        dt, out = cli("train", model, "--data", data, "--device", dev.type, "--out", str(work / tag),
                      "--no-progress", *extra, check=False)
        hist = work / tag / "history.json"
        if not hist.exists():
            note(f"{tag} on {dev.type} FAILED", out.strip()[-500:])
            return dt, None
        return dt, json.loads(hist.read_text())

    def cli_precision():
        for prec in ("bf16", "16-mixed"):
            dt, h = cli_train(prec, "stacked-ae", d, "--epochs", "2", "--precision", prec)
            if h:
                note(f"--precision {prec} (autograd, 2 ep)", f"train BCE {h[-1]['train_loss']:.4f}, "
                     f"{h[-1]['samples_per_s']:,.0f} samples/s, {dt:.1f}s total")

    def cli_compile():
        dt, h = cli_train("compiled", "stacked-ae", d, "--epochs", "2", "--set", "compile=true",
                          "--set", "fused_step=false")
        if h:
            note("compile=true (autograd, 2 ep)", f"epoch 1 {h[0]['seconds']:.1f}s, epoch 2 {h[1]['seconds']:.2f}s "
                 f"({h[1]['samples_per_s']:,.0f} samples/s), BCE {h[-1]['train_loss']:.4f}")

    def cli_models():
        for model, extra in (("dcgan", []), ("conv-ae", []), ("dcgan", ["--precision", "bf16"]),
                             ("ddpm", ["--set", "steps=100"])):
            tag = model + ("-bf16" if extra[:1] == ["--precision"] else "")
            if tag == "dcgan-bf16" and dev.type == "cpu":      # bf16 convolutions are emulated on most CPUs: minutes
                continue
            dt, h = cli_train(tag, model, str(a.data), "--epochs", "1" if quick else "2", *extra)
            if h:
                note(f"{tag} on {dev.type}", f"{h[-1]['samples_per_s']:,.0f} samples/s (last epoch), "
                     f"loss {h[-1]['train_loss']:.4f}, {dt:.1f}s total")
        dt, out = cli("generate", str(work / "dcgan"), "-n", "10000", "--out", str(work / "s.npy"),
                      "--device", dev.type)
        note("generate 10,000 (dcgan, CLI)", f"{dt:.1f}s incl. start-up")

    def inference():
        from latentforge.train.run import load_run
        run = load_run(work / "auto", device=dev)
        big = np.concatenate([X] * (25 if quick else 250))       # 100,000 / 1,000,000 images
        for bs in (4096, 65536):
            run.encode(big[:bs * 2], batch_size=bs, progress=False)
            sync(dev)
            t0 = time.perf_counter()
            codes = run.encode(big, batch_size=bs, progress=False)
            sync(dev)
            dt = time.perf_counter() - t0
            note(f"Run.encode batch {bs}", f"{len(big) / dt:,.0f} images/s ({len(big):,} images, numpy in and out)")
        assert codes.shape == (len(big), 30)

    def nccl():
        if dev.type != "cuda":
            note("nccl", "skipped (no CUDA)")
            return
        import torch.distributed as dist
        from latentforge.train import distributed as ddp
        dist.init_process_group("nccl", init_method="tcp://127.0.0.1:29533", rank=0, world_size=1,
                                device_id=dev)
        try:
            m = build_model("stacked-ae", input_shape=[784]).to(dev)
            ddp.broadcast_module(m)
            sync_ = ddp.GradSync(list(m.parameters()))
            xb = x[:64].to(dev)
            m(xb).loss.backward()
            g = [p.grad.clone() for p in m.parameters()]
            ref = build_model("stacked-ae", input_shape=[784]).to(dev)
            ref.load_state_dict(m.state_dict())
            ref(xb).loss.backward()
            diff = max(float((a_ - p.grad).abs().max()) for a_, p in zip(g, ref.parameters()))
            sync_.remove()
            t = torch.ones(4, device=dev)
            note("nccl (1 process)", f"backend {dist.get_backend()}, all_reduce {ddp.all_reduce_sum(t).tolist()}, "
                 f"GradSync grads vs plain max diff {diff:.3g}")
        finally:
            dist.destroy_process_group()

    for name, fn in (("kernels", kernels), ("target", target), ("equality", equality), ("resume", resume), ("cli-auto", cli_auto),
                     ("inference", inference), ("cli-precision", cli_precision), ("cli-models", cli_models),
                     ("nccl", nccl), ("cli-compile", cli_compile)):
        if name not in a.skip:
            section(name, fn)
    print("\n| check | result |\n|---|---|")
    for what, value in RESULTS:
        print(f"| {what} | {value} |")
    if a.out:
        a.out.write_text(json.dumps(RESULTS, indent=1))


if __name__ == "__main__":
    main()
