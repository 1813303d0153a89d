"""Peer: lucidrains' denoising-diffusion-pytorch (Unet + GaussianDiffusion) on ../shared/data/mnist-4k
(the 3,600 training digits, 28x28, as ``compare.py``'s split), trained for a CPU-time budget, in its own venv:

    python3.11 -m venv bench/peers/.venv-ddpm
    bench/peers/.venv-ddpm/bin/pip install torch==2.14.1 torchvision==0.29.1
    bench/peers/.venv-ddpm/bin/pip install denoising-diffusion-pytorch        # 2.3.4 when this was written
    bench/peers/.venv-ddpm/bin/python bench/peers/ddpm_peer.py --out /tmp/peers/ddpm-peer --cpu-seconds 900

(The package imports torchvision, which does not import beside the main venv's torch 2.13.0; the
torch/torchvision pair above does. It is a CUDA build: it runs on the CPU here.)

Network: its ``Unet(dim=16, dim_mults=(1, 2, 4), channels=1)`` — the same widths as latentforge's
default U-Net (16, 32, 64 channels at 28 -> 14 -> 7: two down-samplings, so 28x28 needs no padding),
with the peer's own blocks (two ResNet blocks per level, linear attention at every level, full
attention in the middle): 0.72 M parameters against latentforge's 0.62 M, and a training step about
four times as many CPU-seconds per image. Process: its defaults
(T = 1000, sigmoid schedule, v-prediction, MSE), sampled with its DDIM sampler (``sampling_timesteps``
50 < T, eta 0), the one it uses whenever fewer sampling steps than T are asked.

Training is its ``Trainer``'s loop written out (the Trainer itself reads a folder of images through
torchvision and DataLoader worker processes, and counts steps, not CPU time): Adam with its betas
(0.9, 0.99), gradient norm clipped at 1, ``ema_pytorch.EMA`` with its decay 0.995 updated every 10
steps, batches drawn by reshuffling every epoch; it stops at the first step after ``--cpu-seconds``
of this process's CPU time (``time.process_time``, all threads). lr and batch size default to
latentforge's DDPM defaults (the Trainer's own lr 1e-4 is for runs of 100k+ steps; ``--lr`` sets it).

Writes OUT/samples.npy (N samples from its EMA model, (N, 28, 28) in [0, 1]) and OUT/result.json
(steps, wall and CPU seconds of training, parameters). ``bench/peers/compare.py --rows ddpm,ddpm-peer``
runs it with latentforge's measured CPU time and judges both.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "shared" / "bench"))
from denoising_diffusion_pytorch import GaussianDiffusion, Unet  # noqa: E402
from ema_pytorch import EMA  # noqa: E402
from mnist4k import load  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpu-seconds", type=float, default=900.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--sampling-timesteps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: PyTorch's default)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=1000)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(a.seed)
    if a.threads:
        torch.set_num_threads(a.threads)
    X, _, _, _ = load()
    x = torch.from_numpy(X[:, None])                                   # (3600, 1, 28, 28) in [0, 1]
    unet = Unet(dim=a.dim, dim_mults=(1, 2, 4), channels=1)
    diffusion = GaussianDiffusion(unet, image_size=28, timesteps=1000, sampling_timesteps=a.sampling_timesteps)
    params = sum(p.numel() for p in unet.parameters())
    opt = torch.optim.Adam(diffusion.parameters(), lr=a.lr, betas=(0.9, 0.99))
    ema = EMA(diffusion, beta=0.995, update_every=10)
    steps, epochs, losses = 0, 0, []
    t, c = time.perf_counter(), time.process_time()
    while time.process_time() - c < a.cpu_seconds:
        order = torch.randperm(len(x))
        for i in range(0, len(x), a.batch_size):
            diffusion.train()
            loss = diffusion(x[order[i:i + a.batch_size]])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            ema.update()
            steps += 1
            losses.append(loss.item())
            if time.process_time() - c >= a.cpu_seconds:
                break
        epochs += 1
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    ema.ema_model.eval()
    s0 = time.perf_counter()
    with torch.inference_mode():
        g = torch.cat([ema.ema_model.sample(batch_size=min(250, a.n - i)) for i in range(0, a.n, 250)])
    sample_wall = time.perf_counter() - s0
    g = g.clamp(0, 1).numpy().reshape(a.n, 28, 28)
    np.save(out / "samples.npy", g.astype(np.float32))
    res = {"peer": "denoising-diffusion-pytorch", "model": "ddpm", "params": params, "steps": steps,
           "epochs_started": epochs, "batch_size": a.batch_size, "lr": a.lr, "final_loss": float(np.mean(losses[-50:])),
           "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1), "sample_wall_s": round(sample_wall, 1),
           "samples": str(out / "samples.npy")}
    (out / "result.json").write_text(json.dumps(res))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
