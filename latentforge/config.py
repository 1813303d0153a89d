"""Config dataclasses: the shared training fields, parsing of ``--set key=value`` and config files.

Every model has a config dataclass (nanoGPT style) that subclasses :class:`TrainConfig`, so
the chapter's hyper-parameters for a model (its optimizer, learning rate, batch size and
epochs as well as its sizes) live in one place and are saved inside every checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "nadam")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("32", "bf16", "16-mixed")
NAN_POLICIES = ("skip", "stop", "raise")
DIVERGENCE_POLICIES = ("stop", "warn", "off")
#: each optimizer's customary learning rate (Keras' and PyTorch's defaults), used when a run
#: names another optimizer than its model's chapter default and no ``lr``
OPTIMIZER_DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3, "adamw": 1e-3, "nadam": 1e-3, "rmsprop": 1e-3}


@dataclass
class EngineConfig:
    """How training steps run, apart from the model's hyper-parameters: what
    ``latentforge.engine`` may use to make a step fast. None of it changes what a step computes
    (beyond float rounding, and the precision asked for), so all of it may change on ``--resume``.
    Given flat like any config key (``--set fused_step=false``, ``--precision bf16``)."""

    precision: str = "32"            # 32 | bf16 | 16-mixed (autocast; GradScaler for 16-mixed)
    compile: bool = False            # torch.compile(mode="reduce-overhead") (CUDA graphs); CUDA only
    fused_step: bool = True          # the engine's hand-fused SGD step for the models it knows exactly
    #: on CUDA, replay fused steps as CUDA graphs of 128 steps, each graph checked at its first
    #: replay. Off by default until a GPU run has verified them (bench/gpu_check.py)
    cuda_graphs: bool = False
    threads: int | None = None       # CPU intra-op threads for training; None: the engine's choice, 0: PyTorch's
    batch_split: int | None = None   # sub-batches of a step on threads of their own; None: the engine's choice, 1: off

    def validate(self) -> None:
        check_choice("precision", self.precision, PRECISIONS)
        if self.threads is not None:
            _check(self.threads >= 0, "threads", self.threads, "must be >= 0 (0 = PyTorch's default)")
        if self.batch_split is not None:
            _check(self.batch_split >= 1, "batch_split", self.batch_split, "must be >= 1 (1 = no split)")


ENGINE_KEYS = tuple(f.name for f in dataclasses.fields(EngineConfig))


def migrate_legacy_engine(saved: dict[str, Any]) -> dict[str, Any]:
    """A config saved before :class:`EngineConfig` existed (its keys flat, no ``engine``) as one
    with an ``engine`` section. ``cuda_graphs: true`` was then the default, not a choice, and CUDA
    graphs are now off until verified: it is not carried over."""
    if "engine" in saved or not any(k in saved for k in ENGINE_KEYS):
        return dict(saved)
    out = {k: v for k, v in saved.items() if k not in ENGINE_KEYS}
    engine = {k: saved[k] for k in ENGINE_KEYS if k in saved}
    if engine.get("cuda_graphs") in (True, "true", "True"):
        del engine["cuda_graphs"]
    out["engine"] = engine
    return out


@dataclass
class TrainConfig:
    """Fields every model shares: how it is trained.

    Model configs subclass this and override the defaults with the chapter's values.
    """

    epochs: int = 20
    batch_size: int = 32
    optimizer: str = "sgd"          # sgd | adam | adamw | rmsprop | nadam
    lr: float = 1e-3
    lr_schedule: str = "constant"   # constant | cosine (per epoch, from lr down to ~0 at the last epoch)
    momentum: float = 0.0           # SGD momentum / RMSprop momentum
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.999])  # adam/adamw/nadam (beta1, beta2)
    weight_decay: float = 0.0
    early_stopping: int = 0         # patience in epochs on the validation loss; 0 = off
    seed: int = 42
    input_shape: list[int] | None = None  # per-sample shape (C,H,W) or (D,); set from the data
    nan_policy: str = "stop"        # skip | stop | raise: what a NaN/Inf loss does
    divergence_policy: str = "stop"  # stop | warn | off: what a loss far above its start does (train/guards.py)
    steps_per_epoch: int = 0        # cap each epoch at this many batches (0 = the whole data; huge data sets)
    sample_every: int = 1           # generative models: RUN_DIR/samples/epoch_NNN.png every N epochs (0 = never)
    #: how steps run (not what they compute): a section of its own, see :class:`EngineConfig`;
    #: its keys are given flat (``--set fused_step=false``) and land here
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)

    def validate(self) -> None:
        """Raise ConfigError for values out of range. Subclasses extend it (call super)."""
        _check(self.epochs >= 1, "epochs", self.epochs, "must be >= 1")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        _check(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"must be one of {', '.join(OPTIMIZERS)}")
        _check(self.lr > 0 and math.isfinite(self.lr), "lr", self.lr, "must be a positive number")
        _check(self.lr_schedule in LR_SCHEDULES, "lr_schedule", self.lr_schedule, f"must be one of {', '.join(LR_SCHEDULES)}")
        check_fraction(self, "momentum")
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", self.betas,
               "must be two numbers in [0, 1): Adam's beta1, beta2")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        _check(self.early_stopping >= 0, "early_stopping", self.early_stopping, "must be >= 0")
        _check(self.sample_every >= 0, "sample_every", self.sample_every, "must be >= 0")
        check_choice("nan_policy", self.nan_policy, NAN_POLICIES)
        check_choice("divergence_policy", self.divergence_policy, DIVERGENCE_POLICIES)
        self.engine.validate()
        _check(self.steps_per_epoch >= 0, "steps_per_epoch", self.steps_per_epoch, "must be >= 0 (0 = no cap)")
        if self.input_shape is not None:
            _check(len(self.input_shape) >= 1 and all(int(d) >= 1 for d in self.input_shape),
                   "input_shape", self.input_shape, "must be a list of positive sizes")


def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"config field '{key}' = {value!r}: {why}")


def check_choice(key: str, value: Any, choices: typing.Iterable[str]) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    _check(value in choices, key, value, f"must be one of {', '.join(choices)}")


def check_nonnegative(config: Any, *keys: str) -> None:
    for key in keys:
        _check(getattr(config, key) >= 0, key, getattr(config, key), "must be >= 0")


def check_fraction(config: Any, *keys: str, closed: bool = False) -> None:
    """Each field in [0, 1) (``closed``: [0, 1]), e.g. dropout rates and EMA decays."""
    for key in keys:
        value = getattr(config, key)
        ok = 0 <= value <= 1 if closed else 0 <= value < 1
        _check(ok, key, value, "must be in [0, 1]" if closed else "must be in [0, 1)")


def check_positive(config: Any, *keys: str) -> None:
    for key in keys:
        value = getattr(config, key)
        if isinstance(value, (list, tuple)):
            _check(len(value) > 0 and all(v > 0 for v in value), key, value, "must be a non-empty list of positive sizes")
        else:
            _check(value > 0, key, value, "must be > 0")


# --------------------------------------------------------------------------- parsing values
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from JSON/TOML/YAML or a ``--set`` string) to the annotated type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"config field '{key}': bad value {value!r}")
    if origin in (list, tuple):
        (inner,) = args[:1] or (str,)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise ConfigError(f"config field '{key}': cannot parse {value!r} as a list") from None
            else:
                value = [v for v in (p.strip() for p in text.split(",")) if v != ""]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config field '{key}': expected a list, got {value!r}")
        return [_coerce(v, inner, key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"config field '{key}': expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"config field '{key}': expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                raise ConfigError(f"config field '{key}': expected an integer, got {value!r}") from None
            if f.is_integer():
                return int(f)
        raise ConfigError(f"config field '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"config field '{key}': expected a number, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config field '{key}': expected a number, got {value!r}") from None
        if not math.isfinite(f):
            raise ConfigError(f"config field '{key}': expected a finite number, got {value!r}")
        return f
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"config field '{key}': expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"config field '{key}': unsupported type {tp}")  # pragma: no cover - config design error


def make_config(cls: type, values: dict[str, Any] | None = None, *, strict: bool = True, validate: bool = True):
    """Build ``cls`` from a dict, coercing types. Unknown keys raise ConfigError when ``strict``.

    Fields missing from ``values`` get their defaults (so a run saved before a field existed
    still loads).
    """
    values = dict(values or {})
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    engine = None
    if "engine" in names:          # the engine's keys, flat or as a section, go to its own config
        section = values.pop("engine", None) or {}
        if isinstance(section, EngineConfig):
            section = dataclasses.asdict(section)
        if not isinstance(section, dict):
            raise ConfigError(f"config field 'engine': expected a table of {', '.join(ENGINE_KEYS)}, got {section!r}")
        section = {**section, **{k: values.pop(k) for k in ENGINE_KEYS if k in values}}
        engine = make_config(EngineConfig, section, strict=strict, validate=validate)
        names = [n for n in names if n != "engine"]
    unknown = sorted(set(values) - set(names))
    if unknown and strict:
        valid = names + list(ENGINE_KEYS) if engine is not None else names
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for "
            f"{cls.__name__}; valid keys: {', '.join(valid)}")
    kwargs = {k: _coerce(v, hints[k], k) for k, v in values.items() if k in names}
    if engine is not None:
        kwargs["engine"] = engine
    lr = default_lr(cls, kwargs)
    if lr is not None:
        kwargs["lr"] = lr
    cfg = cls(**kwargs)
    if validate:
        cfg.validate()
    return cfg


def default_lr(cls: type, values: dict[str, Any]) -> float | None:
    """The learning rate a config of ``cls`` built from ``values`` gets when ``values`` name an
    optimizer other than the model's chapter default and no ``lr``: that optimizer's customary
    one (:data:`OPTIMIZER_DEFAULT_LR`), not the chapter's lr tuned for another optimizer (SGD's
    1.5 makes Adam diverge). None: ``lr`` is given, or the model's own optimizer keeps its lr."""
    fields_ = {f.name: f for f in dataclasses.fields(cls)}
    if "lr" in values or "optimizer" not in values or "lr" not in fields_ or "optimizer" not in fields_:
        return None
    chosen = values["optimizer"]
    if chosen == fields_["optimizer"].default:
        return None
    return OPTIMIZER_DEFAULT_LR.get(chosen)


def parse_set_items(items: typing.Sequence[str]) -> dict[str, str]:
    """Parse ``["key=value", ...]`` from ``--set`` into a dict of raw strings."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        out[key] = value.strip()
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON config file into a flat dict of config values."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8 text") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml)") from None
            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"{path}: unknown config format {suffix!r}; use .toml, .yaml/.yml or .json")
    except ConfigError:
        raise
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{path}: cannot parse config file: {first}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a table/mapping of key = value")
    # allow an optional [config] / config: section
    if set(data) == {"config"} and isinstance(data["config"], dict):
        data = data["config"]
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise ConfigError(f"{path}: config key {nested[0]!r} holds a table; config files are flat key = value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


__all__ = ["TrainConfig", "EngineConfig", "ENGINE_KEYS", "OPTIMIZERS", "OPTIMIZER_DEFAULT_LR", "migrate_legacy_engine",
           "default_lr", "make_config", "parse_set_items", "load_config_file",
           "config_to_dict", "check_choice", "check_positive", "check_nonnegative"]
