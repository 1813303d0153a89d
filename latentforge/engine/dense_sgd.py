"""The hand-fused SGD step of the chapter's dense autoencoders (``StackedAE``, ``LinearAE``).

The seed AE is bound by per-step overhead (a CPU's Python and dispatch, or a GPU's kernel
launches); this step skips autograd's bookkeeping, gradient buffers and the optimizer's pass by
folding each update into the kernel that computes its gradient (``W.addmm_(δᵀ, h, alpha=-lr/n)``,
``b.addmv_(δᵀ, 1, alpha=-lr/n)``): about 26 kernels per step for the seed AE, few enough to
replay as CUDA graphs (:mod:`.chunks`). It computes what autograd + ``torch.optim.SGD`` compute,
up to float rounding (``tests/test_engine_contract.py``).

It is written for one network and nothing else, so :func:`refusal` accepts only what it was
written for (an allowlist): the exact classes ``StackedAE`` and ``LinearAE`` (a subclass may
override any method), plain ``nn.Linear`` layers, the activations, output layers and losses the
hand-written backward pass knows, config fields it knows (a field added later must keep its
default), and no hooks on its modules or parameters. Everything else trains by autograd.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.base import ModelOutput
from ..models.dense_ae import LinearAE, StackedAE

if TYPE_CHECKING:
    from .split import BatchSplit

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946
#: the activations the hand-written backward pass knows, as functions (a module call costs more)
ACTIVATIONS = {"selu": F.selu, "relu": F.relu, "tanh": torch.tanh, "linear": lambda z: z}
_ACTIVATION_MODULES = {"selu": nn.SELU, "relu": nn.ReLU, "tanh": nn.Tanh, "linear": nn.Identity}
#: (output_activation, loss) pairs it knows
OUTPUTS = {("sigmoid", "bce"), ("sigmoid", "mse"), ("linear", "mse")}
#: the exact model classes it was written for
TYPES = (StackedAE, LinearAE)
#: the config fields it was written against: any other field must keep its default
KNOWN_FIELDS = frozenset({
    "epochs", "batch_size", "optimizer", "lr", "lr_schedule", "momentum", "betas", "weight_decay",
    "early_stopping", "seed", "input_shape", "nan_policy", "divergence_policy", "steps_per_epoch",
    "sample_every", "engine", "output_activation", "loss", "normalize", "normalize_rms", "hidden_sizes",
    "coding_size", "activation", "init", "greedy_epochs", "greedy_inner_lr", "greedy_inner_loss",
    "finetune_epochs"})


def refusal(model: nn.Module) -> str | None:
    """Why the fused step does not compute ``model``'s step (None: it does)."""
    if type(model) not in TYPES:
        return f"{type(model).__name__} is not one of {', '.join(t.__name__ for t in TYPES)} (exactly)"
    if any(callable(v) and hasattr(type(model), k) for k, v in vars(model).items()):
        return "a method replaced on the instance"
    cfg = model.config
    for f in dataclasses.fields(cfg):
        if f.name not in KNOWN_FIELDS:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            if getattr(cfg, f.name) != default:
                return f"config field {f.name!r} is not known to the fused step"
    if cfg.activation not in ACTIVATIONS:
        return f"activation {cfg.activation!r}"
    if (cfg.output_activation, cfg.loss) not in OUTPUTS:
        return f"output {cfg.output_activation!r} with loss {cfg.loss!r}"
    if type(getattr(model, "act", None)) is not _ACTIVATION_MODULES[cfg.activation]:
        return "the activation module was replaced"
    enc, dec = getattr(model, "enc", None), getattr(model, "dec", None)
    if type(enc) is not nn.ModuleList or type(dec) is not nn.ModuleList:
        return "an encoder or decoder other than the model's own layer lists"
    layers = [*enc, *dec]
    if any(type(m) is not nn.Linear for m in layers) or len(layers) != 2 * len(enc):
        return "layers other than the model's own nn.Linear"
    if model.data_scale.dim() != 0:
        return "a per-feature scale"
    if any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
           for m in model.modules()):
        return "hooks on its modules"
    if any(getattr(p, "_backward_hooks", None) or getattr(p, "_post_accumulate_grad_hooks", None)
           for p in model.parameters()):
        return "hooks on its parameters"
    return None


