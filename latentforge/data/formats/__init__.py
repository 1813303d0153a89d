"""Readers that turn files on disk into a :class:`~latentforge.data.dataset.Dataset`, one module
per format family, and :func:`read_path` (in :mod:`.dispatch`), which picks the reader.

Supported sources (see :func:`latentforge.data.sources.load_path`):

* **IDX** files (the MNIST format), plain or gzip-compressed, e.g.
  ``train-images-idx3-ubyte.gz``. Labels are found beside the images file by the standard
  name (``images-idx3`` -> ``labels-idx1``) unless given explicitly.
* A **folder of IDX files**: the ``train-`` pair for split ``"train"``, the ``t10k-``/``test-``
  pair for split ``"test"``; a folder with exactly one images file uses that one.
* **.npy**: images ``(N, H, W)`` or ``(N, C, H, W)`` with ``C`` in 1, 3 or 4, or tabular
  ``(N, D)``.
* **.npz**: the data array is named ``x``/``X``/``images``/``data``/``features``/``inputs``/
  ``x_train``/``X_train`` (or is the only array); labels, if any, are named ``y``/``Y``/
  ``labels``/``label``/``targets``/``target``/``classes``/``y_train``. Which arrays were used
  is said in :attr:`~latentforge.data.dataset.Dataset.notes` (the command line prints it).
* **CSV** (``.csv``/``.tsv``/``.txt``) of numbers, with an optional header row. A label column
  is recognised only by its header name (``label``, ``labels``, ``y``, ``target``, ``class``).
* A **folder of images** (PNG/JPEG/BMP/GIF/WebP, read with Pillow). Sub-folders are classes,
  labelled in alphabetical order; a flat folder has no labels. All images must have the same
  size. Greyscale images give one channel, everything else three (RGB; alpha is dropped); a
  folder that mixes both is promoted to RGB (said once, in :attr:`~latentforge.data.dataset.Dataset.notes`).

Modules: :mod:`.idx` (IDX files and folders of them), :mod:`.npy` (``.npy``, streamed
``.npy``, ``.npz``), :mod:`.csv`, :mod:`.images` (image folders), :mod:`.labels` (labels
files), :mod:`.cifar` (CIFAR-10 binary batches), :mod:`.common` (bytes and text of a file) and
:mod:`.dispatch`. The value rules every reader applies are in :mod:`latentforge.data.dataset`.
"""
from __future__ import annotations

from .cifar import read_cifar10_binary
from .csv import LABEL_COLUMN_NAMES, parse_csv_text, read_csv
from .dispatch import read_path
from .idx import IDX_DTYPES, SPLIT_TOKENS, idx_images_in, labels_beside, parse_idx, read_idx
from .images import IMAGE_EXTENSIONS, read_image_folder
from .labels import read_labels
from .npy import NPZ_DATA_KEYS, NPZ_LABEL_KEYS, NpyStream, read_npy, read_npz

__all__ = [
    "IDX_DTYPES",
    "IMAGE_EXTENSIONS",
    "LABEL_COLUMN_NAMES",
    "NPZ_DATA_KEYS",
    "NPZ_LABEL_KEYS",
    "NpyStream",
    "SPLIT_TOKENS",
    "idx_images_in",
    "labels_beside",
    "parse_csv_text",
    "parse_idx",
    "read_cifar10_binary",
    "read_csv",
    "read_idx",
    "read_image_folder",
    "read_labels",
    "read_npy",
    "read_npz",
    "read_path",
]
