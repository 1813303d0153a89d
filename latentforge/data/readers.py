"""Compatibility module: the names ``latentforge.data.readers`` has always offered, re-exported
from their homes.

* :mod:`latentforge.data.dataset`: :class:`Dataset`, :func:`train_valid_split`, the value and
  shape checks (:func:`to_float32`, :func:`to_labels`, :func:`check_samples_shape`,
  :func:`make_dataset`) and the split names (:func:`check_split`).
* :mod:`latentforge.data.formats`: one module per format family (IDX, ``.npy``/``.npz``,
  CSV, image folders, labels files, CIFAR-10 batches; the formats are listed there) and
  :func:`read_path`, which picks the reader for a file or folder.

New code imports from those modules.
"""
from __future__ import annotations

from .dataset import SPLITS, check_split  # noqa: F401  (public here before, outside __all__)
from .dataset import Dataset, check_samples_shape, make_dataset, to_float32, to_labels, train_valid_split
from .formats.cifar import read_cifar10_binary
from .formats.csv import LABEL_COLUMN_NAMES, parse_csv_text, read_csv
from .formats.dispatch import read_path
from .formats.idx import IDX_DTYPES, SPLIT_TOKENS, idx_images_in, labels_beside  # noqa: F401  (as above)
from .formats.idx import parse_idx, read_idx
from .formats.images import IMAGE_EXTENSIONS, read_image_folder
from .formats.labels import read_labels
from .formats.npy import NPZ_DATA_KEYS, NPZ_LABEL_KEYS  # noqa: F401  (as above)
from .formats.npy import NpyStream, read_npy, read_npz

__all__ = [
    "Dataset",
    "IMAGE_EXTENSIONS",
    "NpyStream",
    "check_samples_shape",
    "LABEL_COLUMN_NAMES",
    "read_path",
    "make_dataset",
    "parse_csv_text",
    "parse_idx",
    "read_cifar10_binary",
    "read_csv",
    "read_idx",
    "read_image_folder",
    "read_labels",
    "read_npy",
    "read_npz",
    "to_float32",
    "to_labels",
    "train_valid_split",
]
