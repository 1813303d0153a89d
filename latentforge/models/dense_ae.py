"""Dense autoencoders of the chapter: linear (= PCA), stacked (deep) and tied-weights.

SPEC 1  linear-ae : D -> 2 -> D, no activations, MSE, SGD lr 1.0.
SPEC 2  stacked-ae: 784 -> 100 -> 30 -> 100 -> 784, SELU (LeCun-normal init), sigmoid out, BCE,
                    SGD lr 1.5, batch 32, 20 epochs.
SPEC 6  tied-ae   : as stacked, but decoder layer i uses the transposed kernel of encoder layer
                    L-1-i (only the biases are its own).
SPEC 7  greedy layer-wise training (``greedy_stages``): AE1 D-100-D on the data, AE2 100-30-100 on
                    AE1's codes (MSE, SGD lr 0.05), stacked, optionally fine-tuned.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_nonnegative, check_positive
from .base import ACTIVATIONS, AEConfig, Autoencoder, ModelOutput, activation, check_choice, dense

if TYPE_CHECKING:
    from ..train.split import BatchSplit


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
#: the activations the hand-fused step knows, as functions (a module call costs more)
_FUSED_ACTIVATIONS = {"selu": F.selu, "relu": F.relu, "tanh": torch.tanh, "linear": lambda z: z}


@dataclass
class StackedAEConfig(AEConfig):
    hidden_sizes: list[int] = field(default_factory=lambda: [100])  # encoder hidden layers
    coding_size: int = 30
    activation: str = "selu"           # hidden and coding layers
    init: str = "lecun_normal"         # hidden and coding kernels (output layer: glorot_uniform)
    # the chapter's defaults for training
    epochs: int = 20
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 1.5
    # greedy layer-wise training (SPEC 7; used with `train --greedy`)
    greedy_epochs: int = 0             # epochs per stage; 0 = `epochs`
    greedy_inner_lr: float = 0.05      # lr of the inner stages (the first stage uses `lr`)
    greedy_inner_loss: str = "mse"     # loss of the inner stages
    finetune_epochs: int = 0           # whole-stack fine-tuning after the greedy stages

    def validate(self) -> None:
        super().validate()
        check_positive(self, "coding_size", "greedy_inner_lr")
        if self.hidden_sizes:
            check_positive(self, "hidden_sizes")
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("greedy_inner_loss", self.greedy_inner_loss, ("mse", "bce"))
        check_nonnegative(self, "greedy_epochs", "finetune_epochs")


class StackedAE(Autoencoder):
    """Deep dense autoencoder; the decoder mirrors the encoder."""

    name = "stacked-ae"
    separable_batches = True          # a mean per-sample loss, no noise: see LatentModel.batch_separable
    config_class = StackedAEConfig
    config: StackedAEConfig

    def __init__(self, config: StackedAEConfig):
        super().__init__(config)
        sizes = [self.input_dim, *config.hidden_sizes, config.coding_size]   # e.g. [784, 100, 30]
        self.sizes = sizes
        self.act = activation(config.activation)
        self.enc = nn.ModuleList(dense(a, b, config.init) for a, b in zip(sizes[:-1], sizes[1:]))
        self._build_decoder()

    def _build_decoder(self) -> None:
        """Decoder layer j maps sizes[-1-j] -> sizes[-2-j]; the last one is the output layer."""
        rev = self.sizes[::-1]                                                 # e.g. [30, 100, 784]
        n = len(rev) - 1
        self.dec = nn.ModuleList(
            dense(a, b, self.config.init if j < n - 1 else "glorot_uniform")
            for j, (a, b) in enumerate(zip(rev[:-1], rev[1:])))

    # layer i of the encoder and its mirror in the decoder, as functions (tied-ae overrides)
    def _dec_layer(self, j: int, h: Tensor) -> Tensor:
        return self.dec[j](h)

    def _encode(self, x: Tensor) -> Tensor:          # (N, D) -> (N, coding_size)
        for layer in self.enc:
            x = self.act(layer(x))
        return x

    def _decode_pre(self, z: Tensor) -> Tensor:      # (N, coding_size) -> (N, D) pre-activation
        n = len(self.enc)
        for j in range(n):
            z = self._dec_layer(j, z)
            if j < n - 1:
                z = self.act(z)
        return z

    # -- a lean training step for plain SGD -------------------------------------------------------

    def fused_sgd_applies(self) -> bool:
        """Whether :meth:`fused_sgd_step` computes this model's step: no corruption of the input
        (noise, dropout), no extra loss terms, untied layers and an activation it knows."""
        return (type(self).corrupt is Autoencoder.corrupt and type(self).regularization is Autoencoder.regularization
                and type(self)._dec_layer is StackedAE._dec_layer
                and self.config.activation in _FUSED_ACTIVATIONS)

    def fused_sgd_step(self, x: Tensor, lr: float, threads: "BatchSplit | None" = None) -> ModelOutput | None:
        """One SGD step (no momentum, no weight decay) with a hand-written backward pass.

        The chapter's dense AEs are bound by per-step overhead (a CPU's, or a GPU's kernel
        launches); this step skips autograd's bookkeeping, gradient buffers and the optimizer's
        pass by folding each update into the kernel that computes its gradient
        (``W.addmm_(δᵀ, h, alpha=-lr/n)``, ``b.addmv_(δᵀ, 1, alpha=-lr/n)``): about 26 kernels per
        step for the seed AE, few enough to replay as CUDA graphs (see ``train/graphs.py``). It
        computes what autograd + ``torch.optim.SGD`` compute, up to float rounding (tested
        against them). Returns None where it does not apply (the trainer then takes the
        autograd path).

        ``threads`` (a ``train.split.BatchSplit``, CPU): the forward and backward passes run on
        sub-batches, one per thread, then the updates, a share of the layers per thread.
        """
        if not self.fused_sgd_applies():
            return None
        with torch.no_grad():
            target = self.to_internal(x)
            alpha = -lr / target.numel()
            rows = threads.rows(target) if threads is not None else (target,)
            if len(rows) == 1:                                 # updates as the backward pass goes
                loss = self._fused_backward(target, alpha)[0]
            else:
                parts = threads.run([functools.partial(self._fused_backward, t) for t in rows], grad=False)
                threads.run([functools.partial(self._fused_update, ks, parts, alpha)
                             for ks in self._layer_shares(threads.parts)], grad=False)
                loss = sum((p[0] for p in parts[1:]), parts[0][0])
            loss = loss / target.numel()
        parts_ = {"bce": loss} if self.config.loss == "bce" else {"mse": self.mse_in_reported_units(loss)}
        return ModelOutput(loss=loss, parts=parts_)

    def _fused_backward(self, target: Tensor, alpha: float | None = None):
        """Forward and backward pass of the fused step on ``target`` (internal units); returns the
        summed loss, each layer's input ``h_k`` and the gradient ``δ_k`` of the summed loss w.r.t.
        its pre-activation. With ``alpha``, each layer is updated as soon as the gradient below it
        is computed from its weights (while they are in cache) and no ``δ_k`` is kept; without,
        the weights are only read (the updates follow, from the returned values). Call it with
        gradients off."""
        params, act = self._fused_params(), _FUSED_ACTIVATIONS[self.config.activation]
        hs, h = [target], target
        for k, (w, b) in enumerate(params):                    # forward, keeping each input
            z = F.linear(h, w, b)
            if k < len(params) - 1:
                h = act(z)
                hs.append(h)
        loss_sum, delta = self._loss_and_delta(z, target)
        deltas: list[Tensor] = []
        for k in range(len(params) - 1, -1, -1):               # backward, top down
            d_in = delta.mm(params[k][0]) if k > 0 else None   # from the weights before the update
            if alpha is not None:
                self._update(params[k], delta, hs[k], alpha)
            else:
                deltas.insert(0, delta)
            if d_in is not None:
                delta = self._act_backward(d_in, hs[k])
        return loss_sum, hs, deltas

    def _fused_params(self) -> list[tuple[Tensor, Tensor]]:
        """(weight, bias) of each layer, input to output. Read from the layers' parameter dicts:
        ``Module.__getattr__`` costs ~1 us a lookup on the 2-core VM, and a step would make 24
        (the fused step's Python overhead is ~a third of its ~0.85 ms at batch 32 there)."""
        return [(layer._parameters["weight"], layer._parameters["bias"]) for layer in (*self.enc, *self.dec)]

    def _layer_shares(self, n: int) -> list[list[int]]:
        """The layers' updates shared out over ``n`` threads: the biggest first, each to the least
        loaded thread."""
        sizes = [w.numel() for w, _ in self._fused_params()]
        shares: list[list[int]] = [[] for _ in range(n)]
        load = [0] * n
        for k in sorted(range(len(sizes)), key=lambda k: -sizes[k]):
            t = load.index(min(load))
            shares[t].append(k)
            load[t] += sizes[k]
        return shares

    def _fused_update(self, ks: list[int], parts: list[tuple], alpha: float) -> None:
        """The SGD updates of layers ``ks`` from each sub-batch's :meth:`_fused_backward`."""
        params = self._fused_params()
        for k in ks:
            for _, hs, deltas in parts:
                self._update(params[k], deltas[k], hs[k], alpha)

    def _update(self, wb: tuple[Tensor, Tensor], delta: Tensor, h: Tensor, alpha: float) -> None:
        """``W += alpha δᵀ h``, ``b += alpha δᵀ 1``: SGD on the summed loss's gradient."""
        w, b = wb
        dt = delta.t()
        b.addmv_(dt, self._ones(len(delta), delta), alpha=alpha)
        w.addmm_(dt, h, alpha=alpha)

    def _ones(self, n: int, like: Tensor) -> Tensor:
        """A cached vector of ``n`` ones (the bias gradient is ``δᵀ 1``)."""
        cache = self.__dict__.setdefault("_ones_cache", {})
        key = (n, like.device, like.dtype)
        if key not in cache:
            cache[key] = torch.ones(n, device=like.device, dtype=like.dtype)
        return cache[key]

    def _loss_and_delta(self, z: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Summed loss, and its gradient w.r.t. the output pre-activation ``z``; the mean's ``1/n``
        goes into the update's ``alpha``."""
        if self.config.loss == "bce":          # BCE on logits: softplus(z) - t z (3 kernels)
            loss = F.softplus(z).addcmul_(target, z, value=-1.0).sum()
            return loss, torch.sigmoid(z).sub_(target)
        if self.config.output_activation == "sigmoid":              # sigmoid + MSE
            p = torch.sigmoid(z)
            err = p - target
            loss = err.square().sum()
            return loss, torch.ops.aten.sigmoid_backward(err, p).mul_(2.0)     # 2 err p (1 - p)
        err = z - target                                            # linear + MSE
        loss = err.square().sum()
        return loss, err.mul_(2.0)

    def _act_backward(self, grad: Tensor, h: Tensor) -> Tensor:
        """Gradient through the activation, from its output ``h`` (the kernels autograd uses)."""
        a = self.config.activation
        if a == "selu":
            return torch.ops.aten.elu_backward(grad, _SELU_ALPHA, _SELU_SCALE, 1.0, True, h)
        if a == "relu":
            return torch.ops.aten.threshold_backward(grad, h, 0)
        if a == "tanh":
            return torch.ops.aten.tanh_backward(grad, h)
        return grad

    # -- SPEC 7: greedy layer-wise training ---------------------------------------------------
    def greedy_stages(self) -> list["GreedyStage"]:
        """One shallow AE per encoder layer, sharing this model's parameters (training a stage
        trains the stacked model in place). Stage i learns to reconstruct stage i-1's codes."""
        return [GreedyStage(self, i) for i in range(len(self.enc))]


class GreedyStage(nn.Module):
    """Shallow AE made of encoder layer i and its mirror decoder layer of a stacked model."""

    def __init__(self, model: StackedAE, i: int):
        super().__init__()
        self.model = model
        self.i = i
        self.j = len(model.enc) - 1 - i                 # the mirror decoder layer
        self.outer = i == 0

    def stage_parameters(self) -> list[nn.Parameter]:
        params = list(self.model.enc[self.i].parameters())
        dec = self.model.dec[self.j] if hasattr(self.model, "dec") else None
        if dec is not None:
            params += list(dec.parameters())
        else:
            params.append(self.model.dec_bias[self.j])
        # a tied model shares the kernel: keep each parameter once
        seen, unique = set(), []
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        return unique

    def encode(self, x: Tensor) -> Tensor:
        return self.model.act(self.model.enc[self.i](x))

    def forward(self, x: Tensor, y: Tensor | None = None) -> ModelOutput:
        codes = self.encode(x)
        pre = self.model._dec_layer(self.j, codes)
        if self.outer:                                   # reconstruct the data: the model's loss
            loss, parts = self.model.reconstruction_loss(pre, x)
        else:                                            # reconstruct inner codes
            out = self.model.act(pre)
            if self.model.config.greedy_inner_loss == "mse":
                loss = F.mse_loss(out, x)
                parts = {"mse": loss}
            else:
                loss = F.binary_cross_entropy(out.clamp(1e-7, 1 - 1e-7), x)
                parts = {"bce": loss}
        return ModelOutput(loss=loss, parts=parts, recon=pre, codes=codes)


@dataclass
class LinearAEConfig(StackedAEConfig):
    hidden_sizes: list[int] = field(default_factory=list)
    coding_size: int = 2
    activation: str = "linear"
    init: str = "glorot_uniform"
    output_activation: str = "linear"
    loss: str = "mse"
    lr: float = 1.0


class LinearAE(StackedAE):
    """Undercomplete linear autoencoder: with MSE it finds PCA's subspace (SPEC 1)."""

    name = "linear-ae"
    separable_batches = True          # a mean per-sample loss, no noise: see LatentModel.batch_separable
    config_class = LinearAEConfig


@dataclass
class TiedAEConfig(StackedAEConfig):
    pass


class TiedAE(StackedAE):
    """Stacked AE whose decoder reuses the transposed encoder kernels (SPEC 6)."""

    name = "tied-ae"
    separable_batches = True          # a mean per-sample loss, no noise: see LatentModel.batch_separable
    config_class = TiedAEConfig

    def _build_decoder(self) -> None:
        rev = self.sizes[::-1]
        self.dec_bias = nn.ParameterList(nn.Parameter(torch.zeros(b)) for b in rev[1:])

    def _dec_layer(self, j: int, h: Tensor) -> Tensor:
        kernel = self.enc[len(self.enc) - 1 - j].weight      # (out, in) of the mirror encoder layer
        return F.linear(h, kernel.t(), self.dec_bias[j])
