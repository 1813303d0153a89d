"""Progressive growing of GANs (Karras et al. 2018), SPEC 18 ``progan``.

The resolution ladder
    Training starts at 4x4 and doubles towards the data size. The ladder is found by halving the
    data size while it stays even and >= 8, then adding 4x4 at the bottom: 32 -> 4, 8, 16, 32;
    28 (MNIST) -> 4, 7, 14, 28; 16 -> 4, 8, 16. Every rung except (possibly) 4 divides the data
    size, so moving between the data size and a rung is exact: G's output at rung r is
    upsampled (nearest) to the data size, and D box-filters (average-pools) its data-sized input
    down to r, which recovers G's r x r image exactly. The trainer therefore only ever sees
    data-shaped images (real and fake), at every stage; ``sample``/``generate`` return data-sized
    images whatever the stage (the current resolution, upsampled). Square images only.

Fade-in
    When rung s is added, ``alpha`` goes linearly from 0 to 1 over ``fade_epochs`` epochs (per
    training step). G outputs ``lerp(up(toRGB_{s-1}(h_{s-1})), toRGB_s(block_s(up(h_{s-1}))), alpha)``
    and D's input path is ``lerp(fromRGB_{s-1}(down(x)), down(block_s(fromRGB_s(x))), alpha)``. At
    alpha = 0 the network computes exactly what the previous stage computed.

The schedule is a pure function of the training progress: ``epochs_per_resolution`` (one value
for every rung, or a list, its last value repeating) gives the epochs spent at each rung, fade
included; the last rung trains until the run ends. A run given fewer epochs than that schedule
needs (the sum over the rungs, the last rung's share included: 4 for 28x28 at the defaults) has
it fitted to the epochs it has (``fit_schedule``, on by default): every rung's share and the fade
shrink by the same factor, in fractions of an epoch, so a 2-epoch run still grows 4 -> 7 -> 14 ->
28 (half an epoch per rung, a quarter-epoch fade) and ends with a stable phase at full
resolution instead of stopping at 4x4 and returning blocky upscaled images. The epochs the
schedule was fitted to are kept in the ``schedule_epochs`` buffer: resuming with more epochs
trains on at the resolution already reached (the schedule never moves back down). Runs saved
before ``fit_schedule`` existed load and resume unfitted (``LEGACY_DEFAULTS``). In the first
epoch the steps per epoch come from the data's size (``prepare``), later from the step counter. ``on_epoch_start(epoch)`` (the trainer's hook)
sets the stage and ``on_train_step()`` (called by the adversarial trainer before each step)
advances alpha within the epoch. Both are derived from the epoch and a step counter kept in the
``step`` buffer, and the current stage/alpha are buffers of G and D too, so a checkpoint holds
them: resuming is exact and a loaded run samples at the resolution it was trained to.

The stabilisers of the paper: a minibatch standard-deviation channel before D's last block
(``minibatch_std``, on by default here), equalized learning rate (every conv/linear of G and D
stores N(0, 1) weights, multiplied at run time by He's constant sqrt(2 / fan_in); the linear
output layers, toRGB and D's score, use sqrt(1 / fan_in) as the paper's code), and pixel-wise
feature normalisation after every conv of G (and on z). G's output is linear in [-1, 1] units
(data rescaled inside the model), samples come back clamped to [0, 1].

Defaults (documented deviations from the paper, chosen so 28x28 trains on a CPU in the DCGAN's
CPU time): channels 64, 32, 16, 8 per rung (the paper: 512 ... 16), coding size 64, 1 epoch per
rung with a half-epoch fade (7 epochs for 28x28: the last rung gets 4), batch 16 (the paper: 16 at
the top rungs, more below). The loss is not the paper's WGAN-GP but StyleGAN2's non-saturating
logistic loss (``bce``, a sigmoid D) with the R1 penalty (gamma 10) computed lazily at every 4th D
step (``r1_every``), Adam(beta1 = 0, beta2 = 0.99) as the paper but at lr 6e-3 (the paper: 1e-3),
and samples from an EMA of G's weights (``ema`` 0.99; the paper: 0.999, too slow for ~1,600 steps)
that restarts as a plain mean of G whenever a rung is added (``ema_decay``), so a short run's last
rung is not left at its initial weights. The minibatch std is over the whole batch (of fakes or
of reals: the adversarial loop scores them apart); ``mbstd_group = 4`` gives the paper's groups.

Measured on mnist-4k (the first 3,600 digits, one CPU thread; 1,000 samples judged by
``bench/gan_modes.py``'s MLP; FID in ``latentforge evaluate``'s feature space; the DCGAN's 8
epochs, seeds 1 / 2 / 3: 10 classes, > 0.9 confidence for 58 / 58 / 64 %, FID 5.5 / 3.9 / 4.3,
~80 CPU-s). First the recipe, seed 1 (batch 32):

    recipe                                             epochs  CPU    conf   > 0.9   FID
    WGAN-GP, RMSprop 1e-3, 2 epochs/rung (the old one)  10     100 s  0.835  52 %    16.6
      + Adam(0, 0.99), EMA 0.99                         10     108 s  0.822  50 %    13.3
      + channels 128, 64, 32, 16 (no Adam/EMA)          10     219 s  0.819  50 %    11.8
      1 epoch/rung (no Adam/EMA)                        10     135 s  0.840  54 %    15.8
    bce + R1 every 4th step, Adam(0, 0.99) 1e-3, EMA    10      79 s  0.829  51 %    12.1
      + 1 epoch/rung                                    10     101 s  0.822  49 %     9.1
      + 1 epoch/rung, lr 2e-3                           10     100 s  0.833  52 %     7.0
      + 1 epoch/rung, lr 2e-3                            8      78 s  0.815  47 %    10.5
      + 1 epoch/rung, lr 3e-3 (the defaults till now)    8      78 s  0.839  53 %     5.8

Then, at ~75 CPU-s, seed 3 unless named (FID; recall in the same feature space):

    change from the 8-epoch lr 3e-3 recipe             epochs  CPU    > 0.9   FID    recall
    none (seeds 1 / 2 / 3: FID 5.8 / 9.0 / 7.6)           8      74 s  48 %     7.6   0.38
    R1 gamma 1 / 0.1 (9 / 6 classes)                     8      74 s  53 / 66 % 10.0 / 32  0.39 / 0.05
    R1 gamma 30 (seed 1: FID 5.6)                        8      79 s  48 %     6.7   0.51
    minibatch std in groups of 4 (``mbstd_group``)       8      82 s  48 %     8.0   0.32
    2 epochs per rung (more time below 28x28)           10      78 s  53 %     9.2   0.37
    batch 16                                             8      91 s  55 %     4.4   0.59
    batch 16 (seeds 1 / 2: FID 4.5 / 4.7)                7      75 s  53 %     5.5   0.49
      + R1 gamma 30                                      7      75 s  50 %     6.1   0.53
      + EMA 0.995                                        7      74 s  54 %     5.7   0.46
      + lr 2e-3                                          7      78 s  50 %     7.8   0.39
      + lr 4e-3 (seeds 1 / 2: FID 3.9 / 4.1)             7      74 s  53 %     4.6   0.59
      + lr 5e-3 (seeds 1 / 2: FID 3.8 / 4.2)             7      73 s  57 %     3.4   0.65
      + lr 6e-3 (the default; seeds 1 / 2 / 3 below)     7      76 s  60 %     3.9   0.63
      + lr 8e-3 (seeds 4 / 5: 58 / 54 %, FID 3.4 / 4.9;  7      72 s  64 %     3.4   0.74
        6e-3 there: 58 / 57 %, FID 3.4 / 4.4)

The defaults over seeds 1 / 2 / 3: 10 classes each, mean confidence 0.859 / 0.865 / 0.861 (the
DCGAN: 0.856 / 0.856 / 0.877), > 0.9 confidence for 59 / 61 / 60 % (the DCGAN: 58 / 58 / 64 %), FID
3.3 / 3.4 / 3.9 (the DCGAN: 5.5 / 3.9 / 4.3), KID 0.019 / 0.024 / 0.029 (the DCGAN: 0.093 / 0.031 /
0.111), recall 0.71 / 0.67 / 0.63 (the DCGAN: 0.67 / 0.81 / 0.83), 69 / 69 / 76 CPU-s (the DCGAN:
81 / 71 / 79); seeds 4 / 5: > 0.9 for 58 / 57 % (the DCGAN: 58 / 62 %), FID 3.4 / 4.4 (the DCGAN:
4.1 / 4.6). Half the batch doubles the steps for ~1.25x the CPU time per epoch (small
convolutions: the cost per image barely falls with the batch), and the lower rungs are cheap
(4x4: 4 s, 7x7: 6 s, 14x14: 9 s an epoch against 14 s at 28x28), so 7 epochs at batch 16 cost
what 8 at batch 32 did. Smaller R1 weights let D collapse G onto a few classes; a larger one,
groups of 4, a slower EMA and lr 8e-3 were within seed noise. Every WGAN-GP run and the 1e-3 runs gave
blotchy, broken strokes (2x2 blocks of the 14x14 rung visible); at 2e-3 - 6e-3 the strokes are
smooth and even: the paper's 1e-3 is tuned for 800k images per rung, a CPU run sees 3,600.
Bilinear upsampling in G (StyleGAN's) did not help (FID 9.4 against 9.1). The non-saturating loss
without R1 collapsed to two classes. With R1 (lr 1e-3 or 2e-3) it stopped with NaN in the first two
epochs while ``MinibatchStd`` computed ``std() + 1e-8``; with the paper's ``sqrt(var + 1e-8)`` the
same runs train (the bce rows of the table used it, the first three WGAN-GP rows the old form; the
mechanism was not isolated). Runs saved with former defaults keep them (a checkpoint holds its
whole config; fields added since get their old values from ``LEGACY_DEFAULTS``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_nonnegative, check_positive
from ..errors import ConfigError, DataError
from .gan import GAN, GANConfig, GroupedMinibatchStd, MinibatchDiscrimination, MinibatchStd

HE_GAIN = math.sqrt(2.0)


# ----------------------------------------------------------------------------- shared pieces
def resolution_ladder(size: int) -> list[int]:
    """The rungs from 4 up to ``size``: halve while even and >= 8, then add 4 (see module doc)."""
    if size < 4:
        raise DataError(f"progressive growing starts at 4x4: images of {size}x{size} are too small")
    sizes = [size]
    while sizes[-1] % 2 == 0 and sizes[-1] // 2 >= 4:
        sizes.append(sizes[-1] // 2)
    if sizes[-1] != 4:
        sizes.append(4)
    return sizes[::-1]


def stage_channels(channels: list[int], n_stages: int) -> list[int]:
    """Channels per rung (4x4 first); the list's last value repeats for further rungs."""
    return [channels[min(i, len(channels) - 1)] for i in range(n_stages)]


