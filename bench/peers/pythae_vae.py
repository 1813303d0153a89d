"""Peer: the chapter's VAE (784-150-100-10, SELU, Bernoulli decoder, RMSprop 1e-3, batch 128) trained
by pythae 0.1.2 on ../shared/data/mnist-4k (3,600 train / 400 held out), in its own venv:

    python3.11 -m venv bench/peers/.venv-pythae
    bench/peers/.venv-pythae/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    bench/peers/.venv-pythae/bin/pip install pythae
    bench/peers/.venv-pythae/bin/python bench/peers/pythae_vae.py --out /tmp/peers/pythae-vae [--epochs 25]

Writes OUT/samples.npy (N samples from the prior, (N, 28, 28) in [0, 1]) and OUT/result.json (held-out
reconstruction BCE per pixel from the posterior mean, wall and CPU seconds of training). pythae's
networks keep PyTorch's default initialisation and its loss is the summed BCE + KL per image (the
chapter's loss times 784: the same optimum). `bench/peers/compare.py` runs it and judges the samples.
"""
from __future__ import annotations

import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from peer_io import load, out_dir, parser, write_result

from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.pipelines import TrainingPipeline
from pythae.samplers import NormalSampler
from pythae.trainers import BaseTrainerConfig


class Encoder(BaseEncoder):
    def __init__(self, coding: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 150), nn.SELU(), nn.Linear(150, 100), nn.SELU())
        self.mean, self.log_var = nn.Linear(100, coding), nn.Linear(100, coding)

    def forward(self, x):
        h = self.net(x)
        return ModelOutput(embedding=self.mean(h), log_covariance=self.log_var(h))


class Decoder(BaseDecoder):
    def __init__(self, coding: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(coding, 100), nn.SELU(), nn.Linear(100, 150), nn.SELU(),
                                 nn.Linear(150, 784), nn.Sigmoid())

    def forward(self, z):
        return ModelOutput(reconstruction=self.net(z).reshape(-1, 1, 28, 28))


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--epochs", type=int, default=25)
    a = ap.parse_args()
    out = out_dir(a)
    torch.manual_seed(a.seed)
    torch.set_num_threads(1)
    X, _, Xv, _ = load()
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=10, reconstruction_loss="bce"),
                encoder=Encoder(10), decoder=Decoder(10))
    cfg = BaseTrainerConfig(output_dir=str(out / "pythae_runs"), num_epochs=a.epochs, per_device_train_batch_size=128,
                            per_device_eval_batch_size=400, learning_rate=1e-3, optimizer_cls="RMSprop", no_cuda=True,
                            steps_saving=None, seed=a.seed)
    t, c = time.perf_counter(), time.process_time()
    TrainingPipeline(training_config=cfg, model=model)(train_data=X[:, None], eval_data=Xv[:, None])
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    model.eval()
    with torch.no_grad():
        xv = torch.from_numpy(Xv[:, None])
        recon = model.decoder(model.encoder(xv).embedding).reconstruction
        bce = float(F.binary_cross_entropy(recon.clamp(1e-7, 1 - 1e-7), xv))
        g = NormalSampler(model=model).sample(num_samples=a.n).numpy().reshape(a.n, 28, 28)
    write_result(out, {"peer": "pythae 0.1.2", "model": "vae", "epochs": a.epochs, "heldout_bce": bce,
                       "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1)}, samples=g)


if __name__ == "__main__":
    main()
