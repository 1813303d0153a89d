"""Denoising diffusion probabilistic model (SPEC 20): the chapter's diffusion model.

Three pieces kept apart, as in diffusers:

* the **process** — :class:`GaussianDiffusion`: the cosine variance schedule of Nichol & Dhariwal
  (``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos²(((t/T) + s) / (1 + s) · π/2)``, ``s = 0.008``,
  ``beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}`` clipped at 0.999), the forward noising
  ``q_sample``, the posterior ``q(x_{t-1} | x_t, x_0)``, one reverse step, and the samplers:
  ancestral over all T steps, ancestral over a strided subsequence of steps ("respacing": the
  schedule restricted to the kept steps, Nichol & Dhariwal §4), or DDIM (Song et al.; ``eta``).
* the **network** — :class:`UNet`: ``eps_theta(x_t, t)``, a small U-Net with a sinusoidal time
  embedding, residual conv blocks with GroupNorm, two down-sampling levels (28 → 14 → 7) and skip
  connections. Inputs whose sides are not a multiple of ``2**levels`` are zero-padded and the
  output cropped back, so any (C, H, W) works.
* the **pipeline** — :class:`DDPM`: ``forward(x)`` is the noise-prediction loss at a uniformly
  random step (Huber as the chapter, or MSE as Ho et al.; of the noise as the chapter, or of the
  velocity v), data scaled from [0, 1] to [-1, 1]
  inside; ``sample(n)`` runs the reverse process and returns images in [0, 1].

Step indices are 0-based: step ``t`` in ``0 .. T-1`` is Nichol & Dhariwal's step ``t + 1``. The
chapter (3rd ed.) uses T = 4000, Huber loss, Nadam (Keras' default lr 1e-3) and batch 32; its
sampler walks all 4000 steps with ``sigma_t² = beta_t``. That is 4000 network calls per batch of
samples, so here ``sample()`` defaults to 25 DDIM steps (``sample_steps``; set it to 0 for the full
chain) with autoguidance (Karras et al., 2024: the network steered away from an early copy of
itself), and training to a CPU-sized run — see :class:`DDPMConfig` for every choice and departure.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TrainConfig, check_choice, check_fraction, check_nonnegative, check_positive
from ..errors import ConfigError, DataError
from .base import LatentModel, ModelOutput
from .capabilities import Capability

SAMPLERS = ("ancestral", "ddim")
VARIANCES = ("beta", "posterior")
LOSSES = ("huber", "mse")
PREDICTIONS = ("eps", "v")


# ============================================================================ the process
def cosine_alpha_bar(t: Tensor | float, steps: int, s: float = 0.008) -> Tensor:
    """Closed form of the cosine schedule's ``alpha_bar`` at (possibly fractional) step ``t`` of
    ``0 .. steps`` (1-based as in the paper: ``alpha_bar(0) = 1``, ``alpha_bar(T) = 0``)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    f = lambda u: torch.cos((u / steps + s) / (1 + s) * math.pi / 2) ** 2   # noqa: E731
    return f(t) / f(torch.zeros((), dtype=torch.float64))


