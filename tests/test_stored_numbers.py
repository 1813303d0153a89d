"""Regression tests on stored numbers (diffusers-style): every generative model trains a small,
deterministic run and the statistics of its samples must stay within stored bounds, so that an
initialisation, loss or schedule change that ruins samples fails the suite, not a user.

Default suite (about 1-3 CPU-seconds a model): each model trains on the embedded ``digits`` (8x8,
1,797 images) with seed 0 for a few epochs and draws 500 samples (``generator`` seeded 0). Stored
per model: the samples' mean intensity and border (background) mean, the share of samples whose
border is brighter than any real digit's (> 0.3: "inverted"), the mean per-pixel spread over the
samples (a collapse to one image drives it to 0), and what a judge (logistic regression trained on
real digits, 92 % held out) makes of them: classes covered (>= 2 % of samples), mean confidence,
and for conditional models the share generated with the requested label. Appearance numbers must
stay within a window around the stored value (a change either way is a change of the model);
quality numbers have a floor a little under the stored value (improvements pass).

When a change is meant to move these numbers, print the new ones with
``LATENTFORGE_PRINT_NUMBERS=1 pytest -s tests/test_stored_numbers.py`` and update ``STORED``.

The ``slow`` tests train the defaults on ``../shared/data/mnist-4k`` (28x28) and check the figures of
issue 17 with the judge of ``bench/gan_modes.py`` (an MLP on real digits).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from latentforge.data import load_data
from latentforge.train.run import train

QUIET = {"log": lambda m: None, "progress": False}

# model -> (config overrides of the small run, stored numbers)
STORED: dict[str, tuple[dict, dict]] = {}
WINDOW = {"mean": 0.04, "border": 0.05, "pix_std": 0.04}        # appearance: |value - stored| <= window
FLOOR = {"classes": 1, "confidence": 0.08, "label_acc": 0.08}    # quality: value >= stored - floor
INVERTED_SLACK = 0.08                                            # inverted share <= stored + slack


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def judge(digits):
    from sklearn.linear_model import LogisticRegression
    x = digits.x.reshape(len(digits), -1)
    return LogisticRegression(max_iter=300).fit(x[:1500], digits.y[:1500])


BORDER = np.ones((8, 8), bool)
BORDER[1:7, 2:6] = False                                         # the frame around a digit's core


def sample_stats(model, judge, n: int = 500) -> dict:
    labels = torch.arange(n) % 10 if model.uses_labels else None
    with torch.no_grad():
        s = model.sample(n, labels, generator=torch.Generator().manual_seed(0)).numpy().reshape(n, 8, 8)
    p = judge.predict_proba(s.reshape(n, -1))
    pred = p.argmax(1)
    share = np.bincount(pred, minlength=10) / n
    out = {"mean": float(s.mean()), "border": float(s[:, BORDER].mean()),
           "inverted": float((s[:, BORDER].mean(1) > 0.3).mean()), "pix_std": float(s.std(0).mean()),
           "classes": int((share >= 0.02).sum()), "confidence": float(p.max(1).mean())}
    if labels is not None:
        out["label_acc"] = float((pred == labels.numpy()).mean())
    return out


def check(name: str, got: dict, stored: dict) -> None:
    if os.environ.get("LATENTFORGE_PRINT_NUMBERS"):
        print(f"\n{name}: " + ", ".join(f'"{k}": {round(v, 3)}' for k, v in got.items()))
    bad = []
    for k, v in stored.items():
        if k in WINDOW and abs(got[k] - v) > WINDOW[k]:
            bad.append(f"{k} {got[k]:.3f} outside {v} +- {WINDOW[k]}")
        elif k in FLOOR and got[k] < v - FLOOR[k]:
            bad.append(f"{k} {got[k]:.3f} below {v} - {FLOOR[k]}")
        elif k == "inverted" and got[k] > v + INVERTED_SLACK:
            bad.append(f"inverted share {got[k]:.3f} above {v} + {INVERTED_SLACK}")
    assert not bad, f"{name}: samples moved from the stored numbers: {'; '.join(bad)} (all: {got})"


def _register(name, overrides, numbers):
    STORED[name] = (overrides, numbers)


_register("vae", {"epochs": 10},
          {"mean": 0.361, "border": 0.265, "inverted": 0.254, "pix_std": 0.219, "classes": 10, "confidence": 0.534})
_register("conditional-vae", {"epochs": 10},
          {"mean": 0.306, "border": 0.161, "inverted": 0.0, "pix_std": 0.141, "classes": 10, "confidence": 0.95,
           "label_acc": 1.0})
_register("gan", {"epochs": 5},
          {"mean": 0.333, "border": 0.173, "inverted": 0.0, "pix_std": 0.21, "classes": 9, "confidence": 0.697})
_register("dcgan", {"epochs": 2},
          {"mean": 0.326, "border": 0.168, "inverted": 0.0, "pix_std": 0.192, "classes": 10, "confidence": 0.625})
_register("conditional-gan", {"epochs": 2},
          {"mean": 0.312, "border": 0.145, "inverted": 0.0, "pix_std": 0.206, "classes": 10, "confidence": 0.862,
           "label_acc": 0.9})
# the growth schedule fitted to 3 epochs at the defaults (batch 16, lr 6e-3: 4x4, then 8x8 faded in, then
# stable; ~300 steps: 2 epochs at lr 4e-3 left 37 % of the samples with grey backgrounds; the former batch 32
# at lr 3e-3: 6 %, 9 classes)
_register("progan", {"epochs": 3},
          {"mean": 0.341, "border": 0.205, "inverted": 0.012, "pix_std": 0.211, "classes": 10, "confidence": 0.552})
# 20 steps of a narrow StyleGAN (its step costs ~0.3 CPU-s even at 8x8): far from digits, but any change
# to its initialisation, mapping network or loss moves these numbers
_register("stylegan", {"epochs": 2, "steps_per_epoch": 10, "batch_size": 8, "channels": [16, 8], "coding_size": 16,
                       "w_dim": 16, "mapping_layers": 4},
          {"mean": 0.43, "border": 0.437, "inverted": 1.0, "pix_std": 0.109, "classes": 5, "confidence": 0.348})
# the CPU-sized defaults (v-prediction, MSE, Adam with a cosine lr, batch 64, DDIM, autoguidance by the
# network after epoch 1) on a narrow U-Net, 104 steps as the earlier 2 epochs at batch 32 (noise
# prediction: 65 % of its samples had a grey background; unguided: mean 0.325, pix_std 0.238)
_register("ddpm", {"epochs": 4, "channels": 8, "channel_mult": [1, 2], "steps": 200, "sample_steps": 20},
          {"mean": 0.278, "border": 0.168, "inverted": 0.002, "pix_std": 0.172, "classes": 10, "confidence": 0.53})


@pytest.mark.parametrize("name", list(STORED))
def test_small_run_samples_match_stored_numbers(name, digits, judge, tmp_path):
    overrides, stored = STORED[name]
    run = train(name, digits, out=tmp_path / name, overrides={"seed": 0, "sample_every": 0, **overrides}, **QUIET)
    check(name, sample_stats(run.model, judge), stored)


# ---------------------------------------------------------------------------------------------- slow
@pytest.fixture(scope="module")
def mnist4k():
    from conftest import mnist4k_path
    return load_data(str(mnist4k_path()))


@pytest.fixture(scope="module")
def mlp_judge():
    """The judge of bench/gan_modes.py: an MLP trained on 3,500 real digits of mnist-4k."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from gan_modes import reference_classifier
    clf, acc = reference_classifier()
    assert acc > 0.9
    return clf