def image_shape(name: str, config: GANConfig) -> tuple[int, int, int]:
    """(C, H, W) from the config's input shape (a 2-D shape gets one channel); square, >= 4."""
    shape = tuple(int(d) for d in (config.input_shape or ()))
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] < 4:
        raise DataError(f"{name} needs square images of shape (C, H, H) with H >= 4, "
                        f"got samples of shape {tuple(config.input_shape or ())}")
    return shape


def resize(x: Tensor, size: int) -> Tensor:
    """Nearest upsampling (size larger) or box-filter downsampling (size smaller) to size x size."""
    h = x.shape[-1]
    if h == size:
        return x
    if size > h:
        return F.interpolate(x, size=(size, size), mode="nearest")
    if h % size == 0:
        return F.avg_pool2d(x, h // size)
    return F.adaptive_avg_pool2d(x, size)


class EqualizedLinear(nn.Linear):
    """Equalized learning rate: weights stored N(0, 1/lr_mul^2), used as ``weight * scale`` with
    ``scale = gain / sqrt(fan_in) * lr_mul`` (He's constant sqrt(2 / fan_in) for the default gain),
    so every layer learns at the same speed under Adam. The bias is used as ``bias * lr_mul``."""

    def __init__(self, n_in: int, n_out: int, gain: float = HE_GAIN, lr_mul: float = 1.0, bias_init: float = 0.0):
        super().__init__(n_in, n_out)
        self.lr_mul = lr_mul
        self.scale = gain / math.sqrt(n_in) * lr_mul
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0 / lr_mul)
            self.bias.fill_(bias_init / lr_mul)

    def runtime_weight(self) -> Tensor:
        return self.weight * self.scale

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class EqualizedConv2d(nn.Conv2d):
    """A 'same' convolution with equalized learning rate: N(0, 1) weights times sqrt(2 / fan_in)."""

    def __init__(self, n_in: int, n_out: int, kernel_size: int, gain: float = HE_GAIN, bias: bool = True):
        super().__init__(n_in, n_out, kernel_size, padding=kernel_size // 2, bias=bias)
        self.scale = gain / math.sqrt(n_in * kernel_size * kernel_size)
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0)
            if self.bias is not None:
                self.bias.zero_()

    def runtime_weight(self) -> Tensor:
        return self.weight * self.scale

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.scale, self.bias)


