"""Generated samples as files people open: a folder of PNGs (images) or a CSV (tabular data).

``latentforge generate --out DIR/`` (or ``--format png``) writes ``DIR/samples.npy`` (the
array, as always) and, for images, ``DIR/sample_00000.png``, ``DIR/sample_00001.png``, ... (8-bit,
grey or RGB, at the images' own size); for tabular data ``DIR/samples.csv`` with the training
CSV's column names as header. Every file is written atomically.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError

FORMATS = ("auto", "npy", "png")
SAMPLES_NPY = "samples.npy"


def output_plan(out: str | Path, fmt: str) -> tuple[Path, Path | None]:
    """``(the .npy to write, the folder for PNG/CSV files or None)`` for ``--out`` and ``--format``.

    A folder is ``--out`` ending in a path separator, an existing folder, or any ``--out``
    with ``--format png``; anything else must be a ``.npy`` file.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: must be one of {', '.join(FORMATS)}")
    text = str(out)
    as_folder = text.endswith(("/", "\\")) or Path(out).is_dir()
    if fmt == "npy" and as_folder:
        raise DataError(f"{out}: --format npy writes one .npy file, not a folder")
    if fmt == "png" or (fmt == "auto" and as_folder):
        folder = Path(out)
        if folder.suffix.lower() == ".npy":
            raise DataError(f"{out}: --format png writes a folder; give a folder name (e.g. samples/)")
        if folder.exists() and not folder.is_dir():
            raise DataError(f"{out}: exists and is not a folder")
        return folder / SAMPLES_NPY, folder
    if Path(out).suffix != ".npy":
        raise DataError(f"{out}: output must be a .npy file (or a folder, DIR/, for PNGs)")
    return Path(out), None


def _png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image
    a = np.asarray(img, np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4):      # (C, H, W) -> (H, W[, C])
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a, 0, -1)[..., :3]
    a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def write_sample_files(samples: Any, folder: Path, data_info: dict[str, Any]) -> str:
    """Write ``samples`` into ``folder`` as PNGs (images) or one CSV (tabular); says what it wrote."""
    from ..io import atomic_write_bytes
    folder = Path(folder)
    n = len(samples)
    shape = tuple(data_info.get("sample_shape") or np.asarray(samples[:1]).shape[1:])
    try:
        if data_info.get("is_image", len(shape) >= 2):
            width = max(5, len(str(n - 1)))
            for i in range(0, n, 1024):
                block = np.asarray(samples[i:i + 1024], np.float32)
                for j, img in enumerate(block):
                    atomic_write_bytes(folder / f"sample_{i + j:0{width}d}.png",
                                       _png_bytes(img.reshape(shape)))
            return f"{n} PNGs in {folder}/ (sample_{0:0{width}d}.png ...)"
        names = data_info.get("feature_names")
        flat = np.asarray(samples, np.float64).reshape(n, -1)
        if not names or len(names) != flat.shape[1]:
            names = [f"x{j}" for j in range(flat.shape[1])]
        buf = io.StringIO()
        np.savetxt(buf, flat, delimiter=",", header=",".join(names), comments="", fmt="%.7g")
        atomic_write_bytes(folder / "samples.csv", buf.getvalue().encode())
        return f"{folder / 'samples.csv'} ({n} rows, {flat.shape[1]} columns)"
    except OSError as e:
        raise DataError(f"{folder}: cannot write: {e.strerror or e}") from None
