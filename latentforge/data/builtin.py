"""Built-in datasets and :func:`load_data`, the single entry point for loading data.

Built-in names (case-insensitive; ``_`` may stand for ``-``):

=================  ============================================  ==================
name               source                                        samples
=================  ============================================  ==================
``digits``         scikit-learn's bundled 8x8 digits (no download)  1797
``mnist``          IDX gz, ossci-datasets S3 mirror / yann.lecun.com  60000 + 10000
``fashion-mnist``  IDX gz, Zalando's S3 bucket                   60000 + 10000
``kmnist``         IDX gz, ROIS-DS CODH                          60000 + 10000
``cifar10``        binary version ``cifar-10-binary.tar.gz``     50000 + 10000
=================  ============================================  ==================

Downloaded files go to ``data_cache_dir()/<name>/`` and are checked against the published MD5
checksums (the ones torchvision uses; for CIFAR-10's binary archive the one on the dataset's
home page). ``$LATENTFORGE_MIRROR`` replaces the download URLs with ``<mirror>/<file name>``.
CIFAR-10 is only ever read from its binary version: the pickle-based Python version is never
downloaded or unpickled.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from latentforge.errors import DataError

from .download import (
    MIRROR_ENV,
    data_cache_dir,
    dataset_lock,
    download_file,
    is_verified,
    mirror_urls,
    safe_extract_tar,
    verify_file,
)
from .dataset import Dataset, check_split, make_dataset
from .formats.cifar import read_cifar10_binary
from .formats.idx import read_idx
from .sources import load_path

__all__ = [
    "BuiltinDataset",
    "REGISTRY",
    "builtin_names",
    "list_datasets",
    "load_builtin",
    "load_data",
    "resolve_builtin",
]


@dataclass(frozen=True)
class BuiltinDataset:
    """Description of one built-in dataset.

    Attributes:
        name: the canonical name (also the cache sub-folder).
        description: one line for listings.
        format: ``"sklearn-digits"``, ``"idx"`` or ``"cifar10-binary"``.
        shape: canonical per-sample shape ``(C, H, W)``.
        n_train: number of training samples.
        n_test: number of test samples, or ``None`` if there is no test split.
        mirrors: base URLs, tried in order (``$LATENTFORGE_MIRROR`` replaces them).
        files: downloadable file name -> MD5.
        splits: split -> file names. For ``idx``: ``(images, labels)`` among ``files``; for
            ``cifar10-binary``: the batch files inside ``extract_dir``.
        extract_dir: folder the archive unpacks into (``cifar10-binary`` only).
        class_names: class names, index = label.
        homepage: where the dataset is described.
    """

    name: str
    description: str
    format: str
    shape: tuple[int, ...]
    n_train: int
    n_test: int | None
    mirrors: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)
    splits: dict[str, tuple[str, ...]] = field(default_factory=dict)
    extract_dir: str | None = None
    class_names: tuple[str, ...] = ()
    homepage: str = ""


_IDX_SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_DIGIT_NAMES = tuple(str(i) for i in range(10))

#: The built-in datasets by canonical name. Tests may replace entries (e.g. with
#: ``dataclasses.replace``) to point at generated files.
REGISTRY: dict[str, BuiltinDataset] = {
    "digits": BuiltinDataset(
        name="digits",
        description="8x8 handwritten digits bundled with scikit-learn (values 0..16 / 16)",
        format="sklearn-digits",
        shape=(1, 8, 8),
        n_train=1797,
        n_test=None,
        splits={"train": ()},
        class_names=_DIGIT_NAMES,
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
    ),
    "mnist": BuiltinDataset(
        name="mnist",
        description="MNIST handwritten digits, 28x28 greyscale, 10 classes",
        format="idx",
        shape=(1, 28, 28),
        n_train=60000,
        n_test=10000,
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        files={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        splits=_IDX_SPLITS,
        class_names=_DIGIT_NAMES,
        homepage="http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": BuiltinDataset(
        name="fashion-mnist",
        description="Fashion-MNIST clothing images, 28x28 greyscale, 10 classes",
        format="idx",
        shape=(1, 28, 28),
        n_train=60000,
        n_test=10000,
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        splits=_IDX_SPLITS,
        class_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "kmnist": BuiltinDataset(
        name="kmnist",
        description="Kuzushiji-MNIST cursive Japanese characters, 28x28 greyscale, 10 classes",
        format="idx",
        shape=(1, 28, 28),
        n_train=60000,
        n_test=10000,
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        files={
            "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
        },
        splits=_IDX_SPLITS,
        class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        homepage="https://github.com/rois-codh/kmnist",
    ),
    "cifar10": BuiltinDataset(
        name="cifar10",
        description="CIFAR-10 natural images, 32x32 RGB, 10 classes (binary version)",
        format="cifar10-binary",
        shape=(3, 32, 32),
        n_train=50000,
        n_test=10000,
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        files={"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
        splits={
            "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
            "test": ("test_batch.bin",),
        },
        extract_dir="cifar-10-batches-bin",
        class_names=(
            "airplane", "automobile", "bird", "cat", "deer",
            "dog", "frog", "horse", "ship", "truck",
        ),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
}

_ALIASES = {
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "k-mnist": "kmnist",
}

_EXTRACTED_MARKER = ".extracted"


def builtin_names() -> list[str]:
    """The canonical names of the built-in datasets."""
    return list(REGISTRY)


def resolve_builtin(name: str) -> str | None:
    """The canonical built-in name for ``name`` (case-insensitive, ``_`` = ``-``, a few
    aliases such as ``cifar-10``), or ``None`` if it names no built-in dataset."""
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    return key if key in REGISTRY else None


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else data_cache_dir()


def _not_cached(spec: BuiltinDataset, split: str, root: Path, files: list[str]) -> DataError:
    return DataError(
        f"{spec.name} ({split} split) is not in the cache {root} and downloading is disabled; "
        f"allow downloading (or set {MIRROR_ENV} to a mirror), or put "
        + ", ".join(files)
        + " there"
    )


def _ensure_files(
    spec: BuiltinDataset, filenames: tuple[str, ...], root: Path, split: str, download: bool
) -> list[Path]:
    """Make sure ``filenames`` of ``spec`` are in ``root`` and match their MD5s."""
    paths = [root / f for f in filenames]
    if all(is_verified(p, spec.files[p.name]) for p in paths):
        return paths
    if not download:
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise _not_cached(spec, split, root, missing)
        for p in paths:
            if not verify_file(p, spec.files[p.name]):
                raise DataError(
                    f"{p}: cached file fails its MD5 check (expected {spec.files[p.name]}); "
                    "delete it, or allow downloading to fetch it again"
                )
        return paths
    with dataset_lock(root):
        for p in paths:
            download_file(mirror_urls(p.name, spec.mirrors), p, spec.files[p.name], lock=False)
    return paths


def _cifar_extracted(batch_dir: Path, spec: BuiltinDataset, archive_md5: str) -> bool:
    try:
        marker = (batch_dir / _EXTRACTED_MARKER).read_text().strip()
    except OSError:
        return False
    batches = [b for files in spec.splits.values() for b in files]
    return marker == archive_md5 and all((batch_dir / b).is_file() for b in batches)


def _ensure_cifar(spec: BuiltinDataset, root: Path, split: str, download: bool) -> Path:
    """Make sure the CIFAR-10 batch files are extracted under ``root``; return their folder."""
    assert spec.extract_dir is not None
    (archive_name, archive_md5), = spec.files.items()
    batch_dir = root / spec.extract_dir
    if _cifar_extracted(batch_dir, spec, archive_md5):
        return batch_dir
    archive = root / archive_name
    if not download and not archive.is_file():
        raise _not_cached(spec, split, root, [archive_name])
    with dataset_lock(root):
        if _cifar_extracted(batch_dir, spec, archive_md5):
            return batch_dir
        if download:
            download_file(mirror_urls(archive_name, spec.mirrors), archive, archive_md5,
                          lock=False)
        elif not verify_file(archive, archive_md5):
            raise DataError(
                f"{archive}: cached file fails its MD5 check (expected {archive_md5}); delete "
                "it, or allow downloading to fetch it again"
            )
        batches = [b for files in spec.splits.values() for b in files]
        safe_extract_tar(archive, root, only=[f"{spec.extract_dir}/{b}" for b in batches])
        try:
            (batch_dir / _EXTRACTED_MARKER).write_text(archive_md5 + "\n")
        except OSError as e:
            raise DataError(f"{batch_dir}: cannot write ({e.strerror or e})") from e
    return batch_dir


def _load_digits(spec: BuiltinDataset) -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("digits: needs scikit-learn (pip install scikit-learn)") from e
    bunch = load_digits()
    images = bunch.images / 16.0  # values 0..16 -> [0, 1]
    return make_dataset(images, bunch.target, name=spec.name, source=spec.name,
                        class_names=spec.class_names)


def load_builtin(
    name: str,
    *,
    split: str = "train",
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> Dataset:
    """Load a built-in dataset, downloading it into the cache on first use.

    Args:
        name: a built-in name (see :data:`REGISTRY`; aliases are resolved).
        split: ``"train"`` or ``"test"``.
        cache_dir: cache folder; default :func:`data_cache_dir`.
        download: if False, a dataset that is not cached raises DataError instead.

    Raises:
        DataError: unknown name, a split the dataset lacks, not cached with ``download``
            off, or invalid cached files.
        DownloadError: the download failed.
    """
    check_split(split)
    key = resolve_builtin(name)
    if key is None:
        raise DataError(
            f"{name}: not a built-in dataset (built-ins: {', '.join(builtin_names())})"
        )
    spec = REGISTRY[key]
    if split not in spec.splits:
        raise DataError(
            f"{spec.name}: has no {split!r} split (only {', '.join(spec.splits)}); use "
            "train_valid_split for a held-out part"
        )
    if spec.format == "sklearn-digits":
        return _load_digits(spec)
    root = _cache_root(cache_dir) / spec.name
    if spec.format == "idx":
        images, labels = _ensure_files(spec, spec.splits[split], root, split, download)
        return make_dataset(
            read_idx(images),
            read_idx(labels),
            name=spec.name,
            source=str(images),
            labels_source=str(labels),
            class_names=spec.class_names,
        )
    if spec.format == "cifar10-binary":
        batch_dir = _ensure_cifar(spec, root, split, download)
        x, y = read_cifar10_binary([batch_dir / b for b in spec.splits[split]])
        return make_dataset(x, y, name=spec.name, source=str(batch_dir),
                            class_names=spec.class_names)
    raise DataError(f"{spec.name}: unknown dataset format {spec.format!r}")  # pragma: no cover


def _is_cached(spec: BuiltinDataset, root: Path) -> bool:
    if spec.format == "sklearn-digits":
        return True
    if spec.format == "cifar10-binary":
        (archive_md5,) = spec.files.values()
        return _cifar_extracted(root / (spec.extract_dir or ""), spec, archive_md5)
    return all((root / f).is_file() for f in spec.files)


def _digits_path() -> str:
    import importlib.util

    found = importlib.util.find_spec("sklearn")
    if found is None or not found.submodule_search_locations:
        return "(bundled with scikit-learn)"
    base = Path(list(found.submodule_search_locations)[0])
    return str(base / "datasets" / "data" / "digits.csv.gz")


def list_datasets(cache_dir: str | os.PathLike | None = None) -> list[dict]:
    """Describe the built-in datasets.

    Returns:
        One dict per dataset with keys ``name``, ``description``, ``shape`` (canonical
        per-sample ``(C, H, W)``), ``n_train``, ``n_test`` (``None`` if no test split),
        ``cached`` (all files present in the cache; always True for ``digits``), ``path``
        (the cache folder, or the bundled file for ``digits``) and ``homepage``.
    """
    root = _cache_root(cache_dir)
    out = []
    for spec in REGISTRY.values():
        path = _digits_path() if spec.format == "sklearn-digits" else str(root / spec.name)
        out.append(
            {
                "name": spec.name,
                "description": spec.description,
                "shape": tuple(spec.shape),
                "n_train": spec.n_train,
                "n_test": spec.n_test,
                "cached": _is_cached(spec, root / spec.name),
                "path": path,
                "homepage": spec.homepage,
            }
        )
    return out


def load_data(
    source: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    split: str = "train",
) -> Dataset:
    """Load a dataset from a built-in name or a path.

    A ``str`` that names a built-in dataset (``digits``, ``mnist``, ``fashion-mnist``,
    ``kmnist``, ``cifar10``) loads it, even if a file of that name exists in the working
    directory (write ``./mnist`` for the file). Anything else is a path to an IDX file, a
    folder of IDX files, a ``.npy``/``.npz``/CSV file or a folder of images; see
    :mod:`latentforge.data.formats` for the formats and :mod:`latentforge.data.dataset` for the
    value rules. In short: integer data must be within ``[0, 255]`` and is divided by 255, float
    data is kept as is, NaN/Inf and empty data are errors, labels must be integers >= 0.

    Args:
        source: built-in name or path.
        labels: optional labels file (IDX, ``.npy``, or one integer per line) for a path
            source; it replaces labels found in or beside the source.
        cache_dir: cache folder for built-ins; default :func:`data_cache_dir`.
        download: allow downloading built-ins that are not cached.
        split: ``"train"`` or ``"test"`` (built-ins and folders of IDX files; single files
            ignore it).

    Raises:
        DataError: unknown name / missing path, an unsupported or invalid file (one line
            naming the file and the problem).
        DownloadError: a built-in could not be downloaded or failed its checksum.
        ConfigError: ``split`` is not ``"train"`` or ``"test"``.
    """
    check_split(split)
    if isinstance(source, str):
        if not source.strip():
            raise DataError("empty data source: give a built-in name or a path")
        key = resolve_builtin(source)
        if key is not None:
            if labels is not None:
                raise DataError(f"{source}: a built-in dataset brings its own labels; "
                                "drop the labels argument")
            return load_builtin(key, split=split, cache_dir=cache_dir, download=download)
    elif not isinstance(source, os.PathLike):
        raise DataError(f"{source!r}: a data source must be a built-in name or a path")
    try:
        if not Path(source).expanduser().exists():
            raise DataError(
                f"{source}: no such file or folder, and not a built-in dataset "
                f"({', '.join(builtin_names())})"
            )
        return load_path(source, labels, split=split)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zlib.error) as e:  # safety net: one clear line
        raise DataError(f"{source}: cannot load ({type(e).__name__}: {e})") from e

