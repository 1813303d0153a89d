"""StyleGAN (Karras et al. 2019), SPEC 19 ``stylegan``, small enough for 28x28 / 32x32 on a CPU.

Generator
    mapping network: z -> pixel norm -> ``mapping_layers`` (8) equalized dense layers of width
    ``w_dim`` (LeakyReLU, learning-rate multiplier ``mapping_lr_mul`` = 0.01 as the paper) -> w.
    synthesis network: a learned constant 4x4 block, then one block per rung of the resolution
    ladder (the same ladder as ``progan``: 32 -> 4, 8, 16, 32; 28 -> 4, 7, 14, 28; bilinear
    upsampling between rungs) up to the data size, then a 1x1 toRGB (linear, [-1, 1] units).
    Each rung has two style layers (2 x (number of rungs) styles), of one of two kinds
    (``style_mode``):

    ``adain`` (the chapter's StyleGAN): [3x3 conv] -> + per-pixel noise (one noise image per
    sample, times a learned per-channel scale, initialised to 0) -> + bias -> LeakyReLU -> AdaIN:
    instance normalisation, then a per-channel scale and bias computed from w by a learned affine
    layer (initialised to scale 1, bias 0). Its known artefact: instance normalisation lets G
    smuggle signal past it as a strong local blob that dominates a channel's mean and variance,
    the "droplets" of StyleGAN (Karras et al. 2020, sec. 2), here blotchy, beaded strokes.

    ``demod`` (default; StyleGAN2's fix of that artefact): the style moves into the convolution.
    :class:`ModulatedConv2d` scales the 3x3 weights per sample and input channel by
    ``s = affine(w)`` (1 at first), then demodulates, rescaling each output filter to unit norm,
    so outputs have unit variance for unit-variance inputs, as after AdaIN, but normalised from
    the weights' statistics instead of the features', which leaves nothing to gain from a blob;
    -> + noise -> + bias -> LeakyReLU x sqrt(2). The first 4x4 layer is a conv too (StyleGAN2).
    Noise is random while training; in eval mode (``sample``, ``generate``, sample grids) each
    layer uses a fixed noise image stored with the model, so a seed always gives the same images.

Style mixing regularisation: while training, with probability ``style_mixing`` (0.9) a batch uses
two latents: the styles of layers below a random crossover layer come from w1, the rest from w2.

Truncation trick: a running mean ``w_avg`` of the mapped w (a buffer, updated while training with
decay ``w_avg_beta``) gives ``w' = w_avg + psi (w - w_avg)``; ``sample(..., truncation=psi)`` and
``generate --truncation PSI`` use it (psi = 1: no truncation; psi = 0: every sample is w_avg's image).

Discriminator: progan's (equalized lr, box-filter downsampling), at the full resolution only, with
StyleGAN's grouped minibatch std (:class:`GroupedMinibatchStd`, groups of ``mbstd_group`` = 4):
each sample gets the feature std of its own group of 4, as the paper (the shared loop scores
fakes and reals in separate calls when ``minibatch_std`` is on, so no group mixes them).

Training defaults (StyleGAN2's recipe, chosen by measurement below): the non-saturating logistic
loss (``bce``) with the R1 penalty (gamma 10) computed lazily, at every 16th D step with weight
16 x gamma (``r1_every``; R1's double backward costs about as much as the rest of a step); Adam
with beta1 = 0, beta2 = 0.99 (``betas``) at lr 2e-3; samples from an EMA of G (``ema`` 0.99); 14
epochs. The learned constant starts N(0, 1) as the paper: a uniform one (all ones, before) is
erased by ``adain``'s first instance normalisation.

Measured on MNIST-4k (``latentforge train stylegan --data ../shared/data/mnist-4k``, one CPU
thread; 1,000 samples classified by ``bench/gan_modes.py``'s MLP, seed 0; real digits: 10
classes, mean confidence 0.98, 95 % with confidence > 0.9):

    recipe (demod unless named)                 seed  epochs  CPU    classes >= 2 %  mean conf  conf > 0.9
    adain, RMSprop 5e-4, R1 every step          42    6       242 s  7               0.78       40 %
    RMSprop 5e-4, R1 every step (the old one)   42    6       177 s  7               0.82       44 %
                                                43    6       158 s  7               0.79       39 %
                                                44    6       154 s  7               0.82       49 %
    Adam(0, 0.99) 2e-3, lazy R1 (the default)   42    14      335 s  8               0.83       52 %
                                                43    14      291 s  9               0.84       56 %
                                                44    14      287 s  10              0.87       61 %

(The old recipe took 288 s with the former grouped conv in ``ModulatedConv2d``, about the same samples.)

The old recipe hops between a few classes from epoch to epoch; with Adam(0, 0.99) at 2e-3 the
class histogram widens steadily (8-10 classes from epoch 10 on, seeds 42-45) and the samples are
thin, even strokes that read as 0, 1, 2, 3, 6, 7, 8, 9; many are still malformed (split loops, extra
blobs), and ``progan`` gives cleaner digits. Two sweeps (seed 42, 15 runs at a time on a 16-core
machine, CPU seconds close to the table's) chose it. From the old recipe with lazy R1: Adam(0,
0.99) at 2e-3 was the one clear gain (epoch 14: 9 classes, 60 %; RMSprop: 5 classes, 28 %, one
blob shape on the fixed-latent grid); Adam at 1e-3, RMSprop at 1e-3, R1 gamma 0.1 or 1 (collapse
to 1-3 classes), no style mixing, 2 mapping layers, hinge loss and channels ``128 64 32 16`` (1.8x
the time) or ``64 32 32 16`` did not help. Around the new recipe, nothing beat the spread over
seeds 42-45 (48-62 % at epochs 10-12): Adam at 1.5e-3 or 3e-3, a slower G (``g_lr`` 1e-3), R1
gamma 5 or 20, R1 at every step (as good per epoch, 1.5x the time), style mixing 0 or 0.5 (0: the
most even histogram, lower confidence), 2 mapping layers, hinge loss, EMA 0.995, batch 64. A toRGB
at every rung (StyleGAN2's "skip" G) gave 55 % and 50 % on seeds 42 and 43: not kept. Truncation
does not help: psi 0.7 or 0.5 moves confidence a few points either way and loses classes. Training
on to 17 or 20 epochs (seed 42): 9 and 10 classes, 56 % and 54 %.
Runs saved before ``style_mode``, ``r1_every`` or ``betas`` existed load and resume with the
values they were trained with (``LEGACY_DEFAULTS``: ``adain``, R1 at every step, PyTorch's betas).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_choice, check_fraction, check_positive
from ..errors import ConfigError
from .capabilities import Capability
from .gan import GAN, GANConfig, GroupedMinibatchStd
from .progan import (HE_GAIN, EqualizedConv2d, EqualizedLinear, PixelNorm, ProDiscriminator, image_shape,
                     resolution_ladder, stage_channels)


STYLE_MODES = ("adain", "demod")


@dataclass
class StyleGANConfig(GANConfig):
    # older runs lack these fields: they were adain runs, R1 at every step, and Adam (if chosen) at PyTorch's betas
    LEGACY_DEFAULTS: ClassVar[dict[str, Any]] = {"style_mode": "adain", "r1_every": 1, "betas": [0.9, 0.999]}
    coding_size: int = 64           # z
    w_dim: int = 64                 # the mapping network's width and the size of w
    mapping_layers: int = 8
    mapping_lr_mul: float = 0.01    # the mapping network learns 100x slower (the paper)
    channels: list[int] = field(default_factory=lambda: [64, 32, 16, 8])  # per rung from 4x4; last repeats
    style_mixing: float = 0.9       # probability of mixing two latents in a training batch
    w_avg_beta: float = 0.995       # decay of the running mean of w (the truncation trick's centre)
    leaky_slope: float = 0.2
    minibatch_std: bool = True      # D's minibatch-std channel ...
    mbstd_group: int = 4            # ... computed per group of this many consecutive samples (the paper's 4)
    loss: str = "bce"               # the non-saturating logistic loss ...
    d_output: str = "sigmoid"
    r1: float = 10.0                # ... with the R1 penalty, as StyleGAN (FFHQ) ...
    r1_every: int = 16              # ... computed lazily, every 16th D step (x 16), as StyleGAN2
    optimizer: str = "adam"         # Adam(beta1 = 0, beta2 = 0.99) at 2e-3, as StyleGAN2 at low resolution
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    lr: float = 2e-3
    ema: float = 0.99               # samples come from an EMA of G (half-life 70 steps: a short run)
    style_mode: str = "demod"       # demod (StyleGAN2's modulated conv, no droplets) | adain (the chapter)
    batch_size: int = 32
    epochs: int = 14

    def validate(self) -> None:
        super().validate()
        check_positive(self, "w_dim", "mapping_layers", "mapping_lr_mul", "channels", "leaky_slope", "mbstd_group")
        check_choice("style_mode", self.style_mode, STYLE_MODES)
        check_fraction(self, "style_mixing", closed=True)
        check_fraction(self, "w_avg_beta")


# ----------------------------------------------------------------------------- layers
class NoiseInjection(nn.Module):
    """x + scale[c] * noise: one N(0, 1) noise image per sample, broadcast over channels with a
    learned per-channel scale (0 at first). Eval mode uses the stored constant noise image."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))
        self.register_buffer("const", torch.randn(1, 1, size, size))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            noise = torch.randn(len(x), 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        else:
            noise = self.const
        return x + self.weight.view(1, -1, 1, 1) * noise


class AdaIN(nn.Module):
    """Adaptive instance normalisation: normalise each channel of each sample to mean 0 / std 1,
    then scale and shift it by the style ``(y_s, y_b) = affine(w)``."""

    def __init__(self, channels: int, w_dim: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.affine = EqualizedLinear(w_dim, 2 * channels, gain=1.0)
        with torch.no_grad():
            self.affine.bias[:channels].fill_(1.0)       # scale 1, bias 0 at first

    def style(self, w: Tensor) -> tuple[Tensor, Tensor]:
        ys, yb = self.affine(w).chunk(2, dim=1)
        return ys, yb

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        ys, yb = self.style(w)
        mean = x.mean((2, 3), keepdim=True)
        var = x.var((2, 3), keepdim=True, unbiased=False)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return ys[:, :, None, None] * x + yb[:, :, None, None]


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution: the style ``s = affine(w)`` (one scale per input channel,
    1 at first) scales the conv weights per sample, then demodulation rescales each output filter
    to unit norm, ``w'' = w' / sqrt(sum w'^2 + eps)``: outputs keep unit variance for unit-variance
    inputs, as AdaIN's normalisation, but from the weights' statistics instead of the features',
    so no sample can create a blob ("droplet") to dominate an instance-normalised channel.
    Equalized learning rate (N(0, 1) weights, He's constant); one shared-weight conv for the batch."""

    def __init__(self, n_in: int, n_out: int, w_dim: int, kernel: int = 3, demodulate: bool = True, eps: float = 1e-8):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in, kernel, kernel))
        self.scale = HE_GAIN / math.sqrt(n_in * kernel * kernel)
        self.affine = EqualizedLinear(w_dim, n_in, gain=1.0, bias_init=1.0)
        self.demodulate, self.eps, self.pad = demodulate, eps, kernel // 2

    def forward(self, x: Tensor, w: Tensor) -> Tensor:       # (N, I, H, W), (N, w_dim) -> (N, O, H, W)
        # conv(x, weight * s) = conv(x * s, weight), and the demodulation factor is per sample and
        # output channel, so one shared-weight conv does it (StyleGAN2's non-fused path), the same
        # numbers to ~1e-6; on a CPU up to 9x faster than a grouped conv with per-sample weights
        # on the wide low-resolution layers (forward + backward, batch 64), 10-20 % slower at 28x28
        s = self.affine(w)                                                              # (N, I)
        wt = self.scale * self.weight                                                   # (O, I, k, k)
        out = F.conv2d(x * s[:, :, None, None], wt, padding=self.pad)                  # (N, O, H, W)
        if self.demodulate:
            d = torch.rsqrt(s.square() @ wt.square().sum((2, 3)).t() + self.eps)       # (N, O)
            out = out * d[:, :, None, None]
        return out


