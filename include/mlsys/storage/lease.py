"""A lease object: mutual exclusion for S3 endpoints without compare-and-set (``If-Match``).

An S3 backend whose endpoint cannot do ``PutObject`` with ``If-Match`` runs each
conditional write (``put_if_match``, ``put_if_absent``) as read, check, write
inside a lease on that key: the object ``<prefix>/_leases/<key>`` in the same
bucket, holding ``{"owner", "host", "pid", "expires_at"}``.

Taking the lease:

* ``create-only`` endpoints (``If-None-Match: *`` works, ``If-Match`` does not):
  create the lease object conditional on its absence. Whoever creates it holds
  it. A lease whose ``expires_at`` has passed (its holder died) is broken by the
  timed protocol below, never by a plain delete (two breakers could both win).
* endpoints with no conditional writes at all (``none``): Fischer's timed mutual
  exclusion. Read the lease; if it is absent or expired, write your own within
  ``write_bound_s`` of that read, wait ``settle_s`` (> ``write_bound_s``), read it
  again: you hold it only if it is still yours. A writer whose write took longer
  than ``write_bound_s`` backs off (its object expires after the TTL).

Holding: the TTL (``ttl_s``, 30 s by default) must exceed the critical section;
the backend renews a lease that has used half of it before its final write, and
gives up (the compare-and-set reports failure and is retried) if it lost it.
Releasing deletes the object if it is still ours.

Limits, also in docs/guarantees.md: the ``none`` protocol assumes a write is
applied within ``write_bound_s`` of the read before it and that the endpoint is
strongly consistent (AWS S3 and MinIO are); expiry compares wall clocks, so the
writers' clocks must agree to well within the TTL. With native conditional
writes (AWS S3 since 2024, MinIO, moto) none of this is used.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import uuid
from typing import Any, Self

from mlsys.errors import StorageError

LEASE_PREFIX = "_leases"


class Lease:
    """``with Lease(s3, key, create_only=True):`` holds the lease on ``key`` inside the block."""

    def __init__(self, s3: Any, key: str, *, create_only: bool, ttl_s: float = 30.0, wait_s: float = 120.0,
                 write_bound_s: float = 0.5, settle_s: float = 1.0):
        if settle_s <= write_bound_s:
            raise StorageError(f"lease settle_s={settle_s} must exceed write_bound_s={write_bound_s}")
        self.s3, self.key = s3, f"{LEASE_PREFIX}/{key}"
        self.create_only, self.ttl_s, self.wait_s = create_only, ttl_s, wait_s
        self.write_bound_s, self.settle_s = write_bound_s, settle_s
        self.owner = uuid.uuid4().hex
        self.taken_at = 0.0  # monotonic time of the last take or renewal

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "expires_at": time.time() + self.ttl_s}).encode()

    def _read(self) -> dict[str, Any] | None:
        got = self.s3._raw_get(self.key)
        if got is None:
            return None
        try:
            return json.loads(got[0])
        except ValueError:
            return {"owner": "?", "expires_at": 0}  # garbage: treat as expired

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        deadline, pause = time.monotonic() + self.wait_s, 0.01
        while not self._try():
            if time.monotonic() > deadline:
                holder = self._read() or {}
                raise StorageError(
                    f"could not take the lease {self.s3.uri(self.key)} within {self.wait_s:.0f} s: held by "
                    f"{holder.get('host')} pid {holder.get('pid')} until {holder.get('expires_at')} (epoch s); "
                    "it expires by itself if that writer died")
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.5)

    def _try(self) -> bool:
        if self.create_only and self.s3._raw_put(self.key, self._body(), IfNoneMatch="*"):
            self.taken_at = time.monotonic()
            return True
        started = time.monotonic()
        current = self._read()
        if current is not None and float(current.get("expires_at", 0)) > time.time():
            return False  # held
        if self.create_only and current is None:
            return False  # released between our two requests: create it again
        # absent (no conditional writes) or expired (its holder died): Fischer's timed protocol
        self.s3._raw_put(self.key, self._body())
        if time.monotonic() - started > self.write_bound_s:
            return False  # too slow to claim safely; our object expires after the TTL
        time.sleep(self.settle_s)
        again = self._read()
        if again is None or again.get("owner") != self.owner:
            return False
        self.taken_at = time.monotonic()
        return True

    def ensure(self) -> bool:
        """Still ours with time to spare? Renew past half the TTL; False if the lease was lost."""
        if time.monotonic() - self.taken_at < self.ttl_s / 2:
            return True
        current = self._read()
        if current is None or current.get("owner") != self.owner:
            return False
        self.s3._raw_put(self.key, self._body())
        self.taken_at = time.monotonic()
        return True

    def release(self) -> None:
        current = self._read()
        if current is not None and current.get("owner") == self.owner:
            self.s3._raw_delete(self.key)