def cosine_betas(steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """The ``steps`` betas of the cosine schedule (float64), ``beta_t = 1 - ab(t+1)/ab(t)`` clipped."""
    ab = cosine_alpha_bar(torch.arange(steps + 1, dtype=torch.float64), steps, s)
    return (1 - ab[1:] / ab[:-1]).clamp(0.0, max_beta)


def strided_timesteps(steps: int, n: int) -> Tensor:
    """``n`` of the ``steps`` step indices, evenly spread and always including 0 and ``steps - 1``."""
    n = max(1, min(int(n), steps))
    if n == 1:
        return torch.tensor([steps - 1])
    return torch.from_numpy(np.unique(np.round(np.linspace(0, steps - 1, n)).astype(np.int64)))


def _at(values: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """``values[t]`` as x's dtype on x's device, shaped to broadcast against ``x`` (N, ...)."""
    out = values.to(x.dtype).to(x.device)[t.to(x.device)]       # float64 → x's dtype first (MPS has no float64)
    return out.view((len(t),) + (1,) * (x.dim() - 1))


class GaussianDiffusion:
    """The forward (noising) process and its reverse, for a given beta schedule.

    Holds the schedule in float64 (CPU) and derives everything else from it; nothing is learnt,
    so it is rebuilt from the config rather than stored in checkpoints. ``timestep_map`` gives the
    network's step index of each of this process's steps (the identity, except for a respaced
    process that keeps a subsequence of an original one's steps).
    """

    def __init__(self, betas: Tensor, timestep_map: Tensor | None = None):
        b = torch.as_tensor(betas, dtype=torch.float64)
        if b.dim() != 1 or len(b) == 0 or bool((b <= 0).any()) or bool((b > 1).any()):
            raise ConfigError("diffusion betas must be a non-empty 1-D schedule in (0, 1]")
        self.num_steps = len(b)
        self.betas = b
        self.alphas = 1 - b
        self.alpha_bar = torch.cumprod(self.alphas, 0)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        self.sqrt_alpha_bar = self.alpha_bar.sqrt()
        self.sqrt_one_minus_alpha_bar = (1 - self.alpha_bar).sqrt()
        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, posterior_variance)   (Ho et al., eq. 7)
        self.posterior_variance = b * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)
        self.posterior_mean_coef1 = b * self.alpha_bar_prev.sqrt() / (1 - self.alpha_bar)
        self.posterior_mean_coef2 = (1 - self.alpha_bar_prev) * self.alphas.sqrt() / (1 - self.alpha_bar)
        self.timestep_map = (torch.arange(self.num_steps) if timestep_map is None
                             else torch.as_tensor(timestep_map, dtype=torch.long))

    @classmethod
    def cosine(cls, steps: int, s: float = 0.008, max_beta: float = 0.999) -> "GaussianDiffusion":
        return cls(cosine_betas(steps, s, max_beta))

    # -- forward process ----------------------------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """A draw of ``x_t ~ q(x_t | x_0) = N(sqrt(ab_t) x_0, (1 - ab_t) I)`` from given noise."""
        return _at(self.sqrt_alpha_bar, t, x0) * x0 + _at(self.sqrt_one_minus_alpha_bar, t, x0) * noise

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of ``q(x_{t-1} | x_t, x_0)``."""
        mean = _at(self.posterior_mean_coef1, t, xt) * x0 + _at(self.posterior_mean_coef2, t, xt) * xt
        return mean, _at(self.posterior_variance, t, xt)

    def predict_x0(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``x_0`` implied by ``x_t`` and its noise: ``(x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)``."""
        return (xt - _at(self.sqrt_one_minus_alpha_bar, t, xt) * eps) / _at(self.sqrt_alpha_bar, t, xt)

    def predict_eps(self, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        return (xt - _at(self.sqrt_alpha_bar, t, xt) * x0) / _at(self.sqrt_one_minus_alpha_bar, t, xt)

    def v_target(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """The velocity ``v = sqrt(ab_t) eps - sqrt(1 - ab_t) x_0`` (Salimans & Ho, 2022) of a draw."""
        return _at(self.sqrt_alpha_bar, t, x0) * noise - _at(self.sqrt_one_minus_alpha_bar, t, x0) * x0

    def eps_from_v(self, xt: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """The noise implied by ``x_t`` and its velocity: ``sqrt(ab_t) v + sqrt(1 - ab_t) x_t``."""
        return _at(self.sqrt_alpha_bar, t, xt) * v + _at(self.sqrt_one_minus_alpha_bar, t, xt) * xt

    # -- reverse process ----------------------------------------------------------------------
    def p_mean_variance(self, eps: Tensor, xt: Tensor, t: Tensor, variance: str = "beta",
                        clip: bool = True) -> tuple[Tensor, Tensor]:
        """Mean and variance of ``p(x_{t-1} | x_t)`` given the predicted noise.

        The mean is the posterior mean at the predicted ``x_0`` (clipped to [-1, 1] when ``clip``);
        unclipped it equals the chapter's ``(x_t - beta_t / sqrt(1 - ab_t) eps) / sqrt(alpha_t)``.
        ``variance``: ``beta`` (sigma² = beta_t, the chapter's and Ho et al.'s upper bound) or
        ``posterior`` (sigma² = beta~_t, the lower bound).
        """
        x0 = self.predict_x0(xt, t, eps)
        if clip:
            x0 = x0.clamp(-1, 1)
        mean, post_var = self.q_posterior(x0, xt, t)
        var = _at(self.betas, t, xt) if variance == "beta" else post_var
        return mean, var

    def respace(self, timesteps: Tensor) -> "GaussianDiffusion":
        """The process restricted to the (sorted) ``timesteps``: the same ``alpha_bar`` at the kept
        steps, with ``beta'_j = 1 - ab[k_j] / ab[k_{j-1}]`` (Nichol & Dhariwal's respacing)."""
        keep = torch.as_tensor(timesteps, dtype=torch.long).sort().values
        if len(keep) == 0 or int(keep[0]) < 0 or int(keep[-1]) >= self.num_steps or len(keep.unique()) != len(keep):
            raise ConfigError("respaced steps must be distinct indices of the process's steps")
        ab = self.alpha_bar[keep]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        return GaussianDiffusion(1 - ab / prev, timestep_map=self.timestep_map[keep])

    @torch.no_grad()
    def sample(self, eps_fn, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", sampler: str = "ancestral", sample_steps: int = 0,
               variance: str = "beta", clip: bool = True, eta: float = 0.0) -> Tensor:
        """Run the reverse process from ``x_T ~ N(0, I)`` with the noise predictor ``eps_fn(x_t, t)``
        (``t``: the network's step indices, (N,) long). ``sample_steps`` 0 (or >= T) walks every step;
        fewer uses an evenly strided subsequence of them. Returns ``x_0`` in the model's [-1, 1] units.
        """
        check_choice("sampler", sampler, SAMPLERS)
        check_choice("variance", variance, VARIANCES)
        device = torch.device(device)
        n = shape[0]

        def randn() -> Tensor:
            gdev = generator.device if generator is not None else device
            return torch.randn(shape, generator=generator, device=gdev).to(device)

        full = sample_steps <= 0 or sample_steps >= self.num_steps
        proc = self if full else self.respace(strided_timesteps(self.num_steps, sample_steps))
        x = randn()
        for j in range(proc.num_steps - 1, -1, -1):
            tj = torch.full((n,), j, dtype=torch.long, device=device)
            eps = eps_fn(x, proc.timestep_map[j].expand(n).to(device))
            if sampler == "ancestral":
                mean, var = proc.p_mean_variance(eps, x, tj, variance, clip)
                x = mean + var.sqrt() * randn() if j > 0 else mean
            else:                                    # DDIM (Song et al., eq. 12)
                x0 = proc.predict_x0(x, tj, eps)
                if clip:
                    x0 = x0.clamp(-1, 1)
                    eps = proc.predict_eps(x, tj, x0)
                ab, ab_prev = float(proc.alpha_bar[j]), float(proc.alpha_bar_prev[j])
                sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
                x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma ** 2, 0.0)) * eps
                if sigma > 0 and j > 0:
                    x = x + sigma * randn()
        return x


# ============================================================================ the network
def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Transformer-style sinusoidal embedding of (N,) step indices: (N, dim), [cos | sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], 1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, ch), ch)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, + the time embedding, GroupNorm → SiLU → dropout → conv, + skip."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in, groups), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2, self.conv2 = _norm(c_out, groups), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """GroupNorm → multi-head self-attention over the H·W positions → 1x1 projection, + skip (the
    attention block of Ho et al.'s U-Net; the projection starts at zero, so the block starts as the
    identity)."""

    def __init__(self, ch: int, groups: int, heads: int = 4):
        super().__init__()
        self.heads = math.gcd(heads, ch)
        self.norm = _norm(ch, groups)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)                    # (n, heads, h*w, c/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    """``eps_theta(x_t, t)``: (N, C, H, W), (N,) → (N, C, H, W).

    ``channel_mult`` gives one resolution per entry (``len - 1`` stride-2 down-samplings), each with
    ``res_blocks`` residual blocks going down and ``res_blocks + 1`` coming up (each fed the
    matching down-path activation through a skip connection); two residual blocks in the middle.
    """

    def __init__(self, in_channels: int, channels: int = 32, channel_mult: tuple[int, ...] = (1, 2, 2),
                 res_blocks: int = 1, groups: int = 8, dropout: float = 0.0, attention: bool = False):
        super().__init__()
        self.channels = channels
        self.factor = 2 ** (len(channel_mult) - 1)
        t_dim = 4 * channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch = [channels], channels
        for i, m in enumerate(channel_mult):
            for _ in range(res_blocks):
                self.down.append(ResBlock(ch, channels * m, t_dim, groups, dropout))
                ch = channels * m
                skips.append(ch)
            if i < len(channel_mult) - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, t_dim, groups, dropout), ResBlock(ch, ch, t_dim, groups, dropout)])
        if attention:                                 # self-attention between the two, at the lowest resolution
            self.mid.insert(1, SelfAttention(ch, groups))
        self.up = nn.ModuleList()
        for i in reversed(range(len(channel_mult))):
            for _ in range(res_blocks + 1):
                self.up.append(ResBlock(ch + skips.pop(), channels * channel_mult[i], t_dim, groups, dropout))
                ch = channels * channel_mult[i]
            if i > 0:
                self.up.append(Upsample(ch))
        self.norm_out = _norm(ch, groups)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)          # start by predicting zero noise (improved-diffusion)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        h_in, w_in = x.shape[-2:]
        ph, pw = (-h_in) % self.factor, (-w_in) % self.factor
        if ph or pw:                                  # e.g. 30x30 → 32x32 with 2 down-samplings
            x = F.pad(x, (0, pw, 0, ph))
        temb = self.time_mlp(timestep_embedding(t, self.channels))
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, temb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], 1), temb) if isinstance(layer, ResBlock) else layer(h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out[..., :h_in, :w_in]


# ============================================================================ the pipeline
@dataclass
class DDPMConfig(TrainConfig):
    """The chapter's DDPM, sized for a CPU, with the choices it leaves open.

    The chapter (3rd ed.) trains T = 4000 steps, Huber loss on the predicted noise, Nadam at lr 1e-3,
    batch 32, 100 epochs of Fashion MNIST on a GPU, and samples with all 4000 steps. The defaults here
    depart from it so that ``latentforge train ddpm`` on 4,000 MNIST digits ends within 15 minutes on
    two CPU cores with clean digits of every class (issue 17), and ``generate -n 64`` takes seconds;
    ``--set steps=4000 --set loss=huber --set prediction=eps --set optimizer=nadam --set lr_schedule=constant
    --set batch_size=32 --set sampler=ancestral --set sample_steps=0 --set ema=0 --set guidance=1`` gives the
    chapter's back. The departures:

    * ``steps`` T = 1000 (Ho et al.'s; the chapter's 4000): the network sees each step four times
      as often in a short run; the cosine schedule (Nichol & Dhariwal, offset ``schedule_s`` 0.008,
      beta clip ``max_beta`` 0.999) is the chapter's.
    * ``prediction`` v (Salimans & Ho's velocity ``sqrt(ab) eps - sqrt(1 - ab) x_0``; the chapter's:
      ``eps``, the noise): at the noisiest steps, where ``alpha_bar`` is ~0, a predicted noise says
      nothing about ``x_0``; an undertrained eps network gave ~30-50 % of samples a grey background
      there, v-prediction none, with as confident digits (measured on mnist-4k after 8 epochs).
    * ``loss`` mse (Ho et al.'s L_simple, on the predicted v; the chapter's: ``huber``, Keras' delta 1).
    * ``optimizer`` adam at ``lr`` 1e-3 with a per-epoch cosine ``lr_schedule`` down to ~0 at the last
      epoch (the chapter: Nadam at a constant 1e-3), ``batch_size`` 64 (the chapter's 32: two cores
      do more images a second at 64), ``epochs`` 40 (~2,250 steps; one epoch of 3,600 digits costs
      ~20 CPU-seconds on one core).
    * ``sampler`` ddim (Song et al., deterministic: ``eta`` 0) over ``sample_steps`` 25 evenly strided
      steps (the chapter: ancestral over all T steps, 4000 network calls per batch); ``ancestral``
      with ``variance`` beta (the chapter's sigma² = beta_t) or posterior, and ``sample_steps`` 0 for
      the full chain, remain. The predicted x_0 is clipped to [-1, 1] (``clip_denoised``).
    * ``ema`` 0.995: ``sample`` uses a running average of the network's weights (``net_ema``, updated
      at every training step with a decay that warms up as (1 + k) / (10 + k)), as Ho et al. (decay
      0.9999 over 800k steps; a CPU run has a few thousand, hence 0.995). ``--set ema=0`` samples
      with the trained weights, as the chapter.
    * ``guidance`` 3 with ``guide_after`` 0.3: autoguidance (Karras et al., 2024, "Guiding a
      diffusion model with a bad version of itself"; not in the chapter). After 30 % of the epochs
      the sampling network is frozen as a *guide* (``net_guide``; free to train: a copy of the
      weights); every sampling step then uses ``eps_guide + w (eps - eps_guide)``, the noise the
      trained network predicts pushed away from the less-trained guide's, whose errors are the same
      kind, larger. It turns the ambiguous digits an unguided CPU-sized network leaves (~30 % of them)
      into clear ones at little cost in diversity, for two network calls a step (hence 25 steps, not
      50). ``--set guidance=1`` (or ``sample(guidance=1)``) samples with the network alone; a run of
      one epoch has no guide and samples unguided.

    Network: base ``channels`` 16 × ``channel_mult`` [1, 2, 4] (16, 32, 64 channels at 28 → 14 → 7;
    0.62 M parameters), ``res_blocks`` 1 per level, GroupNorm of ``groups`` 8, ``dropout`` 0; options
    not on by default: ``attention`` (a self-attention block in the middle, at 7x7) and
    ``min_snr_gamma`` (Min-SNR loss weighting, Hang et al.): neither helped in 10-20 epoch runs.

    Measured on mnist-4k (2026-12-06, 2 cores): the defaults trained in 9 min 52 s - 10 min 53 s on
    an idle machine (870-960 CPU-seconds on 2 threads). Of 1,000 samples unguided (50 steps) the judge of
    ``bench/gan_modes.py`` put 70 % above confidence 0.9 (real digits: 90 %), FID 1.33 in
    ``evaluate``'s features; with autoguidance (w 3 from the epoch-12 guide, 25 steps) 83 %, mean
    confidence 0.945, FID 1.40, all 10 classes, none with a grey background (w 2.5: 80 %, 2: 78 %;
    the guide after 4 or 8 epochs did as well). denoising-diffusion-pytorch at the same CPU time:
    FID 9.3, 51 % above 0.9 (``bench/README.md``).

    The sampling fields are fixed at training time (``--set sample_steps=...``) but for the guidance
    weight (``generate --guidance W``); from Python, ``model.sample(n, sample_steps=..., sampler=...,
    guidance=...)`` overrides them. With an exact noise predictor
    the strided ancestral sampler with ``beta`` variance keeps the data's spread within a few percent,
    ``posterior`` loses ~6 % of it at 100 steps and DDIM ~3 % (tests/test_ddpm.py).

    Runs saved before a field existed load and resume with the value it had then
    (``LEGACY_DEFAULTS``: no EMA, noise prediction, no guidance); every other field is saved with each run, so
    runs trained with the earlier defaults (T = 4000, Huber, Nadam, batch 32, 30 epochs, 100
    ancestral steps) keep them.
    """

    # a field missing from a saved run's config takes the value runs had before the field or its
    # default changed: ``ema``, ``prediction`` and ``guidance`` came later (no EMA, noise prediction, no
    # guide); the rest are the defaults before issue 17 (runs save them, so only a config saved
    # without them needs these)
    LEGACY_DEFAULTS: ClassVar[dict[str, Any]] = {
        "ema": 0.0, "prediction": "eps", "steps": 4000, "loss": "huber", "optimizer": "nadam", "lr": 1e-3,
        "lr_schedule": "constant", "batch_size": 32, "epochs": 30, "sampler": "ancestral", "sample_steps": 100,
        "guidance": 1.0}
    steps: int = 1000
    schedule_s: float = 0.008
    max_beta: float = 0.999
    loss: str = "mse"                       # mse | huber (the chapter's)
    prediction: str = "v"                   # v (velocity) | eps (noise, the chapter's): what the network predicts
    min_snr_gamma: float = 0.0              # Min-SNR loss weighting min(snr, gamma) (0 = off: uniform)
    channels: int = 16
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 4])
    res_blocks: int = 1
    groups: int = 8
    dropout: float = 0.0
    attention: bool = False                 # a self-attention block in the middle (7x7 for 28x28 images)
    sampler: str = "ddim"                   # ddim | ancestral
    sample_steps: int = 25                  # strided reverse steps; 0 = all `steps`
    variance: str = "beta"                  # beta | posterior (ancestral sampler)
    clip_denoised: bool = True
    eta: float = 0.0                        # ddim: 0 = deterministic, 1 = ancestral-like noise
    ema: float = 0.995                      # EMA decay of the network's weights, used to sample (0 = off)
    guidance: float = 3.0                   # autoguidance weight w (1 = off): eps_guide + w (eps - eps_guide)
    guide_after: float = 0.3                # the guide: the sampling network as it was after this share of the epochs
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    batch_size: int = 64
    epochs: int = 40
    # a grid of 16 samples (~2 CPU-seconds: 25 guided steps) every 5 epochs, and after the last
    sample_every: int = 5

    def validate(self) -> None:
        super().validate()
        check_positive(self, "steps", "schedule_s", "max_beta", "channels", "channel_mult", "res_blocks", "groups")
        check_nonnegative(self, "sample_steps", "eta", "min_snr_gamma")
        check_choice("loss", self.loss, LOSSES)
        check_choice("prediction", self.prediction, PREDICTIONS)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("variance", self.variance, VARIANCES)
        if self.max_beta >= 1:
            raise ConfigError(f"config field 'max_beta' = {self.max_beta}: must be in (0, 1)")
        check_fraction(self, "dropout", "ema", "guide_after")
        if self.guidance < 0:
            raise ConfigError(f"config field 'guidance' = {self.guidance}: must be >= 0 (1 = no guidance)")
        if self.steps < 2:
            raise ConfigError(f"config field 'steps' = {self.steps}: must be >= 2")


class DDPM(LatentModel):
    """Denoising diffusion: a U-Net learns the noise added at a random step; sampling denoises
    pure noise step by step. Data in [0, 1] (scaled to [-1, 1] inside); unconditional."""

    name = "ddpm"
    config_class = DDPMConfig
    config: DDPMConfig
    capabilities = Capability.SAMPLES | Capability.DENOISES | Capability.GUIDANCE
    epoch_grid = 16                         # samples in each per-epoch grid (each costs sample_steps U-Net calls)

    def __init__(self, config: DDPMConfig):
        shape = tuple(int(d) for d in (config.input_shape or ()))
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3:
            raise DataError(f"{self.name} needs images of shape (C, H, W) or (H, W), "
                            f"got samples of shape {tuple(config.input_shape or ())}")
        config.input_shape = list(shape)
        super().__init__(config)
        c = config
        self.net = UNet(shape[0], c.channels, tuple(c.channel_mult), c.res_blocks, c.groups, c.dropout, c.attention)
        self.diffusion = GaussianDiffusion.cosine(c.steps, c.schedule_s, c.max_beta)
        if c.ema:
            # the running average of the weights that ``sample`` uses (Ho et al.: decay 0.9999 over
            # 800k steps; a CPU run has a few thousand, hence 0.995), and the number of updates so far
            self.net_ema = copy.deepcopy(self.net).requires_grad_(False)
            self.register_buffer("ema_updates", torch.tensor(0, dtype=torch.long))
        if c.guidance != 1:
            # autoguidance's "bad version" of the network: a frozen copy of the sampling network
            # taken after ``guide_after`` of the epochs (``on_epoch_start``); ``guide_epoch``: the
            # epochs it had seen (0 = not taken yet: sampling is then unguided)
            self.net_guide = copy.deepcopy(self.net).requires_grad_(False)
            self.register_buffer("guide_epoch", torch.tensor(0, dtype=torch.long))

    @property
    def sampling_net(self) -> nn.Module:
        """The network ``sample`` runs: the EMA copy when ``ema`` > 0."""
        return getattr(self, "net_ema", self.net)

    @torch.no_grad()
    def update_ema(self) -> None:
        """Fold the current weights into the EMA copy; the decay warms up as ``(1 + k) / (10 + k)``
        after ``k`` updates (so a short run's average does not hold its random start)."""
        if not hasattr(self, "net_ema"):
            return
        k = int(self.ema_updates)
        decay = min(self.config.ema, (1 + k) / (10 + k))
        for e, p in zip(self.net_ema.parameters(), self.net.parameters()):
            e.lerp_(p.detach(), 1 - decay)
        for e, b in zip(self.net_ema.buffers(), self.net.buffers()):
            e.copy_(b)
        self.ema_updates += 1

    def guide_epochs(self) -> int:
        """The epoch after which the guide is taken: ``guide_after`` of ``epochs``, at least 1."""
        return max(1, round(self.config.guide_after * self.config.epochs))

    def on_epoch_start(self, epoch: int) -> None:
        """The trainer's hook: at the start of epoch ``guide_epochs()`` (0-based, i.e. after that many
        epochs), freeze a copy of the sampling network as the guide. A run of one epoch (or one
        stopped earlier) has none and samples unguided."""
        if hasattr(self, "net_guide") and epoch == self.guide_epochs():
            self.net_guide.load_state_dict(self.sampling_net.state_dict())
            self.guide_epoch.fill_(epoch)

    def check_data(self, x, source: str = "data") -> None:
        super().check_data(x, source)
        self.check_unit_interval(x, source, "models images in [0, 1]; rescale the data to [0, 1]")

    def forward(self, x: Tensor, y: Tensor | None = None) -> ModelOutput:
        """The noise-prediction loss at a uniformly random step per sample.

        In training mode the step and noise come from the global CPU RNG (saved in checkpoints, so
        resuming is exact, on any device); in eval mode from a generator seeded with ``config.seed``,
        so the validation loss of successive epochs is measured on the same (t, noise) draws.
        """
        if self.training:
            self.update_ema()          # the weights the last optimizer step left (one step behind)
        x0 = x.reshape((len(x),) + self.input_shape) * 2 - 1
        gen = None if self.training else torch.Generator().manual_seed(self.config.seed)
        t = torch.randint(0, self.diffusion.num_steps, (len(x),), generator=gen).to(x.device)
        noise = torch.randn(x0.shape, generator=gen).to(device=x.device, dtype=x0.dtype)
        pred = self.net(self.diffusion.q_sample(x0, t, noise), t)
        target = noise if self.config.prediction == "eps" else self.diffusion.v_target(x0, t, noise)
        if self.config.loss == "huber":
            per = F.huber_loss(pred, target, delta=1.0, reduction="none")
        else:
            per = F.mse_loss(pred, target, reduction="none")
        gamma = self.config.min_snr_gamma
        if gamma > 0:                               # Min-SNR weighting (Hang et al., 2023), as an x_0 loss
            ab = self.diffusion.alpha_bar.to(x.device)[t]
            snr = ab / (1 - ab)
            w = snr.clamp(max=gamma) / (snr + 1 if self.config.prediction == "v" else snr)
            loss = (per.reshape(len(x), -1).mean(1) * w.to(per.dtype)).mean()
        else:
            loss = per.mean()
        return ModelOutput(loss=loss, parts={self.config.loss: loss}, recon=pred)

    def noise_predictor(self, net: nn.Module | None = None):
        """``eps(x_t, t)`` from the network (``net``, default the trained one): its output itself,
        or, for ``prediction`` v, the noise that the predicted velocity implies."""
        net = self.net if net is None else net
        if self.config.prediction == "eps":
            return net
        return lambda xt, t: self.diffusion.eps_from_v(xt, t, net(xt, t))

    def guided_predictor(self, guidance: float | None = None):
        """The noise predictor ``sample`` runs: the sampling network's, or with a guide taken and
        ``guidance`` w != 1, autoguidance (Karras et al., 2024, "Guiding a diffusion model with a bad
        version of itself"): ``eps_guide + w (eps - eps_guide)``, which moves each step away from
        the less-trained guide's errors (two network calls a step)."""
        w = self.config.guidance if guidance is None else float(guidance)
        main = self.noise_predictor(self.sampling_net)
        has_guide = int(getattr(self, "guide_epoch", 0)) > 0
        if guidance is not None and w != 1 and not has_guide:
            k = self.guide_epochs()
            raise ConfigError(f"guidance {w:g}: this run has no guide to sample with (none is taken with "
                              f"guidance=1, or in a run of {k} epoch{'s' if k > 1 else ''} or fewer); use guidance 1")
        if w == 1 or not has_guide:
            return main
        guide = self.noise_predictor(self.net_guide)

        def eps(xt: Tensor, t: Tensor) -> Tensor:
            e_guide = guide(xt, t)
            return e_guide + w * (main(xt, t) - e_guide)
        return eps

    @torch.no_grad()
    def denoising_error(self, x: Tensor, levels: tuple[float, ...] = (0.1, 0.25, 0.5), draws: int = 2,
                        generator: torch.Generator | None = None) -> Tensor:
        """Per sample, the mean squared error of the predicted noise at ``levels`` (shares of the
        schedule), ``draws`` noises each: low for data like the training data (an anomaly score)."""
        x0 = x.reshape((len(x),) + self.input_shape) * 2 - 1
        steps = self.diffusion.num_steps
        total = torch.zeros(len(x), dtype=torch.float64, device=x.device)
        for level in levels:
            t = torch.full((len(x),), min(steps - 1, max(0, int(round(level * steps)))), dtype=torch.long,
                           device=x.device)
            for _ in range(draws):
                noise = torch.randn(x0.shape, generator=generator).to(device=x.device, dtype=x0.dtype)
                xt = self.diffusion.q_sample(x0, t, noise)
                pred = self.noise_predictor()(xt, t)
                total += (pred - noise).reshape(len(x), -1).square().mean(1).double()
        return total / (len(levels) * draws)

    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None,
               truncation: float | None = None, *, sample_steps: int | None = None,
               sampler: str | None = None, guidance: float | None = None, batch_size: int = 256) -> Tensor:
        """``n`` images in [0, 1], shaped (n, *input_shape), by the reverse process.

        ``sample_steps`` / ``sampler`` / ``guidance`` override the config's (0 = all ``steps``;
        guidance 1 = the sampling network alone). Samples are drawn
        ``batch_size`` at a time (the noise is drawn from ``generator`` in that order).
        """
        if truncation is not None:
            raise ConfigError(f"--truncation: {self.name} has no truncation trick")
        if labels is not None:
            raise ConfigError(f"--label: {self.name} is unconditional; it generates without a label")
        c = self.config
        steps = c.sample_steps if sample_steps is None else int(sample_steps)
        device = next(self.parameters(), torch.zeros(())).device   # (a parameter-free oracle net: CPU)
        was = self.training
        self.eval()
        try:
            eps_fn, parts = self.guided_predictor(guidance), []
            for i in range(0, n, batch_size):
                m = min(batch_size, n - i)
                x = self.diffusion.sample(eps_fn, (m, *self.input_shape), generator=generator, device=device,
                                          sampler=sampler or c.sampler, sample_steps=steps,
                                          variance=c.variance, clip=c.clip_denoised, eta=c.eta)
                parts.append(((x + 1) / 2).clamp(0, 1))
        finally:
            self.train(was)
        if not parts:
            return torch.zeros((0, *self.input_shape), device=device)
        return torch.cat(parts)
