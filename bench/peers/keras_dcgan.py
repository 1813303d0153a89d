"""Peer: the chapter's DCGAN in Keras with its two-phase training loop, trained on
../shared/data/mnist-4k (the first 3,600 digits) in its own venv (the one of ``keras_ae.py``):

    bench/peers/.venv-keras/bin/python bench/peers/keras_dcgan.py --out /tmp/peers/keras-dcgan [--epochs 8]

G: Dense 7x7x128 -> reshape -> BatchNorm -> ConvTranspose 64 (5x5, stride 2, same, SELU) -> BatchNorm
-> ConvTranspose 1 (5x5, stride 2, same, tanh); D: Conv 64 (5x5, stride 2, same, LeakyReLU 0.2) ->
Dropout 0.4 -> Conv 128 -> Dropout 0.4 -> Flatten -> Dense 1 (sigmoid); coding size 100; data in
[-1, 1]; BCE; RMSprop (Keras' defaults: lr 1e-3, rho 0.9) for D and for the GAN; batch 32. Each
batch: (1) D trains on 32 fakes + 32 real digits, (2) G trains through the frozen D with every fake
labelled real. Epochs: 8, as compare.py's latentforge ``dcgan`` row.

Writes OUT/samples.npy (N samples, (N, 28, 28) in [0, 1]) and OUT/result.json (wall and CPU seconds of
training, one TensorFlow thread). `bench/peers/compare.py` runs it and judges the samples.
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
import keras  # noqa: E402
from keras import layers  # noqa: E402
from peer_io import load, out_dir, parser, write_result  # noqa: E402

CODING = 100


def build():
    generator = keras.models.Sequential([
        layers.Input(shape=[CODING]), layers.Dense(7 * 7 * 128), layers.Reshape([7, 7, 128]),
        layers.BatchNormalization(),
        layers.Conv2DTranspose(64, 5, strides=2, padding="same", activation="selu"),
        layers.BatchNormalization(),
        layers.Conv2DTranspose(1, 5, strides=2, padding="same", activation="tanh")])
    discriminator = keras.models.Sequential([
        layers.Input(shape=[28, 28, 1]),
        layers.Conv2D(64, 5, strides=2, padding="same", activation=layers.LeakyReLU(0.2)), layers.Dropout(0.4),
        layers.Conv2D(128, 5, strides=2, padding="same", activation=layers.LeakyReLU(0.2)), layers.Dropout(0.4),
        layers.Flatten(), layers.Dense(1, activation="sigmoid")])
    discriminator.compile(loss="binary_crossentropy", optimizer="rmsprop")
    discriminator.trainable = False
    gan = keras.models.Sequential([generator, discriminator])
    gan.compile(loss="binary_crossentropy", optimizer="rmsprop")
    return generator, discriminator, gan


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--epochs", type=int, default=8)
    a = ap.parse_args()
    out = out_dir(a)
    X, _, _, _ = load()
    X = X.reshape(-1, 28, 28, 1) * 2.0 - 1.0                         # tanh range, as the chapter
    keras.utils.set_random_seed(a.seed)
    generator, discriminator, gan = build()
    batch = 32
    y1 = np.array([[0.0]] * batch + [[1.0]] * batch, np.float32)
    y2 = np.ones((batch, 1), np.float32)
    n_batches = len(X) // batch                                      # the chapter's drop_remainder=True
    t, c = time.perf_counter(), time.process_time()
    for _ in range(a.epochs):
        order = np.random.permutation(len(X))
        for i in range(n_batches):
            X_batch = X[order[i * batch:(i + 1) * batch]]
            fake = generator(tf.random.normal([batch, CODING]), training=False)
            discriminator.trainable = True
            discriminator.train_on_batch(np.concatenate([fake, X_batch]), y1)   # phase 1: D
            discriminator.trainable = False
            gan.train_on_batch(tf.random.normal([batch, CODING]), y2)           # phase 2: G through frozen D
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    g = generator.predict(tf.random.normal([a.n, CODING]), batch_size=500, verbose=0)
    g = ((g.reshape(a.n, 28, 28) + 1.0) / 2.0).clip(0, 1)
    write_result(out, {"peer": f"keras {keras.__version__}", "model": "dcgan", "epochs": a.epochs,
                       "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1)}, samples=g)


if __name__ == "__main__":
    main()
