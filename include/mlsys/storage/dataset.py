"""Immutable, content-addressed Parquet datasets whose pointers only move forward.

Layout under the storage root::

    datasets/<name>/<version>/data.parquet
    datasets/<name>/<version>/_metadata.json   <- written last, create-only: the commit marker
    datasets/<name>/_seq.json                  the last sequence number handed out
    datasets/<name>/_latest.json               pointers: "latest", and tags such as "validated"
    datasets/<name>/_validated.json
    history/datasets/<name>/<seq>-<pointer>.json   every pointer move, create-only
    snapshots/<id>.json, snapshots/<series>/…  ingest snapshots (mlsys.storage.snapshot)

``version`` is the first 16 hex digits of the SHA-256 of the Parquet file, so
the same input always gives the same version and a re-run writes nothing new.
A version exists only once its ``_metadata.json`` exists: a task that crashes
after uploading ``data.parquet`` leaves an orphan that no reader ever sees,
and the next try writes the same bytes to the same key.

State only moves forward (``mlsys.storage.pointers``):

* every committed version has a **sequence** number (``DatasetRef.sequence``),
  unique per dataset and increasing in commit order, besides its content hash;
  a re-write of stored content keeps the original number;
* ``latest`` and tags move by compare-and-set, and only to a version with a
  higher sequence than the one they hold: re-writing old content (an Airflow
  retry, clear or backfill of an old run) leaves ``latest`` where it is, and a
  validation of an older version that finishes late leaves ``validated`` alone;
* a refused move is not an error: the returned ref's ``move`` (a ``Move``) says
  ``moved=False`` and why; ``versions()`` orders by sequence and ends with the
  version ``latest`` names (unless a writer died between commit and move; its
  retry moves it);
* every move is recorded with its writer (the MLflow run id, or the CLI) in
  ``history(name)``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from mlsys.errors import StorageError
from mlsys.settings import settings
from mlsys.storage.backend import Backend, backend_for
from mlsys.storage.pointers import Move, Series, check_name, current_writer, valid_name
from mlsys.storage.snapshot import SnapshotMixin

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

DATA_FILE = "data.parquet"
META_FILE = "_metadata.json"
LATEST_FILE = "_latest.json"  # which version "latest" means: the newest committed one (highest sequence)
TAGS = frozenset({"validated"})  # named pointers a stage may set, stored as _<tag>.json


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
    sequence: int = 0  # unique per dataset, increasing in commit order; 0: committed before sequences existed
    snapshot: str = ""  # the ingest snapshot this version was first committed in ("" if none)
    move: Move | None = field(default=None, compare=False, repr=False)  # what the write or tag did to its pointer

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("move")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DatasetRef":
        known = {f.name for f in fields(cls)} - {"move"}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class _Staged:
    """A Parquet file written locally, hashed, not yet committed."""

    name: str
    path: Path
    version: str
    sha256: str
    rows: int
    columns: list[dict[str, str]]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_name(name: str) -> None:
    check_name(name)


def _check_version(name: str, version: str) -> None:
    if not valid_name(version):
        raise StorageError(
            f"dataset {name!r}: version {version!r} is not valid: give \"latest\", a tag ({sorted(TAGS)}), "
            "a version id such as the one in DatasetRef.version, or a snapshot id"
        )


class DatasetStore(SnapshotMixin):
    """Reads and writes datasets and plain files under one root URI (or on a given backend)."""

    def __init__(self, root_uri: str | None = None, *, backend: Backend | None = None):
        self.root_uri = root_uri or (backend.root if backend is not None else settings().storage_uri)
        self.backend: Backend = backend if backend is not None else backend_for(self.root_uri)

    # -- plain files --------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> str:
        self.backend.put_bytes(key, data)
        return self.backend.uri(key)

    def get_bytes(self, key: str) -> bytes:
        return self.backend.get_bytes(key)

    # -- writing ------------------------------------------------------------
    def write(
        self,
        name: str,
        data: "pd.DataFrame | pa.Table | Iterable[pa.RecordBatch]",
        *,
        sources: dict[str, str] | None = None,
        created_by: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        schema: "pa.Schema | None" = None,
        snapshot: str = "",
    ) -> DatasetRef:
        """Commit ``data`` as a version of ``name`` (the stored one if the content is already there) and move
        ``latest`` to it if its sequence is newer. ``ref.move`` says whether ``latest`` moved. ``snapshot``
        records the snapshot a derived dataset descends from (else ``snapshot_of`` follows ``sources``)."""
        _check_name(name)
        staging = Path(tempfile.mkdtemp(prefix="mlsys-ds-"))
        try:
            staged = self._stage(name, data, schema, staging)
            ref = self._commit(staged, sources=sources, created_by=created_by, extra=extra, snapshot=snapshot)
            return self._advance(ref, "latest", current_writer(created_by))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _stage(self, name: str, data: Any, schema: "pa.Schema | None", folder: Path) -> _Staged:
        import pyarrow as pa
        import pyarrow.parquet as pq

        local = folder / f"{name}.parquet"
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
        return _Staged(name, local, sha[:16], sha, rows, [{"name": f.name, "type": str(f.type)} for f in arrow_schema])

    def _commit(self, staged: _Staged, *, sources=None, created_by=None, extra=None, snapshot: str = "") -> DatasetRef:
        """Commit a staged version: upload, take a sequence number, create the metadata (create-only)."""
        name, version = staged.name, staged.version
        existing = self._read_meta(name, version)
        if existing is not None:
            return existing  # stored content keeps its sequence, snapshot and creator
        prefix = f"datasets/{name}/{version}"
        self.backend.put_file(f"{prefix}/{DATA_FILE}", staged.path)
        ref = DatasetRef(
            name=name, version=version, uri=self.backend.uri(prefix), rows=staged.rows, columns=staged.columns,
            sources=dict(sources or {}), created_by=dict(created_by or {}),
            created_at=datetime.now(timezone.utc).isoformat(), sha256=staged.sha256,
            size_bytes=staged.path.stat().st_size, extra=dict(extra or {}),
            sequence=self._series(name).next_sequence(), snapshot=snapshot,
        )
        if not self.backend.put_if_absent(f"{prefix}/{META_FILE}", json.dumps(ref.to_json(), indent=2).encode()):
            return self._read_meta(name, version)  # another writer committed the same content first
        return ref

    def _series(self, name: str) -> Series:
        return Series(self.backend, "datasets", name,
                      known_max=lambda: max((r.sequence for r in self.versions(name)), default=0),
                      sequence_of=lambda v: getattr(self._read_meta(name, v), "sequence", 0))

    def _advance(self, ref: DatasetRef, pointer: str, writer: dict[str, str]) -> DatasetRef:
        return replace(ref, move=self._series(ref.name).advance(pointer, ref.version, ref.sequence, writer))

    def tag(self, name: str, version: str, tag: str, *, created_by: dict[str, Any] | None = None) -> DatasetRef:
        """Point ``tag`` (e.g. "validated") at a committed version; ``ref(name, tag)`` resolves it.

        The tag moves only forward: if it already holds a version with a higher sequence (a newer version
        was validated first), it stays, nothing is raised, and the returned ref's ``move.moved`` is False
        with the reason, so a late or retried validation of an older version finishes without rolling back.
        """
        if tag not in TAGS:
            raise StorageError(f"tag {tag!r} is not one of {sorted(TAGS)}")
        return self._advance(self.ref(name, version), tag, current_writer(created_by))

    # -- reading ------------------------------------------------------------
    def _read_meta(self, name: str, version: str) -> DatasetRef | None:
        got = self.backend.get_versioned(f"datasets/{name}/{version}/{META_FILE}")
        return DatasetRef.from_json(json.loads(got[0])) if got else None

    def versions(self, name: str) -> list[DatasetRef]:
        """Every committed version of ``name``, oldest first: by sequence (commit order), not wall clock."""
        _check_name(name)
        refs = []
        for key in self.backend.list(f"datasets/{name}/"):
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == META_FILE:
                refs.append(DatasetRef.from_json(json.loads(self.backend.get_bytes(key))))
        return sorted(refs, key=lambda r: (r.sequence, r.created_at))

    def names(self) -> list[str]:
        """Every dataset with at least one object under the root."""
        found = {key.split("/")[1] for key in self.backend.list("datasets/") if key.count("/") >= 2}
        return sorted(n for n in found if valid_name(n))

    def pointers(self, name: str) -> dict[str, dict[str, Any]]:
        """``latest`` and the tags of ``name``: each pointer's last move (version, sequence, writer, time)."""
        _check_name(name)
        return self._series(name).pointers()

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every move of every pointer of ``name`` (from, to, sequence, writer, time), by sequence."""
        _check_name(name)
        return self._series(name).history()

    def ref(self, name: str, version: str = "latest") -> DatasetRef:
        """Resolve ``version`` ("latest", a tag, a version id, or a snapshot id) to a committed version."""
        _check_name(name)
        if version in ("", "latest", None):
            pointer = self._series(name).pointer("latest")
            if pointer is not None:
                latest = self._read_meta(name, pointer["version"])
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
            pointer = self._series(name).pointer(version)
            if pointer is None:
                raise StorageError(
                    f"dataset {name!r} has no version tagged {version!r} under {self.root_uri}; "
                    "run the stage that sets it (e.g. validate) or pass a version id"
                )
            return self.ref(name, pointer["version"])
        _check_version(name, version)
        ref = self._read_meta(name, version)
        if ref is None:
            member = self._snapshot_member(name, version)
            if member is not None:
                return self.ref(name, member)
            known = [r.version for r in self.versions(name)]
            raise StorageError(
                f"dataset {name!r} has no version {version!r} under {self.root_uri}; known versions: {known or 'none'}"
            )
        return ref

    def path(self, ref: DatasetRef) -> Path:
        """A local path to the version's Parquet file (downloaded once per ETag from S3)."""
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
