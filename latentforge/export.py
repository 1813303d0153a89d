"""Export a trained model's encoder, decoder or generator to ONNX or TorchScript.

Each part is exported exactly as :class:`~latentforge.train.Run` runs it, in the data's units:

* ``encoder`` (autoencoders, VAEs: the mean of q(z|x)): input ``x``, samples (N, *sample shape);
  output ``codes`` (N, coding size).
* ``decoder`` (autoencoders, VAEs): input ``codes`` (N, coding size); output ``x``, samples.
* ``generator`` (GANs, with the EMA weights if any; VAEs): input ``z`` (N, coding size), drawn
  from N(0, I); output ``x``, images in [0, 1].

The batch axis N is dynamic. Both formats start from one ``torch.export`` graph (strict mode:
Python's ``len(x)`` stays symbolic, so the batch axis stays dynamic). ONNX is written by ``torch.onnx.export(dynamo=True)``
(needs ``onnx`` and ``onnxscript``: ``pip install 'latentforge[export]'``, which also brings
``onnxruntime`` to run it); TorchScript by tracing that graph, with its batch-size reads turned
into ``Tensor.size`` calls that the tracer records (a plain trace would freeze the batch size),
and is checked on a second batch size before it is written. Conditional models (which also
take labels) are not exported.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .models.capabilities import Capability, has

FORMATS = ("onnx", "torchscript")
PARTS = ("encoder", "decoder", "generator")
NAMES = {"encoder": ("x", "codes"), "decoder": ("codes", "x"), "generator": ("z", "x")}


class ExportPart(nn.Module):
    """One inference method of a model (``encode``, ``decode``) as a module of one input."""

    def __init__(self, model: nn.Module, method: str):
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, x: Tensor) -> Tensor:
        return getattr(self.model, self.method)(x)


def available_parts(model: nn.Module) -> list[str]:
    """The parts :func:`export_part` can export for ``model``."""
    if has(model, Capability.CONDITIONAL):
        return []
    if has(model, Capability.ADVERSARIAL):
        return ["generator"]
    parts = []
    if has(model, Capability.ENCODES, Capability.DECODES):
        parts += ["encoder", "decoder"]
    if has(model, Capability.GAUSSIAN_LATENT) and "decoder" in parts:
        parts.append("generator")                      # a VAE generates with its decoder from N(0, I)
    return parts


def part_module(model: nn.Module, part: str, name: str = "") -> tuple[ExportPart, tuple[int, ...]]:
    """The module computing ``part`` of ``model`` and the shape of one input sample.

    ConfigError for an unknown part or one the model lacks (naming the parts it has).
    """
    name = name or getattr(model, "name", type(model).__name__)
    if part not in PARTS:
        raise ConfigError(f"--part {part!r}: must be one of {', '.join(PARTS)}")
    if has(model, Capability.CONDITIONAL):
        raise ConfigError(f"model {name!r} is conditional (it also takes labels); export supports "
                          f"unconditional models only")
    parts = available_parts(model)
    if part not in parts:
        have = f"it has: {', '.join(parts)}" if parts else "it has none of encoder, decoder, generator"
        raise ConfigError(f"model {name!r} has no {part} to export ({have})")
    model.eval()
    with torch.no_grad():
        if part == "encoder":
            return ExportPart(model, "encode"), tuple(model.input_shape)
        if has(model, Capability.ADVERSARIAL):
            return ExportPart(model, "decode"), tuple(model.latent(2, device="cpu").shape[1:])
        codes = model.encode(torch.zeros((2, *model.input_shape), device=_device(model)))
        return ExportPart(model, "decode"), tuple(codes.shape[1:])


def _device(model: nn.Module) -> torch.device:
    return next(iter(model.state_dict().values())).device


def export_part(model: nn.Module, part: str, fmt: str, out: str | Path, name: str = "") -> Path:
    """Write ``part`` of ``model`` (on the CPU, in eval mode) to ``out`` as ``fmt``; returns ``out``."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: must be one of {', '.join(FORMATS)}")
    model = model.cpu().eval()
    module, in_shape = part_module(model, part, name)
    out = Path(out)
    example = torch.rand((2, *in_shape))
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), _quiet_torch_loggers():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            program = torch.export.export(module, (example,), dynamic_shapes={"x": {0: batch}}, strict=True)
        if fmt == "onnx":
            _write_onnx(program, example, part, out)
        else:
            _write_torchscript(program, module, in_shape, out)
    return out


@contextlib.contextmanager
def _quiet_torch_loggers():
    """Silence the exporters' own log lines (``torchvision is not installed. Skipping
    torchvision::nms``...): third-party chatter that says nothing about the user's model. Errors
    still raise."""
    names = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx", "onnxscript")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _write_onnx(program, example: Tensor, part: str, out: Path) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"--format onnx needs the {e.name!r} package: pip install 'latentforge[export]'") from None
    inp, outp = NAMES[part]
    onnx_program = torch.onnx.export(program, (example,), dynamo=True, input_names=[inp], output_names=[outp],
                                     external_data=False, verbose=False)
    onnx_program.save(str(out))


def _write_torchscript(program, module: ExportPart, in_shape: tuple[int, ...], out: Path) -> None:
    gm = _trace_friendly(program.module())
    with torch.no_grad():
        traced = torch.jit.trace(gm, (torch.rand((2, *in_shape)),), check_trace=False)
        check = torch.rand((3, *in_shape))
        if not torch.allclose(traced(check), module(check), rtol=1e-4, atol=1e-5):
            raise ConfigError(f"TorchScript export of {module.method} does not reproduce the model on "
                              f"another batch size; use --format onnx")
    for p in traced.parameters():          # an inference module: outputs need no gradients
        p.requires_grad_(False)
    traced.save(str(out))


def _trace_friendly(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Rewrite an exported graph so that ``torch.jit.trace`` keeps its batch axis dynamic.

    The tracer records a size only when it is read with ``Tensor.size`` and passed to a ``Tensor``
    method: each ``aten.sym_size.int(x, d)`` becomes ``x.size(d)``, and each op that takes such a
    size becomes the ``Tensor`` method of the same name (``reshape``, ``view``, ``expand``...).
    """
    g = gm.graph
    sizes: set[torch.fx.Node] = set()
    for node in list(g.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten.sym_size.int:
            with g.inserting_before(node):
                new = g.call_method("size", node.args)
            node.replace_all_uses_with(new)
            g.erase_node(node)
            sizes.add(new)
        elif node.op == "call_method" and node.target == "size":
            sizes.add(node)

    def uses_size(a) -> bool:
        if isinstance(a, torch.fx.Node):
            return a in sizes
        return isinstance(a, (list, tuple)) and any(uses_size(b) for b in a)

    for node in list(g.nodes):
        if (node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
                and uses_size(node.args)):
            method = node.target._schema.name.split("::")[1]
            if not hasattr(Tensor, method):
                raise ConfigError(f"TorchScript export: cannot keep the batch axis dynamic through {method}; "
                                  f"use --format onnx")
            with g.inserting_before(node):
                new = g.call_method(method, node.args, node.kwargs)
            node.replace_all_uses_with(new)
            g.erase_node(node)
    gm.recompile()
    return gm
