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

import time

import numpy as np
import torch

from denoising_diffusion_pytorch import GaussianDiffusion, Unet
from ema_pytorch import EMA
from peer_io import load, out_dir, parser, write_result


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--cpu-seconds", type=float, default=900.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--sampling-timesteps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: PyTorch's default)")
    a = ap.parse_args()
    out = out_dir(a)
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
    write_result(out, {"peer": "denoising-diffusion-pytorch", "model": "ddpm", "params": params, "steps": steps,
                       "epochs_started": epochs, "batch_size": a.batch_size, "lr": a.lr,
                       "final_loss": float(np.mean(losses[-50:])), "train_wall_s": round(wall, 1),
                       "train_cpu_s": round(cpu, 1), "sample_wall_s": round(sample_wall, 1)}, samples=g)


if __name__ == "__main__":
    main()
