"""Byte stores under a root URI: a local folder or ``s3://bucket/prefix``.

Both backends give the same small interface. Every ``put`` is atomic: a reader
sees the whole object or nothing. Locally that is a write to a temporary file,
``fsync``, ``os.replace`` and an ``fsync`` of the folder (so the rename itself
survives a power cut); on S3 a single ``PutObject`` (or a completed multipart
upload) is already atomic.

Conditional writes, the base of every pointer that only moves forward
(``mlsys.storage.pointers``):

    get_versioned(key) -> (bytes, token) | None   token: an opaque version tag (S3: the ETag)
    put_if_match(key, data, token) -> bool         compare-and-set: only if the object still has ``token``
                                                   (``token=None``: only if the object does not exist)
    put_if_absent(key, data) -> bool               create-only

Locally they hold an exclusive ``fcntl.flock`` on the lock file of the object's
folder (``.lock-folder``, one per folder, hidden from ``list``) around read, check
and write. On S3 see
``mlsys.storage.s3``: ``If-Match`` / ``If-None-Match`` where the endpoint has
them, a lease object where it does not.

S3 is reached with boto3, which reads its endpoint and credentials from the
standard environment: ``AWS_ENDPOINT_URL`` (MinIO, moto, ...; unset for AWS),
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from mlsys.errors import StorageError
from mlsys.storage.s3 import S3Backend

HIDDEN_PREFIXES = (".tmp-", ".lock-")  # temporary files and lock files: never objects


class Backend(Protocol):
    root: str

    def put_file(self, key: str, local_path: Path) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def get_versioned(self, key: str) -> tuple[bytes, str] | None: ...
    def put_if_match(self, key: str, data: bytes, token: str | None) -> bool: ...
    def put_if_absent(self, key: str, data: bytes) -> bool: ...
    def local_path(self, key: str) -> Path: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def uri(self, key: str) -> str: ...


def _fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable: fsync the directory itself."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBackend:
    """A folder on this machine's disk."""

    def __init__(self, root: str | Path):
        self.base = Path(root).expanduser().resolve()
        self.root = str(self.base)

    def _path(self, key: str) -> Path:
        path = (self.base / key).resolve()
        if self.base != path and self.base not in path.parents:
            raise StorageError(f"key {key!r} escapes the storage root {self.root}; use a relative key")
        return path

    def _write(self, dest: Path, fill) -> None:
        """Write through a temporary file beside ``dest``: fsync, rename, fsync the folder."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())  # durable before it becomes visible
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(dest.parent)

    def put_file(self, key: str, local_path: Path) -> None:
        def fill(out):
            with open(local_path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)

        self._write(self._path(key), fill)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(self._path(key), lambda out: out.write(data))

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise StorageError(f"no object {key!r} under {self.root}")
        return path.read_bytes()

    # -- conditional writes: an flock around read-check-write ---------------------
    @contextmanager
    def _locked(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent / ".lock-folder", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # per open file: threads and processes both wait here
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @staticmethod
    def _token(data: bytes) -> str:
        return hashlib.md5(data, usedforsecurity=False).hexdigest()

    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        path = self._path(key)
        try:
            data = path.read_bytes()  # renames are atomic: a reader needs no lock
        except FileNotFoundError:
            return None
        return data, self._token(data)

    def put_if_match(self, key: str, data: bytes, token: str | None) -> bool:
        with self._locked(key) as path:
            current = path.read_bytes() if path.is_file() else None
            if (None if current is None else self._token(current)) != token:
                return False
            self._write(path, lambda out: out.write(data))
            return True

    def put_if_absent(self, key: str, data: bytes) -> bool:
        with self._locked(key) as path:
            if path.is_file():
                return False
            self._write(path, lambda out: out.write(data))
            return True

    def local_path(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise StorageError(f"no object {key!r} under {self.root}")
        return path

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.base
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.base))
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(HIDDEN_PREFIXES)
        )

    def uri(self, key: str) -> str:
        return str(self._path(key))


def backend_for(root_uri: str) -> Backend:
    """The backend for a root URI: ``s3://...`` goes to S3, anything else is a local folder."""
    if root_uri.startswith("s3://"):
        return S3Backend(root_uri)
    if "://" in root_uri and not root_uri.startswith("file://"):
        raise StorageError(f"unsupported storage URI {root_uri!r}: use a local path or s3://bucket/prefix")
    return LocalBackend(root_uri.removeprefix("file://"))


__all__ = ["Backend", "LocalBackend", "S3Backend", "backend_for"]