class StyleLayer(nn.Module):
    """adain: [3x3 conv] -> noise -> bias -> LeakyReLU -> AdaIN(w) (StyleGAN).
    demod: modulated 3x3 conv(w) -> noise -> bias -> LeakyReLU x sqrt(2) (StyleGAN2; always a conv)."""

    def __init__(self, n_in: int, n_out: int, w_dim: int, size: int, slope: float, conv: bool = True,
                 mode: str = "adain"):
        super().__init__()
        self.mode = mode
        if mode == "demod":
            self.modconv = ModulatedConv2d(n_in, n_out, w_dim)
        else:
            self.conv = EqualizedConv2d(n_in, n_out, 3, bias=False) if conv else None
            self.adain = AdaIN(n_out, w_dim)
        self.noise = NoiseInjection(n_out, size)
        self.bias = nn.Parameter(torch.zeros(n_out))
        self.slope = slope

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        if self.mode == "demod":
            x = self.modconv(x, w)
        elif self.conv is not None:
            x = self.conv(x)
        x = self.noise(x)
        x = F.leaky_relu(x + self.bias.view(1, -1, 1, 1), self.slope)
        if self.mode == "demod":                              # StyleGAN2's activation gain keeps unit variance
            return x * HE_GAIN
        return self.adain(x, w)