def judged_defaults(name, data, judge, tmp_path, **overrides) -> np.ndarray:
    """Train ``name`` at its defaults on ``data``; its 1,000 samples must have no inverted background
    and cover every class (>= 2 % each, by the judge). Returns the judge's class probabilities."""
    run = train(name, data, out=tmp_path / name, overrides={"sample_every": 0, **overrides}, **QUIET)
    x = run.model.sample(1000, generator=torch.Generator().manual_seed(0)).numpy().reshape(1000, -1)
    assert (x.mean(1) > 0.3).sum() == 0
    proba = judge.predict_proba(x)
    share = np.bincount(proba.argmax(1), minlength=10) / 1000
    assert (share >= 0.02).all(), share
    return proba


@pytest.mark.slow
def test_vae_defaults_sample_no_inverted_digits_of_every_class(mnist4k, mlp_judge, tmp_path):
    """Issue 17: 27-33 % of prior samples had grey/white backgrounds (LeCun init, 25 epochs)."""
    judged_defaults("vae", mnist4k, mlp_judge, tmp_path, seed=1)


@pytest.mark.slow
def test_conditional_vae_generates_the_label_asked(mnist4k, mlp_judge, tmp_path):
    """Issue 17: ``generate --label k`` gave digit k about half the time; now >= 90 % for every k."""
    run = train("conditional-vae", mnist4k, out=tmp_path / "cvae", overrides={"seed": 1, "sample_every": 0}, **QUIET)
    g = torch.Generator().manual_seed(0)
    for k in range(10):
        x = run.model.sample(200, torch.full((200,), k), generator=g).numpy().reshape(200, -1)
        assert (mlp_judge.predict(x) == k).mean() >= 0.9, k


