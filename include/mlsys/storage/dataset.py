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


def _check_name(name: str) -> None:
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise StorageError(f"dataset name {name!r} is not valid: use letters, digits, '-' or '_' without '/'")


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
            return ref
        finally:
            for p in staging.iterdir():
                p.unlink()
            os.rmdir(staging)

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
        if version in ("", "latest", None):
            refs = self.versions(name)
            if not refs:
                raise StorageError(
                    f"dataset {name!r} has no committed version under {self.root_uri}; "
                    "run the stage that produces it first"
                )
            return refs[-1]
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
        """Stream a version as record batches: memory stays flat whatever the dataset size."""
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(self.path(ref)).iter_batches(batch_size=batch_size, columns=columns)


def _is_frame(data: Any) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "columns")
