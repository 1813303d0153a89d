"""Training throughput: latentforge's trainer vs the chapter's Keras code and plain PyTorch, in one run.

Runs, alternately and ``--repeats`` times, each as its own subprocess on the same data
(``../shared/bench/mnist4k.py``: the 3,600 training digits tiled ``--tile`` times; 15 -> 54,000):
  - latentforge's trainer (``--worker``: the model from the registry with the chapter's defaults,
    trained exactly as ``latentforge train`` trains it, thread policy included),
  - for ``stacked-ae``: ``../shared/bench/torch_plain_ae.py`` (a typical plain-PyTorch DataLoader
    loop) pinned to one thread (``torch-plain-1t``: the stronger reference on a busy machine), and
    with ``--plain-default-threads`` also with PyTorch's default threads (``torch-plain``; on a
    loaded 2-core machine that one can be 20x slower, and its runs then take minutes),
  - the chapter's Keras code when ``--keras-python`` names a Python with TensorFlow
    (``keras_seed_ae.py``, ``keras_conv_ae.py``, ``keras_dcgan.py`` of ``../shared/bench``),
  - ``latentforge-Nt`` for each ``--lf-threads N``: latentforge with ``LATENTFORGE_THREADS=N``
    (an explicit thread count also turns the batch split of ``engine/split.py`` off: ``--lf-threads 1``
    is latentforge on one thread, as it trained the conv AE before the split),
  - with ``--lf-plain-kernels``, ``latentforge-plain``: latentforge with PyTorch's own layers in place
    of ``engine/kernels.py``'s (``nn.Conv2d``, ``nn.ConvTranspose2d``, ``nn.Dropout``; same
    parameters), i.e. the code before those kernels, to measure them in the same run.
Each ``--batch`` is its own round. Prints samples/s (for dcgan: real images consumed per second)
and held-out BCE, then the ratios of the medians. The machine is shared and noisy: only ratios
measured in the same run mean anything; the load average is printed before and after.

    python bench/train_throughput.py --model stacked-ae --batch 32 256 --epochs 2 --repeats 3 \
        --keras-python /tmp/keras-env/bin/python
    python bench/train_throughput.py --model conv-ae --epochs 1 --repeats 3 --keras-python ...
    python bench/train_throughput.py --model dcgan --epochs 1 --repeats 3 --keras-python ...
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCH = REPO.parent / "shared" / "bench"
SPS = re.compile(r"samples_per_s=(\d+)")
BCE = re.compile(r"val_bce=([\d.]+)")
#: per model: Keras reference script, default tile and epochs, and the targets of issue 7 (x Keras)
MODELS = {
    "stacked-ae": dict(keras="keras_seed_ae.py", tile=15, epochs=2, batch=[32], keras_target={32: 5.0, 256: 8.0},
                       plain_target=1.5),
    "conv-ae": dict(keras="keras_conv_ae.py", tile=15, epochs=1, batch=[32], keras_target={32: 3.0}),
    "dcgan": dict(keras="keras_dcgan.py", tile=5, epochs=1, batch=[32], keras_target={32: 3.0}),
}


def worker(name: str, epochs: int, tile: int, batch: int, seed: int) -> None:
    """Train with latentforge's trainer; print one line like the reference scripts."""
    sys.path.insert(0, str(SHARED_BENCH))
    import torch
    from mnist4k import load

    from latentforge.models import build_model
    from latentforge.train import Trainer
    from latentforge.train.adversarial import AdversarialTrainer

    x_train, _, x_valid, _ = load(tile)
    x = torch.from_numpy(x_train).unsqueeze(1)
    xv = torch.from_numpy(x_valid).unsqueeze(1)
    torch.manual_seed(seed)
    extra = {"sample_every": 0} if name == "dcgan" else {}
    if os.environ.get("BENCH_PLAIN_KERNELS"):     # PyTorch's own layers: no engine kernels (engine/kernels.py)
        extra["fused_step"] = False
    model = build_model(name, input_shape=[1, 28, 28], epochs=epochs, batch_size=batch, seed=seed, **extra)
    model.prepare(x)
    cls = AdversarialTrainer if getattr(model, "adversarial", False) else Trainer
    trainer = cls(model, model.config, progress=False, log=lambda m: None)
    n = len(x) // batch * batch if name == "dcgan" else len(x)      # Keras' DCGAN loop drops the last batch
    t0 = time.perf_counter()
    trainer.fit(x[:n])                  # timed like the references: training epochs only
    dt = time.perf_counter() - t0
    val = "" if name == "dcgan" else f" val_bce={trainer.evaluate(xv)['loss']:.4f}"
    print(f"latentforge {name} batch={batch} n={n} epochs={epochs} threads={trainer.threads} "
          f"split={trainer.batch_parts} "
          f"seconds={dt:.2f} samples_per_s={epochs * n / dt:.0f}{val}")


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float | None, str]:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    text = (out.stdout + out.stderr).strip().splitlines()
    line = next((t for t in reversed(text) if SPS.search(t)), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"{' '.join(cmd)} failed:\n" + "\n".join(text[-15:]))
    bce = BCE.search(line)
    return float(SPS.search(line).group(1)), float(bce.group(1)) if bce else None, line


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}"


