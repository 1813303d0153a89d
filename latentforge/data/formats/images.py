"""Folders of images (PNG/JPEG/BMP/GIF/WebP, decoded with Pillow): sub-folders are classes."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from latentforge.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "read_image_folder"]

#: File extensions recognised as images inside an image folder (compared lower-case).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})


def _is_image_file(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, sorted, skipping hidden files and folders."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            p = Path(dirpath) / fname
            if _is_image_file(p) and p.is_file():
                found.append(p)
    return found


_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def _decode_image(path: Path) -> np.ndarray:
    """Decode one image into ``(C, H, W)``: uint8 for 8-bit images, float32 in ``[0, 1]``
    for 16-bit ones, float32 as stored for 32-bit float images. C is 1 or 3."""
    from PIL import Image  # imported lazily: only image folders need Pillow

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("1", "L", "LA"):
                arr = np.asarray(im.convert("L"), dtype=np.uint8)[None]
            elif mode.startswith("I"):
                raw = np.asarray(im)
                arr = (raw.astype(np.float64) / 65535.0).astype(np.float32)[None]
            elif mode == "F":
                arr = np.asarray(im, dtype=np.float32)[None]
            else:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError ...)
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
    return np.ascontiguousarray(arr)


def read_image_folder(
    folder: str | os.PathLike, notes: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """Read a folder of images.

    Sub-folders (searched recursively, hidden ones skipped) are classes, labelled by the
    alphabetical order of their names; sub-folders without images are ignored. A flat folder
    gives unlabelled data. Hidden files and files whose extension is not one of
    ``IMAGE_EXTENSIONS`` are skipped; an image file that cannot be decoded is an error.

    Returns:
        ``(images, labels, class_names)`` with images float32 in ``[0, 1]`` (for 8/16-bit
        files), shaped ``(N, H, W)`` when all images are greyscale, else ``(N, 3, H, W)``.

    Raises:
        DataError: no images, images of different sizes, both top-level images and class
            sub-folders, or an undecodable image.
    """
    root = Path(folder)
    source = str(folder)
    try:
        entries = sorted(e for e in root.iterdir() if not e.name.startswith("."))
    except OSError as e:
        raise DataError(f"{source}: cannot list folder ({e.strerror or e})") from e
    top_images = [e for e in entries if _is_image_file(e) and e.is_file()]
    classes: list[tuple[str, list[Path]]] = []
    for sub in (e for e in entries if e.is_dir()):
        files = _images_under(sub)
        if files:
            classes.append((sub.name, files))
    if classes and top_images:
        raise DataError(
            f"{source}: holds both images ({top_images[0].name}, ...) and class sub-folders "
            f"({classes[0][0]}, ...); use one layout"
        )
    if classes:
        files = [f for _, fs in classes for f in fs]
        labels: np.ndarray | None = np.concatenate(
            [np.full(len(fs), i, dtype=np.int64) for i, (_, fs) in enumerate(classes)]
        )
        class_names: list[str] | None = [name for name, _ in classes]
    elif top_images:
        files, labels, class_names = top_images, None, None
    else:
        exts = "/".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise DataError(f"{source}: no images ({exts}) or IDX files in the folder")

    decoded: list[np.ndarray] = []
    size: tuple[int, int] | None = None
    for f in files:
        img = _decode_image(f)
        hw = (int(img.shape[1]), int(img.shape[2]))
        if size is None:
            size = hw
            first = f
        elif hw != size:
            raise DataError(
                f"{f}: image is {hw[1]}x{hw[0]} but {first.name} is {size[1]}x{size[0]}; all "
                "images must have the same size"
            )
        decoded.append(img)
    assert size is not None
    channels = max(img.shape[0] for img in decoded)
    n_grey = sum(img.shape[0] == 1 for img in decoded)
    if channels > 1 and n_grey and notes is not None:
        notes.append(f"{source}: {n_grey} of {len(decoded)} images are greyscale and the others colour: "
                     "the greyscale ones were promoted to RGB (3 channels)")
    out = np.empty((len(decoded), channels, size[0], size[1]), dtype=np.float32)
    for i, img in enumerate(decoded):
        out[i] = img * np.float32(1.0 / 255.0) if img.dtype == np.uint8 else img
    if channels == 1:
        out = out[:, 0]
    return out, labels, class_names