@pytest.mark.slow
def test_progan_two_epochs_end_at_full_resolution(mnist4k, tmp_path):
    """Issue 17: a 2-epoch ProGAN stopped at 4x4; its fitted schedule now ends at 28x28, faded in.
    (Two epochs give dark backgrounds and noisy, textured blobs at 28x28, not yet readable digits.)"""
    run = train("progan", mnist4k, out=tmp_path / "pg", overrides={"seed": 1, "epochs": 2, "sample_every": 0}, **QUIET)
    m = run.model
    assert (m.resolution, m.alpha) == (28, 1.0)
    x = m.sample(500, generator=torch.Generator().manual_seed(0)).numpy().reshape(500, -1)
    assert (x.mean(1) > 0.3).mean() < 0.05


@pytest.mark.slow
def test_progan_defaults_sample_digits_of_every_class(mnist4k, mlp_judge, tmp_path):
    """Issue 17: ProGAN's defaults (WGAN-GP, RMSprop 1e-3, 10 epochs) gave blotchy digits (9 classes,
    FID 16.6 against the DCGAN's 5.5 at equal CPU time); bce + lazy R1, Adam(0, 0.99), an EMA of G and
    batch 16 at lr 6e-3 give smooth strokes of every class (on mnist-4k[:3600], seed 1: mean confidence
    0.859, 59 % > 0.9, FID 3.3; the DCGAN: 0.856, 58 %, 5.5; batch 32 at lr 3e-3: 0.839, 53 %, 5.8)."""
    proba = judged_defaults("progan", mnist4k, mlp_judge, tmp_path, seed=1)
    assert proba.max(1).mean() >= 0.83 and (proba.max(1) > 0.9).mean() >= 0.52


@pytest.mark.slow
def test_ddpm_defaults_sample_clean_digits_of_every_class(mnist4k, mlp_judge, tmp_path):
    """Issue 17: the CPU-sized defaults (~15 CPU-minutes). Measured: 10 classes, none inverted, 83 %
    of samples above confidence 0.9 with autoguidance (the issue's aim: 80 %; unguided 70 %; real
    digits: 90 %)."""
    proba = judged_defaults("ddpm", mnist4k, mlp_judge, tmp_path)
    assert (proba.max(1) > 0.9).mean() >= 0.78
