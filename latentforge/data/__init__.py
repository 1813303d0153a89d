"""Data loading for latentforge: built-in datasets, file readers and the downloader.

Public API::

    from latentforge.data import Dataset, load_data, train_valid_split, list_datasets, data_cache_dir

    ds = load_data("mnist")                    # built-in, downloaded into data_cache_dir()
    ds = load_data("scans/", split="test")     # a folder of IDX files or of images
    ds = load_data("x.npy", labels="y.txt")    # arrays, CSV, IDX files ...
    train, valid = train_valid_split(ds, 0.1, seed=0)

Every problem with the input raises :class:`latentforge.errors.DataError` (downloads:
:class:`latentforge.errors.DownloadError`) with one line naming the source and the problem.
"""
from __future__ import annotations

from .builtin import REGISTRY, BuiltinDataset, list_datasets, load_builtin, load_data
from .download import data_cache_dir, download_file, safe_extract_tar
from .dataset import Dataset, train_valid_split
from .formats.idx import read_idx

__all__ = [
    "BuiltinDataset",
    "Dataset",
    "REGISTRY",
    "data_cache_dir",
    "download_file",
    "list_datasets",
    "load_builtin",
    "load_data",
    "read_idx",
    "safe_extract_tar",
    "train_valid_split",
]
