"""Tests for the downloader, cache and built-in registry against a local HTTP server.

Nothing here contacts any address but 127.0.0.1: every test points ``LATENTFORGE_MIRROR`` at
a ``ThreadingHTTPServer`` bound to 127.0.0.1 that serves files the tests generate.
"""
from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib
import io
import multiprocessing
import struct
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from latentforge.data import builtin, download, load_data
from latentforge.data.download import download_file, safe_extract_tar
from latentforge.errors import DataError, DownloadError


# ---------------------------------------------------------------------------------------------
# A tiny local file server
# ---------------------------------------------------------------------------------------------
class FileServer:
    """Serves ``files`` (name -> bytes) on 127.0.0.1; counts hits per name.

    ``truncate``: names whose response claims a longer Content-Length than it sends, then
    closes the connection. ``delay``: seconds to sleep before sending a body.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self.truncate: set[str] = set()
        self.delay = 0.0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                name = self.path.lstrip("/")
                with server._lock:
                    server.hits[name] += 1
                body = server.files.get(name)
                if body is None:
                    self.send_error(404, "not found")
                    return
                if server.delay:
                    time.sleep(server.delay)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if name in server.truncate:
                    self.send_header("Content-Length", str(len(body) + 1000))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def total_hits(self) -> int:
        return sum(self.hits.values())


@pytest.fixture
def server():
    srv = FileServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch, server):
    """Point the cache at tmp_path and every download at the local server."""
    root = tmp_path / "cache"
    monkeypatch.setenv("LATENTFORGE_DATA", str(root))
    monkeypatch.setenv("LATENTFORGE_MIRROR", server.url + "/")
    return root


# ---------------------------------------------------------------------------------------------
# Generated data
# ---------------------------------------------------------------------------------------------
def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def idx_gz(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08}[arr.dtype]
    raw = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    return gzip.compress(raw)


@pytest.fixture
def mnist_files(server, monkeypatch):
    """50 random 28x28 images + labels served as the train split of ``mnist``."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=50).astype(np.uint8)
    files = {
        "train-images-idx3-ubyte.gz": idx_gz(images),
        "train-labels-idx1-ubyte.gz": idx_gz(labels),
    }
    server.files.update(files)
    spec = dataclasses.replace(
        builtin.REGISTRY["mnist"],
        files={name: md5(data) for name, data in files.items()},
        splits={"train": tuple(files)},
        n_train=50,
        n_test=None,
    )
    monkeypatch.setitem(builtin.REGISTRY, "mnist", spec)
    return images, labels, files


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                tf.addfile(info)
    return buf.getvalue()


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def cifar_batch(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    records = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1)
    return records.tobytes(), images, labels


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if ".part-" in p.name)


# ---------------------------------------------------------------------------------------------
# Built-in IDX datasets through load_data
# ---------------------------------------------------------------------------------------------
def test_download_then_cache(cache, server, mnist_files, monkeypatch):
    images, labels, _ = mnist_files
    ds = load_data("mnist")
    assert ds.x.shape == (50, 1, 28, 28) and ds.name == "mnist"
    np.testing.assert_allclose(ds.x[:, 0], images / 255.0, rtol=1e-6)
    assert ds.y.tolist() == labels.tolist() and ds.class_names[3] == "3"
    assert server.total_hits() == 2
    assert (cache / "mnist" / "train-images-idx3-ubyte.gz.verified").is_file()
    assert leftovers(cache) == []

    # Second load: served from the cache, and not even re-hashed (the marker is trusted).
    def no_hashing(path):
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(download, "file_md5", no_hashing)
    again = load_data("mnist")
    assert server.total_hits() == 2
    np.testing.assert_array_equal(again.x, ds.x)
    assert load_data("mnist", download=False).x.shape == (50, 1, 28, 28)
    info = {d["name"]: d for d in builtin.list_datasets()}["mnist"]
    assert info["cached"] and info["path"] == str(cache / "mnist")


