"""latentforge beside peer libraries with the same network, data, epochs and optimizer, side by side.

    PYTHONPATH=. python bench/peers/compare.py [--rows vae,vae-25,pythae-vae,conditional-vae,conditional-gan]

Data: ../shared/data/mnist-4k, the first 3,600 digits to train on, the last 400 held out (as the
peers' scripts split it). Each row trains a model (latentforge in this process, a peer in its own
venv under bench/peers/.venv-<peer> by its script in this folder), draws 1,000 samples and prints:
held-out reconstruction BCE per pixel (from the posterior mean; AEs only), the share of samples with
an inverted background (per-image mean > 0.3; no real digit has one), the judge's view of the
samples (an MLP trained on real digits, ``bench/gan_modes.py``: classes covered with >= 2 % of the
samples, entropy of the class histogram in bits (3.32 = even), mean confidence, share with
confidence > 0.9; for conditional rows the worst per-label accuracy of ``generate --label k``),
FID / KID / precision / recall in the feature space of ``latentforge evaluate`` (its cached
feature network for mnist-4k; all 4,000 real digits as the reference), and the training's wall and
CPU seconds (the machine is shared: compare rows of one run). ``--json OUT`` also writes the rows.

Rows: ``vae`` (latentforge's defaults), ``vae-25`` (25 epochs, the peer's), ``pythae-vae`` (pythae
0.1.2, 25 epochs: ``pythae_vae.py``), ``pythae-vae-50`` (the same at latentforge's 50), ``conditional-vae``,
``conditional-gan`` (pythae has no conditional VAE: the conditional GAN is the reference for ``--label``),
``dcgan`` (8 epochs), ``progan`` (its defaults: about the DCGAN row's CPU seconds), ``stacked-ae``,
``conv-ae`` (defaults), and the chapter's Keras code (``keras_ae.py``, ``keras_dcgan.py``, venv ``.venv-keras``):
``keras-stacked-ae``, ``keras-conv-ae``, ``keras-dcgan`` (8 epochs),
``ddpm`` (latentforge's defaults) and ``ddpm-peer`` (denoising-diffusion-pytorch: ``ddpm_peer.py``, for the
``ddpm`` row's training CPU time when that row runs first, else 900 CPU-seconds).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))
MNIST4K = REPO.parent / "shared" / "data" / "mnist-4k"

LF_ROWS = {"vae": ("vae", {}), "vae-25": ("vae", {"epochs": 25}), "conditional-vae": ("conditional-vae", {}),
           "conditional-gan": ("conditional-gan", {}), "dcgan": ("dcgan", {"epochs": 8}),
           "progan": ("progan", {}), "stacked-ae": ("stacked-ae", {}), "conv-ae": ("conv-ae", {}), "ddpm": ("ddpm", {})}
PEER_ROWS = {"pythae-vae": ("pythae", "pythae_vae.py", {"--epochs": "25"}),
             "pythae-vae-50": ("pythae", "pythae_vae.py", {"--epochs": "50"}),
             "keras-stacked-ae": ("keras", "keras_ae.py", {"--model": "stacked"}),
             "keras-conv-ae": ("keras", "keras_ae.py", {"--model": "conv"}),
             "keras-dcgan": ("keras", "keras_dcgan.py", {"--epochs": "8"}),
             # --cpu-seconds: the ddpm row's training CPU time when it ran first in the same call
             "ddpm-peer": ("ddpm", "ddpm_peer.py", {"--cpu-seconds": "900", "--threads": "1"})}


def data():
    from latentforge.data import Dataset, load_data
    ds = load_data(str(MNIST4K))
    train = Dataset(x=ds.x[:3600], y=ds.y[:3600], name="mnist-4k[:3600]", sample_shape=ds.sample_shape, is_image=True)
    return ds, train, ds.x[3600:]


def lf_row(row: str, train, held, work: Path, seed: int, n: int) -> dict:
    from latentforge.models.capabilities import Capability
    from latentforge.train.run import train as lf_train
    model, over = LF_ROWS[row]
    over = {"seed": seed, "sample_every": 0, **over}
    t, c = time.perf_counter(), time.process_time()
    run = lf_train(model, train, out=work / row, overrides=over, valid_fraction=0.0, overwrite=True,
                   progress=False, log=lambda m: None)
    res = {"row": row, "library": "latentforge", "model": model, "train_wall_s": round(time.perf_counter() - t, 1),
           "train_cpu_s": round(time.process_time() - c, 1)}
    m = run.model
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if hasattr(m, "reconstruct") and not m.uses_labels and hasattr(m, "encode"):
            xh = torch.from_numpy(held)
            r = m.reconstruct(xh).clamp(1e-7, 1 - 1e-7)
            res["heldout_bce"] = float(torch.nn.functional.binary_cross_entropy(r.reshape(len(xh), -1), xh.reshape(len(xh), -1)))
        if Capability.SAMPLES not in m.capabilities:                # a plain AE: reconstructions only
            return res
        if m.uses_labels:
            res["per_label"] = [m.sample(200, torch.full((200,), k), generator=g).numpy() for k in range(10)]
            x = m.sample(n, torch.arange(n) % 10, generator=g).numpy()
        else:
            x = m.sample(n, None, generator=g).numpy()
    res["samples"] = x.reshape(n, 28, 28)
    return res


def peer_row(row: str, work: Path, seed: int, n: int, cpu_seconds: float | None = None) -> dict:
    peer, script, args = PEER_ROWS[row]
    if cpu_seconds is not None and "--cpu-seconds" in args:
        args = {**args, "--cpu-seconds": str(cpu_seconds)}
    py = HERE / f".venv-{peer}" / "bin" / "python"
    if not py.exists():
        return {"row": row, "library": peer, "skipped": f"no venv {py} (see {script}'s docstring)"}
    out = work / row
    cmd = [str(py), str(HERE / script), "--out", str(out), "--seed", str(seed), "--n", str(n)]
    for k, v in args.items():
        cmd += [k, v]
    done = subprocess.run(cmd, capture_output=True, text=True)      # the peer's progress bars stay quiet
    if done.returncode:
        raise SystemExit(f"{row}: {' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    res = json.loads((out / "result.json").read_text())
    res.update(row=row, library=res.pop("peer"))
    if "samples" in res:                                            # an AE peer draws none
        res["samples"] = np.load(res["samples"])
    return res


def judge_and_score(rows: list[dict], ds) -> None:
    from gan_modes import coverage, reference_classifier
    from latentforge.eval.features import embed, feature_network_for
    from latentforge.eval.generative import generative_metrics
    clf, acc = reference_classifier()
    print(f"judge: MLP on real digits, held-out accuracy {acc:.3f}")
    feat_run, _ = feature_network_for(ds, log=lambda m: print(m, file=sys.stderr))
    real_f, _ = embed(feat_run, ds.x)
    for r in rows:
        if "samples" not in r:
            continue
        x = r.pop("samples")
        flat = x.reshape(len(x), -1)
        r["inverted"] = float((flat.mean(1) > 0.3).mean())
        cov = coverage(clf, x)
        proba = clf.predict_proba(flat)
        r.update(classes=cov["classes_covered"], entropy=cov["entropy_bits"], confidence=cov["mean_confidence"],
                 conf_gt_0_9=round(float((proba.max(1) > 0.9).mean()), 3))
        per = r.pop("per_label", None)
        if per is not None:
            r["worst_label_acc"] = min(float((clf.predict(p.reshape(len(p), -1)) == k).mean()) for k, p in enumerate(per))
        fake_f, _ = embed(feat_run, x.reshape(len(x), 1, 28, 28).astype(np.float32))
        gm = generative_metrics(real_f, fake_f)
        r.update(fid=round(gm["fid"], 2), kid=round(gm["kid"], 4), precision=round(gm["precision"], 3),
                 recall=round(gm["recall"], 3))


def table(rows: list[dict]) -> str:
    cols = ["row", "library", "heldout_bce", "inverted", "classes", "entropy", "confidence", "conf_gt_0_9",
            "worst_label_acc", "fid", "kid", "precision", "recall", "train_wall_s", "train_cpu_s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['row']} | {r['library']} | skipped: {r['skipped']} |")
            continue
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="vae,vae-25,pythae-vae,conditional-vae,conditional-gan")
    ap.add_argument("--work", default="/tmp/latentforge-peers")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    ds, train, held = data()
    rows = []
    for row in a.rows.split(","):
        if row in LF_ROWS:
            rows.append(lf_row(row, train, held, work, a.seed, a.n))
        elif row in PEER_ROWS:
            lf = next((r for r in rows if r["row"] == PEER_ROWS[row][0]), None)     # equal CPU time
            rows.append(peer_row(row, work, a.seed, a.n, lf and lf["train_cpu_s"]))
        else:
            raise SystemExit(f"unknown row {row!r}: one of {', '.join([*LF_ROWS, *PEER_ROWS])}")
        print(f"trained {row}", file=sys.stderr, flush=True)
    judge_and_score(rows, ds)
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
