"""Continuous (tabular) data: the output layer, loss and scaling an autoencoder gets by default.

One implementation for the command line (``latentforge train``), :func:`latentforge.train` and
the scikit-learn estimators (``latentforge.sklearn``).

The chapter's image autoencoders end in a sigmoid trained with binary cross-entropy (a Bernoulli
likelihood for the VAE), which needs values in [0, 1]. For continuous data that leave [0, 1] --
a CSV of measurements, a non-image ``.npy`` -- and a model whose default is that sigmoid output,
unless the user named ``output_activation``, ``loss`` or (VAEs) ``likelihood``:

* the output becomes linear with an MSE loss; the VAE gets a Gaussian likelihood
  (``likelihood = gaussian``: a learned variance per feature, ``gaussian_variance = fixed`` for 1);
* each feature is standardised (``normalize_scale = feature``: mean 0, standard deviation 1),
  so that columns in large units do not drown the others. The means and standard deviations are
  buffers of the model: they travel in the checkpoint (safetensors) and are undone by
  ``decode``, ``reconstruct`` and ``generate``, whose outputs are in the data's units;
* without a named ``optimizer`` the model trains with Adam at lr 1e-3 (unless ``lr`` is given):
  the chapter's plain-SGD rates (stacked-ae: lr 1.5) are tuned for BCE on 784 pixels and diverge
  with an MSE on a few standardised columns.

Naming ``output_activation = linear`` alone implies ``loss = mse``; ``likelihood = gaussian``
alone implies a linear output. Images outside [0, 1] are refused on the command line with
advice (rescale them); the scikit-learn estimators switch them too (with one global scale, which
keeps the images' geometry). Models whose default output is already linear (``linear-ae``, the
chapter's PCA equivalent) keep their one global scale unless ``normalize_scale = feature`` is set.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

ADAM_LR = 1e-3


def _default(cls, name: str) -> Any:
    for f in fields(cls.config_class):
        if f.name == name:
            return f.default
    return None


def continuous_defaults(cls, given: dict[str, Any], value_range: tuple[float, float], *, is_image: bool,
                        switch_images: bool = False) -> tuple[dict[str, Any], str | None]:
    """The config values to add for data with values in ``value_range`` (``(min, max)``).

    ``cls``: the model class; ``given``: the config values the user named (``--set``, a config
    file, flags; these are never changed); ``is_image``: whether the data are images;
    ``switch_images``: switch images outside [0, 1] too (the scikit-learn estimators do).

    Returns ``(values, note)``: the values to add to ``given`` and one line saying what was chosen
    and why (None when nothing was).
    """
    default_out = _default(cls, "output_activation")
    if default_out is None:                 # not an autoencoder: nothing to choose
        return {}, None
    has_likelihood = _default(cls, "likelihood") is not None
    lo, hi = value_range
    in_unit = lo >= 0.0 and hi <= 1.0
    values: dict[str, Any] = {}
    auto = False
    if has_likelihood and str(given.get("likelihood", "")) == "gaussian":
        if "output_activation" not in given:
            values["output_activation"] = "linear"
        if "loss" not in given:
            values["loss"] = "mse"
    elif "output_activation" in given:
        if str(given["output_activation"]) == "linear" and "loss" not in given:
            values["loss"] = "mse"
    elif ("loss" not in given and "likelihood" not in given and default_out == "sigmoid" and not in_unit
          and (switch_images or not is_image)):
        values.update(output_activation="linear", loss="mse")
        auto = True
    out = str(given.get("output_activation", values.get("output_activation", default_out)))
    if has_likelihood and "likelihood" not in given:
        values["likelihood"] = "bernoulli" if out == "sigmoid" else "gaussian"
    notes: list[str] = []
    if default_out == "sigmoid" and out == "linear":
        if "normalize_scale" not in given and not is_image:
            values["normalize_scale"] = "feature"
            notes.append("each feature standardised (mean 0, std 1; undone on output)")
        if "optimizer" not in given:
            values["optimizer"] = "adam"
            if "lr" not in given:
                values["lr"] = ADAM_LR
            notes.append(f"Adam lr {given.get('lr', ADAM_LR):g}")
    if not auto:
        if not notes:
            return values, None
        return values, ("a linear output on continuous data: " + ", ".join(notes)
                        + " (--set normalize_scale=global or optimizer=... to choose yourself)")
    what = "Gaussian likelihood" if has_likelihood else "linear output + MSE"
    note = (f"values lie in [{lo:.4g}, {hi:.4g}], outside [0, 1]: continuous data, so {what}"
            + (", " + ", ".join(notes) if notes else "")
            + " (--set output_activation=... or loss=... to choose yourself)")
    return values, note


