"""One adversarial training loop for every GAN, with the chapter's remedies as options.

Each batch is the chapter's two phases: (1) the discriminator learns from a batch of half fakes,
half real images; (2) the generator learns through the frozen discriminator, every fake labelled
"real". Losses (``bce | hinge | wgan-gp | lsgan``), experience replay, one-sided label smoothing,
the R1 and gradient penalties, an EMA of G and the D/G step ratio are config options of
:class:`~latentforge.models.gan.GANConfig`, not separate trainers. Everything needed to resume
exactly is checkpointed: G, D, the EMA copy, both optimizers, the replay buffer and the RNGs.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import CheckpointError
from ..models.base import ModelOutput
from .batches import eval_batches
from .trainer import Trainer, build_optimizer


# ------------------------------------------------------------------------------ losses
def d_loss_fn(kind: str, s_real: Tensor, s_fake: Tensor, smoothing: float = 0.0, sigmoid: bool = True) -> Tensor:
    """Discriminator loss from its scores on real and fake samples (logits for bce)."""
    if kind == "bce":   # the chapter: mean BCE over the concatenated fake + real batch
        real = F.binary_cross_entropy_with_logits(s_real, torch.full_like(s_real, 1.0 - smoothing))
        fake = F.binary_cross_entropy_with_logits(s_fake, torch.zeros_like(s_fake))
        return (real * len(s_real) + fake * len(s_fake)) / (len(s_real) + len(s_fake))
    if kind == "lsgan":
        r, f = (torch.sigmoid(s_real), torch.sigmoid(s_fake)) if sigmoid else (s_real, s_fake)
        return 0.5 * ((r - 1).square().mean() + f.square().mean())
    if kind == "hinge":
        return F.relu(1 - s_real).mean() + F.relu(1 + s_fake).mean()
    if kind == "wgan-gp":
        return s_fake.mean() - s_real.mean()
    raise AssertionError(kind)


def g_loss_fn(kind: str, s_fake: Tensor, sigmoid: bool = True) -> Tensor:
    """Generator loss from the discriminator's scores on fakes (the non-saturating form for bce)."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(s_fake, torch.ones_like(s_fake))
    if kind == "lsgan":
        f = torch.sigmoid(s_fake) if sigmoid else s_fake
        return 0.5 * (f - 1).square().mean()
    return -s_fake.mean()                                   # hinge, wgan-gp


def gradient_penalty(disc, real: Tensor, fake: Tensor, y: Tensor | None) -> Tensor:
    """WGAN-GP: E[(||grad_x D(x_hat)||_2 - 1)^2] at random points between real and fake samples."""
    eps = torch.rand((len(real),) + (1,) * (real.dim() - 1), device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(x_hat, y).sum(), x_hat, create_graph=True)
    return (grad.reshape(len(grad), -1).norm(2, dim=1) - 1).square().mean()


