"""Conditional writes on a store's backend: create-only puts and compare-and-set, on a local folder or S3.

    create_only(backend, key, data)               put bytes or a local file, only if ``key`` does not exist yet
    compare_and_set(backend, key, expected, new)  replace ``key`` only if it still holds ``expected`` (None: absent)
    delete(backend, key)

Both raise ``ConflictError`` (``AlreadyExists`` for create-only) when the condition fails: of two writers,
exactly one succeeds.

- **Local folder.** Create-only writes a temporary file and hard-links it to its name: ``os.link`` fails when
  the name exists, so it is atomic and never overwrites. Compare-and-set holds an exclusive ``fcntl.flock`` on
  ``.lock-<name>`` beside the key around read, compare and the atomic replace (readers take no lock).
- **S3.** Conditional ``PutObject``: ``IfNoneMatch="*"`` to create, ``IfMatch=<the ETag read>`` to replace.
  Once per endpoint and bucket a probe checks which of the two headers the endpoint honours (AWS since 2024,
  MinIO and moto 5 honour both). A write whose header is rejected or silently ignored gets the fallback: a
  **lease object**, ``_leases/<key>`` in the same bucket, held around a check-then-write. The lease is best
  effort (Fischer's timed protocol): a writer puts its token, waits ``LEASE_SETTLE_S`` and reads it back, so
  two writers both win only if a put takes longer than that; a crashed holder's lease expires after
  ``LEASE_TTL_S`` (wall clocks must agree to well within it).

Streaming's own copy: ``mlsys.storage`` grows a general one, and the watermark and ``stream-put`` switch
to it in one line each.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlsys.errors import StorageError
from mlsys.storage import LocalBackend

LEASES = "_leases"  # lease objects, as mlsys.storage names them
LEASE_TTL_S = 60.0  # a crashed holder's lease is taken over after this
LEASE_SETTLE_S = 0.5  # a lease's put is read back after this (the fallback's only guard)
LEASE_WAIT_S = 30.0  # give up waiting for a lease after this
_CONDITIONAL: dict[tuple[str, str], frozenset[str]] = {}  # (endpoint, bucket) -> the condition headers honoured


class ConflictError(StorageError):
    """A conditional write lost: the object changed (or appeared) since the writer read it."""

    def __init__(self, message: str, current: bytes | None = None):
        super().__init__(message)
        self.current = current  # what the key holds now (None: absent or unknown)


class AlreadyExists(ConflictError):
    """A create-only write found the key taken."""


def create_only(backend, key: str, data: bytes | Path) -> None:
    """Write ``data`` (bytes, or the path of a local file) to ``key`` only if nothing is there yet."""
    if isinstance(backend, LocalBackend):
        _local_create(backend, key, data)
    elif "IfNoneMatch" in _conditional(backend):
        _s3_put(backend, key, data, IfNoneMatch="*")
    else:
        with _lease(backend, key):
            if backend.exists(key):
                raise AlreadyExists(f"{backend.uri(key)} already exists")
            _s3_put(backend, key, data)


def compare_and_set(backend, key: str, expected: bytes | None, new: bytes) -> None:
    """Replace ``key``'s bytes by ``new`` if they equal ``expected`` (None: create it if absent), atomically."""
    if isinstance(backend, LocalBackend):
        path = Path(backend.uri(key))
        lock = path.parent / f".lock-{path.name}"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # released when the file closes
            _check(backend, key, _get(backend, key), expected)
            backend.put_bytes(key, new)
        return
    if _conditional(backend) == {"IfMatch", "IfNoneMatch"}:
        current, etag = _s3_get(backend, key)
        _check(backend, key, current, expected)
        _s3_put(backend, key, new, **({"IfMatch": etag} if etag else {"IfNoneMatch": "*"}))
        return
    with _lease(backend, key):
        _check(backend, key, _get(backend, key), expected)
        backend.put_bytes(key, new)


def delete(backend, key: str) -> None:
    """Remove ``key`` (nothing if it is absent)."""
    if isinstance(backend, LocalBackend):
        Path(backend.uri(key)).unlink(missing_ok=True)
    else:
        backend.client.delete_object(Bucket=backend.bucket, Key=_s3_key(backend, key))


def _check(backend, key: str, current: bytes | None, expected: bytes | None) -> None:
    if current != expected:
        what = "is absent" if current is None else "was changed by another writer"
        raise ConflictError(f"{backend.uri(key)} {what} since it was read", current)


