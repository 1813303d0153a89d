"""Generative adversarial networks: the shared base, the stabilisers' layers, and the chapter's
simple dense GAN.

SPEC 15 ``gan``: coding size 30; generator 30 -> 100 -> 150 (SELU) -> 784 sigmoid; discriminator
784 -> 150 -> 100 (SELU) -> 1 sigmoid; BCE; RMSprop; batch 32; the two-phase loop (D on half fake /
half real, then G through the frozen D with all targets "real") is
:class:`latentforge.train.adversarial.AdversarialTrainer`, shared by every GAN.

SPEC 16's remedies are config fields of every GAN (:class:`GANConfig`): the loss
(``bce|hinge|wgan-gp|lsgan``), experience replay, minibatch discrimination, minibatch standard
deviation, spectral normalisation of D, one-sided label smoothing, an EMA of G's weights, the R1
penalty and the D/G step ratio.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..config import TrainConfig, check_choice, check_nonnegative, check_positive
from ..errors import ConfigError
from .base import LatentModel, activation, dense
from .capabilities import Capability

GAN_LOSSES = ("bce", "hinge", "wgan-gp", "lsgan")


@dataclass
class GANConfig(TrainConfig):
    """Fields every GAN shares: the latent size, the adversarial loss and the stabilisers."""

    coding_size: int = 30
    loss: str = "bce"                       # bce | hinge | wgan-gp | lsgan
    d_output: str = "sigmoid"               # sigmoid (a probability, as the chapter) | linear (a critic score)
    d_steps: int = 1                        # discriminator steps per generator step
    g_lr: float = 0.0                       # generator lr; 0 = lr
    d_lr: float = 0.0                       # discriminator lr; 0 = lr
    gp_weight: float = 10.0                 # wgan-gp's gradient-penalty weight
    r1: float = 0.0                         # R1 penalty weight (gamma) on real data; 0 = off
    r1_every: int = 1                       # lazy R1 (StyleGAN2): only every N-th D step, weighted N x
    label_smoothing: float = 0.0            # one-sided: real targets are 1 - label_smoothing
    experience_replay: int = 0              # replay buffer size (past fakes); 0 = off
    replay_ratio: float = 0.5               # share of D's fake half drawn from the buffer
    minibatch_discrimination: int = 0       # number of minibatch-discrimination kernels; 0 = off
    minibatch_kernel_dim: int = 5
    minibatch_std: bool = False             # append the batch's feature std to D's features
    spectral_norm: bool = False             # spectral normalisation of D's layers
    ema: float = 0.0                        # EMA decay of G's weights (e.g. 0.999); 0 = off
    # the chapter's training defaults
    optimizer: str = "rmsprop"
    lr: float = 1e-3
    batch_size: int = 32
    epochs: int = 50

    def validate(self) -> None:
        super().validate()
        check_positive(self, "coding_size", "d_steps", "gp_weight", "replay_ratio", "minibatch_kernel_dim", "r1_every")
        check_nonnegative(self, "g_lr", "d_lr", "r1", "experience_replay", "minibatch_discrimination")
        check_choice("loss", self.loss, GAN_LOSSES)
        check_choice("d_output", self.d_output, ("sigmoid", "linear"))
        if self.loss in ("wgan-gp", "hinge") and self.d_output == "sigmoid":
            raise ConfigError(f"config field 'loss' = {self.loss!r} needs an unbounded critic, not a sigmoid "
                              f"discriminator output: add --set d_output=linear")
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"config field 'label_smoothing' = {self.label_smoothing}: must be in [0, 0.5)")
        if self.label_smoothing and self.loss != "bce":
            raise ConfigError("config field 'label_smoothing' applies to loss = 'bce' only")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"config field 'ema' = {self.ema}: must be in [0, 1) (e.g. 0.999)")
        if self.replay_ratio > 1:
            raise ConfigError(f"config field 'replay_ratio' = {self.replay_ratio}: must be in (0, 1]")
        if self.early_stopping:
            raise ConfigError("config field 'early_stopping': GAN losses do not measure quality; it must be 0")


# ----------------------------------------------------------------------------- stabiliser layers
class MinibatchDiscrimination(nn.Module):
    """Salimans et al. (2016): for each sample, B features measuring its closeness to the others
    in the batch (L1 distance between C-dim projections), appended to D's features so D can see a
    batch with too little variety (mode collapse)."""

    def __init__(self, in_features: int, n_kernels: int, kernel_dim: int):
        super().__init__()
        self.n_kernels, self.kernel_dim = n_kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(in_features, n_kernels * kernel_dim) * 0.1)

    def forward(self, h: Tensor) -> Tensor:                 # (N, F) -> (N, F + B)
        m = (h @ self.T).view(-1, self.n_kernels, self.kernel_dim)             # (N, B, C)
        l1 = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(3)                    # (N, N, B)
        o = torch.exp(-l1).sum(1) - 1.0                                        # exclude self: exp(0) = 1
        return torch.cat([h, o], 1)


class MinibatchStd(nn.Module):
    """ProGAN's minibatch standard deviation: the mean over features of the per-feature std across
    the batch, appended as one more feature (or channel, for (N, C, H, W) inputs). The std is
    ``sqrt(var + 1e-8)`` as the paper's code (it was ``std() + 1e-8``: ProGAN with the R1 penalty
    stopped with NaN in its first two epochs with that form, not with this one; the mechanism was
    not isolated).

    ``group`` > 0 splits the batch into groups of that many consecutive samples (the largest divisor
    of the batch size up to ``group``), each sample getting its own group's std (StyleGAN's, and the
    paper's groups of 4); 0 takes the whole batch as one group."""

    def __init__(self, group: int = 0):
        super().__init__()
        self.group = group

    def forward(self, h: Tensor) -> Tensor:                  # (N, F, ...) -> (N, F + 1, ...)
        n, rest = h.shape[0], h.shape[1:]
        g = n if self.group <= 0 else max(d for d in range(1, min(self.group, n) + 1) if n % d == 0)
        y = h.float().view(n // g, g, *rest)
        std = y.var(1, unbiased=False).add(1e-8).sqrt().flatten(1).mean(1)                  # (N / g,)
        extra = std.to(h.dtype).repeat_interleave(g).view(n, 1, *(1,) * (len(rest) - 1))
        return torch.cat([h, extra.expand(n, 1, *rest[1:])], 1)


class GroupedMinibatchStd(MinibatchStd):
    """StyleGAN's minibatch std: :class:`MinibatchStd` in groups of ``group`` (4). Were fakes and
    reals ever scored in one batch, a whole-batch std would give every sample the same value,
    useless against a low-variety fake batch (mode collapse); groups of 4 never straddle the
    fake/real boundary when the half batch is a multiple of 4. (The shared loop now scores them
    apart; groups also vary within a batch.)"""

    def __init__(self, group: int = 4):
        super().__init__(group)


def discriminator_head(cfg: GANConfig, n_features: int) -> nn.Sequential:
    """D's last layers on flat features: the optional minibatch layers, then one score (a logit)."""
    layers: list[nn.Module] = []
    if cfg.minibatch_std:
        layers.append(MinibatchStd())
        n_features += 1
    if cfg.minibatch_discrimination:
        layers.append(MinibatchDiscrimination(n_features, cfg.minibatch_discrimination, cfg.minibatch_kernel_dim))
        n_features += cfg.minibatch_discrimination
    layers.append(dense(n_features, 1))
    return nn.Sequential(*layers)


def apply_spectral_norm(module: nn.Module) -> None:
    """Spectral normalisation of every Linear / Conv layer of ``module`` (in place)."""
    from torch.nn.utils.parametrizations import spectral_norm
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            setattr(module, name, spectral_norm(child))
        else:
            apply_spectral_norm(child)


# ----------------------------------------------------------------------------- the GAN base
class GAN(LatentModel):
    """Base of every GAN: a generator ``G(z, y)`` and a discriminator ``D(x, y)`` returning one
    score per sample (a logit when ``d_output`` is sigmoid). Data in [0, 1]; G works in the
    "internal" range (``[0, 1]`` for a sigmoid G, ``[-1, 1]`` for a tanh G)."""

    capabilities = Capability.ADVERSARIAL | Capability.DECODES | Capability.SAMPLES
    config_class = GANConfig
    config: GANConfig
    #: the generator's output range: "unit" ([0, 1], sigmoid) or "symmetric" ([-1, 1], tanh)
    g_range: ClassVar[str] = "unit"

    def __init__(self, config: GANConfig):
        super().__init__(config)
        self.generator = self.build_generator()
        self.discriminator = self.build_discriminator()
        if config.spectral_norm:
            apply_spectral_norm(self.discriminator)
        if config.ema:
            self.g_ema = copy.deepcopy(self.generator).requires_grad_(False)

    def build_generator(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def build_discriminator(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- data ----------------------------------------------------------------------------------
    def check_data(self, x, source: str = "data") -> None:
        super().check_data(x, source)
        self.check_unit_interval(x, source, "generates images in [0, 1]; rescale the data to [0, 1]")

    def to_internal(self, x: Tensor) -> Tensor:
        x = x.reshape((len(x),) + self.input_shape)
        return x * 2 - 1 if self.g_range == "symmetric" else x

    def from_internal(self, g: Tensor) -> Tensor:
        return ((g + 1) / 2).clamp(0, 1) if self.g_range == "symmetric" else g

    # -- latents and sampling ------------------------------------------------------------------
    def latent(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        device = device if device is not None else next(self.parameters()).device
        return torch.randn(n, self.config.coding_size, generator=generator, device=device)

    def ema_decay(self) -> float:
        """The decay of the EMA of G at this step (asked by the adversarial trainer after each G
        step): the config's ``ema``; a model may warm it up (ProGAN, at each new rung)."""
        return self.config.ema

    @property
    def sampling_generator(self) -> nn.Module:
        """The generator used for sampling: the EMA copy when there is one."""
        return getattr(self, "g_ema", self.generator)

    @torch.no_grad()
    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Latent codes -> images in [0, 1] (also what `interpolate` uses for GAN latents)."""
        g = self.sampling_generator
        was = g.training
        g.eval()
        out = self.from_internal(g(z, labels))
        g.train(was)
        return out.reshape((len(z),) + self.input_shape)

    def sample(self, n: int, labels: Tensor | None = None, generator: torch.Generator | None = None,
               truncation: float | None = None) -> Tensor:
        if truncation is not None:
            raise ConfigError(f"--truncation: {self.name} has no truncation trick (stylegan has)")
        if self.uses_labels and labels is None:
            raise ConfigError(f"{self.name} is conditional: give the class with --label")
        return self.decode(self.latent(n, generator), labels)

    def forward(self, x: Tensor, y: Tensor | None = None):
        raise TypeError(f"{self.name} is trained adversarially (latentforge.train.adversarial), "
                        "it has no single forward loss")


# ----------------------------------------------------------------------------- SPEC 15
@dataclass
class DenseGANConfig(GANConfig):
    g_hidden_sizes: list[int] = field(default_factory=lambda: [100, 150])
    d_hidden_sizes: list[int] = field(default_factory=lambda: [150, 100])
    activation: str = "selu"
    init: str = "lecun_normal"

    def validate(self) -> None:
        super().validate()
        check_positive(self, "g_hidden_sizes", "d_hidden_sizes")


class _DenseG(nn.Module):
    def __init__(self, sizes: list[int], act: str, init: str, out_act: nn.Module, out_shape: tuple[int, ...]):
        super().__init__()
        self.out_shape = out_shape
        self.layers = nn.ModuleList(dense(a, b, init if i < len(sizes) - 2 else "glorot_uniform")
                                    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))
        self.act, self.out_act = activation(act), out_act

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        for i, layer in enumerate(self.layers):
            z = layer(z)
            z = self.act(z) if i < len(self.layers) - 1 else self.out_act(z)
        return z.view((len(z),) + self.out_shape)                          # (N, D) -> (N, *input_shape)


class _DenseD(nn.Module):
    def __init__(self, cfg: DenseGANConfig, n_in: int):
        super().__init__()
        sizes = [n_in, *cfg.d_hidden_sizes]
        self.layers = nn.ModuleList(dense(a, b, cfg.init) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = activation(cfg.activation)
        self.head = discriminator_head(cfg, sizes[-1])

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:      # (N, ...) -> (N,) logits
        h = x.reshape(len(x), -1)
        for layer in self.layers:
            h = self.act(layer(h))
        return self.head(h).squeeze(1)


class DenseGAN(GAN):
    """The chapter's simple GAN: dense G (30-100-150-784, sigmoid) and D (784-150-100-1)."""

    name = "gan"
    config_class = DenseGANConfig
    config: DenseGANConfig

    def build_generator(self) -> nn.Module:
        c = self.config
        return _DenseG([c.coding_size, *c.g_hidden_sizes, self.input_dim], c.activation, c.init, nn.Sigmoid(),
                       self.input_shape)

    def build_discriminator(self) -> nn.Module:
        return _DenseD(self.config, self.input_dim)