def test_corrupted_cache_is_redownloaded(cache, server, mnist_files):
    load_data("mnist")
    target = cache / "mnist" / "train-images-idx3-ubyte.gz"
    target.write_bytes(b"garbage")
    with pytest.raises(DataError, match="fails its MD5 check"):
        load_data("mnist", download=False)
    ds = load_data("mnist")
    assert len(ds) == 50 and server.hits["train-images-idx3-ubyte.gz"] == 2


def test_bad_checksum(cache, server, mnist_files, monkeypatch):
    spec = builtin.REGISTRY["mnist"]
    files = dict(spec.files, **{"train-images-idx3-ubyte.gz": "0" * 32})
    monkeypatch.setitem(builtin.REGISTRY, "mnist", dataclasses.replace(spec, files=files))
    real = md5(mnist_files[2]["train-images-idx3-ubyte.gz"])
    with pytest.raises(DownloadError, match=f"expected md5 0{{32}}, got {real}.*deleted"):
        load_data("mnist")
    folder = cache / "mnist"
    assert not (folder / "train-images-idx3-ubyte.gz").exists()
    assert leftovers(cache) == []


def test_truncated_transfer(cache, server, mnist_files):
    server.truncate.add("train-images-idx3-ubyte.gz")
    with pytest.raises(DownloadError, match="truncated"):
        load_data("mnist")
    assert not (cache / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert leftovers(cache) == []


def test_missing_on_server(cache, server, mnist_files):
    del server.files["train-labels-idx1-ubyte.gz"]
    with pytest.raises(DownloadError, match=r"train-labels-idx1-ubyte.gz.*HTTP 404"):
        load_data("mnist")


def test_concurrent_threads(cache, server, mnist_files):
    server.delay = 0.2
    results, errors = [], []

    def worker():
        try:
            results.append(load_data("mnist"))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and len(results) == 3
    assert all(len(r) == 50 for r in results)
    assert server.hits["train-images-idx3-ubyte.gz"] == 1
    assert sorted(p.name for p in (cache / "mnist").glob("*.gz")) == [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    assert leftovers(cache) == []


def _download_in_child(url: str, dest: str, checksum: str, queue) -> None:
    try:
        download_file(url, Path(dest), checksum, progress=False)
        queue.put("ok")
    except Exception as e:  # pragma: no cover - reported to the parent
        queue.put(f"{type(e).__name__}: {e}")


def test_concurrent_processes(tmp_path, server):
    data = b"x" * 200_000
    server.files["blob.bin"] = data
    server.delay = 0.3
    dest = tmp_path / "ds" / "blob.bin"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_download_in_child, args=(f"{server.url}/blob.bin", str(dest), md5(data), queue))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
    assert [queue.get(timeout=5) for _ in procs] == ["ok", "ok"]
    assert dest.read_bytes() == data and server.hits["blob.bin"] == 1
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# download_file directly
# ---------------------------------------------------------------------------------------------
def test_mirror_fallback_and_stale_parts(tmp_path, server):
    data = b"hello world" * 100
    server.files["f.bin"] = data
    dest = tmp_path / "d" / "f.bin"
    dest.parent.mkdir()
    stale = dest.with_name("f.bin.part-999999")
    stale.write_bytes(b"left by a killed process")
    out = download_file([f"{server.url}/missing.bin", f"{server.url}/f.bin"], dest, md5(data),
                        progress=False)
    assert out == dest and dest.read_bytes() == data and not stale.exists()
    # Already there and verified: no new request.
    download_file(f"{server.url}/f.bin", dest, md5(data))
    assert server.hits["f.bin"] == 1


def test_all_mirrors_fail(tmp_path, server):
    with pytest.raises(DownloadError, match=r"every mirror failed: .*a\.bin: HTTP 404.*b\.bin: HTTP 404"):
        download_file([f"{server.url}/a.bin", f"{server.url}/b.bin"], tmp_path / "x.bin", "0" * 32)
    with pytest.raises(DownloadError, match="cannot connect"):
        # A closed local port: connection refused, no outside traffic.
        download_file("http://127.0.0.1:9/x.bin", tmp_path / "x.bin", "0" * 32, timeout=2)
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # the lock file only


def test_existing_file_verified_once(tmp_path, server):
    data = b"abc" * 10
    dest = tmp_path / "f.bin"
    dest.write_bytes(data)
    download_file(f"{server.url}/f.bin", dest, md5(data))  # not served, but already there
    assert server.total_hits() == 0
    assert (tmp_path / "f.bin.verified").is_file()


# ---------------------------------------------------------------------------------------------
# Tar safety and CIFAR-10
# ---------------------------------------------------------------------------------------------
def _evil_members(kind: str):
    good = file_member("cifar-10-batches-bin/ok.bin", b"fine")
    if kind == "dotdot":
        return [good, file_member("../evil", b"pwned")]
    if kind == "absolute":
        return [good, file_member("/tmp/latentforge-evil", b"pwned")]
    info = tarfile.TarInfo("cifar-10-batches-bin/link")
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, "cifar-10-batches-bin/ok.bin"
    else:
        info.type = tarfile.CHRTYPE
    return [good, (info, None)]


@pytest.mark.parametrize(
    "kind, message",
    [("dotdot", "leaves the destination"), ("absolute", "absolute"),
     ("symlink", "link"), ("hardlink", "link"), ("device", "device")],
)
def test_tar_refuses_unsafe_members(tmp_path, kind, message):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_bytes(_evil_members(kind)))
    dest = tmp_path / "out" / "inner"
    with pytest.raises(DownloadError, match=message):
        safe_extract_tar(archive, dest)
    assert not (tmp_path / "out" / "evil").exists()
    assert not any(dest.rglob("*")) if dest.exists() else True  # nothing extracted at all


