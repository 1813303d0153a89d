"""Peer: the chapter's stacked autoencoder and convolutional autoencoder in Keras, as its code builds
them, trained on ../shared/data/mnist-4k (3,600 train / 400 held out) in their own venv:

    python3.11 -m venv bench/peers/.venv-keras
    bench/peers/.venv-keras/bin/pip install tensorflow-cpu       # TensorFlow 2.21, Keras 3.15 here
    bench/peers/.venv-keras/bin/python bench/peers/keras_ae.py --model stacked --out /tmp/peers/keras-stacked-ae
    bench/peers/.venv-keras/bin/python bench/peers/keras_ae.py --model conv --out /tmp/peers/keras-conv-ae

``stacked``: 784 -> 100 -> 30 -> 100 -> 784, SELU, sigmoid out, BCE, SGD lr 1.5, batch 32 (latentforge's
``stacked-ae`` defaults: 20 epochs). ``conv``: Conv 16/32/64 (3x3, same, SELU) + 2x2 max-pool, then
ConvTranspose 32 (valid) / 16 / 1 (same, stride 2), sigmoid, BCE, SGD lr 1.0, batch 32 (``conv-ae``:
5 epochs). Keras' default initialisation (Glorot uniform, zero biases), as the chapter's code.

Writes OUT/result.json: held-out BCE per pixel (Keras' ``evaluate`` on the last 400 digits), wall and
CPU seconds of training (one TensorFlow thread, as compare.py pins latentforge to one). An AE draws no
samples: `bench/peers/compare.py` shows its row beside latentforge's ``stacked-ae`` / ``conv-ae``.
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
import keras  # noqa: E402
from keras import layers  # noqa: E402
from peer_io import load, out_dir, parser, write_result  # noqa: E402

# model -> (epochs, SGD learning rate): latentforge's defaults for stacked-ae / conv-ae (the chapter's)
DEFAULTS = {"stacked": (20, 1.5), "conv": (5, 1.0)}


def stacked_ae() -> keras.Model:
    encoder = keras.models.Sequential([
        layers.Input(shape=[28, 28]), layers.Flatten(),
        layers.Dense(100, activation="selu"), layers.Dense(30, activation="selu")])
    decoder = keras.models.Sequential([
        layers.Input(shape=[30]), layers.Dense(100, activation="selu"),
        layers.Dense(28 * 28, activation="sigmoid"), layers.Reshape([28, 28])])
    return keras.models.Sequential([encoder, decoder])


def conv_ae() -> keras.Model:
    encoder = keras.models.Sequential([
        layers.Input(shape=[28, 28]), layers.Reshape([28, 28, 1]),
        layers.Conv2D(16, 3, padding="same", activation="selu"), layers.MaxPool2D(2),
        layers.Conv2D(32, 3, padding="same", activation="selu"), layers.MaxPool2D(2),
        layers.Conv2D(64, 3, padding="same", activation="selu"), layers.MaxPool2D(2)])   # -> 3x3x64
    decoder = keras.models.Sequential([
        layers.Input(shape=[3, 3, 64]),
        layers.Conv2DTranspose(32, 3, strides=2, padding="valid", activation="selu"),   # -> 7x7
        layers.Conv2DTranspose(16, 3, strides=2, padding="same", activation="selu"),    # -> 14x14
        layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid"),  # -> 28x28
        layers.Reshape([28, 28])])
    return keras.models.Sequential([encoder, decoder])


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--model", choices=sorted(DEFAULTS), required=True)
    ap.add_argument("--epochs", type=int)
    a = ap.parse_args()
    out = out_dir(a)
    epochs, lr = DEFAULTS[a.model]
    epochs = a.epochs or epochs
    X, _, Xv, _ = load()
    keras.utils.set_random_seed(a.seed)
    ae = stacked_ae() if a.model == "stacked" else conv_ae()
    ae.compile(loss="binary_crossentropy", optimizer=keras.optimizers.SGD(learning_rate=lr))
    t, c = time.perf_counter(), time.process_time()
    ae.fit(X, X, epochs=epochs, batch_size=32, verbose=0)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    bce = float(ae.evaluate(Xv, Xv, batch_size=400, verbose=0))
    write_result(out, {"peer": f"keras {keras.__version__}", "model": f"{a.model}-ae", "epochs": epochs,
                       "heldout_bce": bce, "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1)})


if __name__ == "__main__":
    main()