def r1_penalty(disc, real: Tensor, y: Tensor | None) -> Tensor:
    """R1 (Mescheder et al. 2018): 0.5 * E[||grad_x D(x_real)||^2] (times gamma by the caller)."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(x, y).sum(), x, create_graph=True)
    return 0.5 * grad.reshape(len(grad), -1).square().sum(1).mean()


class ReplayBuffer:
    """Experience replay: a buffer of past fakes; part of each fake batch D sees comes from it."""

    def __init__(self, size: int, ratio: float):
        self.size, self.ratio = size, ratio
        self.buffer: Tensor | None = None
        self.count = 0

    def mix(self, fake: Tensor) -> Tensor:
        """Return ``fake`` with a share replaced by stored fakes; store the new ones."""
        out = fake
        if self.count:
            k = int(round(self.ratio * len(fake)))
            if k:
                pick = torch.randint(0, min(self.count, self.size), (k,), device=fake.device)
                slots = torch.randperm(len(fake), device=fake.device)[:k]
                out = fake.clone()
                out[slots] = self.buffer[pick]
        self._push(fake.detach())
        return out

    def _push(self, fake: Tensor) -> None:
        if self.buffer is None:
            self.buffer = torch.zeros((self.size,) + tuple(fake.shape[1:]), dtype=fake.dtype, device=fake.device)
        n = len(fake)
        free = max(0, min(self.size - self.count, n))
        if free:
            self.buffer[self.count:self.count + free] = fake[:free]
        rest = fake[free:]
        if len(rest):       # full: overwrite random slots
            self.buffer[torch.randint(0, self.size, (len(rest),), device=fake.device)] = rest
        self.count = min(self.size, self.count + n)


class AdversarialTrainer(Trainer):
    """The trainer for models with ``adversarial = True`` (see the module docstring)."""

    #: D's and G's losses trade places by design: no divergence guard (the NaN guard stays)
    guards_divergence = False

    def build_optimizers(self, lr: float | None) -> dict[str, torch.optim.Optimizer]:
        cfg, m = self.cfg, self.model
        return {"optim_d": build_optimizer(m.discriminator.parameters(), cfg, cfg.d_lr or lr or cfg.lr),
                "optim_g": build_optimizer(m.generator.parameters(), cfg, cfg.g_lr or lr or cfg.lr)}

    def __init__(self, model, cfg, **kw):
        super().__init__(model, cfg, **kw)
        self.replay = ReplayBuffer(cfg.experience_replay, cfg.replay_ratio) if cfg.experience_replay else None
        self._fixed_z = model.latent(64, torch.Generator().manual_seed(cfg.seed + 1), device="cpu")
        self.d_updates = 0                                              # D steps so far (lazy R1's clock)

    # -- state ---------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Tensor]:
        lazy = {"d_updates": torch.tensor(self.d_updates)} if self.cfg.r1_every > 1 else {}
        if self.replay is None or self.replay.buffer is None:
            return lazy
        return {"replay.buffer": self.replay.buffer, "replay.count": torch.tensor(self.replay.count), **lazy}

    def load_extra_state(self, tensors: dict[str, Tensor], source: str) -> None:
        if "d_updates" in tensors:
            self.d_updates = int(tensors["d_updates"])
        if self.replay is None or "replay.buffer" not in tensors:
            return
        buf = tensors["replay.buffer"]
        if len(buf) != self.replay.size:
            raise CheckpointError(f"{source}: tensor 'extra.replay.buffer' holds {len(buf)} samples, "
                                  f"expected {self.replay.size}")
        self.replay.buffer = buf.to(self.device)
        self.replay.count = int(tensors["replay.count"])

    # -- one step: D phase(s), then G phase ----------------------------------------------------
    def train_step(self, xb: Tensor, yb: Tensor | None) -> ModelOutput:
        m, cfg = self.model, self.cfg
        G, D = m.generator, m.discriminator
        opt_d, opt_g = self.optimizers["optim_d"], self.optimizers["optim_g"]
        sig = cfg.d_output == "sigmoid"
        hook = getattr(m, "on_train_step", None)                      # e.g. progan's per-step fade-in
        if callable(hook):
            hook()
        real = m.to_internal(xb)
        n = len(real)
        for _ in range(cfg.d_steps):                                   # phase 1: D
            with torch.no_grad():
                fake = G(m.latent(n), yb)
            if self.replay is not None:
                fake = self.replay.mix(fake)
            if cfg.minibatch_std or cfg.minibatch_discrimination:
                # layers that compare samples across the batch must see fakes and reals apart,
                # or their statistic is the same for both and tells D nothing
                s_fake, s_real = D(fake, yb), D(real, yb)
            else:
                y2 = torch.cat([yb, yb]) if yb is not None else None
                scores = D(torch.cat([fake, real]), y2)               # half fake, half real, as the chapter
                s_fake, s_real = scores[:n], scores[n:]
            d_loss = d_loss_fn(cfg.loss, s_real, s_fake, cfg.label_smoothing, sig)
            if cfg.loss == "wgan-gp":
                d_loss = d_loss + cfg.gp_weight * gradient_penalty(D, real, fake, yb)
            if cfg.r1 and self.d_updates % cfg.r1_every == 0:             # lazy R1: every r1_every-th step
                d_loss = d_loss + cfg.r1 * cfg.r1_every * r1_penalty(D, real, yb)
            self.d_updates += 1
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        D.requires_grad_(False)                                        # phase 2: G through frozen D
        s_gen = D(G(m.latent(n), yb), yb)
        g_loss = g_loss_fn(cfg.loss, s_gen, sig)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)
        if cfg.ema:
            self._update_ema()
        with torch.no_grad():
            d_real = torch.sigmoid(s_real).mean() if sig else s_real.mean()
            d_fake = torch.sigmoid(s_fake).mean() if sig else s_fake.mean()
        return ModelOutput(loss=g_loss, parts={"d_loss": d_loss, "g_loss": g_loss, "d_real": d_real, "d_fake": d_fake})

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.model.ema_decay()                  # the config's ema (progan: warmed up at each new rung)
        ema, g = self.model.g_ema, self.model.generator
        for pe, p in zip(ema.parameters(), g.parameters()):
            pe.lerp_(p, 1.0 - decay)
        for be, b in zip(ema.buffers(), g.buffers()):
            be.copy_(b)

    def evaluate(self, x: Any, y: Tensor | None = None) -> dict[str, float]:
        """D's mean output on held-out real images (a drifting value hints at D overfitting)."""
        m = self.model
        was = m.training
        m.eval()
        with torch.no_grad():
            s = torch.cat([m.discriminator(m.to_internal(xb), yb).float() for xb, yb in eval_batches(x, y, self.eval_batch_size, self.device)])
        m.train(was)
        return {"d_real": float(torch.sigmoid(s).mean() if self.cfg.d_output == "sigmoid" else s.mean())}

    def _early_stopping(self, record: dict[str, Any]) -> bool:
        return False

    def epoch_samples(self) -> Tensor:
        """G's images from the same 64 latents every epoch (one class per column if conditional)."""
        m = self.model
        z = self._fixed_z.to(self.device)
        labels = None
        if m.uses_labels:
            labels = (torch.arange(len(z)) % m.config.n_classes).to(self.device)
        return m.decode(z, labels)