class PixelNorm(nn.Module):
    """Pixel-wise feature vector normalisation: each pixel's feature vector scaled to unit mean square."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8)


# ----------------------------------------------------------------------------- config
@dataclass
class ProGANConfig(GANConfig):
    # runs saved before ``fit_schedule`` existed followed the nominal schedule; before ``betas`` /
    # ``r1_every`` existed, Adam (if chosen) had PyTorch's betas and R1 (if on) ran at every D step;
    # before ``mbstd_group``, the minibatch std was over the whole batch
    LEGACY_DEFAULTS: ClassVar[dict[str, Any]] = {"fit_schedule": False, "betas": [0.9, 0.999], "r1_every": 1,
                                                  "mbstd_group": 0}
    coding_size: int = 64
    channels: list[int] = field(default_factory=lambda: [64, 32, 16, 8])  # per rung from 4x4; last repeats
    epochs_per_resolution: list[int] = field(default_factory=lambda: [1])   # per rung, fade included; last repeats
    fade_epochs: float = 0.5        # epochs over which alpha goes 0 -> 1 when a rung is added (0 = no fade)
    fit_schedule: bool = True       # shrink the schedule to fit a run shorter than it (see the module doc)
    leaky_slope: float = 0.2
    minibatch_std: bool = True      # the paper's minibatch-std channel at the end of D ...
    mbstd_group: int = 0            # ... over groups of this many samples (the paper's 4); 0 = the whole batch
    # the non-saturating logistic loss with lazy R1 and Adam(0, 0.99) at 6e-3, samples from an EMA
    # of G (see the module doc: the paper's WGAN-GP at 1e-3 gave blotchy digits in a CPU budget)
    loss: str = "bce"
    d_output: str = "sigmoid"
    r1: float = 10.0
    r1_every: int = 4
    optimizer: str = "adam"
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    lr: float = 6e-3
    ema: float = 0.99
    batch_size: int = 16            # twice the steps of 32 for ~1.25x the CPU time (see the module doc)
    epochs: int = 7                 # 28x28 / 32x32: rungs 4, 7|8, 14|16 for 1 epoch each, then 4 at full size

    def validate(self) -> None:
        super().validate()
        check_positive(self, "channels", "epochs_per_resolution", "leaky_slope")
        check_nonnegative(self, "mbstd_group")
        if not (self.fade_epochs >= 0 and math.isfinite(self.fade_epochs)):
            raise ConfigError(f"config field 'fade_epochs' = {self.fade_epochs!r}: must be >= 0")


# ----------------------------------------------------------------------------- networks
class _Progressive(nn.Module):
    """Holds the stage and alpha as buffers (so they travel with checkpoints and the EMA copy)."""

    def __init__(self, shape: tuple[int, int, int], cfg: ProGANConfig):
        super().__init__()
        self.shape = shape
        self.res = resolution_ladder(shape[1])
        self.ch = stage_channels(cfg.channels, len(self.res))
        self.slope = cfg.leaky_slope
        self.register_buffer("stage", torch.tensor(0, dtype=torch.long))
        self.register_buffer("alpha", torch.tensor(1.0))

    @property
    def n_stages(self) -> int:
        return len(self.res)

    def _act(self) -> nn.Module:
        return nn.LeakyReLU(self.slope)


class ProGenerator(_Progressive):
    """z -> pixel norm -> dense 4x4 -> conv, then one block (upsample, 2 convs) per further rung;
    pixel norm after every conv; a 1x1 toRGB per rung; output upsampled to the data size."""

    def __init__(self, cfg: ProGANConfig, shape: tuple[int, int, int]):
        super().__init__(shape, cfg)
        c, ch = shape[0], self.ch
        self.pixel_norm = PixelNorm()
        self.fc = EqualizedLinear(cfg.coding_size, ch[0] * 16)
        blocks = [nn.Sequential(EqualizedConv2d(ch[0], ch[0], 3), self._act(), PixelNorm())]
        for s in range(1, self.n_stages):
            blocks.append(nn.Sequential(EqualizedConv2d(ch[s - 1], ch[s], 3), self._act(), PixelNorm(),
                                        EqualizedConv2d(ch[s], ch[s], 3), self._act(), PixelNorm()))
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.ModuleList(EqualizedConv2d(ch[s], c, 1, gain=1.0) for s in range(self.n_stages))

    def features(self, z: Tensor, stage: int) -> list[Tensor]:
        """The feature maps of rungs 0..stage (rung s at res[s] x res[s])."""
        h = F.leaky_relu(self.fc(self.pixel_norm(z)), self.slope).view(len(z), self.ch[0], 4, 4)
        out = [self.blocks[0](self.pixel_norm(h))]
        for s in range(1, stage + 1):
            out.append(self.blocks[s](resize(out[-1], self.res[s])))
        return out

    def forward(self, z: Tensor, y: Tensor | None = None, stage: int | None = None,
                alpha: float | None = None) -> Tensor:     # (N, coding) -> (N, C, H, H), data-sized
        stage = int(self.stage) if stage is None else stage
        alpha = float(self.alpha) if alpha is None else alpha
        feats = self.features(z, stage)
        img = self.to_rgb[stage](feats[stage])
        if stage > 0 and alpha < 1.0:                      # fade-in: blend with the previous rung's image
            old = resize(self.to_rgb[stage - 1](feats[stage - 1]), self.res[stage])
            img = torch.lerp(old, img, alpha)
        return resize(img, self.shape[1])


class ProDiscriminator(_Progressive):
    """data-sized x -> box-filtered to the current rung -> 1x1 fromRGB -> one block (2 convs,
    downsample) per rung above 4x4 -> minibatch std -> conv -> dense -> dense 1 (a score).

    ``growing=False`` builds only the full-resolution input path (StyleGAN's D)."""

    def __init__(self, cfg: GANConfig, shape: tuple[int, int, int], growing: bool = True):
        super().__init__(shape, cfg)
        c, ch, n = shape[0], self.ch, self.n_stages
        self.from_rgb = nn.ModuleList(
            nn.Sequential(EqualizedConv2d(c, ch[s], 1), self._act()) if growing or s == n - 1 else nn.Identity()
            for s in range(n))
        self.blocks = nn.ModuleList([nn.Identity()] + [
            nn.Sequential(EqualizedConv2d(ch[s], ch[s], 3), self._act(),
                          EqualizedConv2d(ch[s], ch[s - 1], 3), self._act())
            for s in range(1, n)])
        extra = 1 if cfg.minibatch_std else 0
        group = getattr(cfg, "mbstd_group", 0)
        self.mbstd = (nn.Identity() if not cfg.minibatch_std else
                      GroupedMinibatchStd(group) if group else MinibatchStd())
        self.final = nn.Sequential(EqualizedConv2d(ch[0] + extra, ch[0], 3), self._act(), nn.Flatten(),
                                   EqualizedLinear(ch[0] * 16, ch[0]), self._act())
        n_feat = ch[0]
        self.mbd = None
        if cfg.minibatch_discrimination:
            self.mbd = MinibatchDiscrimination(n_feat, cfg.minibatch_discrimination, cfg.minibatch_kernel_dim)
            n_feat += cfg.minibatch_discrimination
        self.out = EqualizedLinear(n_feat, 1, gain=1.0)
        if not growing:
            self.stage.fill_(n - 1)

    def forward(self, x: Tensor, y: Tensor | None = None, stage: int | None = None,
                alpha: float | None = None) -> Tensor:     # (N, C, H, H) -> (N,) scores
        stage = int(self.stage) if stage is None else stage
        alpha = float(self.alpha) if alpha is None else alpha
        x = resize(x, self.res[stage])
        h = self.from_rgb[stage](x)
        if stage > 0:
            h = resize(self.blocks[stage](h), self.res[stage - 1])
            if alpha < 1.0:                                 # fade-in: blend with the previous rung's input path
                h = torch.lerp(self.from_rgb[stage - 1](resize(x, self.res[stage - 1])), h, alpha)
            for s in range(stage - 1, 0, -1):
                h = resize(self.blocks[s](h), self.res[s - 1])
        h = self.final(self.mbstd(h))
        if self.mbd is not None:
            h = self.mbd(h)
        return self.out(h).squeeze(1)


# ----------------------------------------------------------------------------- the model
class ProGAN(GAN):
    """ProGAN: generator and discriminator grow from 4x4 to the data's size, each new resolution faded in, with minibatch std, equalized learning rate and pixel norm (SPEC 18)."""

    name = "progan"
    config_class = ProGANConfig
    config: ProGANConfig
    g_range = "symmetric"
    accepts_flat = False

    def __init__(self, config: ProGANConfig):
        config.input_shape = list(image_shape(self.name, config))
        super().__init__(config)
        self.resolutions = resolution_ladder(self.input_shape[1])
        n = len(self.resolutions)
        per = self.stage_epochs()
        if n > 1 and config.fade_epochs > min(per[1:]):
            raise ConfigError(f"config field 'fade_epochs' = {config.fade_epochs}: longer than the "
                              f"{min(per[1:])} epochs of a resolution (epochs_per_resolution)")
        # training steps taken so far (the fade's clock); a buffer, so a resumed run continues it
        self.register_buffer("step", torch.tensor(0, dtype=torch.long))
        if config.fit_schedule:
            # the epochs the schedule is fitted to: this run's; a checkpoint's value replaces it on resume
            self.register_buffer("schedule_epochs", torch.tensor(int(config.epochs), dtype=torch.long))
        self._epoch: int | None = None
        self._epoch_first_step = 0
        self._steps_per_epoch = 0
        self._steps_hint = 0             # steps in an epoch, from the data's size (for the first epoch)

    def build_generator(self) -> nn.Module:
        return ProGenerator(self.config, self.input_shape)

    def build_discriminator(self) -> nn.Module:
        return ProDiscriminator(self.config, self.input_shape)

    # -- the schedule ------------------------------------------------------------------------
    def stage_epochs(self) -> list[int]:
        """Epochs at each rung (fade included); the last rung also trains beyond its share."""
        e = self.config.epochs_per_resolution
        return [int(e[min(i, len(e) - 1)]) for i in range(len(self.resolutions))]

    def schedule_needs(self) -> int:
        """Epochs the nominal schedule needs: every rung's share, the last rung's included."""
        return sum(self.stage_epochs())

    def fitted_epochs(self) -> tuple[list[float], float]:
        """Each rung's share and the fade, in (possibly fractional) epochs, after fitting the
        schedule to the run's epochs (unchanged when the run is long enough or fitting is off)."""
        per = [float(e) for e in self.stage_epochs()]
        fade = float(self.config.fade_epochs)
        have = int(self.schedule_epochs) if hasattr(self, "schedule_epochs") else 0
        need = sum(per)
        if have and have < need:
            f = have / need
            per, fade = [e * f for e in per], fade * f
        return per, fade

    def schedule(self, epoch: int, frac: float = 0.0) -> tuple[int, float]:
        """(stage, alpha) at ``frac`` (in [0, 1)) of the way through epoch ``epoch`` (0-based)."""
        per, fade = self.fitted_epochs()
        t = epoch + frac
        start = 0.0
        stage = 0
        for s in range(1, len(per)):
            if t < start + per[s - 1] - 1e-9:
                break
            start += per[s - 1]
            stage = s
        if stage == 0 or fade == 0:
            return stage, 1.0
        return stage, min(1.0, (t - start) / fade)

    def prepare(self, x: Tensor) -> None:
        super().prepare(x)
        c = self.config
        n = len(x)
        if c.steps_per_epoch:
            n = min(n, c.steps_per_epoch * c.batch_size)
        self._steps_hint = math.ceil(n / c.batch_size)

    @property
    def stage(self) -> int:
        return int(self.generator.stage)

    @property
    def alpha(self) -> float:
        return float(self.generator.alpha)

    @property
    def resolution(self) -> int:
        """The resolution G currently generates at (before upsampling to the data size)."""
        return self.resolutions[self.stage]

    def set_progress(self, stage: int, alpha: float) -> None:
        """Set the stage and fade-in alpha of G, D (and G's EMA copy)."""
        if not 0 <= stage < len(self.resolutions):
            raise ValueError(f"stage {stage} outside 0..{len(self.resolutions) - 1}")
        for net in (self.generator, self.discriminator, getattr(self, "g_ema", None)):
            if net is not None:
                net.stage.fill_(stage)
                net.alpha.fill_(float(alpha))

    def on_epoch_start(self, epoch: int) -> None:
        """The trainer's hook: the stage of this epoch; alpha at its first step."""
        step = int(self.step)
        self._epoch, self._epoch_first_step = epoch, step
        self._steps_per_epoch = step // epoch if epoch else self._steps_hint   # every epoch has as many steps
        self.set_progress(*self.schedule(epoch, 0.0))

    def ema_decay(self) -> float:
        """The decay of the EMA of G at this step (the adversarial trainer asks after each G step):
        ``min(ema, (k - 1) / k)`` at the k-th step since the current rung was added, i.e. the plain
        mean of G since then until that is as slow as ``ema``. A rung's new layers start training
        only when it is added: with a fixed 0.99 their EMA would still hold ~57 % of their initial
        weights after the 56 steps a 2-epoch run gives its last rung (grey backgrounds). Derived
        from the step counter and the schedule, so a resumed run continues it exactly."""
        per, _ = self.fitted_epochs()
        start = sum(per[:self.stage])                                   # epochs before this rung
        k = int(self.step) - (round(start * self._steps_per_epoch) if self._steps_per_epoch else 0)
        k = max(k, 1)
        return min(self.config.ema, (k - 1) / k)

    def on_train_step(self) -> None:
        """The adversarial trainer's hook, before each step: advance the fade within the epoch."""
        if self._epoch is not None:
            frac = 0.0
            if self._steps_per_epoch:
                frac = min(1.0, (int(self.step) - self._epoch_first_step) / self._steps_per_epoch)
            self.set_progress(*self.schedule(self._epoch, frac))
        self.step += 1
