"""Immutable, content-addressed Parquet datasets.

Layout under the storage root::

    datasets/<name>/<version>/data.parquet
    datasets/<name>/<version>/_metadata.json   <- written last: the commit marker

``version`` is the first 16 hex digits of the SHA-256 of the Parquet file, so
the same input always gives the same version and a re-run writes nothing new.
A version exists only once its ``_metadata.json`` exists: a task that crashes
after uploading ``data.parquet`` leaves an orphan that no reader ever sees,
and the next try writes the same bytes to the same key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from mlsys.errors import StorageError
from mlsys.settings import settings
from mlsys.storage.backend import Backend, backend_for

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

DATA_FILE = "data.parquet"
META_FILE = "_metadata.json"
LATEST_FILE = "_latest.json"
TAGS = frozenset({"validated"})  # named pointers a stage may set, stored as _<tag>.json  # which version "latest" means: the last one written


@dataclass(frozen=True)
class DatasetRef:
    """A pointer to one committed dataset version: small enough for XCom."""

    name: str
    version: str
    uri: str
    rows: int
    columns: list[dict[str, str]] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    created_by: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    sha256: str = ""
    size_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DatasetRef":
        return cls(**data)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise StorageError(
            f"dataset name {name!r} is not valid: start with a letter or digit, then use letters, digits, "
            "'.', '-' or '_' (no '/', no spaces)"
        )


def _check_version(name: str, version: str) -> None:
    if not isinstance(version, str) or not _NAME_RE.fullmatch(version):
        raise StorageError(
            f"dataset {name!r}: version {version!r} is not valid: give \"latest\" or a version id "
            "such as the one in DatasetRef.version"
        )


class DatasetStore:
    """Reads and writes datasets and plain files under one root URI."""

    def __init__(self, root_uri: str | None = None):
        self.root_uri = root_uri or settings().storage_uri
        self.backend: Backend = backend_for(self.root_uri)

    # -- plain files --------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> str:
        self.backend.put_bytes(key, data)
        return self.backend.uri(key)

    def get_bytes(self, key: str) -> bytes:
        return self.backend.get_bytes(key)

    # -- datasets -----------------------------------------------------------
    def write(
        self,
        name: str,
        data: "pd.DataFrame | pa.Table | Iterable[pa.RecordBatch]",
        *,
        sources: dict[str, str] | None = None,
        created_by: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        schema: "pa.Schema | None" = None,
    ) -> DatasetRef:
        """Write ``data`` as a new version of ``name``; return the existing one if the content is already stored."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        _check_name(name)
        staging = Path(tempfile.mkdtemp(prefix="mlsys-ds-"))
        try:
            local = staging / DATA_FILE
            rows = 0
            if _is_frame(data):
                data = pa.Table.from_pandas(data, preserve_index=False)
            if isinstance(data, pa.Table):
                pq.write_table(data, local, compression="zstd")
                rows, arrow_schema = data.num_rows, data.schema
            else:  # an iterable of record batches: streamed, never all in memory
                writer = None
                try:
                    for batch in data:
                        if writer is None:
                            arrow_schema = schema or batch.schema
                            writer = pq.ParquetWriter(local, arrow_schema, compression="zstd")
                        writer.write_batch(batch)
                        rows += batch.num_rows
                    if writer is None:
                        if schema is None:
                            raise StorageError(f"dataset {name!r}: no batches and no schema given")
                        arrow_schema = schema
                        writer = pq.ParquetWriter(local, arrow_schema, compression="zstd")
                finally:
                    if writer is not None:
                        writer.close()
            sha = _sha256(local)
            version = sha[:16]
            prefix = f"datasets/{name}/{version}"
            existing = self._read_meta(name, version)
            if existing is not None:
                self._point_latest(name, version)
                return existing
            ref = DatasetRef(
                name=name,
                version=version,
                uri=self.backend.uri(prefix),
                rows=rows,
                columns=[{"name": f.name, "type": str(f.type)} for f in arrow_schema],
                sources=dict(sources or {}),
                created_by=dict(created_by or {}),
                created_at=datetime.now(timezone.utc).isoformat(),
                sha256=sha,
                size_bytes=local.stat().st_size,
                extra=dict(extra or {}),
            )
            self.backend.put_file(f"{prefix}/{DATA_FILE}", local)
            self.backend.put_bytes(f"{prefix}/{META_FILE}", json.dumps(ref.to_json(), indent=2).encode())
            self._point_latest(name, version)
            return ref
        finally:
            for p in staging.iterdir():
                p.unlink()
            os.rmdir(staging)

    def _point_latest(self, name: str, version: str) -> None:
        # The latest write wins, even when its content was stored before (A, B, A -> latest is A).
        self.backend.put_bytes(f"datasets/{name}/{LATEST_FILE}", json.dumps({"version": version}).encode())

    def tag(self, name: str, version: str, tag: str) -> DatasetRef:
        """Point ``tag`` (e.g. "validated") at a committed version; ``ref(name, tag)`` resolves it."""
        if tag not in TAGS:
            raise StorageError(f"tag {tag!r} is not one of {sorted(TAGS)}")
        ref = self.ref(name, version)
        self.backend.put_bytes(f"datasets/{name}/_{tag}.json", json.dumps({"version": ref.version}).encode())
        return ref

    def _read_meta(self, name: str, version: str) -> DatasetRef | None:
        key = f"datasets/{name}/{version}/{META_FILE}"
        if not self.backend.exists(key):
            return None
        return DatasetRef.from_json(json.loads(self.backend.get_bytes(key)))

    def versions(self, name: str) -> list[DatasetRef]:
        """Every committed version of ``name``, oldest first."""
        _check_name(name)
        refs = []
        for key in self.backend.list(f"datasets/{name}/"):
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == META_FILE:
                refs.append(DatasetRef.from_json(json.loads(self.backend.get_bytes(key))))
        return sorted(refs, key=lambda r: r.created_at)

    def ref(self, name: str, version: str = "latest") -> DatasetRef:
        """Resolve ``version`` ("latest" or a version id) to a committed version."""
        _check_name(name)
        if version in ("", "latest", None):
            pointer = f"datasets/{name}/{LATEST_FILE}"
            if self.backend.exists(pointer):
                latest = self._read_meta(name, json.loads(self.backend.get_bytes(pointer))["version"])
                if latest is not None:
                    return latest
            refs = self.versions(name)
            if not refs:
                raise StorageError(
                    f"dataset {name!r} has no committed version under {self.root_uri}; "
                    "run the stage that produces it first"
                )
            return refs[-1]
        if version in TAGS:
            pointer = f"datasets/{name}/_{version}.json"
            if not self.backend.exists(pointer):
                raise StorageError(
                    f"dataset {name!r} has no version tagged {version!r} under {self.root_uri}; "
                    "run the stage that sets it (e.g. validate) or pass a version id"
                )
            return self.ref(name, json.loads(self.backend.get_bytes(pointer))["version"])
        _check_version(name, version)
        ref = self._read_meta(name, version)
        if ref is None:
            known = [r.version for r in self.versions(name)]
            raise StorageError(
                f"dataset {name!r} has no version {version!r} under {self.root_uri}; known versions: {known or 'none'}"
            )
        return ref

    def path(self, ref: DatasetRef) -> Path:
        """A local path to the version's Parquet file (downloaded once from S3)."""
        return self.backend.local_path(f"datasets/{ref.name}/{ref.version}/{DATA_FILE}")

    def read_table(self, name: str, version: str = "latest", columns: list[str] | None = None) -> "pa.Table":
        import pyarrow.parquet as pq

        return pq.read_table(self.path(self.ref(name, version)), columns=columns)

    def read(self, name: str, version: str = "latest", columns: list[str] | None = None) -> "pd.DataFrame":
        return self.read_table(name, version, columns).to_pandas()

    def iter_batches(self, ref: DatasetRef, batch_size: int = 65536, columns: list[str] | None = None):
        """Stream a version as record batches of up to ``batch_size`` rows: memory stays flat whatever the size."""
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(self.path(ref))
        yield from row_group_batches(pf, range(pf.num_row_groups), batch_size, columns)


def row_group_batches(pf, groups: Iterable[int], batch_rows: int, columns: list[str] | None = None):
    """Record batches of a ``pyarrow.parquet.ParquetFile``'s row groups, in order, each group through its own reader.

    One ``iter_batches`` over many row groups keeps every row group it has read
    until the whole iteration ends: ``ParquetFile`` pre-buffers by default, and
    its read cache is freed only with the reader. That is the file's compressed
    size (~32 MB per million rows of text), so peak memory grew with the
    dataset. A reader per row group frees each one when it is done: memory is
    bounded by one row group, whatever the file's size.
    """
    for g in groups:
        reader = pf.iter_batches(batch_size=batch_rows, row_groups=[g], columns=columns)
        try:
            yield from reader
        finally:
            reader.close()


def _is_frame(data: Any) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "columns")
