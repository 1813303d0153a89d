"""A model's layer table, like Keras' ``model.summary()``: every layer's name, type, output shape
and parameter count (``latentforge info RUN``).

Output shapes come from forward hooks during one pass on two dummy samples (zeros of the input
shape; class 0 for conditional models): the training forward pass, ``reconstruct`` for
autoencoders, the discriminator on the inputs and ``sample`` for generators -- whichever the model
has. A layer that none of them reaches shows ``-``. The batch axis is written ``N``.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

PROBE_N = 2


def _shape(out: Any) -> str | None:
    if isinstance(out, torch.Tensor):
        dims = list(out.shape)
        if dims and dims[0] == PROBE_N:
            return "(" + ", ".join(["N", *map(str, dims[1:])]) + ")"
        return "(" + ", ".join(map(str, dims)) + ")"
    if isinstance(out, (tuple, list)) and out:
        shapes = [s for s in (_shape(o) for o in out) if s]
        return ", ".join(shapes) if shapes else None
    return None


def _own_params(m: nn.Module) -> tuple[int, int]:
    ps = list(m.parameters(recurse=False))
    return sum(p.numel() for p in ps), sum(p.numel() for p in ps if p.requires_grad)


def layer_table(model: nn.Module) -> list[dict[str, Any]]:
    """One row per layer (a module without sub-modules, or one with parameters of its own):
    ``name``, ``type``, ``output_shape`` (None when the probe did not reach it), ``params``."""
    rows: dict[str, dict[str, Any]] = {}
    handles = []
    for name, m in model.named_modules():
        leaf = not any(True for _ in m.children())
        own, _ = _own_params(m)
        if (leaf or own) and name:
            rows[name] = {"name": name, "type": type(m).__name__, "output_shape": None, "params": own}

            def hook(mod, args, out, key=name):
                if rows[key]["output_shape"] is None:
                    rows[key]["output_shape"] = _shape(out)
            handles.append(m.register_forward_hook(hook))
    for pname, p in model.named_parameters(recurse=False):     # parameters of the model itself
        rows[f"param:{pname}"] = {"name": pname, "type": "Parameter",
                                  "output_shape": "(" + ", ".join(map(str, p.shape)) + ")", "params": p.numel()}
    try:
        _probe(model)
    finally:
        for h in handles:
            h.remove()
    return list(rows.values())


def _probe(model: nn.Module) -> None:
    """Run the model's passes on dummy inputs, with its mode, RNG and gradients untouched."""
    shape = getattr(model, "input_shape", None)
    if not shape:
        return
    dev = next((t.device for t in model.state_dict().values()), torch.device("cpu"))
    x = torch.zeros((PROBE_N, *shape), device=dev)
    y = torch.zeros(PROBE_N, dtype=torch.long, device=dev) if getattr(model, "uses_labels", False) else None
    was = model.training
    model.eval()
    calls = [lambda: model(x, y), lambda: model.reconstruct(x, y) if y is not None else model.reconstruct(x)]
    disc = getattr(model, "discriminator", None)
    if isinstance(disc, nn.Module) and callable(getattr(model, "to_internal", None)):
        calls.append(lambda: disc(model.to_internal(x), y))
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            for call in calls:
                with contextlib.suppress(Exception):
                    call()
            if callable(getattr(model, "sample", None)) and not hasattr(model, "unet"):
                with contextlib.suppress(Exception):
                    model.sample(PROBE_N, labels=y)
    finally:
        model.train(was)


def format_table(rows: list[dict[str, Any]], title: str = "") -> str:
    """The rows as a fixed-width text table with totals (Keras style)."""
    heads = ("Layer (type)", "Output shape", "Param #")
    cells = [(f"{r['name']} ({r['type']})", r["output_shape"] or "-", f"{r['params']:,}") for r in rows]
    w0 = max([len(heads[0])] + [len(c[0]) for c in cells])
    w1 = max([len(heads[1])] + [len(c[1]) for c in cells])
    w2 = max([len(heads[2])] + [len(c[2]) for c in cells])
    width = w0 + w1 + w2 + 4
    total = sum(r["params"] for r in rows)
    lines = ([title] if title else []) + [
        "=" * width, f"{heads[0]:<{w0}}  {heads[1]:<{w1}}  {heads[2]:>{w2}}", "=" * width]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c:>{w2}}" for a, b, c in cells]
    lines += ["=" * width, f"Total params: {total:,}"]
    return "\n".join(lines)
