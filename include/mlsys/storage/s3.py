"""``s3://bucket/prefix`` through boto3, against AWS or any S3 endpoint, with conditional writes.

Conditional writes (see ``mlsys.storage.backend``) take one of three modes, detected
once per endpoint and bucket with a probe object under ``<prefix>/_leases/`` (deleted
afterwards), or forced with ``S3Backend(root, conditional_writes=...)``:

    native       PutObject with If-None-Match: * (create-only) and If-Match: <etag> (compare-and-set);
                 a 412 (or a 409 conflict) means "someone else wrote first"
    create-only  If-None-Match works, If-Match does not: each conditional write runs inside a
                 lease object created with If-None-Match (``mlsys.storage.lease``)
    none         neither works (the endpoint ignores or rejects them): the lease is taken by a
                 timed protocol instead

moto 5.2.5 and MinIO answer both headers, so they are ``native``; the lease modes
are tested against moto by forcing them.

The read cache (``local_path``) lives under ``$MLSYS_HOME/cache/s3`` and is keyed by
endpoint, bucket, key and ETag: a changed object or another endpoint with the same
bucket name is downloaded again, never served stale.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlparse

from mlsys.errors import StorageError
from mlsys.settings import settings
from mlsys.storage.lease import LEASE_PREFIX, Lease

MODES = ("native", "create-only", "none")
_DETECTED: dict[tuple[str, str], str] = {}  # (endpoint, bucket) -> mode, once per process
_LOST = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409", "404")
_UNSUPPORTED = ("NotImplemented", "InvalidArgument", "InvalidRequest", "501", "400")


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part)


def _code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Backend:
    """``s3://bucket/prefix`` through boto3, against AWS or any S3 endpoint."""

    def __init__(self, root: str, cache_dir: Path | None = None, *, conditional_writes: str | None = None,
                 lease_options: dict | None = None):
        parsed = urlparse(root)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageError(f"S3 root must look like s3://bucket/prefix, got {root!r}")
        if conditional_writes not in (None, *MODES):
            raise StorageError(f"conditional_writes={conditional_writes!r}: use one of {MODES} or None (detect)")
        import boto3  # imported here: only S3 users need it

        self.root = root.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.client = boto3.client("s3")
        self.endpoint = self.client.meta.endpoint_url
        self.cache_dir = cache_dir or settings().home / "cache" / "s3"
        self._mode = conditional_writes
        self.lease_options = dict(lease_options or {})

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    # -- plain objects ------------------------------------------------------------
    def put_file(self, key: str, local_path: Path) -> None:
        self.client.upload_file(str(local_path), self.bucket, self._key(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        got = self._raw_get(key)
        if got is None:
            raise StorageError(f"no object {key!r} under {self.root}")
        return got[0]

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _head(self, key: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    # -- the read cache: endpoint, bucket, key, ETag --------------------------------
    def cache_path(self, key: str, etag: str) -> Path:
        endpoint = urlparse(self.endpoint).netloc or self.endpoint or "aws"
        full = Path(self._key(key))
        return self.cache_dir / _safe(endpoint) / self.bucket / full.parent / _safe(etag.strip('"')) / full.name

    def local_path(self, key: str) -> Path:
        """Download into the local cache, once per ETag: a changed object is fetched again."""
        head = self._head(key)
        if head is None:
            raise StorageError(f"no object {key!r} under {self.root}")
        dest = self.cache_path(key, head["ETag"])
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
            try:  # If-Match: the bytes are the ones of this ETag, or the download fails
                body = self.client.get_object(Bucket=self.bucket, Key=self._key(key), IfMatch=head["ETag"])["Body"]
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(body, out, 1 << 20)
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)  # never leave a partial download in the cache
                raise
        return dest

    # -- raw requests (the lease uses them too) ------------------------------------
    def _raw_get(self, key: str) -> tuple[bytes, str] | None:
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            return None
        return got["Body"].read(), got["ETag"]

    def _raw_put(self, key: str, data: bytes, **condition: str) -> bool:
        """PutObject; with a condition, False when it does not hold (412, a 409 conflict, a 404 for If-Match)."""
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
            return True
        except ClientError as exc:
            if condition and _code(exc) in _LOST:
                return False
            raise

    def _raw_delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    # -- conditional writes ----------------------------------------------------------
    @property
    def conditional_writes(self) -> str:
        """``native``, ``create-only`` or ``none`` (see the module docstring)."""
        if self._mode is None:
            where = (self.endpoint or "", self.bucket)
            if where not in _DETECTED:
                _DETECTED[where] = self._detect()
            self._mode = _DETECTED[where]
        return self._mode

    def _detect(self) -> str:
        from botocore.exceptions import ClientError

        probe = f"{LEASE_PREFIX}/probe-{uuid.uuid4().hex}"

        def put(data: bytes, **condition: str) -> bool | None:  # None: the endpoint rejects the header
            try:
                return self._raw_put(probe, data, **condition)
            except ClientError as exc:
                if _code(exc) in _UNSUPPORTED:
                    return None
                raise

        try:
            if not put(b"1", IfNoneMatch="*") or put(b"2", IfNoneMatch="*") is not False:
                return "none"  # If-None-Match ignored or refused
            etag = self._head(probe)["ETag"]
            wrong = put(b"3", IfMatch='"00000000000000000000000000000000"')
            right = put(b"4", IfMatch=etag) if wrong is False else None
            return "native" if right else "create-only"
        finally:
            self._raw_delete(probe)

    def _lease(self, key: str) -> Lease:
        return Lease(self, key, create_only=self.conditional_writes == "create-only", **self.lease_options)

    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        return self._raw_get(key)

    def put_if_match(self, key: str, data: bytes, token: str | None) -> bool:
        if self.conditional_writes == "native":
            return self._raw_put(key, data, **({"IfMatch": token} if token else {"IfNoneMatch": "*"}))
        with self._lease(key) as lease:
            current = self._raw_get(key)
            if (current[1] if current else None) != token or not lease.ensure():
                return False
            return self._raw_put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        if self.conditional_writes == "native":
            return self._raw_put(key, data, IfNoneMatch="*")
        while True:
            with self._lease(key) as lease:
                if self._head(key) is not None:
                    return False
                if lease.ensure():  # else the lease was lost before the write: take it again
                    return self._raw_put(key, data)
