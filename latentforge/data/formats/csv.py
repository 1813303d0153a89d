"""CSV (``.csv``/``.tsv``/``.txt``) files of numbers, with an optional header row and a label
column recognised by its header name."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from latentforge.errors import DataError

from .common import decode_text, read_bytes

__all__ = ["LABEL_COLUMN_NAMES", "parse_csv_text", "parse_number", "read_csv"]

#: Header names that mark the label column of a CSV file (compared case-insensitively).
LABEL_COLUMN_NAMES = ("label", "labels", "y", "target", "class")


def parse_number(cell: str) -> float:
    """``float(cell)`` without Python's extras (underscores); raises ValueError."""
    if "_" in cell:
        raise ValueError(cell)
    return float(cell)


def _is_number(cell: str) -> bool:
    try:
        parse_number(cell)
    except ValueError:
        return False
    return True


def _sniff_delimiter(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            for delim in (",", "\t", ";"):
                if delim in line:
                    return delim
            return ","
    return ","


def parse_csv_text(
    text: str, source: str = "<text>"
) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """Parse CSV text of numbers.

    The delimiter is a comma, tab or semicolon (whichever the first line uses). Blank lines
    are skipped. The first row is a header if any of its cells is not a number; a label column
    is taken only from a header cell named ``label``/``labels``/``y``/``target``/``class``.

    Returns:
        ``(data, labels, header)``: a float64 ``(N, D)`` array of the feature columns, the raw
        label column (float64) or ``None``, and the header cells or ``None``.

    Raises:
        DataError: no data rows, ragged rows, a non-numeric or empty cell, several label
            columns, or no feature column.
    """
    if "\x00" in text:
        raise DataError(f"{source}: contains NUL bytes; not a text CSV file")
    delimiter = _sniff_delimiter(text)
    rows: list[tuple[int, list[str]]] = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        for row in reader:
            if row and any(cell.strip() for cell in row):
                rows.append((reader.line_num, row))
    except csv.Error as e:
        raise DataError(f"{source}: malformed CSV ({e})") from e
    if not rows:
        raise DataError(f"{source}: the data is empty (no rows)")

    header: list[str] | None = None
    first_line, first = rows[0]
    if not all(_is_number(cell) for cell in first):
        header = [cell.strip() for cell in first]
        rows = rows[1:]
        if not rows:
            raise DataError(f"{source}: the data is empty (a header row but no data rows)")
    width = len(header) if header is not None else len(rows[0][1])
    width_from = "the header has" if header is not None else f"line {rows[0][0]} has"

    label_col: int | None = None
    if header is not None:
        matches = [i for i, h in enumerate(header) if h.lower() in LABEL_COLUMN_NAMES]
        if len(matches) > 1:
            raise DataError(
                f"{source}: several label columns ("
                + ", ".join(repr(header[i]) for i in matches)
                + "); keep one"
            )
        label_col = matches[0] if matches else None
        if label_col is not None and width == 1:
            raise DataError(f"{source}: only a label column, no feature columns")

    data = np.empty((len(rows), width), dtype=np.float64)
    for r, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(
                f"{source}: line {line} has {len(row)} fields but {width_from} {width}"
            )
        try:
            data[r] = [parse_number(cell) for cell in row]
        except ValueError:
            for c, cell in enumerate(row):
                if not _is_number(cell):
                    col = f" ({header[c]!r})" if header is not None else ""
                    what = "an empty cell" if not cell.strip() else f"{cell.strip()!r}"
                    raise DataError(
                        f"{source}: line {line}, column {c + 1}{col}: {what} is not a number"
                    ) from None
            raise  # pragma: no cover - every cell parsed on its own

    labels = None
    if label_col is not None:
        labels = data[:, label_col].copy()
        data = np.delete(data, label_col, axis=1)
    return data, labels, header


def read_csv(
    path: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """Read a CSV file of numbers; see :func:`parse_csv_text` for the rules and result."""
    source = str(path)
    return parse_csv_text(decode_text(read_bytes(Path(path), source), source), source)
