"""The domain feature network: a small classifier whose penultimate layer embeds samples for the
generative metrics (FID, KID, precision/recall, ...; see :mod:`latentforge.eval.generative`).

Inception weights cannot be fetched here and fit 28x28 digits poorly anyway, so every dataset gets
its own small network, trained on the real data:

* images (C, H, W): per entry of ``conv_filters`` a 3x3 conv of stride 2 (stride 1 once a side is
  down to 1) + ReLU, then flatten -> ``feature_size`` + ReLU: the features (28x28: 14x14x16,
  7x7x32, 128; strided convs train ~3x faster on a CPU than conv + max-pool);
* flat data (D,): dense ``hidden_sizes`` + ReLU -> ``feature_size`` + ReLU: the features.

From the features, a softmax head predicts the class (cross-entropy, when the data has labels) and
a linear decoder reconstructs the (normalised) input (MSE, weight ``recon_weight``). With labels the
reconstruction term is auxiliary: it keeps in the features what a pure classifier could discard
(stroke sharpness, blur), which the metrics must see. Without labels it is the whole objective (an
autoencoder), and the class-based metrics (mode coverage, IS) are not available.

``latentforge train features --data SRC`` trains one as a normal run; ``latentforge evaluate``
trains and caches one per dataset when not given ``--features``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TrainConfig, check_fraction, check_nonnegative, check_positive
from ..errors import ConfigError, DataError
from .base import LatentModel, ModelOutput, fit_normalizer
from .capabilities import Capability


@dataclass
class FeatureNetConfig(TrainConfig):
    n_classes: int = 10                   # the data's labels must lie in 0..n_classes-1
    conv_filters: list[int] = field(default_factory=lambda: [16, 32])   # image data
    hidden_sizes: list[int] = field(default_factory=lambda: [256])      # flat data
    feature_size: int = 128               # the penultimate layer: the features of every metric
    dropout: float = 0.25                 # on the features, before the softmax head
    recon_weight: float = 1.0             # the AE term (the whole loss when the data has no labels)
    normalize_rms: float = 1.0            # inputs centred per value, scaled to this global RMS
    epochs: int = 8
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3

    def validate(self) -> None:
        super().validate()
        check_positive(self, "feature_size", "normalize_rms")
        for key in ("conv_filters", "hidden_sizes"):
            if getattr(self, key):
                check_positive(self, key)
        check_nonnegative(self, "recon_weight")
        if self.n_classes < 2:
            raise ConfigError(f"config field 'n_classes' = {self.n_classes!r}: must be >= 2")
        check_fraction(self, "dropout")


class FeatureNet(LatentModel):
    """Domain feature network for the generative metrics: small classifier + linear decoder."""

    name = "features"
    config_class = FeatureNetConfig
    config: FeatureNetConfig
    #: labels are used when the data has them (LABELS_OPTIONAL); without, the AE term alone trains the features
    capabilities = Capability.CONDITIONAL | Capability.LABELS_OPTIONAL | Capability.CLASSIFIES

    def __init__(self, config: FeatureNetConfig):
        super().__init__(config)
        s = self.input_shape
        self.register_buffer("data_shift", torch.zeros(self.input_dim))
        self.register_buffer("data_scale", torch.ones(()))
        self.image_shape: tuple[int, int, int] | None = None
        if len(s) in (2, 3):                                  # (H, W) or (C, H, W)
            c, h, w = (1, *s) if len(s) == 2 else s
            self.image_shape = (c, h, w)
            chans = [c, *config.conv_filters]
            self.strides: list[int] = []
            for _ in chans[1:]:
                stride = 2 if h >= 2 and w >= 2 else 1
                self.strides.append(stride)
                h, w = (h + 1) // 2 if stride == 2 else h, (w + 1) // 2 if stride == 2 else w
            self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=st, padding=1)
                                       for a, b, st in zip(chans[:-1], chans[1:], self.strides))
            n_flat = chans[-1] * h * w
            sizes = [n_flat]
        else:
            self.convs = nn.ModuleList()
            sizes = [self.input_dim, *config.hidden_sizes]
        self.accepts_flat = self.image_shape is None
        self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.feat = nn.Linear(sizes[-1], config.feature_size)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_size, config.n_classes)
        self.decoder = nn.Linear(config.feature_size, self.input_dim)

    # -- data -------------------------------------------------------------------------------
    def check_labels(self, y: Tensor, source: str = "labels") -> None:
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.config.n_classes):
            raise DataError(f"{source}: labels lie in [{int(y.min())}, {int(y.max())}] but the feature network has "
                            f"n_classes = {self.config.n_classes} (use --set n_classes=K)")

    def prepare(self, x: Tensor) -> None:
        fit_normalizer(self.data_shift, self.data_scale, x, self.config.normalize_rms)

    def to_internal(self, x: Tensor) -> Tensor:
        """Data units -> flat normalised values (N, D)."""
        return (x.reshape(len(x), -1) - self.data_shift) / self.data_scale

    # -- the network -------------------------------------------------------------------------
    def _features(self, flat: Tensor) -> Tensor:
        h = flat
        if self.image_shape is not None:
            h = h.reshape((len(h), *self.image_shape))                       # (N, C, H, W)
            for conv in self.convs:
                h = F.relu(conv(h))
            h = h.reshape(len(h), -1)                                        # (N, C' H' W')
        for layer in self.dense:
            h = F.relu(layer(h))
        return F.relu(self.feat(h))                                          # (N, feature_size)

    def features(self, x: Tensor) -> Tensor:
        """The penultimate layer, (N, feature_size): what the generative metrics compare."""
        return self._features(self.to_internal(x))

    def logits(self, x: Tensor) -> Tensor:
        return self.head(self.drop(self.features(x)))

    def predict_proba(self, x: Tensor) -> Tensor:
        """Softmax class probabilities (N, n_classes); meaningful only if trained with labels."""
        return torch.softmax(self.logits(x), dim=1)

    def features_and_proba(self, x: Tensor) -> Tensor:
        """Features and class probabilities side by side, (N, feature_size + n_classes)."""
        f = self.features(x)
        return torch.cat([f, torch.softmax(self.head(f), dim=1)], dim=1)

    def forward(self, x: Tensor, y: Tensor | None = None) -> ModelOutput:
        target = self.to_internal(x)
        f = self._features(target)
        recon = self.decoder(f)
        mse = F.mse_loss(recon, target)
        loss = self.config.recon_weight * mse
        parts = {"mse": mse}
        if y is not None:
            if y.device.type == "cpu":
                self.check_labels(y)
            logits = self.head(self.drop(f))
            ce = F.cross_entropy(logits, y)
            loss = loss + ce
            parts["ce"] = ce
            parts["accuracy"] = (logits.detach().argmax(1) == y).float().mean()
        return ModelOutput(loss=loss, parts=parts, recon=recon, codes=f)