class DenseSGDStep:
    """One SGD step (no momentum, no weight decay) of ``model`` with a hand-written backward pass:
    ``step(x, lr)`` updates the weights in place and returns the model's output (``.loss``,
    ``.parts``). ``split`` (CPU): the forward and backward passes run on sub-batches, one per
    thread, then the updates, a share of the layers per thread."""

    def __init__(self, model: StackedAE, split: "BatchSplit | None" = None):
        why = refusal(model)
        if why is not None:
            raise ValueError(f"the fused SGD step does not apply: {why}")
        self.model, self.split = model, split
        self.activation = model.config.activation
        self._ones_cache: dict = {}
        # (weight, bias) of each layer, input to output, read once from the layers' parameter dicts
        # (``Module.__getattr__`` costs ~1 us a lookup on the 2-core VM, a step would make 24);
        # the step updates them in place, so they stay the model's tensors
        self._wb = [(layer._parameters["weight"], layer._parameters["bias"]) for layer in (*model.enc, *model.dec)]

    def __call__(self, x: Tensor, lr: float) -> ModelOutput:
        m = self.model
        with torch.no_grad():
            target = m.to_internal(x)
            alpha = -lr / target.numel()
            rows = self.split.rows(target) if self.split is not None else (target,)
            if len(rows) == 1:                                 # updates as the backward pass goes
                loss = self._backward(target, alpha)[0]
            else:
                parts = self.split.run([functools.partial(self._backward, t) for t in rows], grad=False)
                self.split.run([functools.partial(self._update_layers, ks, parts, alpha)
                                for ks in self._layer_shares(self.split.parts)], grad=False)
                loss = sum((p[0] for p in parts[1:]), parts[0][0])
            loss = loss / target.numel()
        parts_ = {"bce": loss} if m.config.loss == "bce" else {"mse": m.mse_in_reported_units(loss)}
        return ModelOutput(loss=loss, parts=parts_)

    def _params(self) -> list[tuple[Tensor, Tensor]]:
        return self._wb

    def _backward(self, target: Tensor, alpha: float | None = None):
        """Forward and backward pass on ``target`` (internal units); returns the summed loss, each
        layer's input ``h_k`` and the gradient ``δ_k`` of the summed loss w.r.t. its
        pre-activation. With ``alpha``, each layer is updated as soon as the gradient below it is
        computed from its weights (while they are in cache) and no ``δ_k`` is kept; without, the
        weights are only read (the updates follow, from the returned values)."""
        params, act = self._params(), ACTIVATIONS[self.activation]
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

    def _layer_shares(self, n: int) -> list[list[int]]:
        """The layers' updates shared out over ``n`` threads: the biggest first, each to the least
        loaded thread."""
        sizes = [w.numel() for w, _ in self._params()]
        shares: list[list[int]] = [[] for _ in range(n)]
        load = [0] * n
        for k in sorted(range(len(sizes)), key=lambda k: -sizes[k]):
            t = load.index(min(load))
            shares[t].append(k)
            load[t] += sizes[k]
        return shares

    def _update_layers(self, ks: list[int], parts: list[tuple], alpha: float) -> None:
        """The SGD updates of layers ``ks`` from each sub-batch's :meth:`_backward`."""
        params = self._params()
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
        key = (n, like.device, like.dtype)
        if key not in self._ones_cache:
            self._ones_cache[key] = torch.ones(n, device=like.device, dtype=like.dtype)
        return self._ones_cache[key]

    def _loss_and_delta(self, z: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Summed loss, and its gradient w.r.t. the output pre-activation ``z``; the mean's ``1/n``
        goes into the update's ``alpha``."""
        cfg = self.model.config
        if cfg.loss == "bce":                  # BCE on logits: softplus(z) - t z (3 kernels)
            loss = F.softplus(z).addcmul_(target, z, value=-1.0).sum()
            return loss, torch.sigmoid(z).sub_(target)
        if cfg.output_activation == "sigmoid":                      # sigmoid + MSE
            p = torch.sigmoid(z)
            err = p - target
            loss = err.square().sum()
            return loss, torch.ops.aten.sigmoid_backward(err, p).mul_(2.0)     # 2 err p (1 - p)
        err = z - target                                            # linear + MSE
        loss = err.square().sum()
        return loss, err.mul_(2.0)

    def _act_backward(self, grad: Tensor, h: Tensor) -> Tensor:
        """Gradient through the activation, from its output ``h`` (the kernels autograd uses)."""
        a = self.activation
        if a == "selu":
            return torch.ops.aten.elu_backward(grad, _SELU_ALPHA, _SELU_SCALE, 1.0, True, h)
        if a == "relu":
            return torch.ops.aten.threshold_backward(grad, h, 0)
        if a == "tanh":
            return torch.ops.aten.tanh_backward(grad, h)
        return grad
