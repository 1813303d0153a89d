"""Downloading dataset files into the cache: mirrors, MD5 checks, locking and safe extraction.

* :func:`download_file` streams a URL (trying each mirror in turn) into a ``.part-<pid>`` file
  beside the destination, checks its MD5 and atomically renames it into place. A file that is
  already there is verified once and a ``<file>.verified`` marker records the result, so later
  loads do not hash it again; a cached file that fails its checksum is deleted and fetched
  anew.
* :func:`dataset_lock` serialises work on one dataset folder across threads and processes
  with an exclusive ``fcntl.flock`` on ``<folder>/.lock``.
* :func:`safe_extract_tar` extracts only regular files and refuses archives with absolute
  paths, ``..`` components, links or device files.
* The environment variable ``LATENTFORGE_MIRROR`` (a base URL, ``file://`` works too)
  replaces the built-in URLs: the file name is appended to it.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import json
import logging
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable, Iterator, Sequence

from latentforge.errors import DownloadError
from latentforge.io import atomic_write_bytes

__all__ = [
    "MIRROR_ENV",
    "DATA_ENV",
    "data_cache_dir",
    "dataset_lock",
    "download_file",
    "file_md5",
    "is_verified",
    "mirror_urls",
    "safe_extract_tar",
    "verify_file",
]

log = logging.getLogger("latentforge.data")

#: Environment variable holding a base URL that replaces the built-in download URLs.
MIRROR_ENV = "LATENTFORGE_MIRROR"
#: Environment variable naming the data cache folder.
DATA_ENV = "LATENTFORGE_DATA"

_CHUNK = 1 << 16
_USER_AGENT = "latentforge-data/1 (+https://pypi.org/project/latentforge)"


def data_cache_dir() -> Path:
    """The folder datasets are cached in: ``$LATENTFORGE_DATA``, else ``~/.cache/latentforge``.

    The folder is not created here.
    """
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "latentforge"


def mirror_urls(filename: str, base_urls: Iterable[str]) -> list[str]:
    """The URLs to try for ``filename``.

    ``$LATENTFORGE_MIRROR`` (if set and not empty) takes precedence and is the only URL
    used; otherwise each of ``base_urls`` with ``filename`` appended.
    """
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if mirror:
        return [mirror.rstrip("/") + "/" + filename]
    return [base if base.endswith(filename) else base.rstrip("/") + "/" + filename
            for base in base_urls]


# --------------------------------------------------------------------------------------------
# Checksums and verification markers
# --------------------------------------------------------------------------------------------
def _new_md5():
    try:
        return hashlib.md5(usedforsecurity=False)
    except TypeError:  # pragma: no cover - very old Python builds
        return hashlib.md5()


def file_md5(path: str | os.PathLike) -> str:
    """The hex MD5 digest of a file."""
    h = _new_md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _write_marker(path: Path, md5: str) -> None:
    """Record that ``path`` (as it is now: size and mtime) has the MD5 ``md5``."""
    try:
        st = path.stat()
        data = json.dumps({"md5": md5, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        atomic_write_bytes(_marker(path), data.encode())
    except OSError as e:  # e.g. a read-only cache: the file is fine, we just re-hash later
        log.debug("could not write %s: %s", _marker(path), e)


def is_verified(path: str | os.PathLike, md5: str) -> bool:
    """True if ``path`` exists and its ``.verified`` marker records ``md5`` for the file's
    current size and modification time (no hashing)."""
    p = Path(path)
    try:
        st = p.stat()
        rec = json.loads(_marker(p).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(rec, dict)
        and str(rec.get("md5", "")).lower() == md5.lower()
        and rec.get("size") == st.st_size
        and rec.get("mtime_ns") == st.st_mtime_ns
    )


def verify_file(path: str | os.PathLike, md5: str) -> bool:
    """Check ``path`` against ``md5``, hashing only if no valid marker exists; a successful
    check is recorded in the marker. False if the file is missing or does not match."""
    p = Path(path)
    if is_verified(p, md5):
        return True
    try:
        actual = file_md5(p)
    except OSError:
        return False
    if actual != md5.lower():
        return False
    _write_marker(p, actual)
    return True


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# --------------------------------------------------------------------------------------------
# Locking
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def dataset_lock(directory: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on ``directory`` (created if needed) for the ``with`` block.

    The lock is an ``flock`` on ``<directory>/.lock``; it excludes other processes and other
    threads of this process (each acquisition opens its own file description). Yields the
    directory.

    Raises:
        DownloadError: the folder or its lock file cannot be created.
    """
    folder = Path(directory)
    lock_path = folder / ".lock"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise DownloadError(f"{lock_path}: cannot create lock file ({e.strerror or e})") from e
    try:
        _lock_fd(fd, lock_path)
        try:
            yield folder
        finally:
            _unlock_fd(fd)
    finally:
        os.close(fd)


