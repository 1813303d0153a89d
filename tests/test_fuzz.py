"""Fuzzing the readers (IDX, NPY, CSV, labels) and the config parser with hypothesis.

Whatever the bytes or values, only the documented exception types may come out:
:class:`~latentforge.errors.DataError` from the readers, :class:`~latentforge.errors.ConfigError`
from the config parser (never ValueError, IndexError, OverflowError, MemoryError, ...).
The default suite runs about 600 cases; ``-m slow`` runs over 10,000.
"""
from __future__ import annotations

import gzip
import io
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentforge.config import TrainConfig, load_config_file, make_config, parse_set_items
from latentforge.data.readers import NpyStream, parse_csv_text, parse_idx, read_labels, read_npy
from latentforge.data.sources import load_path
from latentforge.errors import ConfigError, DataError
from latentforge.models import get_model_class

FAST, SLOW = 100, 1700        # per test: 6 tests -> 600 by default, 10,200 with -m slow


def _settings(n: int):
    return settings(max_examples=n, deadline=None, derandomize=n == FAST,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _tmpfile(data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name)


def _read_file(data: bytes, suffix: str, *readers) -> None:
    """Write ``data`` to a temporary file and read it with each reader: it reads, or it raises
    DataError (anything else fails the test)."""
    p = _tmpfile(data, suffix)
    try:
        for reader in readers:
            try:
                reader(p)
            except DataError:
                pass
    finally:
        p.unlink()


# ------------------------------------------------------------------------------ IDX
_DTYPES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]

idx_headers = st.builds(
    lambda code, dims, extra, payload, flip: _mutate(
        bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload[:extra], flip),
    st.one_of(st.sampled_from(_DTYPES), st.integers(0, 255)),
    st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1)), min_size=0, max_size=5),
    st.integers(0, 200),
    st.binary(min_size=0, max_size=200),
    st.one_of(st.none(), st.tuples(st.integers(0, 300), st.integers(0, 255))),
)


def _mutate(buf: bytes, flip) -> bytes:
    if flip is None or not buf:
        return buf
    i, v = flip
    b = bytearray(buf)
    b[i % len(b)] = v
    return bytes(b)


def _idx_case(buf: bytes, gz: bool) -> None:
    try:
        arr = parse_idx(buf, "fuzz")
        assert isinstance(arr, np.ndarray)
    except DataError:
        pass
    _read_file(gzip.compress(buf) if gz else buf, "-images-idx3-ubyte" + (".gz" if gz else ""), load_path)


def _check_idx(n):
    @_settings(n)
    @given(st.one_of(idx_headers, st.binary(max_size=64)), st.booleans())
    def run(buf, gz):
        _idx_case(buf, gz)
    run()


# ------------------------------------------------------------------------------ NPY
def _npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _cast(arr, dtype):
    with np.errstate(all="ignore"):
        return arr.astype(dtype)


npy_arrays = st.builds(
    lambda shape, dtype, fill: _cast(np.full(shape, fill), dtype),
    st.lists(st.integers(0, 4), min_size=0, max_size=5).map(tuple),
    st.sampled_from(["u1", "i2", "i8", "f4", "f8", "?", "f2", "c8", "U3"]),
    st.one_of(st.integers(-300, 300), st.floats(allow_nan=True, allow_infinity=True, width=32)),
)


def _npy_case(data: bytes) -> None:
    _read_file(data, ".npy", read_npy, load_path, NpyStream)


def _check_npy(n):
    @_settings(n)
    @given(npy_arrays, st.one_of(st.none(), st.tuples(st.integers(0, 400), st.integers(0, 255))),
           st.one_of(st.none(), st.integers(0, 400)))
    def run(arr, flip, cut):
        data = _mutate(_npy_bytes(arr), flip)
        if cut is not None:
            data = data[:cut]
        _npy_case(data)
    run()


# ------------------------------------------------------------------------------ CSV and labels files
csv_cells = st.one_of(st.integers(-1000, 1000).map(str), st.floats(allow_nan=True).map(repr),
                      st.sampled_from(["", " ", "label", "y", "nan", "inf", "1e999", "x", '"', "1,5", "0x1f"]),
                      st.text(max_size=4))
csv_texts = st.one_of(
    st.lists(st.lists(csv_cells, min_size=1, max_size=5), min_size=0, max_size=6).flatmap(
        lambda rows: st.sampled_from([",", ";", "\t"]).map(lambda d: "\n".join(d.join(r) for r in rows))),
    st.text(max_size=80),
)


def _check_csv(n):
    @_settings(n)
    @given(csv_texts)
    def run(text):
        try:
            data, labels, header = parse_csv_text(text, "fuzz.csv")
            assert data.ndim == 2
        except DataError:
            pass
        _read_file(text.encode("utf-8", "surrogatepass"), ".csv", load_path, read_labels)
    run()


# ------------------------------------------------------------------------------ config parser
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)
MODELS = ["stacked-ae", "vae", "gan", "classifier", "conv-ae", "ddpm"]


def _fields(model: str) -> list[str]:
    return list(get_model_class(model).config_class.__dataclass_fields__)


def _check_config(n):
    @_settings(n)
    @given(st.sampled_from(MODELS), st.data())
    def run(model, data):
        cls = get_model_class(model).config_class
        keys = st.one_of(st.sampled_from(_fields(model)), st.text(max_size=10))
        items = data.draw(st.lists(st.one_of(
            st.tuples(keys, st.one_of(st.text(max_size=12), json_values.map(str))).map(lambda kv: f"{kv[0]}={kv[1]}"),
            st.text(max_size=12)), max_size=4))
        try:
            values = parse_set_items(items)
            make_config(cls, values)
        except ConfigError:
            pass
        direct = data.draw(st.dictionaries(keys, json_values, max_size=4))
        for strict in (True, False):
            try:
                make_config(cls, direct, strict=strict)
            except ConfigError:
                pass
    run()


config_files = st.tuples(
    st.sampled_from([".toml", ".json", ".yaml", ".yml", ".ini", ""]),
    st.one_of(st.binary(max_size=60), st.text(max_size=60).map(str.encode),
              st.dictionaries(st.sampled_from(["lr", "epochs", "batch_size", "config", "x-y", "nan_policy"]),
                              json_values, max_size=4).map(lambda d: _dump_json(d))))


def _dump_json(d) -> bytes:
    import json
    return json.dumps(d, default=str).encode()


def _check_config_files(n):
    @_settings(n)
    @given(config_files)
    def run(case):
        suffix, content = case
        p = _tmpfile(content, suffix)
        try:
            values = load_config_file(p)
            make_config(TrainConfig, values)
        except ConfigError:
            pass
        finally:
            p.unlink()
    run()


CHECKS = {"idx": _check_idx, "npy": _check_npy, "csv": _check_csv, "config-set": _check_config,
          "config-file": _check_config_files}


@pytest.mark.parametrize("what", list(CHECKS))
def test_fuzz_only_documented_errors(what):
    CHECKS[what](FAST if what != "config-set" else 2 * FAST)


@pytest.mark.slow
@pytest.mark.parametrize("what", list(CHECKS))
def test_fuzz_only_documented_errors_10k(what):
    CHECKS[what](SLOW if what != "config-set" else 2 * SLOW)
