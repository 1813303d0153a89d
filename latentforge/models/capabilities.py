"""What a model can do, declared once per model class: :class:`Capability`.

Every model class states its capabilities in one class attribute::

    class VAE(Autoencoder):
        capabilities = Autoencoder.capabilities | Capability.SAMPLES | Capability.LIKELIHOOD \
            | Capability.GAUSSIAN_LATENT

and the commands, the report, export and the scikit-learn wrapper ask that one question
(``Capability.SAMPLES in model.capabilities``, or :func:`has`) instead of probing attributes. The
capabilities backed by a method (:data:`METHODS`) must match the methods the class implements:
:func:`check_declared` says where they do not (the registry's contract test, and
:func:`latentforge.register_model` for a user's model).
"""
from __future__ import annotations

import enum
from typing import Any

from ..errors import ConfigError, DataError


class Capability(enum.Flag):
    """One model's abilities (combine with ``|``; test with ``in``)."""

    #: ``encode(x[, y])`` -> codes
    ENCODES = enum.auto()
    #: ``decode(z[, y])`` -> data
    DECODES = enum.auto()
    #: ``reconstruct(x[, y])`` -> data
    RECONSTRUCTS = enum.auto()
    #: ``sample(n, labels=None, generator=None)`` -> n new samples in [0, 1]
    SAMPLES = enum.auto()
    #: trained on labels: the trainer passes ``y``, and encode / decode / sample take labels
    #: (a classifier: its targets)
    CONDITIONAL = enum.auto()
    #: CONDITIONAL, but data without labels trains it too
    LABELS_OPTIONAL = enum.auto()
    #: ``log_likelihood(x, k=..., y=None, generator=None)`` -> an estimate per sample
    LIKELIHOOD = enum.auto()
    #: ``predict_proba(x)`` -> class probabilities
    CLASSIFIES = enum.auto()
    #: a generator and a discriminator trained against each other (``latent``, ``generator``,
    #: ``discriminator``: the adversarial trainer)
    ADVERSARIAL = enum.auto()
    #: codes under a standard Gaussian prior: interpolate them along great circles (slerp)
    GAUSSIAN_LATENT = enum.auto()
    #: codes in [0, 1] (sigmoid codings): ``encode --binary`` may round them to hashes
    UNIT_CODES = enum.auto()
    #: ``greedy_stages()``: layer-wise (greedy) training, ``train --greedy``
    GREEDY = enum.auto()
    #: ``denoising_error(x, levels, draws, generator)`` -> per sample, the error of the predicted
    #: noise at a few steps of the forward process (diffusion models)
    DENOISES = enum.auto()
    #: ``sample(..., truncation=psi)``: the truncation trick (psi = 1: none)
    TRUNCATION = enum.auto()
    #: ``sample(..., guidance=w)``: guided sampling, e.g. DDPM's autoguidance (w = 1: none)
    GUIDANCE = enum.auto()
    #: per-layer styles from a mapping network that can be mixed between two latents
    #: (``sampling_generator.mapping`` / ``.synthesis``, StyleGAN's)
    STYLE_MIXING = enum.auto()

    def names(self) -> list[str]:
        """The lower-case names of the flags set, e.g. ``['encodes', 'decodes']``."""
        return [c.name.lower() for c in Capability if c in self and c.name]


NONE = Capability(0)

#: capabilities that stand for methods (or attributes) the class must have, and only then
METHODS: dict[Capability, tuple[str, ...]] = {
    Capability.ENCODES: ("encode",),
    Capability.DECODES: ("decode",),
    Capability.RECONSTRUCTS: ("reconstruct",),
    Capability.SAMPLES: ("sample",),
    Capability.LIKELIHOOD: ("log_likelihood",),
    Capability.CLASSIFIES: ("predict_proba",),
    Capability.GREEDY: ("greedy_stages",),
    Capability.ADVERSARIAL: ("latent",),
    Capability.DENOISES: ("denoising_error",),
}


#: the attribute names models set before ``capabilities``: read-only aliases of it now (a subclass
#: body that still sets one as a bool has it folded into its capabilities: ``LatentModel``)
LEGACY_FLAGS: dict[str, Capability] = {
    "uses_labels": Capability.CONDITIONAL,
    "labels_optional": Capability.LABELS_OPTIONAL,
    "adversarial": Capability.ADVERSARIAL,
    "gaussian_latent": Capability.GAUSSIAN_LATENT,
    "codes_in_unit_interval": Capability.UNIT_CODES,
}


class CapabilityAlias:
    """``model.uses_labels`` and the like: whether the (class's) capabilities hold one flag."""

    def __init__(self, flag: Capability):
        self.flag = flag

    def __get__(self, obj, owner) -> bool:
        return self.flag in owner.capabilities


def capabilities_of(model: Any) -> Capability:
    """A model's (or model class's) declared capabilities; none for anything else."""
    caps = getattr(model, "capabilities", NONE)
    return caps if isinstance(caps, Capability) else NONE


def has(model: Any, *caps: Capability) -> bool:
    """Whether ``model`` (an instance or a class) declares every capability in ``caps``."""
    declared = capabilities_of(model)
    return all(c in declared for c in caps)


def check_declared(cls: type) -> list[str]:
    """The mismatches between ``cls``'s declared capabilities and what it implements (empty: none)."""
    caps = getattr(cls, "capabilities", None)
    if not isinstance(caps, Capability):
        return [f"{cls.__name__}.capabilities must be a latentforge.Capability, got {type(caps).__name__}"]
    problems = []
    for cap, attrs in METHODS.items():
        present = all(callable(getattr(cls, a, None)) for a in attrs)
        if cap in caps and not present:
            problems.append(f"declares {cap.name} but has no {'/'.join(attrs)}()")
        elif present and cap not in caps:
            problems.append(f"has {'/'.join(attrs)}() but does not declare Capability.{cap.name}")
    if Capability.LABELS_OPTIONAL in caps and Capability.CONDITIONAL not in caps:
        problems.append("declares LABELS_OPTIONAL without CONDITIONAL")
    if Capability.RECONSTRUCTS in caps and Capability.ENCODES in caps and Capability.DECODES not in caps:
        problems.append("declares ENCODES and RECONSTRUCTS without DECODES")
    return problems


def check_label(model: Any, label: int, name: str) -> None:
    """ConfigError unless ``label`` is a class of the conditional ``model``."""
    k = getattr(model.config, "n_classes", None)
    if label < 0 or (k is not None and label >= k):
        top = f"0..{k - 1}" if k is not None else ">= 0"
        raise ConfigError(f"--label {label}: out of range for {name} (classes {top})")


def data_labels(model: Any, ds, name: str):
    """The data's labels where the model needs them (conditional models), else None; DataError
    when a conditional model gets data without labels or labels outside its classes."""
    if not has(model, Capability.CONDITIONAL):
        return None
    if ds.y is None:
        raise DataError(f"{ds.name}: {name} is conditional and needs the data's labels (give --labels)")
    k = getattr(model.config, "n_classes", None)
    if k is not None and len(ds.y) and (int(ds.y.min()) < 0 or int(ds.y.max()) >= k):
        raise DataError(f"{ds.name}: labels {int(ds.y.min())}..{int(ds.y.max())} do not fit {name}'s "
                        f"{k} classes")
    return ds.y


__all__ = ["Capability", "METHODS", "NONE", "LEGACY_FLAGS", "CapabilityAlias", "capabilities_of", "has", "check_declared", "check_label",
           "data_labels"]
