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

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_nonnegative, check_positive
from .base import ACTIVATIONS, AEConfig, Autoencoder, ModelOutput, activation, check_choice, dense
from .capabilities import Capability


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
    config_class = StackedAEConfig
    config: StackedAEConfig
    capabilities = Autoencoder.capabilities | Capability.GREEDY

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
    config_class = LinearAEConfig


@dataclass
class TiedAEConfig(StackedAEConfig):
    pass


class TiedAE(StackedAE):
    """Stacked AE whose decoder reuses the transposed encoder kernels (SPEC 6)."""

    name = "tied-ae"
    config_class = TiedAEConfig

    def _build_decoder(self) -> None:
        rev = self.sizes[::-1]
        self.dec_bias = nn.ParameterList(nn.Parameter(torch.zeros(b)) for b in rev[1:])

    def _dec_layer(self, j: int, h: Tensor) -> Tensor:
        kernel = self.enc[len(self.enc) - 1 - j].weight      # (out, in) of the mirror encoder layer
        return F.linear(h, kernel.t(), self.dec_bias[j])
