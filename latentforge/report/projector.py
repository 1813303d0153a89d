"""Codings in TensorBoard's embedding projector format (``encode --projector DIR``, ``train --tensorboard``).

:func:`write_projector` writes into a folder:

* ``tensors.tsv``: one coding per line, values separated by tabs;
* ``metadata.tsv``: one label per line (the class name where the data has names; the row's index
  where it has no labels), in the same order;
* ``sprite.png``: the images tiled row by row in one square sheet (image data only, when the sheet
  fits TensorBoard's 8192 x 8192 pixel limit);
* ``projector_config.pbtxt``: the text protocol buffer that ties them together.

``tensorboard --logdir DIR`` then shows the codings under its "Projector" tab (PCA, t-SNE, UMAP,
with the thumbnails and labels).
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from ..errors import DataError

#: TensorBoard's largest sprite sheet side, in pixels
SPRITE_MAX = 8192
CONFIG = "projector_config.pbtxt"
CHUNK = 8192


def _write(path: Path, data: bytes) -> None:
    from ..io import atomic_write_bytes
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        raise DataError(f"{path}: cannot write: {e.strerror or e}") from None


def _tsv(codes) -> bytes:
    buf = io.BytesIO()
    for i in range(0, len(codes), CHUNK):
        block = np.asarray(codes[i:i + CHUNK], np.float32).reshape(min(CHUNK, len(codes) - i), -1)
        np.savetxt(buf, block, fmt="%.6g", delimiter="\t")
    return buf.getvalue()


def _metadata(n: int, labels, class_names) -> bytes:
    if labels is None:
        return "".join(f"{i}\n" for i in range(n)).encode()
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != n:
        raise DataError(f"labels: {len(labels)} labels for {n} codings")
    names = list(class_names) if class_names else None
    out = []
    for v in labels.tolist():
        text = str(names[v]) if names and isinstance(v, int) and 0 <= v < len(names) else str(v)
        out.append(text.replace("\t", " ").replace("\n", " ") + "\n")
    return "".join(out).encode()


def _sprite(images, n: int, sample_shape) -> tuple[bytes, tuple[int, int]] | None:
    """The sprite sheet PNG and one image's (height, width), or None when it cannot be made."""
    from PIL import Image

    from .grids import to_display_images
    first = to_display_images(np.asarray(images[:1], np.float32), sample_shape)
    if first is None:
        return None
    h, w = first.shape[1:3]
    side = math.ceil(math.sqrt(n))
    if side * max(h, w) > SPRITE_MAX:
        return None
    channels = first.shape[3:] if first.ndim == 4 else ()
    sheet = np.zeros((side * h, side * w) + channels, np.uint8)
    for i in range(0, n, CHUNK):
        disp = to_display_images(np.asarray(images[i:i + CHUNK], np.float32), sample_shape)
        disp = (np.clip(disp, 0, 1) * 255).round().astype(np.uint8)
        for k, img in enumerate(disp):
            r, c = divmod(i + k, side)
            sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    if channels == (4,):
        sheet = sheet[..., :3]
    buf = io.BytesIO()
    Image.fromarray(sheet).save(buf, format="PNG")
    return buf.getvalue(), (h, w)


def write_projector(out_dir: str | Path, codes, *, labels=None, images=None, sample_shape=None,
                    class_names=None, tensor_name: str = "codings") -> dict[str, object]:
    """Write ``codes`` (N, ...) with their labels and image thumbnails for TensorBoard's projector.

    Returns what was written: ``{"dir", "n", "sprite": bool, "note": str | None}``."""
    out = Path(out_dir)
    n = len(codes)
    if n == 0:
        raise DataError("no codings to write for the projector")
    if images is not None and len(images) != n:
        raise DataError(f"images: {len(images)} images for {n} codings")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out}: cannot create the projector folder: {e.strerror or e}") from None
    _write(out / "tensors.tsv", _tsv(codes))
    _write(out / "metadata.tsv", _metadata(n, labels, class_names))
    sprite, note = None, None
    if images is not None:
        sprite = _sprite(images, n, sample_shape)
        if sprite is None:
            note = (f"no sprite: {n} images do not fit TensorBoard's {SPRITE_MAX}x{SPRITE_MAX} sheet "
                    f"(encode fewer samples for thumbnails)")
        else:
            _write(out / "sprite.png", sprite[0])
    lines = ["embeddings {", f'  tensor_name: "{tensor_name}"', '  tensor_path: "tensors.tsv"',
             '  metadata_path: "metadata.tsv"']
    if sprite is not None:
        h, w = sprite[1]
        lines += ["  sprite {", '    image_path: "sprite.png"', f"    single_image_dim: {w}",
                  f"    single_image_dim: {h}", "  }"]
    lines.append("}")
    _write(out / CONFIG, ("\n".join(lines) + "\n").encode())
    return {"dir": out, "n": n, "sprite": sprite is not None, "note": note}