try:
    import fcntl

    def _lock_fd(fd: int, path: Path) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process to finish with %s", path.parent)
            fcntl.flock(fd, fcntl.LOCK_EX)

    def _unlock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _lock_fd(fd: int, path: Path) -> None:
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                time.sleep(0.1)

    def _unlock_fd(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------
class _MirrorFailed(Exception):
    """One URL failed; the message says why (the caller adds file name and URL)."""


def _progress_bar(enabled: bool, total: int | None, desc: str):
    """A tqdm bar when ``enabled`` and stderr is a terminal, else ``None``."""
    if not enabled or sys.stderr is None or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                leave=False, file=sys.stderr)


def _fetch(url: str, dest: Path, md5: str, timeout: float, progress: bool) -> None:
    """Stream ``url`` into ``dest`` via a ``.part-<pid>`` file; raise _MirrorFailed on any
    failure, leaving neither the part file nor ``dest`` behind."""
    part = dest.with_name(f"{dest.name}.part-{os.getpid()}")
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    done = False
    bar = None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
            try:
                total = int(length) if length is not None else None
            except ValueError:
                total = None
            bar = _progress_bar(progress, total, dest.name)
            h = _new_md5()
            received = 0
            with open(part, "wb") as out:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        if total is not None and received < total:
            raise _MirrorFailed(
                f"transfer truncated: received {received} of {total} bytes; the partial "
                "file was deleted"
            )
        got = h.hexdigest()
        if got != md5:
            raise _MirrorFailed(
                f"checksum mismatch: expected md5 {md5}, got {got}; the downloaded file "
                "was deleted"
            )
        os.replace(part, dest)
        done = True
    except _MirrorFailed:
        raise
    except urllib.error.HTTPError as e:
        raise _MirrorFailed(f"HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise _MirrorFailed(f"cannot connect ({e.reason})") from e
    except http.client.IncompleteRead as e:
        raise _MirrorFailed(
            f"transfer truncated: received {len(e.partial)} more bytes, "
            f"{e.expected} missing; the partial file was deleted"
        ) from e
    except (http.client.HTTPException, OSError) as e:
        # ConnectionResetError, TimeoutError, RemoteDisconnected, disk full, ...
        raise _MirrorFailed(
            f"transfer failed ({type(e).__name__}: {e}); the partial file was deleted"
        ) from e
    except ValueError as e:  # malformed URL
        raise _MirrorFailed(f"bad URL ({e})") from e
    finally:
        if bar is not None:
            bar.close()
        if not done:
            _unlink(part)


def _remove_stale_parts(dest: Path) -> None:
    """Delete ``.part-*`` leftovers of ``dest`` (call only while holding the folder lock)."""
    prefix = dest.name + ".part-"
    with contextlib.suppress(OSError):
        for entry in dest.parent.iterdir():
            if entry.name.startswith(prefix):
                _unlink(entry)


def download_file(
    url_or_urls: str | Sequence[str],
    dest: str | os.PathLike,
    md5: str,
    *,
    timeout: float = 30,
    progress: bool = True,
    lock: bool = True,
) -> Path:
    """Make sure ``dest`` holds the file with MD5 ``md5``, downloading it if needed.

    A file already at ``dest`` is verified (once; the result is kept in a ``.verified``
    marker) and, if it fails, deleted and downloaded again. Each URL is tried in turn: the
    body is streamed into ``<dest>.part-<pid>`` in the same folder, its MD5 checked, and the
    file renamed into place atomically. A failed attempt never leaves a file behind.

    Args:
        url_or_urls: one URL or a list of mirror URLs, tried in order.
        dest: where the file goes.
        md5: its expected hex MD5.
        timeout: socket timeout in seconds for each connection attempt.
        progress: show a tqdm progress bar when stderr is a terminal.
        lock: take :func:`dataset_lock` on ``dest``'s folder; pass ``False`` only when the
            caller already holds it.

    Returns:
        ``dest`` as a Path.

    Raises:
        DownloadError: every URL failed (checksum mismatch, truncated transfer, HTTP or
            network error); the message names the file, each URL and the reason.
    """
    urls = [url_or_urls] if isinstance(url_or_urls, str) else list(url_or_urls)
    dest = Path(dest)
    md5 = md5.strip().lower()
    if not urls:
        raise DownloadError(f"{dest.name}: no URL to download it from")
    if is_verified(dest, md5):
        return dest

    ctx = dataset_lock(dest.parent) if lock else contextlib.nullcontext()
    with ctx:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_parts(dest)
        if dest.exists():
            if verify_file(dest, md5):
                return dest
            log.warning("%s fails its checksum; deleting it and downloading it again", dest)
            _unlink(dest)
            _unlink(_marker(dest))
        errors: list[str] = []
        for url in urls:
            log.info("downloading %s -> %s", url, dest)
            try:
                _fetch(url, dest, md5, timeout, progress)
            except _MirrorFailed as e:
                log.info("download of %s failed: %s", url, e)
                errors.append(f"{url}: {e}")
                continue
            _write_marker(dest, md5)
            return dest
    if len(errors) == 1:
        raise DownloadError(f"could not download {dest.name} from {errors[0]}")
    raise DownloadError(f"could not download {dest.name}; every mirror failed: "
                        + "; ".join(errors))


# --------------------------------------------------------------------------------------------
# Tar extraction
# --------------------------------------------------------------------------------------------
def _member_path(member: tarfile.TarInfo, archive: str) -> PurePosixPath:
    """Validate a member's name and type; return its relative path."""
    name = member.name
    if (
        not name
        or name.startswith(("/", "\\"))
        or PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).anchor
    ):
        raise DownloadError(f"{archive}: refusing member {name!r}: absolute path")
    rel = PurePosixPath(name)
    if ".." in rel.parts or ".." in PureWindowsPath(name).parts:
        raise DownloadError(f"{archive}: refusing member {name!r}: path leaves the destination")
    if member.issym() or member.islnk():
        raise DownloadError(
            f"{archive}: refusing member {name!r}: it is a link (to {member.linkname!r})"
        )
    if member.isdev():
        raise DownloadError(f"{archive}: refusing member {name!r}: it is a device or FIFO")
    if not (member.isfile() or member.isdir()):
        raise DownloadError(f"{archive}: refusing member {name!r}: unsupported member type")
    return rel


