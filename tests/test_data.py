"""Tests for latentforge.data readers, load_data dispatch and train_valid_split."""
from __future__ import annotations

import gzip
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from latentforge.data import Dataset, list_datasets, load_data, read_idx, train_valid_split
from latentforge.data.readers import parse_csv_text, parse_idx, read_csv
from latentforge.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MNIST_4K = SHARED / "data" / "mnist-4k"

_IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Serialise ``arr`` in the IDX format (big-endian)."""
    arr = np.asarray(arr)
    header = bytes([0, 0, _IDX_CODES[arr.dtype], arr.ndim])
    header += struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def rand_images(n=12, h=5, w=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, h, w), dtype=np.uint8), rng.integers(
        0, 10, size=n
    ).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_idx_file_with_labels_beside(tmp_path, gz):
    imgs, labels = rand_images()
    ext = ".gz" if gz else ""
    f = write_idx(tmp_path / f"train-images-idx3-ubyte{ext}", imgs, gz)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{ext}", labels, gz)
    ds = load_data(str(f))
    assert ds.x.shape == (12, 1, 5, 4) and ds.x.dtype == np.float32
    assert ds.sample_shape == (5, 4) and ds.is_image
    np.testing.assert_allclose(ds.x[:, 0], imgs / 255.0, rtol=1e-6)
    assert ds.y.dtype == np.int64 and list(ds.y) == list(labels)
    assert ds.name == str(f) and ds.in_unit_interval and len(ds) == 12


def test_idx_without_labels_and_explicit_labels(tmp_path):
    imgs, labels = rand_images()
    f = write_idx(tmp_path / "foo-idx3-ubyte", imgs)
    assert load_data(f).y is None
    (tmp_path / "lab.txt").write_text("\n".join(str(v) for v in labels) + "\n")
    assert list(load_data(f, labels=tmp_path / "lab.txt").y) == list(labels)
    np.save(tmp_path / "lab.npy", labels.astype(np.float64))
    assert list(load_data(f, labels=tmp_path / "lab.npy").y) == list(labels)


def test_idx_float_and_int16(tmp_path):
    arr = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    ds = load_data(write_idx(tmp_path / "a-idx2-ubyte", arr))
    assert not ds.is_image and ds.sample_shape == (3,)
    np.testing.assert_array_equal(ds.x, arr)
    small = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    ds = load_data(write_idx(tmp_path / "b-idx3-ubyte", small))
    np.testing.assert_allclose(ds.x[:, 0], small / 255.0, rtol=1e-6)


def test_idx_folder_split_selection(tmp_path):
    tr, trl = rand_images(10, seed=1)
    te, tel = rand_images(4, seed=2)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", tr, gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", trl, gz=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", te, gz=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", tel, gz=True)
    assert len(load_data(tmp_path)) == 10
    test = load_data(tmp_path, split="test")
    assert len(test) == 4 and list(test.y) == list(tel)
    with pytest.raises(ConfigError):
        load_data(tmp_path, split="valid")


def test_idx_folder_single_file(tmp_path):
    imgs, _ = rand_images(3)
    write_idx(tmp_path / "data-images-idx3-ubyte", imgs)
    assert len(load_data(tmp_path, split="test")) == 3


def test_truncated_gzip(tmp_path):
    imgs, _ = rand_images()
    data = gzip.compress(idx_bytes(imgs))
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*gzip"):
        load_data(f)


def test_wrong_magic(tmp_path):
    f = tmp_path / "x-images-idx3-ubyte"
    f.write_bytes(b"\x01\x02\x08\x03" + b"\x00" * 20)
    with pytest.raises(DataError, match="x-images-idx3-ubyte: not an IDX file"):
        load_data(f)
    f.write_bytes(b"\x00\x00\x07\x03" + b"\x00" * 20)
    with pytest.raises(DataError, match="data type code 0x07"):
        load_data(f)


def test_size_mismatch(tmp_path):
    imgs, _ = rand_images(5, 4, 4)
    f = tmp_path / "x-images-idx3-ubyte.gz"
    f.write_bytes(gzip.compress(idx_bytes(imgs)[:-3]))
    with pytest.raises(DataError, match=r"header says 5x4x4 = 80 bytes but the file holds 77"):
        load_data(f)
    assert "x-images-idx3-ubyte.gz" in str(pytest.raises(DataError, load_data, f).value)


def test_idx_zero_dimension_with_huge_others():
    # Found by fuzzing: 0 x 2^31 x ... "matches" an empty body but is no valid shape.
    buf = b"\x00\x00\x0c\x04" + struct.pack(">4I", 0, 0x94000000, 0x375A0000, 5)
    with pytest.raises(DataError, match="too large"):
        parse_idx(buf, "z")


def test_label_count_mismatch(tmp_path):
    imgs, labels = rand_images(12)
    f = write_idx(tmp_path / "train-images-idx3-ubyte", imgs)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels[:11])
    with pytest.raises(DataError, match=r"12 samples.*11 labels"):
        load_data(f)


def test_labels_file_given_must_be_integers(tmp_path):
    imgs, _ = rand_images(3)
    f = write_idx(tmp_path / "a-idx3-ubyte", imgs)
    (tmp_path / "l.txt").write_text("1\n2.5\n0\n")
    with pytest.raises(DataError, match="whole numbers"):
        load_data(f, labels=tmp_path / "l.txt")
    (tmp_path / "l.txt").write_text("1\n-2\n0\n")
    with pytest.raises(DataError, match=">= 0"):
        load_data(f, labels=tmp_path / "l.txt")


# ---------------------------------------------------------------------------------------------
# NumPy
# ---------------------------------------------------------------------------------------------
def test_npy_3d_4d_2d(tmp_path):
    imgs, _ = rand_images(7, 6, 5)
    np.save(tmp_path / "a.npy", imgs)
    ds = load_data(tmp_path / "a.npy")
    assert ds.x.shape == (7, 1, 6, 5) and ds.sample_shape == (6, 5) and ds.is_image

    rgb = np.random.default_rng(0).random((4, 3, 8, 8))  # float64 in [0, 1)
    np.save(tmp_path / "b.npy", rgb)
    ds = load_data(tmp_path / "b.npy")
    assert ds.x.shape == (4, 3, 8, 8) and ds.x.dtype == np.float32 and ds.sample_shape == (3, 8, 8)

    tab = np.random.default_rng(0).normal(0, 50, size=(9, 4))
    np.save(tmp_path / "c.npy", tab)
    ds = load_data(tmp_path / "c.npy")
    assert ds.x.shape == (9, 4) and not ds.is_image and ds.sample_shape == (4,)
    assert not ds.in_unit_interval  # floats are kept as they are
    np.testing.assert_allclose(ds.x, tab.astype(np.float32))


def test_npy_bad_shapes(tmp_path):
    np.save(tmp_path / "nhwc.npy", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(DataError, match="C in 1, 3 or 4"):
        load_data(tmp_path / "nhwc.npy")
    np.save(tmp_path / "one.npy", np.zeros(5, np.float32))
    with pytest.raises(DataError, match="1-D"):
        load_data(tmp_path / "one.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="obj.npy"):
        load_data(tmp_path / "obj.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(DataError, match="junk.npy"):
        load_data(tmp_path / "junk.npy")


def test_npz(tmp_path):
    imgs, labels = rand_images(5)
    np.savez(tmp_path / "a.npz", images=imgs, labels=labels)
    ds = load_data(tmp_path / "a.npz")
    assert ds.x.shape == (5, 1, 5, 4) and list(ds.y) == list(labels)
    np.savez_compressed(tmp_path / "b.npz", whatever=imgs)
    ds = load_data(tmp_path / "b.npz")
    assert ds.y is None and len(ds) == 5
    np.savez(tmp_path / "c.npz", foo=imgs, bar=labels)
    with pytest.raises(DataError, match="c.npz: no data array"):
        load_data(tmp_path / "c.npz")


def test_nan_and_inf(tmp_path):
    arr = np.zeros((4, 3), np.float64)
    arr[2, 1] = np.nan
    arr[3, 0] = np.inf
    np.save(tmp_path / "n.npy", arr)
    with pytest.raises(DataError, match=r"n.npy: 2 NaN/Inf value\(s\), the first at index \(2, 1\)"):
        load_data(tmp_path / "n.npy")


def test_integer_out_of_range(tmp_path):
    np.save(tmp_path / "big.npy", np.array([[0, 256], [3, 4]], dtype=np.int32))
    with pytest.raises(DataError, match=r"big.npy: integer values must lie in \[0, 255\]"):
        load_data(tmp_path / "big.npy")
    np.save(tmp_path / "neg.npy", np.array([[0, -1]], dtype=np.int64))
    with pytest.raises(DataError, match=r"\[0, 255\]"):
        load_data(tmp_path / "neg.npy")


def test_empty(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 5), np.float32))
    with pytest.raises(DataError, match="empty"):
        load_data(tmp_path / "e.npy")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="no images"):
        load_data(tmp_path / "folder")
    write_idx(tmp_path / "z-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
    with pytest.raises(DataError, match="empty"):
        load_data(tmp_path / "z-images-idx3-ubyte")


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------
def test_csv_no_header(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("1,2.5,-3\n4,5,6e2\n\n7,8,9\n")
    ds = load_data(f)
    assert ds.x.shape == (3, 3) and ds.y is None and not ds.is_image
    assert ds.x[1, 2] == 600.0 and ds.sample_shape == (3,)


def test_csv_header_with_label_column(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("a,b,Label\n0.1,0.2,1\n0.3,0.4,0\n0.5,0.6,2.0\n")
    ds = load_data(f)
    assert ds.x.shape == (3, 2) and list(ds.y) == [1, 0, 2]
    np.testing.assert_allclose(ds.x[:, 1], [0.2, 0.4, 0.6], rtol=1e-6)
    g = tmp_path / "h.csv"
    g.write_text("a,b\n1,2\n3,4\n")  # header, no label column
    ds = load_data(g)
    assert ds.x.shape == (2, 2) and ds.y is None


def test_csv_label_only_taken_from_header(tmp_path):
    f = tmp_path / "d.tsv"
    f.write_text("1\t2\t3\n4\t5\t6\n")
    assert load_data(f).x.shape == (2, 3)


def test_csv_non_numeric_cell(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(DataError, match=r"d.csv: line 3, column 2 \('b'\): 'oops' is not a number"):
        load_data(f)
    f.write_text("1,2\n3,\n")
    with pytest.raises(DataError, match="empty cell"):
        load_data(f)


def test_csv_ragged(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("1,2,3\n4,5\n")
    with pytest.raises(DataError, match="d.csv: line 2 has 2 fields but line 1 has 3"):
        load_data(f)


def test_csv_nan_and_bad_labels(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("x1,x2\n1,nan\n2,3\n")
    with pytest.raises(DataError, match=r"1 NaN/Inf value\(s\), the first at index \(0, 1\)"):
        load_data(f)
    f.write_text("x1,target\n1,0.5\n")
    with pytest.raises(DataError, match="whole numbers"):
        load_data(f)
    f.write_text("x1,target\n")
    with pytest.raises(DataError, match="empty"):
        load_data(f)
    f.write_bytes(b"1,2\n\xff\xfe,3\n")
    with pytest.raises(DataError, match="UTF-8"):
        load_data(f)


# ---------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------
def _save_png(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr).save(path)


def test_image_folder_with_classes(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for cls, n in (("dog", 2), ("cat", 3)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            _save_png(root / cls / f"{i}.png", rng.integers(0, 256, (6, 5), dtype=np.uint8))
    (root / "cat" / ".hidden.png").write_bytes(b"junk")  # hidden: skipped
    (root / "cat" / "notes.txt").write_text("skipped")
    (root / "empty").mkdir()  # no images: not a class
    ds = load_data(root)
    assert ds.x.shape == (5, 1, 6, 5) and ds.sample_shape == (6, 5) and ds.is_image
    assert ds.class_names == ["cat", "dog"] and list(ds.y) == [0, 0, 0, 1, 1]
    assert ds.in_unit_interval
    first = np.asarray(Image.open(root / "cat" / "0.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(ds.x[0, 0], first)


def test_image_folder_flat_rgb_and_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        _save_png(tmp_path / f"{i}.png", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(tmp_path / "x.jpg")
    ds = load_data(tmp_path)
    assert ds.x.shape == (4, 3, 4, 4) and ds.y is None and ds.class_names is None
    assert ds.sample_shape == (3, 4, 4)


def test_image_folder_mixed_grey_rgb_promoted(tmp_path):
    _save_png(tmp_path / "a.png", np.full((3, 3), 255, np.uint8))
    _save_png(tmp_path / "b.png", np.zeros((3, 3, 3), np.uint8))
    ds = load_data(tmp_path)
    assert ds.x.shape == (2, 3, 3, 3) and ds.x[0].min() == 1.0


def test_image_folder_undecodable(tmp_path):
    _save_png(tmp_path / "a.png", np.zeros((3, 3), np.uint8))
    (tmp_path / "b.png").write_bytes(b"\x89PNG definitely not a png")
    with pytest.raises(DataError, match=r"b.png: cannot decode image"):
        load_data(tmp_path)


def test_image_folder_size_mismatch(tmp_path):
    _save_png(tmp_path / "a.png", np.zeros((3, 3), np.uint8))
    _save_png(tmp_path / "b.png", np.zeros((4, 3), np.uint8))
    with pytest.raises(DataError, match="b.png: image is 3x4 but a.png is 3x3"):
        load_data(tmp_path)


# ---------------------------------------------------------------------------------------------
# Names, built-ins, splitting
# ---------------------------------------------------------------------------------------------
def test_unknown_name():
    with pytest.raises(DataError, match="not a built-in dataset.*digits.*mnist.*cifar10"):
        load_data("no-such-dataset-xyz")
    with pytest.raises(DataError):
        load_data("")


def test_unsupported_file(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"\x01\x02\x03")
    with pytest.raises(DataError, match="unsupported file type"):
        load_data(tmp_path / "a.bin")


def test_digits():
    ds = load_data("digits")
    assert ds.x.shape == (1797, 1, 8, 8) and ds.sample_shape == (8, 8)
    assert ds.in_unit_interval and ds.x.max() == 1.0
    assert ds.y.dtype == np.int64 and set(ds.y.tolist()) == set(range(10))
    with pytest.raises(DataError, match="no 'test' split"):
        load_data("digits", split="test")


def test_download_disabled_not_cached(tmp_path):
    with pytest.raises(DataError, match="not in the cache.*downloading is disabled"):
        load_data("mnist", cache_dir=tmp_path, download=False)


def test_list_datasets(tmp_path):
    infos = {d["name"]: d for d in list_datasets(cache_dir=tmp_path)}
    assert set(infos) == {"digits", "mnist", "fashion-mnist", "kmnist", "cifar10"}
    assert infos["digits"]["cached"] and not infos["mnist"]["cached"]
    assert infos["cifar10"]["shape"] == (3, 32, 32) and infos["mnist"]["n_train"] == 60000
    assert infos["mnist"]["path"] == str(tmp_path / "mnist")


def test_train_valid_split():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    ds = Dataset(x=x, y=np.arange(10), name="t", sample_shape=(2,), is_image=False)
    tr, va = train_valid_split(ds, 0.3, seed=1)
    assert len(tr) == 7 and len(va) == 3
    assert sorted(tr.y.tolist() + va.y.tolist()) == list(range(10))
    tr2, va2 = train_valid_split(ds, 0.3, seed=1)
    assert va2.y.tolist() == va.y.tolist()
    assert train_valid_split(ds, 0.0) == (ds, None)
    for bad in (1.0, -0.1, 1.5, "x"):
        with pytest.raises(ConfigError):
            train_valid_split(ds, bad)
    one = ds.subset([0])
    with pytest.raises(DataError):
        train_valid_split(one, 0.9)
    assert one.sample_shape == (2,) and one.name == "t"


def test_shared_mnist_4k():
    assert MNIST_4K.is_dir(), f"{MNIST_4K} is missing: CI must have ../shared beside the clone"
    ds = load_data(MNIST_4K)
    assert ds.x.shape == (4000, 1, 28, 28) and ds.x.dtype == np.float32
    assert ds.in_unit_interval and ds.x.max() > 0.99
    assert ds.y.min() == 0 and ds.y.max() == 9 and set(ds.y.tolist()) == set(range(10))


# ---------------------------------------------------------------------------------------------
# Fuzzing: only DataError ever comes out
# ---------------------------------------------------------------------------------------------
_FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _idx_like():
    """Random bytes, half of them starting with a plausible IDX magic number."""
    header = st.builds(
        lambda code, nd: bytes([0, 0, code, nd]),
        st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07]),
        st.integers(0, 4),
    )
    return st.one_of(
        st.binary(max_size=300),
        st.builds(lambda h, b: h + b, header, st.binary(max_size=300)),
    )


@_FUZZ
@given(data=_idx_like())
def test_fuzz_idx_parser(data):
    try:
        arr = parse_idx(data, "fuzz")
    except DataError:
        return
    assert isinstance(arr, np.ndarray)


@_FUZZ
@given(data=_idx_like(), gz=st.booleans(), cut=st.integers(0, 40))
def test_fuzz_idx_file(data, gz, cut):
    with tempfile.TemporaryDirectory() as d:
        payload = gzip.compress(data) if gz else data
        if gz and cut:
            payload = payload[:-cut]
        f = Path(d) / ("x-images-idx3-ubyte" + (".gz" if gz else ""))
        f.write_bytes(payload)
        try:
            read_idx(f)
            load_data(f)
        except DataError:
            pass


@_FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("0123456789.,-e \n\tnaN;\"x_label")) ) | st.text())
def test_fuzz_csv_parser(text):
    try:
        data, labels, _ = parse_csv_text(text, "fuzz")
    except DataError:
        return
    assert data.ndim == 2


@_FUZZ
@given(raw=st.binary(max_size=200) | st.text().map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_fuzz_csv_file(raw):
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "fuzz.csv"
        f.write_bytes(raw)
        try:
            read_csv(f)
            load_data(f)
        except DataError:
            pass


def test_no_raw_errors_for_unreadable(tmp_path, monkeypatch):
    """An unreadable file (simulated: the suite may run as root, who reads anything)."""
    f = tmp_path / "locked.npy"
    np.save(f, np.zeros((2, 2), np.float32))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(f))

    monkeypatch.setattr(np, "load", refuse)
    with pytest.raises(DataError, match="locked.npy.*Permission denied"):
        load_data(f)
