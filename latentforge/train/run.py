"""Runs: train a registered model on a data source into a run folder, and load it back.

A run folder holds ``checkpoint.safetensors`` (weights, optimizer, RNG and trainer state, and in
its metadata the model name, config and data description: it alone is enough to rebuild the
model), ``run.json`` (a readable summary: model, config, data, last metrics, timing, hardware)
and ``history.json`` (one record per epoch).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import __version__
from ..config import ENGINE_KEYS, config_to_dict, default_lr, load_config_file, make_config, migrate_legacy_engine
from ..engine import check_precision
from ..errors import CheckpointError, ConfigError, DataError
from ..models import REGISTRY, LatentModel, get_model_class, model_class_path
from ..data import Dataset, large, load_data, train_valid_split
from ..data.large import BlockArray, StreamingDataset, full_fingerprint, sampled_fingerprint
from ..models.capabilities import Capability
from ..models.classifier import init_from_autoencoder
from .checkpoint import NpyWriter, load_checkpoint, load_module_state, split_prefix
from . import distributed as ddp
from .adversarial import AdversarialTrainer
from .callbacks import progress_enabled
from .summary import HISTORY_JSON, RUN_JSON, run_summary, write_run_files
from .trainer import CHECKPOINT, Trainer

#: config fields that may change when a run is resumed (how long it trains, not what it is)
RESUMABLE_CHANGES = ("epochs", "finetune_epochs", "early_stopping", "nan_policy", "divergence_policy", *ENGINE_KEYS)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: no MPS device is available here")
    return dev


def fingerprint(x, kind: str = "full") -> str:
    """A short hash of the data, to refuse resuming a run on other data: of every value
    (``full``: streamed data is read block by block) or of the shape and a fixed sample of rows
    (``sampled``, what streamed data records: it costs a few reads, not a pass over the file)."""
    if kind == "sampled":
        return sampled_fingerprint(x)
    if isinstance(x, BlockArray):
        return full_fingerprint(x)
    h = hashlib.blake2b(digest_size=12)
    h.update(str(x.shape).encode())
    h.update(np.ascontiguousarray(x).view(np.uint8).data)
    return h.hexdigest()


@dataclass
class Run:
    """A trained (or training) model with its folder, config and metadata."""

    run_dir: Path
    name: str
    model: LatentModel
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self):
        return self.model.config

    def __repr__(self) -> str:
        """One line: model, data, epochs, last losses, folder."""
        hist = self.history
        last = hist[-1] if hist else {}
        losses = " ".join(f"{k}={_short(v)}" for k, v in last.items()
                          if k.endswith("loss") and isinstance(v, (int, float)))
        src = self.data_info.get("source", "?")
        epochs = self.meta.get("trainer", {}).get("epoch", len(hist))
        return (f"Run({self.name!r}, data={Path(str(src)).name or src!r}, epochs={epochs}"
                + (f", {losses}" if losses else "") + f", folder={str(self.run_dir)!r})")

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.meta.get("trainer", {}).get("history", []))

    @property
    def data_info(self) -> dict[str, Any]:
        return dict(self.meta.get("data", {}))

    @property
    def device(self) -> torch.device:
        return next(iter(self.model.state_dict().values())).device

    # -- batched inference in the data's units, as numpy ---------------------------------------
    def batched(self, fn: Callable[..., torch.Tensor], x: np.ndarray, batch_size: int,
                 progress: bool | None = None, desc: str = "", y: np.ndarray | None = None,
                 out: str | Path | None = None, row_shape: tuple[int, ...] | None = None) -> np.ndarray:
        """``fn(xb[, y=yb])`` over batches of ``x`` in eval and inference mode, as one numpy array.

        ``x`` is anything with ``len`` and row slices (an array, a memory map, a
        :class:`~latentforge.data.readers.NpyStream`). With ``out`` (a ``.npy`` path) the
        results stream batch by batch into that file (atomically: a temporary file renamed when
        complete; each row reshaped to ``row_shape`` if given) and a read-only memory map of it is
        returned, so memory stays that of one batch whatever ``len(x)``. Floating results are
        float32; integer/bool results keep their dtype.
        """
        self.model.eval()
        result: np.ndarray | None = None      # filled batch by batch (no list of parts to concatenate)
        n = len(x)
        bar = None
        if progress_enabled(progress) and n > batch_size:
            from tqdm.auto import tqdm
            bar = tqdm(total=n, desc=desc, unit="img", leave=False, file=sys.stderr)
        writer = None
        if out is not None:
            try:
                writer = NpyWriter(out, n, row_shape)
            except OSError as e:
                raise DataError(f"{out}: cannot write: {e.strerror or e}") from None
        try:
            with torch.inference_mode():
                for i in range(0, n, batch_size):
                    xb = torch.as_tensor(np.ascontiguousarray(x[i:i + batch_size]), dtype=torch.float32).to(self.device)
                    kw = {} if y is None else {"y": torch.as_tensor(y[i:i + batch_size]).to(self.device)}
                    r = fn(xb, **kw)
                    if len(r) != len(xb):
                        raise ValueError(f"{desc}: {len(r)} rows of results for a batch of {len(xb)} rows")
                    r = (r.float() if r.is_floating_point() else r).cpu().numpy()
                    if writer is not None:
                        writer.write(r)
                    else:
                        if result is None:
                            result = np.empty((n, *r.shape[1:]), r.dtype)
                        result[i:i + len(r)] = r
                    if bar is not None:
                        bar.update(len(xb))
            if writer is not None:
                writer.close()
        except BaseException as e:
            if writer is not None:
                writer.abort()
                if isinstance(e, OSError):
                    raise DataError(f"{out}: cannot write: {e.strerror or e}") from None
            raise
        finally:
            if bar is not None:
                bar.close()
        if writer is not None:
            return np.load(out, mmap_mode="r")
        return result if result is not None else np.zeros((0,), np.float32)

    def data_splits(self, source: str | None = None, labels: str | Path | None = None, *, download: bool = True,
                    classes=None, exclude_classes=None):
        """``(data, train part, held-out part, split name)`` of ``source`` (default: the run's own).

        The run's own data: the run's training / held-out split, as it was trained (after the class
        filter the run recorded). Other data: no training part, and all of it held out (split name
        ``"all"``). ``classes`` / ``exclude_classes`` then keep / drop labels in every part.
        """
        from ..data import load_data, train_valid_split
        from ..data.classes import apply_recorded
        info = self.data_info
        src = source or info.get("source")
        if src is None:
            raise DataError("no --data given and the run does not record its data source")
        own = same_source(src, info.get("source"))
        if source is None and _is_path(src) and not Path(src).expanduser().exists():
            raise DataError(f"{self.run_dir}: the run's data {src} is missing (moved or deleted); "
                            f"pass it with --data PATH")
        if own and labels is None and info.get("labels_path"):
            labels = info["labels_path"]            # the run's --labels, recorded when it trained
            if not Path(labels).exists():
                raise DataError(f"{self.run_dir}: the labels file the run was trained with, {labels}, is missing "
                                f"(moved or deleted); pass it with --labels PATH")
        ds = load_data(src, labels=labels, download=download)
        if own:
            ds = apply_recorded(ds, info.get("class_filter"))
        parts: tuple = (ds, None, ds, "all")
        if own and info.get("valid_fraction"):
            train, valid = train_valid_split(ds, info["valid_fraction"], seed=self.config.seed)
            if valid is not None:
                parts = (ds, train, valid, "held-out")
        if classes is None and exclude_classes is None:
            return parts
        try:
            return tuple(p.filter_classes(classes, exclude_classes) if p is not None and not isinstance(p, str)
                         else p for p in parts)
        except DataError as e:
            if not own or not info.get("class_filter"):
                raise
            from ..data.classes import describe_filter
            raise DataError(f"{e}: the run's own data is its {describe_filter(info['class_filter'])} "
                            f"(`latentforge score` scores any class)") from None

    def _labels_for(self, y: np.ndarray | None, n: int) -> np.ndarray | None:
        """The labels to pass to a conditional model (None for the others)."""
        if Capability.CONDITIONAL not in self.model.capabilities:
            return None
        if y is None:
            raise DataError(f"model {self.name!r} is conditional: it needs the data's labels (give --labels)")
        if len(y) != n:
            raise DataError(f"{len(y)} labels for {n} samples")
        return y

    def _require(self, method: str) -> None:
        cap = {"encode": Capability.ENCODES, "decode": Capability.DECODES, "reconstruct": Capability.RECONSTRUCTS}[method]
        if cap not in self.model.capabilities:
            raise ConfigError(f"model {self.name!r} has no {method}()")

    def encode(self, x: np.ndarray, batch_size: int = 4096, progress: bool | None = None,
               y: np.ndarray | None = None, out: str | Path | None = None, binary: bool = False,
               source: str = "data") -> np.ndarray:
        """Codes of ``x`` (``y``: labels, for conditional models; ``out``: stream them into this
        ``.npy``, see :meth:`batched`; ``binary``: codes rounded to 0/1 uint8 hashes; ``source``:
        the data's name in error messages)."""
        self._require("encode")
        self.model.check_data(x, source)
        fn = self.model.encode
        if binary:
            fn = lambda xb, **kw: (self.model.encode(xb, **kw) >= 0.5).to(torch.uint8)  # noqa: E731
        return self.batched(fn, x, batch_size, progress, "encode", self._labels_for(y, len(x)), out=out)

    def decode(self, codes: np.ndarray, batch_size: int = 4096, progress: bool | None = None,
               y: np.ndarray | None = None) -> np.ndarray:
        self._require("decode")
        return self.batched(self.model.decode, codes, batch_size, progress, "decode", self._labels_for(y, len(codes)))

    def reconstruct(self, x: np.ndarray, batch_size: int = 4096, progress: bool | None = None,
                    y: np.ndarray | None = None, out: str | Path | None = None,
                    row_shape: tuple[int, ...] | None = None, source: str = "data") -> np.ndarray:
        self._require("reconstruct")
        self.model.check_data(x, source)
        return self.batched(self.model.reconstruct, x, batch_size, progress, "reconstruct",
                             self._labels_for(y, len(x)), out=out, row_shape=row_shape)


    # -- generation -------------------------------------------------------------------------------
    def generate(self, n: int, label: int | None = None, seed: int | None = None,
                 truncation: float | None = None, batch_size: int = 4096, progress: bool | None = None,
                 out: str | Path | None = None, guidance: float | None = None) -> np.ndarray:
        """``n`` new samples as numpy, shaped like the training samples, in the data's units
        (images in [0, 1]; continuous data in its own units), batched like :meth:`encode`.

        ``label``: the class to generate (conditional models; required there); ``seed``: the
        latent noise's seed (same seed, same samples; None: a fresh one); ``truncation``: the
        truncation psi, for models whose ``sample`` supports it; ``guidance``: the guidance weight,
        for models that sample guided (DDPM's autoguidance; 1 = unguided; None = the run's own);
        ``out``: stream into this
        ``.npy`` (see :meth:`batched`) and return a memory map of it.
        """
        sample = getattr(self.model, "sample", None)
        if not callable(sample):
            raise ConfigError(f"{self.name} is not a generative model (it has no sample()); "
                              f"train vae, conditional-vae, a GAN or ddpm")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"n = {n!r}: the number of samples must be an integer >= 1")
        n = int(n)
        kwargs: dict[str, Any] = {}
        conditional = bool(getattr(self.model, "uses_labels", False))
        if conditional:
            k = getattr(self.config, "n_classes", None)
            if label is None:
                raise ConfigError(f"{self.name} is conditional: give label=K, the class to generate")
            if int(label) < 0 or (k is not None and int(label) >= k):
                top = f"0..{k - 1}" if k is not None else ">= 0"
                raise ConfigError(f"label {label}: out of range for {self.name} (classes {top})")
        elif label is not None:
            raise ConfigError(f"label: {self.name} is unconditional; it generates without a label")
        if truncation is not None:
            if not (isinstance(truncation, (int, float)) and np.isfinite(truncation) and truncation > 0):
                raise ConfigError(f"truncation {truncation!r}: must be a positive number")
            if Capability.TRUNCATION not in self.model.capabilities:
                raise ConfigError(f"truncation: {self.name} has no truncation trick (stylegan has)")
            kwargs["truncation"] = float(truncation)
        if guidance is not None:
            if not (isinstance(guidance, (int, float)) and np.isfinite(guidance) and guidance >= 0):
                raise ConfigError(f"guidance {guidance!r}: must be a number >= 0 (1 = unguided)")
            if Capability.GUIDANCE not in self.model.capabilities:
                raise ConfigError(f"guidance: {self.name} samples without guidance (ddpm has it)")
            kwargs["guidance"] = float(guidance)
        gen = torch.Generator()
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(int(seed))
        # images (and anything with a sigmoid or tanh output) lie in [0, 1]; continuous data does not
        clip = getattr(self.model, "needs_unit_interval", True)
        shape = self.data_info.get("sample_shape") or list(self.model.input_shape)

        def draw(idx: torch.Tensor) -> torch.Tensor:
            m = len(idx)
            labels = torch.full((m,), int(label), dtype=torch.long) if label is not None else None
            images = sample(m, labels=labels, generator=gen, **kwargs).float()
            return images.clamp(0.0, 1.0) if clip else images

        # the batches are drawn from an index array, so that batched() streams them like encode()
        index = np.arange(n, dtype=np.float32).reshape(n, 1)
        result = self.batched(draw, index, batch_size, progress, "generate", out=out, row_shape=tuple(shape))
        return result if out is not None else result.reshape((n, *shape))

    def interpolate(self, a: np.ndarray, b: np.ndarray, steps: int = 8, method: str | None = None,
                    y_a: np.ndarray | None = None, y_b: np.ndarray | None = None) -> np.ndarray:
        """Decode the path between the codes of ``a`` and ``b`` (samples in the data's units: one
        sample each, or two batches of the same length: pairs), ``steps`` points, end points
        included. Returns ``(steps, *sample_shape)`` for one pair, ``(pairs, steps, *sample_shape)``
        for batches. ``method``: ``linear`` or ``slerp`` (default: slerp for Gaussian-latent
        models such as VAEs, else linear); ``y_a``/``y_b``: the labels, for conditional models
        (the class then moves from one end's to the other's)."""
        from ..models.interpolation import interpolate_codes
        if not (callable(getattr(self.model, "encode", None)) and callable(getattr(self.model, "decode", None))):
            raise ConfigError(f"{self.name} has no encode/decode; interpolation needs an autoencoder")
        if isinstance(steps, bool) or int(steps) < 2:
            raise ConfigError(f"steps = {steps!r}: must be >= 2 (the two end points)")
        steps = int(steps)
        method = method or ("slerp" if getattr(self.model, "gaussian_latent", False) else "linear")
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        single = a.shape == tuple(self.model.input_shape) or a.ndim == 1 and a.size == self.model.input_dim
        if single:
            a, b = a[None], b[None]
            y_a = None if y_a is None else np.atleast_1d(y_a)
            y_b = None if y_b is None else np.atleast_1d(y_b)
        if a.shape != b.shape:
            raise DataError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
        pairs = len(a)
        cond = None
        if getattr(self.model, "uses_labels", False):
            if y_a is None or y_b is None:
                raise DataError(f"model {self.name!r} is conditional: give y_a and y_b (the labels of a and b)")
            cond = np.concatenate([np.asarray(y_a), np.asarray(y_b)])
        codes = self.encode(np.concatenate([a, b]), progress=False, y=cond)
        flat = codes.reshape(len(codes), -1)
        path = np.concatenate([interpolate_codes(flat[i], flat[pairs + i], steps, method) for i in range(pairs)])
        z = path.reshape((pairs * steps, *codes.shape[1:])).astype(np.float32)
        soft = None
        if cond is not None:
            k = self.config.n_classes
            eye = np.eye(k, dtype=np.float32)
            w = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
            soft = np.concatenate([(1 - w) * eye[cond[i]] + w * eye[cond[pairs + i]] for i in range(pairs)])
        out = self.decode(z, progress=False, y=soft)
        shape = self.data_info.get("sample_shape") or list(self.model.input_shape)
        out = out.reshape((pairs, steps, *shape))
        return out[0] if single else out


def _is_path(src: str) -> bool:
    from ..data.builtin import resolve_builtin
    return resolve_builtin(src) is None


def _short(v: float) -> str:
    """A number as people read it in one line: 4 significant digits."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------------------------------- loading
def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """Load a run folder's model (weights + config from its checkpoint) for inference."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    path = run_dir / CHECKPOINT
    tensors, meta = load_checkpoint(path)
    model = model_from_meta(tensors, meta, str(path))
    model.to(resolve_device(device)).eval()
    return Run(run_dir=run_dir, name=meta["model"], model=model, meta=meta)


def with_legacy_defaults(cls, saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the values that fields added later had *before* they existed.

    A field missing from an older run's config gets its default, except where the model's config
    class lists another value in ``LEGACY_DEFAULTS`` (a new field whose default changed the model,
    e.g. StyleGAN's ``style_mode``: older runs are ``adain``)."""
    legacy = getattr(cls.config_class, "LEGACY_DEFAULTS", {})
    saved = migrate_legacy_engine(saved)     # engine keys saved flat, before the engine section
    return {**{k: v for k, v in legacy.items() if k not in saved}, **saved}


def model_from_meta(tensors: dict[str, torch.Tensor], meta: dict[str, Any], source: str) -> LatentModel:
    name = meta.get("model")
    if not isinstance(name, str):
        raise CheckpointError(f"{source}: checkpoint does not name its model")
    try:
        cls = get_model_class(name)
    except ConfigError as e:
        code = meta.get("model_class")
        if isinstance(code, str):    # a model from outside the package: never imported from what a file says
            raise CheckpointError(f"{source}: model {name!r} ({code}) is not registered here: import it and call "
                                  f"latentforge.register_model({name!r}, ...), or install the plugin that "
                                  f"provides it ({e})") from None
        raise CheckpointError(f"{source}: model {name!r} is not known to latentforge {__version__}") from None
    saved = meta.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{source}: checkpoint has no config")
    known = {f for f in cls.config_class.__dataclass_fields__} | set(ENGINE_KEYS)   # engine keys: saved flat before
    unknown = sorted(set(saved) - known)
    if unknown:
        warnings.warn(f"{source}: ignoring config keys unknown to this version: {', '.join(unknown)} "
                      f"(saved by latentforge {meta.get('version', '?')})", stacklevel=2)
    try:
        config = make_config(cls.config_class, with_legacy_defaults(cls, saved), strict=False)
    except ConfigError as e:
        raise CheckpointError(f"{source}: bad config in checkpoint: {e}") from None
    try:
        model = cls(config)
    except ConfigError as e:                  # a value only the model's construction checks (e.g. init)
        raise CheckpointError(f"{source}: bad config in checkpoint: {e}") from None
    load_module_state(model, split_prefix(tensors, "model"), source)
    return model


# ---------------------------------------------------------------------------------------- training
def resolve_config(name: str, *, config_file: str | Path | None = None, overrides: dict[str, Any] | None = None):
    """The model's chapter defaults ← config file ← overrides (``--set`` and explicit flags)."""
    cls = get_model_class(name)
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(load_config_file(config_file))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return make_config(cls.config_class, values)


def _default_run_dir(name: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{name}-{stamp}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def resolved_source(name: str) -> str:
    """A data source as a run records it: a built-in name as it is, a path made absolute (so that
    ``evaluate RUN`` works from any folder)."""
    from ..data.builtin import resolve_builtin
    if isinstance(name, str) and resolve_builtin(name) is not None:
        return name
    p = Path(str(name)).expanduser()
    return str(p.resolve()) if p.exists() else str(name)


def same_source(a: str | None, b: str | None) -> bool:
    """Whether two data sources name the same data (a relative path and its absolute form do)."""
    if a is None or b is None:
        return False
    return a == b or resolved_source(a) == resolved_source(b)


def describe_data(ds, train_ds, valid_ds, valid_fraction: float | None, labels: str | Path | None = None,
                  **extra) -> dict[str, Any]:
    """What a run records about its data (and what ``--resume`` checks it against): the source as
    an absolute path (``source``; ``source_given``: as typed), the ``--labels`` file (absolute)."""
    info = {"source": resolved_source(ds.name), "source_given": ds.name}
    if labels is not None:
        info["labels_path"] = str(Path(labels).expanduser().resolve())
    if getattr(ds, "feature_names", None):
        info["feature_names"] = list(ds.feature_names)
    return {**info, "n_train": len(train_ds), "n_valid": len(valid_ds) if valid_ds is not None else 0,
            "sample_shape": list(ds.sample_shape), "is_image": ds.is_image, "labels": ds.y is not None,
            "class_names": ds.class_names, "valid_fraction": valid_fraction, **_fingerprint_info(ds.x),
            "range": [float(ds.x.min()), float(ds.x.max())],
            **({"class_filter": ds.class_filter} if getattr(ds, "class_filter", None) else {}), **extra}


def _fingerprint_info(x) -> dict[str, Any]:
    """The fingerprint of ``x``: sampled for streamed data (and then it says so), else full."""
    if isinstance(x, BlockArray):
        return {"fingerprint": fingerprint(x, "sampled"), "fingerprint_kind": "sampled", "streamed": True}
    return {"fingerprint": fingerprint(x)}


def prepare_run_dir(out: str | Path | None, name: str, *, resume: bool = False,
                    overwrite: bool = False) -> tuple[Path, bool]:
    """Create (or reuse, when resuming) the run folder; returns it and whether it was created.

    Refuses a non-empty folder unless resuming or ``overwrite``; checks that it is writable;
    removes a previous run's files when starting afresh.
    """
    run_dir = Path(out) if out is not None else _default_run_dir(name)
    if run_dir.exists() and not run_dir.is_dir():
        raise DataError(f"{run_dir}: exists and is not a folder")
    if not resume and run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise ConfigError(f"{run_dir}: run folder exists and is not empty; use --resume to continue it, "
                          f"--overwrite to replace it, or another --out")
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise DataError(f"{run_dir}: cannot write the run folder: {e.strerror or e}") from None
    if not resume:
        for stale in (CHECKPOINT, RUN_JSON, HISTORY_JSON):
            (run_dir / stale).unlink(missing_ok=True)
    return run_dir, created


def train(model: str, data, *, out: str | Path | None = None, overrides: dict[str, Any] | None = None,
          config_file: str | Path | None = None, resume: bool = False, greedy: bool = False,
          valid_fraction: float | None = None, labels: str | Path | None = None,
          progress: bool | None = None, log: Callable[[str], None] | None = None,
          device: str = "auto", overwrite: bool = False,
          callbacks: list[Callable[[Trainer, dict[str, Any]], None]] | None = None,
          tensorboard: bool = False) -> Run:
    """Train registered ``model`` on ``data`` (a source name/path or a ``Dataset``) into a run folder.

    ``overrides`` are config values (e.g. ``{"epochs": 5, "lr": 0.1}``); ``resume`` continues the
    run in ``out`` exactly where its last checkpoint left off (only epochs-like fields may change).
    ``callbacks`` are called as ``cb(trainer, record)`` after every epoch (logging, e.g. TensorBoard).
    ``tensorboard`` also logs scalars and image grids to ``RUN_DIR/tensorboard`` (optional package).
    All input is validated before anything is written.
    """

    log = log if log is not None else (lambda m: print(m, file=sys.stderr))
    cls = get_model_class(model)
    dev = ddp.device_for(resolve_device(device))     # under torchrun: this process's GPU
    ddp.join(dev)                                     # under torchrun: the process group (gloo / nccl)
    saved_meta: dict[str, Any] | None = None
    tensors: dict[str, torch.Tensor] = {}

    if resume:
        if out is None:
            raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
        ckpt = Path(out) / CHECKPOINT
        tensors, saved_meta = load_checkpoint(ckpt)
        if saved_meta.get("model") != model:
            raise ConfigError(f"{out}: this run trains {saved_meta.get('model')!r}, not {model!r}")
        config = make_config(cls.config_class, with_legacy_defaults(cls, saved_meta.get("config", {})), strict=False)
        changes = dict(overrides or {})
        if config_file is not None:
            changes = {**load_config_file(config_file), **changes}
        changes = {k: v for k, v in changes.items() if v is not None}
        merged = make_config(cls.config_class, {**config_to_dict(config), **changes})
        bad = [k for k in changes if k not in RESUMABLE_CHANGES and getattr(merged, k, None) != getattr(config, k, None)]
        if bad:
            raise ConfigError(f"--resume cannot change {', '.join(bad)} (only {', '.join(RESUMABLE_CHANGES)}); "
                              f"start a new run instead")
        config = merged
        if valid_fraction is None:
            valid_fraction = saved_meta.get("data", {}).get("valid_fraction", 0.1)
        greedy = bool(saved_meta.get("greedy")) or greedy
    else:
        config = resolve_config(model, config_file=config_file, overrides=overrides)
        given = {**(load_config_file(config_file) if config_file is not None else {}),
                 **{k: v for k, v in (overrides or {}).items() if v is not None}}
        if default_lr(cls.config_class, {**given, "optimizer": config.optimizer}) is not None:
            log(f"lr {config.lr:g}: {config.optimizer}'s customary learning rate (no lr given; the chapter's "
                f"{cls.config_class.lr:g} is for {cls.config_class.optimizer}); set it with --lr")
    if valid_fraction is None:
        valid_fraction = 0.1
    if greedy and Capability.GREEDY not in cls.capabilities:
        raise ConfigError(f"--greedy: model {model!r} has no layer-wise stages (try stacked-ae or tied-ae)")

    ds = data if isinstance(data, Dataset) else load_data(data, labels=labels)
    if not isinstance(data, Dataset):
        for note in getattr(ds, "notes", None) or []:      # which .npz arrays, grey promoted to colour
            log(f"note: {note}")
    if saved_meta is not None:        # a resumed run continues on its class filter
        from ..data.classes import for_resume
        ds = for_resume(ds, saved_meta.get("data", {}).get("class_filter"), out)
    if cls.uses_labels and ds.y is None and not getattr(cls, "labels_optional", False):
        raise DataError(f"{ds.name}: model {model!r} needs labels and this data has none")
    if not resume:      # continuous data: linear output, per-feature standardisation (continuous.py)
        config = _continuous_config(cls, config, ds, config_file, overrides, log)
    if config.input_shape is None:
        config.input_shape = list(ds.x.shape[1:])
    streaming = isinstance(ds, StreamingDataset)      # larger than memory: read in shuffled blocks
    if streaming and greedy:
        raise ConfigError(f"--greedy: {ds.name} is streamed from disk (too large for memory) and greedy "
                          f"stages need it in memory; train without --greedy")
    check_precision(config.engine.precision, dev, adversarial=bool(getattr(cls, "adversarial", False)))
    train_ds, valid_ds = train_valid_split(ds, valid_fraction, seed=config.seed)
    if config.batch_size > len(train_ds):
        raise ConfigError(f"config field 'batch_size' = {config.batch_size}: larger than the "
                          f"{len(train_ds)} training samples")
    data_info = describe_data(ds, train_ds, valid_ds, valid_fraction, labels=labels)
    saved_data = saved_meta.get("data", {}) if saved_meta is not None else {}
    if saved_meta is not None and saved_data.get("fingerprint_kind", "full") != data_info.get("fingerprint_kind", "full"):
        data_info["fingerprint"] = fingerprint(ds.x, saved_data.get("fingerprint_kind", "full"))  # as it was saved
    if saved_meta is not None and saved_data.get("fingerprint") != data_info["fingerprint"]:
        raise DataError(f"{ds.name}: this is not the data the run in {out} was trained on; "
                        f"--resume needs the same --data")

    torch.manual_seed(config.seed)
    net = cls(config)
    net.check_data(train_ds.x, ds.name)
    callbacks = list(callbacks or [])
    tb_logger = None
    if tensorboard:
        from ..report.tensorboard import TB_DIR, TensorBoardLogger
        tb_logger = TensorBoardLogger(valid_ds if valid_ds is not None else train_ds, seed=config.seed)
        callbacks.append(tb_logger)

    # everything is validated: from here on, write
    run_dir, created = ddp.on_main(lambda: prepare_run_dir(out, model, resume=resume, overwrite=overwrite))
    if tensorboard and not resume:
        shutil.rmtree(run_dir / TB_DIR, ignore_errors=True)      # a replaced run's events

    net.to(dev)
    labelled = Capability.CONDITIONAL in cls.capabilities
    if streaming:      # the trainer reads the streams; the normaliser is fitted on a sample of blocks
        x = train_ds if labelled else train_ds.without_labels()
        xv = (valid_ds if labelled else valid_ds.without_labels()) if valid_ds is not None else None
        y = yv = None
        prep = torch.from_numpy(train_ds.x.sample(max(1, large.SAMPLE_BYTES // 4 // int(np.prod(ds.x.sample_shape))),
                                                  seed=config.seed))
    else:
        x = torch.from_numpy(train_ds.x)
        xv = torch.from_numpy(valid_ds.x) if valid_ds is not None else None
        y = torch.from_numpy(train_ds.y) if (labelled and train_ds.y is not None) else None
        yv = torch.from_numpy(valid_ds.y) if (labelled and valid_ds is not None and valid_ds.y is not None) else None
        prep = x
    if not resume:
        if getattr(config, "encoder_from", None):    # a classifier that starts from an AE run's encoder
            init_from_autoencoder(net, load_run(config.encoder_from))
        net.prepare(prep.to(dev))

    meta = {"model": model, "config": config_to_dict(config), "data": data_info}
    if model not in REGISTRY:          # a registered model from outside the package: say where its code is
        meta["model_class"] = model_class_path(model)
    t_start = time.perf_counter()
    try:
        trainer = _fit(net, config, x, xv, y, yv, run_dir=run_dir, meta=meta, greedy=greedy,
                       saved=(tensors, saved_meta) if resume else None, dev=dev, progress=progress, log=log,
                       callbacks=callbacks)
    except BaseException:
        # a run that failed before its first checkpoint leaves nothing behind
        if created and ddp.info().main and not (run_dir / CHECKPOINT).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        if tb_logger is not None:
            tb_logger.close()
    greedy_info = meta.get("greedy")
    seconds = time.perf_counter() - t_start
    meta["trainer"] = {"epoch": trainer.state.epoch, "history": trainer.state.history}
    summary = run_summary(model, config, data_info, trainer, net, dev, seconds, greedy_info)
    write_run_files(run_dir, trainer, summary)
    net.eval()
    return Run(run_dir=run_dir, name=model, model=net, meta=meta)


def _continuous_config(cls, config, ds, config_file, overrides, log):
    """``config`` with the output layer, loss and scaling that suit ``ds`` where the user named
    none (see ``latentforge/continuous.py``); says what it chose in one line."""
    from ..continuous import continuous_defaults
    given = {**(load_config_file(config_file) if config_file is not None else {}),
             **{k: v for k, v in (overrides or {}).items() if v is not None}}
    if not len(ds):
        return config
    auto, note = continuous_defaults(cls, given, (float(ds.x.min()), float(ds.x.max())), is_image=ds.is_image)
    if not auto:
        return config
    if note:
        log(f"{ds.name}: {note}")
    return make_config(cls.config_class, {**config_to_dict(config), **auto, **given})


def _fit(net, config, x, xv, y, yv, *, run_dir, meta, greedy, saved, dev, progress, log, callbacks) -> Trainer:
    """Greedy stages (if asked and not done yet), then the trainer from its checkpoint (if resuming)."""
    saved_meta = saved[1] if saved else None
    greedy_info = saved_meta.get("greedy") if saved_meta else None
    if greedy and not greedy_info:
        greedy_info = _train_greedy(net, config, x, xv, dev, progress, log)
    if greedy_info:
        meta["greedy"] = greedy_info
    epochs = config.finetune_epochs if greedy else config.epochs
    trainer_cls = AdversarialTrainer if Capability.ADVERSARIAL in net.capabilities else Trainer
    trainer = trainer_cls(net, config, run_dir=run_dir, epochs=epochs, checkpoint_meta=meta,
                          progress=progress, log=log, device=dev, desc="finetune" if greedy else "train",
                          callbacks=callbacks)
    if saved:
        trainer.restore(saved[0], saved_meta, str(run_dir / CHECKPOINT))
        log(f"resuming {run_dir} at epoch {trainer.state.epoch} of {epochs}")
    trainer.fit(x, xv, y, yv)
    if trainer.dist.main:
        trainer.save()
    return trainer


def _train_greedy(net, config, x, xv, dev, progress, log) -> dict[str, Any]:
    """SPEC 7: train each shallow stage on the previous stage's codes, in place."""
    stages = net.greedy_stages()
    with torch.no_grad():
        inputs = net.to_internal(x.to(dev))
        valid = net.to_internal(xv.to(dev)) if xv is not None else None
    histories = []
    for i, stage in enumerate(stages):
        desc = f"greedy stage {i + 1}/{len(stages)}"
        tr = Trainer(stage, config, params=stage.stage_parameters(), lr=config.lr if i == 0 else config.greedy_inner_lr,
                     epochs=config.greedy_epochs or config.epochs, progress=progress, log=log, device=dev, desc=desc)
        tr.fit(inputs, valid)
        histories.append(tr.state.history)
        with torch.no_grad():
            stage.eval()
            inputs = stage.encode(inputs)
            valid = stage.encode(valid) if valid is not None else None
    return {"stages": len(stages), "histories": histories}