def safe_extract_tar(
    archive: str | os.PathLike,
    dest_dir: str | os.PathLike,
    *,
    only: Iterable[str] | None = None,
) -> list[Path]:
    """Extract the regular files of a tar archive into ``dest_dir``.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    symbolic/hard links, device files and FIFOs make the whole archive refused. Folders are
    created as needed; each file is written to a temporary name and renamed into place, with
    default permissions. Where Python provides it, ``tarfile.data_filter`` is applied to each
    member as well.

    Args:
        archive: the ``.tar``/``.tar.gz``/... file.
        dest_dir: the folder to extract into.
        only: if given, the member names (relative paths) to extract; others are skipped
            (but still checked).

    Returns:
        The extracted file paths.

    Raises:
        DownloadError: a refused member, a corrupt archive, or a write failure.
    """
    archive_name = str(archive)
    dest = Path(dest_dir)
    wanted = None if only is None else {str(PurePosixPath(n)) for n in only}
    data_filter = getattr(tarfile, "data_filter", None)
    written: list[Path] = []
    try:
        dest.mkdir(parents=True, exist_ok=True)
        dest_resolved = dest.resolve()
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            checked = [(m, _member_path(m, archive_name)) for m in members]
            for member, rel in checked:
                if not member.isfile():
                    continue
                if wanted is not None and str(rel) not in wanted:
                    continue
                if data_filter is not None:
                    try:
                        data_filter(member, str(dest_resolved))
                    except tarfile.FilterError as e:
                        raise DownloadError(
                            f"{archive_name}: refusing member {member.name!r}: {e}"
                        ) from e
                target = dest_resolved.joinpath(*rel.parts)
                if dest_resolved not in target.parents:
                    raise DownloadError(
                        f"{archive_name}: refusing member {member.name!r}: path leaves the "
                        "destination"
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(member)
                if src is None:  # pragma: no cover - isfile() members always have data
                    raise DownloadError(f"{archive_name}: cannot read member {member.name!r}")
                tmp = target.with_name(f"{target.name}.part-{os.getpid()}")
                try:
                    with src, open(tmp, "wb") as out:
                        shutil.copyfileobj(src, out, _CHUNK)
                    os.replace(tmp, target)
                finally:
                    _unlink(tmp)
                written.append(target)
    except DownloadError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DownloadError(f"{archive_name}: corrupt or truncated archive ({e})") from e
    except OSError as e:
        raise DownloadError(f"{archive_name}: extraction failed ({e.strerror or e})") from e
    if wanted is not None:
        missing = wanted - {str(p.relative_to(dest_resolved).as_posix()) for p in written}
        if missing:
            raise DownloadError(
                f"{archive_name}: archive lacks expected member(s): " + ", ".join(sorted(missing))
            )
    return written

