"""The registry's contract, part two (part one: tests/test_models.py, whose tiny configs it reuses):
declared capabilities match what each model implements, and resuming a run equals the
uninterrupted run for every registered model."""
from __future__ import annotations

import pytest
import torch

from latentforge.models import REGISTRY, Autoencoder, get_model_class
from test_models import ENCODERS, GENERATIVE, TINY


# ------------------------------------------------------------------------------ declared capabilities
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_declared_capabilities_match_the_methods(name):
    """Each model declares what it can do once (``capabilities``); the declaration matches the
    methods it implements, and the older attribute names read the same flags."""
    from latentforge.models.capabilities import LEGACY_FLAGS, Capability, check_declared
    cls = get_model_class(name)
    assert isinstance(cls.capabilities, Capability) and cls.capabilities
    assert check_declared(cls) == []
    for attr, flag in LEGACY_FLAGS.items():
        assert getattr(cls, attr) is (flag in cls.capabilities)
    if Capability.ENCODES in cls.capabilities:
        assert name in ENCODERS
    assert (Capability.SAMPLES in cls.capabilities) == (name in GENERATIVE)


def test_check_declared_names_each_mismatch():
    from latentforge.models.capabilities import Capability, check_declared
    from latentforge.models.vae import VAE

    class NoSampling(VAE):                      # claims less than it has
        capabilities = VAE.capabilities & ~Capability.SAMPLES

    class Claims(Autoencoder):                  # claims more than it has
        capabilities = Autoencoder.capabilities | Capability.LIKELIHOOD

    assert check_declared(NoSampling) == ["has sample() but does not declare Capability.SAMPLES"]
    assert check_declared(Claims) == ["declares LIKELIHOOD but has no log_likelihood()"]


def test_a_subclass_setting_an_old_flag_declares_it():
    from latentforge.models.capabilities import Capability
    from latentforge.models.dense_ae import StackedAE

    class Labelled(StackedAE):
        uses_labels = True

    assert Capability.CONDITIONAL in Labelled.capabilities and Labelled.uses_labels is True
    assert Capability.CONDITIONAL not in StackedAE.capabilities and StackedAE.uses_labels is False


# ------------------------------------------------------------------------------ resume
# the default suite resumes one cheap model per kind of training; -m slow resumes them all
RESUME_DEFAULT = ["stacked-ae", "conditional-vae", "gan", "features"]


@pytest.mark.parametrize("name", [n if n in RESUME_DEFAULT else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(REGISTRY)])
def test_resume_equals_the_uninterrupted_run(name, tmp_path, tiny_images):
    """Two epochs in one go, and one epoch then ``resume`` to two: the same weights, buffers and
    history (every model of the registry; the default suite runs one per family)."""
    from latentforge.train import train
    cfg = {**TINY[name], "batch_size": 16, "seed": 3}
    if "n_classes" in cfg:
        cfg["n_classes"] = 4                     # the classes of tiny_images
    quiet = {"log": lambda m: None, "progress": False}
    straight = train(name, tiny_images, out=tmp_path / "s", overrides={**cfg, "epochs": 2}, **quiet)
    train(name, tiny_images, out=tmp_path / "r", overrides={**cfg, "epochs": 1}, **quiet)
    resumed = train(name, tiny_images, out=tmp_path / "r", overrides={"epochs": 2}, resume=True, **quiet)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{name}: resumed weights differ in {differ[:5]}"

    def numbers(history):
        return [{k: v for k, v in rec.items() if not k.startswith(("seconds", "samples_per_s"))} for rec in history]
    assert numbers(straight.history) == numbers(resumed.history)
    assert len(resumed.history) == 2