class Synthesis(nn.Module):
    """Learned constant 4x4 -> two style layers per rung (upsampling between rungs) -> toRGB."""

    def __init__(self, cfg: StyleGANConfig, shape: tuple[int, int, int]):
        super().__init__()
        c, size = shape[0], shape[1]
        self.res = resolution_ladder(size)
        ch = stage_channels(cfg.channels, len(self.res))
        self.const = nn.Parameter(torch.randn(1, ch[0], 4, 4))
        kw = dict(w_dim=cfg.w_dim, slope=cfg.leaky_slope, mode=cfg.style_mode)
        layers = [StyleLayer(ch[0], ch[0], size=4, conv=False, **kw), StyleLayer(ch[0], ch[0], size=4, **kw)]
        for s in range(1, len(self.res)):
            layers += [StyleLayer(ch[s - 1], ch[s], size=self.res[s], **kw),
                       StyleLayer(ch[s], ch[s], size=self.res[s], **kw)]
        self.layers = nn.ModuleList(layers)
        self.to_rgb = EqualizedConv2d(ch[-1], c, 1, gain=1.0)

    @property
    def n_styles(self) -> int:
        return len(self.layers)

    def forward(self, ws: Tensor) -> Tensor:                  # (N, n_styles, w_dim) -> (N, C, H, H)
        x = self.const.expand(len(ws), -1, -1, -1)
        for i, layer in enumerate(self.layers):
            if i >= 2 and i % 2 == 0:                         # the first layer of a new rung
                r = self.res[i // 2]
                x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
            x = layer(x, ws[:, i])
        return self.to_rgb(x)


class StyleGenerator(nn.Module):
    """G(z): mapping network -> per-layer styles (style mixing while training) -> synthesis."""

    def __init__(self, cfg: StyleGANConfig, shape: tuple[int, int, int]):
        super().__init__()
        layers: list[nn.Module] = [PixelNorm()]
        for i in range(cfg.mapping_layers):
            layers += [EqualizedLinear(cfg.coding_size if i == 0 else cfg.w_dim, cfg.w_dim, lr_mul=cfg.mapping_lr_mul),
                       nn.LeakyReLU(cfg.leaky_slope)]
        self.mapping = nn.Sequential(*layers)
        self.synthesis = Synthesis(cfg, shape)
        self.style_mixing, self.w_avg_beta = cfg.style_mixing, cfg.w_avg_beta
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))
        self.last_crossover: int | None = None                # the last training batch's crossover layer

    def styles(self, z: Tensor) -> Tensor:
        """z -> per-layer styles (N, n_styles, w_dim). Training mode updates ``w_avg`` and, with
        probability ``style_mixing``, switches to a second latent's w at a random layer."""
        w = self.mapping(z)
        n = self.synthesis.n_styles
        ws = w.unsqueeze(1).repeat(1, n, 1)
        self.last_crossover = None
        if self.training:
            with torch.no_grad():
                self.w_avg.lerp_(w.detach().mean(0), 1.0 - self.w_avg_beta)
            if self.style_mixing > 0 and n > 1 and float(torch.rand(())) < self.style_mixing:
                cut = int(torch.randint(1, n, ()))
                w2 = self.mapping(torch.randn_like(z))
                ws[:, cut:] = w2.unsqueeze(1)
                self.last_crossover = cut
        return ws

    def truncate(self, ws: Tensor, psi: float) -> Tensor:
        """The truncation trick: w_avg + psi (w - w_avg)."""
        return torch.lerp(self.w_avg.expand_as(ws), ws, float(psi))

    def forward(self, z: Tensor, y: Tensor | None = None, truncation: float | None = None) -> Tensor:
        ws = self.styles(z)
        if truncation is not None:
            ws = self.truncate(ws, truncation)
        return self.synthesis(ws)