def contest(a, batch: int, spec: dict) -> dict[str, list[tuple[float, float | None]]]:
    """One round at ``batch``: every contender ``a.repeats`` times, alternating; returns the results."""
    env = {**os.environ, "EPOCHS": str(a.epochs), "TILE": str(a.tile), "BATCH": str(batch), "SEED": str(a.seed),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    lf = [sys.executable, __file__, "--worker", "--model", a.model, "--epochs", str(a.epochs), "--tile",
          str(a.tile), "--batch", str(batch), "--seed", str(a.seed)]
    # latentforge as the `latentforge` command runs it: OpenMP threads wait passively (engine/threads.py)
    lf_env = {**env, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    contenders: dict[str, tuple[list[str], dict[str, str]]] = {"latentforge": (lf, lf_env)}
    for t in a.lf_threads:
        contenders[f"latentforge-{t}t"] = (lf, {**lf_env, "LATENTFORGE_THREADS": str(t)})
    if a.lf_plain_kernels:
        contenders["latentforge-plain"] = (lf, {**lf_env, "BENCH_PLAIN_KERNELS": "1"})
    if a.baseline_repo:       # another checkout of latentforge (e.g. before a change), its own worker
        base = Path(a.baseline_repo).resolve()
        contenders["latentforge-base"] = ([sys.executable, str(base / "bench" / "train_throughput.py"), *lf[2:]],
                                          {**lf_env, "PYTHONPATH": str(base) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    if a.model == "stacked-ae":
        plain = [sys.executable, str(SHARED_BENCH / "torch_plain_ae.py")]
        contenders["torch-plain-1t"] = (plain, {**env, "OMP_NUM_THREADS": "1"})
        if a.plain_default_threads:
            contenders["torch-plain"] = (plain, env)
    if a.keras_python:
        contenders["keras"] = ([a.keras_python, str(SHARED_BENCH / spec["keras"])], env)
    results: dict[str, list[tuple[float, float | None]]] = {k: [] for k in contenders}
    names = list(contenders)
    for r in range(a.repeats):
        # each round starts with another contender: the one that runs second in a pair tends to be
        # a few % faster on these machines (measured 0.86-0.98x vs 1.02-1.10x swapping the order)
        for name in names[r % len(names):] + names[:r % len(names)]:
            cmd, e = contenders[name]
            sps, bce, line = run(cmd, e)
            results[name].append((sps, bce))
            print(f"[batch {batch} {r + 1}/{a.repeats}] {name:<15} {line}", flush=True)
    return results


def summary(a, batch: int, spec: dict, results) -> list[str]:
    med = {k: statistics.median(s for s, _ in v) for k, v in results.items()}
    lines = [f"{a.model}, batch {batch}, {a.epochs} epoch(s) x {a.tile * 3600:,} images, median of {a.repeats}:"]
    for k, v in med.items():
        bces = [b for _, b in results[k] if b is not None]
        held = f"   held-out BCE {statistics.median(bces):.4f}" if bces else ""
        lines.append(f"  {k:<17} {v:>10,.0f} samples/s{held}")
    targets = {"keras": spec["keras_target"].get(batch), "torch-plain": spec.get("plain_target"),
               "torch-plain-1t": spec.get("plain_target")}
    for ref in [k for k in med if k in ("keras", "latentforge-plain", "latentforge-base") or k.startswith("torch")]:
        t = targets.get(ref)
        goal = f"  (target >= {t:g}x: {'met' if med['latentforge'] / med[ref] >= t else 'NOT met'})" if t else ""
        # each round's own ratio: the contenders of a round ran back to back, under about the same load
        rounds = [lf[0] / other[0] for lf, other in zip(results["latentforge"], results[ref])]
        lines.append(f"  ratio latentforge / {ref}: {med['latentforge'] / med[ref]:.2f}x{goal}; per round "
                     + " ".join(f"{r:.2f}x" for r in rounds) + f" (median {statistics.median(rounds):.2f}x)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=list(MODELS), default="stacked-ae")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--tile", type=int)
    ap.add_argument("--batch", type=int, nargs="+")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keras-python", help="a Python with TensorFlow/Keras (see ../shared/bench/keras_seed_ae.py)")
    ap.add_argument("--lf-threads", type=int, nargs="*", default=[],
                    help="also run latentforge with LATENTFORGE_THREADS=N for each N (no batch split)")
    ap.add_argument("--lf-plain-kernels", action="store_true",
                    help="also run latentforge with PyTorch's own conv/dropout layers (the code before convkernels.py)")
    ap.add_argument("--baseline-repo", help="also run the latentforge of this checkout (e.g. main before a change), "
                                            "alternating in the same run")
    ap.add_argument("--plain-default-threads", action="store_true",
                    help="stacked-ae: also run the plain PyTorch loop with PyTorch's default threads")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    spec = MODELS[a.model]
    a.epochs = a.epochs or spec["epochs"]
    a.tile = a.tile or spec["tile"]
    batches = a.batch or spec["batch"]
    if a.worker:
        worker(a.model, a.epochs, a.tile, batches[0], a.seed)
        return
    if not (SHARED_BENCH / "mnist4k.py").exists():
        raise SystemExit(f"{SHARED_BENCH} is missing: run with ../shared beside the repository")
    print(f"machine: {machine()}", flush=True)
    report = []
    for batch in batches:
        report += summary(a, batch, spec, contest(a, batch, spec))
    print(f"\nmachine after: {machine()}")
    print("\n".join(report))


if __name__ == "__main__":
    main()
