"""Reading a file's bytes and text, with one-line :class:`~latentforge.errors.DataError` messages."""
from __future__ import annotations

from pathlib import Path

from latentforge.errors import DataError

__all__ = ["decode_text", "read_bytes"]


def read_bytes(path: Path, source: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{source}: cannot read ({e.strerror or e})") from e


def decode_text(raw: bytes, source: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{source}: not UTF-8 text (bad byte at offset {e.start})") from e