class StyleGAN(GAN):
    """StyleGAN: a mapping network turns z into per-layer styles (modulated convolutions or AdaIN) over a constant input, with noise inputs, style mixing and the truncation trick (SPEC 19)."""

    name = "stylegan"
    config_class = StyleGANConfig
    config: StyleGANConfig
    capabilities = GAN.capabilities | Capability.TRUNCATION | Capability.STYLE_MIXING
    g_range = "symmetric"
    accepts_flat = False

    def __init__(self, config: StyleGANConfig):
        config.input_shape = list(image_shape(self.name, config))
        super().__init__(config)

    def build_generator(self) -> nn.Module:
        return StyleGenerator(self.config, self.input_shape)

    def build_discriminator(self) -> nn.Module:
        d = ProDiscriminator(self.config, self.input_shape, growing=False)
        if self.config.minibatch_std:
            d.mbstd = GroupedMinibatchStd(self.config.mbstd_group)
        return d

    @torch.no_grad()
    def decode(self, z: Tensor, labels: Tensor | None = None, truncation: float | None = None) -> Tensor:
        g = self.sampling_generator
        was = g.training
        g.eval()
        out = self.from_internal(g(z, labels, truncation=truncation))
        g.train(was)
        return out.reshape((len(z),) + self.input_shape)

    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None,
               truncation: float | None = None) -> Tensor:
        if truncation is not None and not (truncation >= 0 and float(truncation) < float("inf")):
            raise ConfigError(f"--truncation {truncation}: must be a number >= 0 (1 = no truncation)")
        return self.decode(self.latent(n, generator), labels, truncation)
