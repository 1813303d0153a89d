"""The chapter's recurrent autoencoder: an image read as a sequence of rows.

SPEC 9  recurrent-ae: each image is a sequence of H rows of W*C values (28 rows of 28 for a digit).
        Encoder LSTM(100, return sequences) -> LSTM(30), whose last hidden state is the code;
        decoder: repeat the code H times -> LSTM(100, return sequences) -> per-step Dense(W*C,
        sigmoid). BCE, batch 32, 10 epochs.

Optimizer: the chapter (2nd ed.) uses SGD lr 0.1 on 55k images (17k steps in 10 epochs). On a few
thousand digits that is too few steps: measured on mnist-4k (3,600 train), SGD 0.1 is still at a
held-out BCE of 0.329 after 5 epochs, worse than predicting the mean image (0.263), and SGD 1.0
at 0.286. Every optimizer first sits on the mean image for a few epochs; RMSprop lr 2e-3 (Keras'
RMSprop, as the chapter's VAE and GAN use) leaves it soonest at batch 32 (0.222 after 6 epochs,
0.188 after 10), so it is the default here; ``--set optimizer=sgd --lr 0.1`` gives the chapter's.

Initialisation follows Keras' LSTM (the chapter's): Glorot-uniform input kernels, orthogonal
recurrent kernels and a forget-gate bias of 1. A 2-D sample shape (T, F) is read as T steps of F
features; tabular (D,) data is refused.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..config import check_positive
from ..errors import DataError
from .base import INITS, AEConfig, Autoencoder, check_choice, dense, init_weight


@dataclass
class RecurrentAEConfig(AEConfig):
    hidden_size: int = 100             # the outer LSTMs (encoder's first, decoder's)
    coding_size: int = 30              # the encoder's last LSTM: its last hidden state is the code
    init: str = "glorot_uniform"       # input kernels; recurrent kernels orthogonal, forget bias 1 (Keras)
    # training: the chapter's epochs and batch size; RMSprop instead of its SGD 0.1 (see above)
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "rmsprop"
    lr: float = 0.002

    def validate(self) -> None:
        super().validate()
        check_positive(self, "hidden_size", "coding_size")
        check_choice("init", self.init, INITS)


def keras_lstm(n_in: int, n_hidden: int, init: str) -> nn.LSTM:
    """A one-layer batch-first LSTM initialised like Keras' (unless ``init`` is "default")."""
    lstm = nn.LSTM(n_in, n_hidden, batch_first=True)
    if init != "default":
        init_weight(lstm.weight_ih_l0, init)              # (4h, in): one kernel for the 4 gates, as Keras
        nn.init.orthogonal_(lstm.weight_hh_l0)
        nn.init.zeros_(lstm.bias_ih_l0)
        nn.init.zeros_(lstm.bias_hh_l0)
        nn.init.ones_(lstm.bias_ih_l0[n_hidden:2 * n_hidden])   # gates i, f, g, o: unit forget bias
    return lstm


class RecurrentAE(Autoencoder):
    """Recurrent autoencoder: LSTM encoder over the image rows, LSTM decoder from the repeated code."""

    name = "recurrent-ae"
    config_class = RecurrentAEConfig
    config: RecurrentAEConfig

    def __init__(self, config: RecurrentAEConfig):
        super().__init__(config)
        shape = self.input_shape
        if len(shape) == 3:                       # (C, H, W) image: H steps of W*C values
            c, h, w = shape
            self.steps, self.features = h, w * c
        elif len(shape) == 2:                     # (T, F) sequence
            self.steps, self.features = shape
        else:
            raise DataError(f"recurrent-ae reads each sample as a sequence (images (C, H, W) row by row, "
                            f"or (T, F)); got samples of shape {shape} (tabular data: use stacked-ae)")
        hid, code, init = config.hidden_size, config.coding_size, config.init
        self.enc1 = keras_lstm(self.features, hid, init)      # (N, 28, 28) -> (N, 28, 100)
        self.enc2 = keras_lstm(hid, code, init)               # (N, 28, 100) -> last step (N, 30)
        self.dec1 = keras_lstm(code, hid, init)               # (N, 28, 30) -> (N, 28, 100)
        self.out = dense(hid, self.features, "glorot_uniform" if init == "default" else init)  # per step

    def _to_sequence(self, x: Tensor) -> Tensor:  # (N, C*H*W) -> (N, H, W*C)
        if len(self.input_shape) == 3:
            c, h, w = self.input_shape
            return x.reshape(len(x), c, h, w).permute(0, 2, 3, 1).reshape(len(x), h, w * c)
        return x.reshape(len(x), self.steps, self.features)

    def _from_sequence(self, s: Tensor) -> Tensor:  # (N, H, W*C) -> (N, C*H*W)
        if len(self.input_shape) == 3:
            c, h, w = self.input_shape
            return s.reshape(len(s), h, w, c).permute(0, 3, 1, 2).reshape(len(s), -1)
        return s.reshape(len(s), -1)

    def _encode(self, x: Tensor) -> Tensor:          # (N, D) -> (N, coding_size)
        seq, _ = self.enc1(self._to_sequence(x))     # (N, H, hidden)
        _, (h_last, _) = self.enc2(seq)              # h_last: (1, N, coding)
        return h_last[0]

    def _decode_pre(self, z: Tensor) -> Tensor:      # (N, coding_size) -> (N, D) pre-activation
        rep = z.unsqueeze(1).expand(len(z), self.steps, z.shape[1])   # RepeatVector: (N, H, coding)
        seq, _ = self.dec1(rep)                                        # (N, H, hidden)
        return self._from_sequence(self.out(seq))                      # TimeDistributed Dense: (N, H, W*C)
