"""A classifier that can start from a trained autoencoder's encoder (SPEC 5, the first exercise).

``arch = "dense"``: input -> ``hidden_sizes`` -> ``coding_size`` (the *encoder*, ``enc``: Linear
layers + ``act``, built exactly like stacked-ae's so a dense AE's encoder weights can be copied
in) -> ``head_hidden_sizes`` -> ``n_classes`` logits. ``arch = "conv"``: Conv(``conv_filters``,
3x3, same) + 2x2 max-pool per filter count, then the head.

Unsupervised pretraining: :func:`init_from_autoencoder` copies a dense AE's encoder (and its input
normalisation) into the classifier, or raises ConfigError naming the mismatch. ``encoder_from``
records the AE run folder; when it is set, the training API (``latentforge.train``, which reads
run folders: models do no file I/O) loads that run and does the copy once before the first
epoch, never on resume or load. ``freeze_epochs`` keeps the encoder frozen
for the first E epochs (``on_epoch_start``), after which the whole network is fine-tuned;
``pretrained_layers = k`` copies (and freezes) only the lowest k layers. On a pretrained encoder the
softmax layer starts at zero (``output_init = "auto"``): the AE's SELU codes are large, and a
glorot-initialised head on them starts saturated and barely learns while the encoder is frozen.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TrainConfig, check_fraction, check_nonnegative, check_positive
from ..errors import ConfigError, DataError
from .capabilities import Capability, has
from .base import (ACTIVATIONS, INITS, Autoencoder, LatentModel, ModelOutput, activation, check_choice, dense,
                   fit_normalizer, fit_standardizer, init_weight)


@dataclass
class ClassifierConfig(TrainConfig):
    arch: str = "dense"                   # dense | conv
    n_classes: int = 10
    # the encoder (dense): the same fields as stacked-ae, so an AE's config maps onto it
    hidden_sizes: list[int] = field(default_factory=lambda: [100])
    coding_size: int = 30
    activation: str = "selu"              # every hidden layer (encoder, conv and head)
    coding_activation: str | None = None  # dense coding layer; None = activation (sparse-ae: sigmoid)
    init: str = "lecun_normal"            # hidden kernels (the output layer: output_init)
    # the encoder (conv): one 3x3 'same' conv + 2x2 max-pool per entry (the chapter's conv AE)
    conv_filters: list[int] = field(default_factory=lambda: [16, 32, 64])
    # between the encoder and the softmax output
    head_hidden_sizes: list[int] = field(default_factory=list)
    # the softmax layer's kernel. auto: glorot_uniform (Keras' default) from scratch, zeros on a
    # pretrained encoder: a new head on frozen features, whose values can be large (SELU codes),
    # then starts from uniform probabilities and learns at once instead of from saturated logits
    output_init: str = "auto"             # auto | zeros | glorot_uniform | lecun_normal | he_normal | default
    dropout: float = 0.0                  # before the output layer
    # input normalisation: centre per feature, scale to a global RMS (set from the AE when pretrained)
    normalize: bool = False
    normalize_rms: float = 0.5
    normalize_scale: str = "global"       # global | feature (per-feature standardisation, as the AE's)
    # unsupervised pretraining
    encoder_from: str | None = None       # the AE run whose encoder initialises this one (provenance)
    pretrained_layers: int = 0            # copy (and freeze) only the lowest k encoder layers; 0 = all
    freeze_epochs: int = 0                # the (copied) encoder layers are frozen for E epochs, then fine-tuned
    # training defaults
    epochs: int = 30
    batch_size: int = 32
    optimizer: str = "nadam"
    lr: float = 1e-3

    def validate(self) -> None:
        super().validate()
        check_choice("arch", self.arch, ("dense", "conv"))
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("output_init", self.output_init, ("auto", "zeros", *INITS))
        if self.coding_activation is not None:
            check_choice("coding_activation", self.coding_activation, ACTIVATIONS)
        check_positive(self, "coding_size", "normalize_rms")
        check_choice("normalize_scale", self.normalize_scale, ("global", "feature"))
        for key in ("hidden_sizes", "conv_filters", "head_hidden_sizes"):
            if getattr(self, key):
                check_positive(self, key)
        if self.arch == "conv" and not self.conv_filters:
            raise ConfigError("config field 'conv_filters' = []: arch=conv needs at least one conv layer")
        if self.n_classes < 2:
            raise ConfigError(f"config field 'n_classes' = {self.n_classes!r}: must be >= 2")
        check_fraction(self, "dropout")
        check_nonnegative(self, "freeze_epochs", "pretrained_layers")
        n_enc = len(self.hidden_sizes) + 1 if self.arch == "dense" else len(self.conv_filters)
        if self.pretrained_layers > n_enc:
            raise ConfigError(f"config field 'pretrained_layers' = {self.pretrained_layers}: the encoder has "
                              f"only {n_enc} layers")
        if self.encoder_from is not None and self.arch != "dense":
            raise ConfigError("config field 'encoder_from' needs arch=dense (only dense encoders can be copied)")


class Classifier(LatentModel):
    """MLP or CNN classifier (cross-entropy); can start from a trained autoencoder's encoder."""

    name = "classifier"
    config_class = ClassifierConfig
    config: ClassifierConfig
    capabilities = Capability.CONDITIONAL | Capability.CLASSIFIES

    def __init__(self, config: ClassifierConfig):
        super().__init__(config)
        self.act = activation(config.activation)
        self.coding_act = activation(config.coding_activation) if config.coding_activation else self.act
        self.accepts_flat = config.arch == "dense"
        self.register_buffer("data_shift", torch.zeros(self.input_dim))
        self.register_buffer("data_scale", torch.ones(self.input_dim) if config.normalize_scale == "feature"
                             else torch.ones(()))
        self._pretrained = False
        if config.arch == "dense":
            sizes = [self.input_dim, *config.hidden_sizes, config.coding_size]   # e.g. [784, 100, 30]
            self.enc = nn.ModuleList(dense(a, b, config.init) for a, b in zip(sizes[:-1], sizes[1:]))
            n_feat = config.coding_size
        else:
            shape = self._image_shape()
            chans = [shape[0], *config.conv_filters]
            self.enc = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(chans[:-1], chans[1:]))
            for conv in self.enc:
                if config.init != "default":
                    init_weight(conv.weight, config.init)
                    nn.init.zeros_(conv.bias)
            h, w = shape[1], shape[2]
            for _ in self.enc:
                h, w = h // 2, w // 2
            if h < 1 or w < 1:
                raise ConfigError(f"arch=conv: {len(self.enc)} 2x2 poolings do not fit {shape[1]}x{shape[2]} images "
                                  f"(use fewer conv_filters)")
            n_feat = chans[-1] * h * w
        sizes = [n_feat, *config.head_hidden_sizes]
        self.head = nn.ModuleList(dense(a, b, config.init) for a, b in zip(sizes[:-1], sizes[1:]))
        self.drop = nn.Dropout(config.dropout)
        self.out = dense(sizes[-1], config.n_classes, "glorot_uniform" if config.output_init in ("auto", "zeros")
                         else config.output_init)
        if config.output_init == "zeros":
            nn.init.zeros_(self.out.weight)

    def _image_shape(self) -> tuple[int, int, int]:
        s = self.input_shape
        if len(s) == 2:
            return (1, s[0], s[1])
        if len(s) == 3:
            return (s[0], s[1], s[2])
        raise ConfigError(f"arch=conv needs image data (C, H, W) or (H, W); these samples have shape {s}")

    # -- data -----------------------------------------------------------------------------------
    def check_data(self, x, source: str = "data") -> None:
        super().check_data(x, source)
        if not self.config.normalize and len(x):
            lo, hi = float(x.min()), float(x.max())
            if lo < 0.0 or hi > 1.0:
                raise DataError(f"{source}: values lie in [{lo:.4g}, {hi:.4g}] but the classifier expects "
                                f"data in [0, 1]; rescale it, or use --set normalize=true")

    def check_labels(self, y, source: str = "labels") -> None:
        """DataError unless every label is an integer in [0, n_classes)."""
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.config.n_classes):
            raise DataError(f"{source}: labels lie in [{int(y.min())}, {int(y.max())}] but the classifier has "
                            f"n_classes = {self.config.n_classes} (labels 0..{self.config.n_classes - 1})")

    def prepare(self, x: Tensor) -> None:
        """Fit the normalisation, unless an autoencoder's encoder (and its normalisation) was copied
        in (:func:`init_from_autoencoder`, done by the training API for ``config.encoder_from``)."""
        if self._pretrained:
            return
        if self.config.encoder_from:
            raise ConfigError(f"encoder_from {self.config.encoder_from!r}: the autoencoder's encoder was not "
                              f"copied in; train through latentforge.train or train_classifier, or call "
                              f"init_from_autoencoder(model, load_run(...)) first")
        elif self.config.normalize and self.config.normalize_scale == "feature":
            fit_standardizer(self.data_shift, self.data_scale, x)
        elif self.config.normalize:
            fit_normalizer(self.data_shift, self.data_scale, x, self.config.normalize_rms)

    def to_internal(self, x: Tensor) -> Tensor:
        """Data units -> the network's input: flat (dense) or (N, C, H, W) (conv), normalised."""
        flat = x.reshape(len(x), -1)
        if self.config.normalize:
            flat = (flat - self.data_shift) / self.data_scale
        if self.config.arch == "conv":
            return flat.reshape((len(x), *self._image_shape()))
        return flat

    # -- the network ----------------------------------------------------------------------------
    def _features(self, h: Tensor) -> Tensor:
        if self.config.arch == "conv":
            for layer in self.enc:
                h = F.max_pool2d(self.act(layer(h)), 2)
            return h.reshape(len(h), -1)
        last = len(self.enc) - 1
        for i, layer in enumerate(self.enc):
            h = (self.coding_act if i == last else self.act)(layer(h))
        return h

    def features(self, x: Tensor) -> Tensor:
        """The encoder's output (dense: the codes a pretrained AE would give), in data units."""
        return self._features(self.to_internal(x))

    def logits(self, x: Tensor) -> Tensor:
        h = self.features(x)
        for layer in self.head:
            h = self.act(layer(h))
        return self.out(self.drop(h))

    def forward(self, x: Tensor, y: Tensor | None = None) -> ModelOutput:
        if y is None:
            raise DataError("the classifier needs labels (y) to compute its loss")
        if y.device.type == "cpu":
            self.check_labels(y)
        logits = self.logits(x)
        ce = F.cross_entropy(logits, y)
        acc = (logits.detach().argmax(1) == y).float().mean()
        return ModelOutput(loss=ce, parts={"ce": ce, "accuracy": acc}, recon=logits)

    def predict_proba(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x), dim=1)

    def predict(self, x: Tensor) -> Tensor:
        return self.logits(x).argmax(1)

    # -- freezing -------------------------------------------------------------------------------
    @property
    def n_pretrained(self) -> int:
        """How many (lowest) encoder layers come from the autoencoder and are frozen at first."""
        return self.config.pretrained_layers or len(self.enc)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The parameters ``freeze_epochs`` freezes: those of the lowest ``n_pretrained`` layers."""
        return [p for layer in self.enc[:self.n_pretrained] for p in layer.parameters()]

    def set_encoder_trainable(self, trainable: bool) -> None:
        for p in self.encoder_parameters():
            p.requires_grad_(trainable)

    def on_epoch_start(self, epoch: int) -> None:
        """The trainer's hook: the encoder is frozen for epochs 0..freeze_epochs-1 (a pure
        function of the epoch, so a resumed run freezes exactly as an uninterrupted one)."""
        self.set_encoder_trainable(epoch >= self.config.freeze_epochs)


# ------------------------------------------------------------------------------------ pretraining
def _ae_model(source: Any) -> tuple[nn.Module, str]:
    """(model, description) from a loaded run (anything with a ``model`` module) or a model."""
    if isinstance(source, nn.Module):
        return source, f"model {getattr(source, 'name', '') or type(source).__name__}"
    if isinstance(getattr(source, "model", None), nn.Module):
        return source.model, f"run {getattr(source, 'run_dir', '')} ({getattr(source, 'name', '')})"
    if isinstance(source, (str, Path)):
        raise TypeError(f"{source}: a run folder; load it first (latentforge.load_run)")
    raise TypeError(f"expected a Run or a model, got {type(source).__name__}")


def dense_encoder_spec(ae: nn.Module, what: str = "the autoencoder") -> dict[str, Any]:
    """The classifier config fields that reproduce ``ae``'s dense encoder, or ConfigError.

    A dense encoder is an ``enc`` ModuleList of ``nn.Linear`` layers, each followed by ``act``
    (stacked-ae, tied-ae, linear-ae, and the AE family built on them).
    """
    name = getattr(ae, "name", "") or type(ae).__name__
    if isinstance(ae, Classifier) or not hasattr(ae, "encode"):
        raise ConfigError(f"{what} is a {name!r}, not an autoencoder: --encoder-from needs a dense "
                          f"autoencoder run (stacked-ae, tied-ae, denoising-ae, sparse-ae, ...)")
    enc = getattr(ae, "enc", None)
    if (not isinstance(enc, nn.ModuleList) or not len(enc) or not all(type(layer) is nn.Linear for layer in enc)
            or not isinstance(getattr(ae, "act", None), nn.Module)):
        raise ConfigError(f"{what} is a {name!r}, whose encoder is not a stack of dense layers "
                          f"(enc Linear layers + act); only dense encoders can initialise the classifier "
                          f"(stacked-ae, tied-ae, denoising-ae, sparse-ae, ...)")
    sizes = [enc[0].in_features] + [layer.out_features for layer in enc]
    cfg = getattr(ae, "config", None)
    act = getattr(cfg, "activation", None)
    if act not in ACTIVATIONS:
        raise ConfigError(f"{what} ({name!r}) does not name its encoder activation in its config")
    normalize = bool(isinstance(ae, Autoencoder) and ae.config.output_activation == "linear")
    # a sigmoid coding layer (sparse-ae, hashing-ae) is the one known exception to "act everywhere";
    # init_from_autoencoder verifies the copy numerically in any case
    coding = "sigmoid" if has(ae, Capability.UNIT_CODES) and act != "sigmoid" else None
    spec = {"arch": "dense", "hidden_sizes": sizes[1:-1], "coding_size": sizes[-1], "activation": act,
            "coding_activation": coding, "normalize": normalize,
            "normalize_scale": "feature" if normalize and getattr(ae, "feature_scaled", False) else "global"}
    if getattr(cfg, "init", None) is not None:
        spec["init"] = cfg.init
    return spec


def init_from_autoencoder(clf: Classifier, ae_source: Any, *, check: bool = True) -> Classifier:
    """Copy a trained dense autoencoder's encoder (and input normalisation) into ``clf``.

    ``ae_source``: a loaded Run or a model. The classifier's encoder must be built like
    the AE's (``dense_encoder_spec`` gives the config fields); ConfigError names the first
    mismatch. With ``config.pretrained_layers = k`` only the lowest k layers are copied, and only
    they must match. With ``check`` the AE's ``encode`` is verified to be reproduced by its ``enc``
    layers and activations on a random batch (this catches AEs whose encoder does more).
    """
    ae, desc = _ae_model(ae_source)
    spec = dense_encoder_spec(ae, desc)
    cfg = clf.config
    k = cfg.pretrained_layers or len(ae.enc)
    if cfg.arch != "dense":
        raise ConfigError(f"cannot copy the encoder of {desc}: it is dense but the classifier's arch is {cfg.arch!r}")
    in_dim = ae.enc[0].in_features
    if in_dim != clf.input_dim:
        raise ConfigError(f"cannot copy the encoder of {desc}: it takes {in_dim} inputs but the classifier's "
                          f"data has {clf.input_dim} values per sample ({list(clf.input_shape)})")
    if k > len(ae.enc):
        raise ConfigError(f"cannot copy {k} encoder layers of {desc}: it has only {len(ae.enc)}")
    full = k == len(ae.enc) and k == len(clf.enc)
    keys = ("hidden_sizes", "coding_size", "activation", "coding_activation", "normalize") if full else \
        ("layer sizes", "activation", "normalize")
    for key in keys:
        if key == "layer sizes":                 # only the lowest k layers must match
            mine = [clf.input_dim] + [layer.out_features for layer in clf.enc[:k]]
            theirs = [in_dim] + [layer.out_features for layer in ae.enc[:k]]
        else:
            mine, theirs = getattr(cfg, key), spec[key]
        if key == "coding_activation":           # None means "the same as activation"
            mine, theirs = mine or cfg.activation, theirs or spec["activation"]
        if (list(mine) if isinstance(mine, list) else mine) != theirs:
            what = f"lowest {k} {key}" if key == "layer sizes" else key
            raise ConfigError(f"cannot copy the encoder of {desc}: its {what} is {theirs!r} but the "
                              f"classifier's is {mine!r} (build the classifier with the AE's {key})")
    if check:
        _verify_dense_encoder(ae, spec, desc)
    with torch.no_grad():
        for mine_l, theirs_l in zip(clf.enc[:k], ae.enc[:k]):
            mine_l.weight.copy_(theirs_l.weight)
            mine_l.bias.copy_(theirs_l.bias)
        if cfg.output_init == "auto":            # a new head on pretrained features starts at zero
            clf.out.weight.zero_()
            clf.out.bias.zero_()
        if spec["normalize"]:
            clf.data_shift.copy_(ae.data_shift)
            clf.data_scale.copy_(ae.data_scale)
        else:
            clf.data_shift.zero_()
            clf.data_scale.fill_(1.0)
    clf._pretrained = True
    return clf


def _verify_dense_encoder(ae: nn.Module, spec: dict[str, Any], desc: str) -> None:
    """ConfigError unless ``ae.encode`` equals its ``enc`` layers + activations (in eval mode)."""
    shape = list(getattr(ae, "input_shape", None) or [ae.enc[0].in_features])
    probe = Classifier(ClassifierConfig(input_shape=shape, n_classes=2,
                                        **{k: v for k, v in spec.items() if k != "init"}))
    probe.load_state_dict({**probe.state_dict(), **{f"enc.{k}": v for k, v in ae.enc.state_dict().items()},
                           **({"data_shift": ae.data_shift, "data_scale": ae.data_scale} if spec["normalize"] else {})})
    g = torch.Generator().manual_seed(0)
    x = torch.rand((8, *shape), generator=g)
    ae_dev = next(iter(ae.state_dict().values())).device
    was = ae.training
    ae.eval()
    probe.eval()
    try:
        with torch.no_grad():
            mine = probe.features(x.to(probe.data_shift.device)).cpu()
            theirs = ae.encode(x.to(ae_dev)).cpu()
    finally:
        ae.train(was)
    if theirs.shape != mine.shape or not torch.allclose(mine, theirs, rtol=1e-4, atol=1e-5):
        raise ConfigError(f"cannot copy the encoder of {desc}: its encode() is not reproduced by its dense "
                          f"enc layers + activation (a coding-layer activation or other transform of its own?)")
