"""The report's metrics, as people read them: one row per metric with its source, bookkeeping
apart, numbers formatted for reading, and comparisons only between like quantities.

* :func:`split_metrics` turns the last epoch's losses, the metrics the report computes on the
  held-out data and ``RUN_DIR/metrics.json`` (written by ``latentforge evaluate --json``) into
  one row per metric -- ``metrics.json`` wins where both have a metric (it is computed on the
  whole held-out split; the report's own numbers on at most a few thousand samples) -- and a
  separate table of bookkeeping (sample counts, subset sizes, timings, the feature network's
  record). Generative metrics carry the feature network's own quality in their source, and an
  untrusted feature network (near chance) gives a warning.
* :func:`fmt_number`: ``21,140`` (not ``2.114e+04``), 4 significant digits, never ``-0``.
* :func:`loss_kind`: what a run's ``train_loss`` measures, so that ``compare`` only ranks runs
  whose losses are the same quantity.
"""
from __future__ import annotations

import math
from typing import Any

#: keys (the last part of a flattened ``metrics.json`` key) that count things or say how a metric
#: was computed, rather than measure the model
BOOKKEEPING = {
    "n", "n_real", "n_generated", "n_train", "n_test", "code_size", "knn_k", "kid_subsets",
    "kid_subset_size", "k_precision_recall", "k_density_coverage", "seconds", "seconds_sampling",
    "seconds_metrics", "iw_nll_k", "psnr_data_range", "feature_scale", "epochs", "feature_size",
    "n_classes", "trained_with_labels", "chance_accuracy", "split", "run_dir", "source", "data",
    "fingerprint", "model", "iw_nll_units", "warning",
}
#: metrics computed on a generator's samples in the feature network's space
GENERATIVE_PREFIX = "generative."


def fmt_number(v: Any) -> str:
    """A value as people read it: thousands separators for large numbers (``21,140``), 4
    significant digits otherwise, scientific notation only for tiny values; ``-0.0`` is ``0``."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        if math.isinf(v):
            return str(v)
        if v == 0:
            return "0"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 1e-3:
            text = f"{v:.4g}"
            return "0" if float(text) == 0 else text
        return f"{v:.3e}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_number(x) for x in v) + "]"
    return str(v)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def is_bookkeeping(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return last in BOOKKEEPING or key.startswith(f"{GENERATIVE_PREFIX}features.")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def feature_quality(saved: dict[str, Any]) -> tuple[str, str | None]:
    """``(a short description of the feature network's quality, a warning or None)``."""
    f = (saved.get("generative") or {}).get("features") or {}
    acc, mse = f.get("valid_accuracy"), f.get("valid_mse")
    if _number(acc):
        chance = f.get("chance_accuracy")
        what = f"accuracy {fmt_number(acc)}" + (f" (chance {fmt_number(chance)})" if _number(chance) else "")
    elif _number(mse):
        what = f"reconstruction MSE {fmt_number(mse)} (mean: 1)"
    else:
        what = "quality unknown"
    trusted = f.get("trusted", (saved.get("generative") or {}).get("trusted"))
    verdict = {True: "trusted", False: "NOT trusted", None: "unverified"}.get(trusted, "unverified")
    return f"feature net {what}: {verdict}", f.get("warning")


def split_metrics(last: dict[str, Any] | None, computed: list[tuple[str, Any, str]],
                  saved: dict[str, Any] | None) -> tuple[list[tuple[str, Any, str]], list[tuple[str, Any, str]],
                                                         list[str]]:
    """``(metric rows, bookkeeping rows, notes)``; rows are ``(name, value, source)``."""
    rows: dict[str, tuple[str, Any, str]] = {}
    books: list[tuple[str, Any, str]] = []
    notes: list[str] = []
    if last:
        src = f"history, epoch {last.get('epoch', '?')}"
        for k, v in last.items():
            if k.startswith(("train_", "valid_")) and _number(v):
                rows[k] = (k, v, src)
    if isinstance(saved, dict):
        flat = flatten(saved)
        k_nll = saved.get("iw_nll_k")
        gen_src = "metrics.json; " + feature_quality(saved)[0]
        warning = feature_quality(saved)[1] if "generative" in saved else None
        if warning:
            notes.append(f"warning: {warning}")
        for k, v in flat.items():
            if is_bookkeeping(k):
                if _number(v) or isinstance(v, (str, bool)):
                    books.append((k, v, "metrics.json"))
                continue
            if not _number(v):
                continue
            if k.startswith(GENERATIVE_PREFIX):
                rows[k.removeprefix(GENERATIVE_PREFIX)] = (k.removeprefix(GENERATIVE_PREFIX), v, gen_src)
            else:
                src = f"metrics.json (evaluate, {saved.get('n', '?')} {saved.get('split', 'held-out')} samples"
                src += f", k={k_nll})" if k == "iw_nll" and k_nll else ")"
                rows[k] = (k, v, src)
    for name, v, src in computed:           # the report's own numbers where evaluate gave none
        if name in rows:
            continue
        rows[name] = (name, v, src)
    return list(rows.values()), books, notes


def loss_kind(summary: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """What ``train_loss`` measures for a run: the model's loss parts (``bce``, ``bce + kl``,
    ``mse (standardised)``, ``d_loss + g_loss``, ...). Runs are ranked on a loss only when their
    kinds are equal."""
    cfg = summary.get("config") or {}
    last = history[-1] if history else {}
    parts = sorted(k.removeprefix("train_") for k in last
                   if k.startswith("train_") and k != "train_loss" and _number(last[k])
                   and not k.endswith(("accuracy", "d_real", "d_fake")))
    kind = " + ".join(parts) or str(cfg.get("loss", "loss"))
    if cfg.get("normalize_scale") == "feature" and cfg.get("output_activation") == "linear":
        kind += " (standardised)"
    return kind