def _get(backend, key: str) -> bytes | None:
    try:
        return backend.get_bytes(key)
    except StorageError:
        return None


# -- local ---------------------------------------------------------------------------------------------------------
def _local_create(backend: LocalBackend, key: str, data: bytes | Path) -> None:
    dest = Path(backend.uri(key))
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(data, Path):
                with open(data, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            else:
                out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, dest)  # atomic, and fails if the name is taken: never an overwrite
        except FileExistsError:
            raise AlreadyExists(f"{dest} already exists") from None
        dirfd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    finally:
        Path(tmp).unlink(missing_ok=True)


# -- S3 ------------------------------------------------------------------------------------------------------------
def _s3_key(backend, key: str) -> str:
    return backend.uri(key).split("/", 3)[3]  # s3://bucket/<prefix/key>


def _failed_condition(exc: Exception) -> bool:
    error = getattr(exc, "response", {}) or {}
    code = error.get("Error", {}).get("Code", "")
    status = error.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412)


def _s3_put(backend, key: str, data: bytes | Path, **condition: str) -> None:
    from botocore.exceptions import ClientError

    try:
        if isinstance(data, Path):
            with open(data, "rb") as body:
                backend.client.put_object(Bucket=backend.bucket, Key=_s3_key(backend, key), Body=body, **condition)
        else:
            backend.client.put_object(Bucket=backend.bucket, Key=_s3_key(backend, key), Body=data, **condition)
    except ClientError as exc:
        if condition and _failed_condition(exc):
            kind = AlreadyExists if condition.get("IfNoneMatch") == "*" else ConflictError
            raise kind(f"{backend.uri(key)}: conditional write refused ({exc}); another writer got there first",
                       None) from exc
        raise


def _s3_get(backend, key: str) -> tuple[bytes | None, str | None]:
    try:
        obj = backend.client.get_object(Bucket=backend.bucket, Key=_s3_key(backend, key))
    except backend.client.exceptions.NoSuchKey:
        return None, None
    return obj["Body"].read(), obj["ETag"]


def _conditional(backend) -> frozenset[str]:
    """The condition headers this endpoint honours on PutObject: probed once per endpoint and bucket."""
    from botocore.exceptions import ClientError

    cache = (backend.client.meta.endpoint_url, backend.bucket)
    if cache not in _CONDITIONAL:
        probe = f"{LEASES}/.probe-{uuid.uuid4().hex}"
        backend.put_bytes(probe, b"probe")
        honoured = set()
        for condition in ({"IfNoneMatch": "*"}, {"IfMatch": '"00000000000000000000000000000000"'}):
            try:
                _s3_put(backend, probe, b"probe", **condition)  # must fail: the probe exists, with another ETag
            except ConflictError:
                honoured |= set(condition)
            except ClientError:
                pass  # rejected as unsupported (NotImplemented, InvalidArgument, ...)
            # accepted: the endpoint ignores the header
        delete(backend, probe)
        _CONDITIONAL[cache] = frozenset(honoured)
    return _CONDITIONAL[cache]


@contextmanager
def _lease(backend, key: str) -> Iterator[None]:
    """Hold ``_leases/<key>`` (the fallback where conditional puts are missing): best effort, see above."""
    lease, token = f"{LEASES}/{key}", uuid.uuid4().hex
    deadline = time.monotonic() + LEASE_WAIT_S
    while True:
        held = _read_lease(backend, lease)
        if held is None or float(held.get("expires_at", 0)) < time.time():
            backend.put_bytes(lease, json.dumps({"owner": token, "expires_at": time.time() + LEASE_TTL_S}).encode())
            time.sleep(LEASE_SETTLE_S)
            held = _read_lease(backend, lease)
            if held is not None and held.get("owner") == token:
                break
        if time.monotonic() > deadline:
            raise ConflictError(f"{backend.uri(lease)} is held by another writer (until {held and held.get('expires_at')}); "
                                f"waited {LEASE_WAIT_S:.0f} s, retry later")
        time.sleep(0.05 + LEASE_SETTLE_S * random.random())  # jitter: contenders do not retry in step
    try:
        yield
    finally:
        if (_read_lease(backend, lease) or {}).get("owner") == token:
            delete(backend, lease)


def _read_lease(backend, lease: str) -> dict | None:
    raw = _get(backend, lease)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
