"""Byte stores under a root URI: a local folder or ``s3://bucket/prefix``.

Both backends give the same small interface. Every ``put`` is atomic: a reader
sees the whole object or nothing. Locally that is a write to a temporary file
and ``os.replace``; on S3 a single ``PutObject`` (or a completed multipart
upload) is already atomic.

S3 is reached with boto3, which reads its endpoint and credentials from the
standard environment: ``AWS_ENDPOINT_URL`` (MinIO, moto, ...; unset for AWS),
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from mlsys.errors import StorageError
from mlsys.settings import settings


class Backend(Protocol):
    root: str

    def put_file(self, key: str, local_path: Path) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def local_path(self, key: str) -> Path: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def uri(self, key: str) -> str: ...


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

    def put_file(self, key: str, local_path: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out, open(local_path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())  # durable before it becomes visible, like put_bytes
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise StorageError(f"no object {key!r} under {self.root}")
        return path.read_bytes()

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
            if p.is_file() and not p.name.startswith(".tmp-")
        )

    def uri(self, key: str) -> str:
        return str(self._path(key))


class S3Backend:
    """``s3://bucket/prefix`` through boto3, against AWS or any S3 endpoint."""

    def __init__(self, root: str, cache_dir: Path | None = None):
        parsed = urlparse(root)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageError(f"S3 root must look like s3://bucket/prefix, got {root!r}")
        import boto3  # imported here: only S3 users need it

        self.root = root.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.client = boto3.client("s3")
        self.cache_dir = cache_dir or settings().home / "cache" / "s3" / self.bucket

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, local_path: Path) -> None:
        self.client.upload_file(str(local_path), self.bucket, self._key(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey as exc:
            raise StorageError(f"no object {key!r} under {self.root}") from exc

    def local_path(self, key: str) -> Path:
        """Download once into the local cache; objects are immutable, so the cache never goes stale."""
        dest = self.cache_dir / self._key(key)
        if not dest.is_file():
            if not self.exists(key):
                raise StorageError(f"no object {key!r} under {self.root}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
            os.close(fd)
            try:
                self.client.download_file(self.bucket, self._key(key), tmp)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)  # never leave a partial download in the cache
                raise
        return dest

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"


def backend_for(root_uri: str) -> Backend:
    """The backend for a root URI: ``s3://...`` goes to S3, anything else is a local folder."""
    if root_uri.startswith("s3://"):
        return S3Backend(root_uri)
    if "://" in root_uri and not root_uri.startswith("file://"):
        raise StorageError(f"unsupported storage URI {root_uri!r}: use a local path or s3://bucket/prefix")
    return LocalBackend(root_uri.removeprefix("file://"))