def test_tar_corrupt(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_bytes([file_member("x", b"1" * 5000)])[:40])
    with pytest.raises(DownloadError, match="a.tar.gz: corrupt"):
        safe_extract_tar(archive, tmp_path / "out")


def _serve_cifar(server, monkeypatch, members) -> None:
    data = tar_bytes(members)
    server.files["cifar-10-binary.tar.gz"] = data
    spec = dataclasses.replace(builtin.REGISTRY["cifar10"],
                               files={"cifar-10-binary.tar.gz": md5(data)})
    monkeypatch.setitem(builtin.REGISTRY, "cifar10", spec)


def test_cifar10_binary(cache, server, monkeypatch):
    members, expected = [], {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        raw, images, labels = cifar_batch(3, seed=i)
        members.append(file_member(f"cifar-10-batches-bin/{name}.bin", raw))
        expected[name] = (images, labels)
    members.append(file_member("cifar-10-batches-bin/readme.html", b"<html/>"))
    _serve_cifar(server, monkeypatch, members)

    train = load_data("cifar10")
    assert train.x.shape == (15, 3, 32, 32) and train.sample_shape == (3, 32, 32)
    np.testing.assert_allclose(train.x[:3], expected["data_batch_1"][0] / 255.0, rtol=1e-6)
    assert train.y[:3].tolist() == expected["data_batch_1"][1].tolist()
    assert train.class_names[0] == "airplane"
    test = load_data("cifar10", split="test")
    assert len(test) == 3 and test.y.tolist() == expected["test_batch"][1].tolist()
    assert server.total_hits() == 1
    assert not (cache / "cifar10" / "cifar-10-batches-bin" / "readme.html").exists()


def test_cifar10_evil_archive_refused(cache, server, monkeypatch):
    _serve_cifar(server, monkeypatch, _evil_members("dotdot"))
    with pytest.raises(DownloadError, match="refusing member '../evil'"):
        load_data("cifar10")
    assert not (cache / "evil").exists()
    _serve_cifar(server, monkeypatch, _evil_members("symlink"))
    with pytest.raises(DownloadError, match="link"):
        load_data("cifar10")
