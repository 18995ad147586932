"""Snapshots: the splits of one ingest, committed as one object that downstream stages resolve.

An ingest writes several datasets (the three splits, and its quarantine) that only
make sense together. ``write_snapshot`` commits them as one **snapshot**::

    snapshots/<id>.json                  {"id", "name", "sequence", "members": {dataset: version}, ...}
    snapshots/<series>/_seq.json         the series' sequence counter
    snapshots/<series>/_latest.json      the series' pointer, e.g. comments@latest
    history/snapshots/<series>/…         every move of it

The id is the content hash of the series name and its members' versions, so a
re-run of the same ingest gives the same snapshot (keeping its sequence). The
order of a commit: every member version (each records ``snapshot: <id>`` in its
metadata), then the snapshot object (create-only), then ``<series>@latest`` (one
compare-and-set, forward only), then each member's ``latest``. A reader that
resolves through the snapshot never sees a mix of two ingests; a crash anywhere
leaves at most an invisible snapshot that the retry completes.

API (methods of ``DatasetStore``):

    store.write_snapshot("comments", {UNLABELED: df, GOLD: df, TEST: df}, sources=..., created_by=...)
        -> Snapshot (``.refs``: the DatasetRefs written, ``.move``: what happened to comments@latest)
    store.snapshot("comments@latest" | "comments" | "<id>" | a DatasetRef) -> Snapshot
    store.snapshot_of(name, version="latest") -> Snapshot
        the snapshot a version descends from: its own ``snapshot`` field, else the snapshots of its
        ``sources`` (followed recursively: labeled -> unlabeled + gold), the newest one that holds all
        of those versions; a StorageError if there is none or they disagree
    store.snapshots("comments") -> every snapshot of a series, by sequence
    store.ref(TEST, snapshot.id) == store.ref(TEST, snapshot.version(TEST))

So the evaluate stage finds the test split that belongs to a model's training data with
``store.ref(TEST, store.snapshot_of(LABELED, labeled_version).id)``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mlsys.errors import StorageError
from mlsys.storage.pointers import Move, Series, check_name, current_writer, now, valid_name

SNAPSHOT_DIR = "snapshots"


@dataclass(frozen=True)
class Snapshot:
    """One committed snapshot: a version of each member dataset."""

    id: str
    name: str  # the series, e.g. "comments"
    sequence: int
    members: dict[str, str]  # dataset -> version
    created_by: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    refs: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # from write_snapshot only
    move: Move | None = field(default=None, compare=False, repr=False)  # what write_snapshot did to <name>@latest

    def version(self, dataset: str) -> str:
        if dataset not in self.members:
            raise StorageError(f"snapshot {self.label} has no member {dataset!r}; its members: {sorted(self.members)}")
        return self.members[dataset]

    @property
    def label(self) -> str:
        return f"{self.name}@{self.id}"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "sequence": self.sequence, "members": dict(self.members),
                "created_by": dict(self.created_by), "created_at": self.created_at}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        return cls(id=data["id"], name=data["name"], sequence=int(data["sequence"]), members=dict(data["members"]),
                   created_by=dict(data.get("created_by") or {}), created_at=data.get("created_at", ""))


def snapshot_id(series: str, members: dict[str, str]) -> str:
    canonical = json.dumps({"name": series, "members": dict(sorted(members.items()))}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class SnapshotMixin:
    """The snapshot half of ``DatasetStore`` (see the module docstring)."""

    backend: Any
    root_uri: str

    def _snapshot_series(self, series: str) -> Series:
        def sequence_of(sid: str) -> int:
            snap = self._load_snapshot(sid)
            return snap.sequence if snap else 0

        return Series(self.backend, SNAPSHOT_DIR, series, sequence_of=sequence_of,
                      known_max=lambda: max((s.sequence for s in self.snapshots(series)), default=0))

    def _load_snapshot(self, sid: str) -> Snapshot | None:
        if not valid_name(sid):
            return None
        got = self.backend.get_versioned(f"{SNAPSHOT_DIR}/{sid}.json")
        return Snapshot.from_json(json.loads(got[0])) if got else None

    def write_snapshot(self, series: str, parts: dict[str, Any], *, sources: dict[str, str] | None = None,
                       created_by: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Snapshot:
        """Commit ``parts`` (dataset name -> DataFrame or Arrow table) as one snapshot of ``series``."""
        check_name(series, "snapshot series")
        if not parts:
            raise StorageError(f"snapshot {series!r}: no datasets given")
        for name in parts:
            check_name(name)
        staging = Path(tempfile.mkdtemp(prefix="mlsys-snap-"))
        try:
            staged = {name: self._stage(name, data, None, staging) for name, data in parts.items()}
            sid = snapshot_id(series, {name: s.version for name, s in staged.items()})
            refs = {name: self._commit(s, sources=sources, created_by=created_by, extra=extra, snapshot=sid)
                    for name, s in staged.items()}
            snap = self._load_snapshot(sid)
            if snap is None:
                snap = Snapshot(sid, series, self._snapshot_series(series).next_sequence(),
                                {name: ref.version for name, ref in refs.items()}, dict(created_by or {}), now())
                if not self.backend.put_if_absent(f"{SNAPSHOT_DIR}/{sid}.json",
                                                  json.dumps(snap.to_json(), indent=2).encode()):
                    snap = self._load_snapshot(sid)  # a concurrent writer committed the same snapshot first
            writer = current_writer(created_by)
            move = self._snapshot_series(series).advance("latest", sid, snap.sequence, writer)
            refs = {name: self._advance(ref, "latest", writer) for name, ref in refs.items()}
            return replace(snap, refs=refs, move=move)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def snapshots(self, series: str | None = None) -> list[Snapshot]:
        """Every snapshot (of ``series``, if given), oldest first by sequence."""
        out = []
        for key in self.backend.list(f"{SNAPSHOT_DIR}/"):
            parts = key.split("/")
            if len(parts) == 2 and parts[1].endswith(".json"):
                snap = Snapshot.from_json(json.loads(self.backend.get_bytes(key)))
                if series is None or snap.name == series:
                    out.append(snap)
        return sorted(out, key=lambda s: (s.name, s.sequence))

    def snapshot_names(self) -> list[str]:
        """Every snapshot series with a pointer."""
        return sorted({k.split("/")[1] for k in self.backend.list(f"{SNAPSHOT_DIR}/") if k.count("/") == 2})

    def snapshot_pointers(self, series: str) -> dict[str, dict[str, Any]]:
        check_name(series, "snapshot series")
        return self._snapshot_series(series).pointers()

    def snapshot_history(self, series: str) -> list[dict[str, Any]]:
        check_name(series, "snapshot series")
        return self._snapshot_series(series).history()

    def snapshot(self, which: Any) -> Snapshot:
        """A snapshot by ``"series@latest"``, ``"series"`` (its latest), ``"series@<id>"``, ``"<id>"``, or the
        one a ``DatasetRef`` descends from (``snapshot_of``)."""
        if hasattr(which, "version") and hasattr(which, "sources"):
            return self.snapshot_of(which.name, which.version)
        series, _, ref = str(which).partition("@")
        if ref in ("", "latest") and valid_name(series):
            pointer = self._snapshot_series(series).pointer("latest")
            if pointer is not None:
                return self._load_snapshot(pointer["version"])
            if ref == "latest":
                raise StorageError(f"snapshot series {series!r} has no snapshot under {self.root_uri}; run ingest first")
        sid = ref or series
        snap = self._load_snapshot(sid)
        if snap is None or (ref and snap.name != series):
            raise StorageError(f"no snapshot {which!r} under {self.root_uri}; series: {self.snapshot_names() or 'none'}")
        return snap

    def _snapshot_member(self, name: str, sid: str) -> str | None:
        snap = self._load_snapshot(sid)
        return snap.version(name) if snap is not None else None

    def snapshot_of(self, name: str, version: str = "latest") -> Snapshot:
        """The snapshot that version ``name@version`` descends from (see the module docstring)."""
        start = self.ref(name, version)
        roots, seen, stack = {}, set(), [start]
        while stack:
            ref = stack.pop()
            if ref.label in seen:
                continue
            seen.add(ref.label)
            if ref.snapshot:
                roots[ref.label] = ref
                continue
            for src, ver in ref.sources.items():
                if valid_name(src) and valid_name(ver):
                    parent = self._read_meta(src, ver)
                    if parent is not None:
                        stack.append(parent)
        if not roots:
            raise StorageError(f"{start.label} descends from no snapshot (its sources: {start.sources or 'none'}); "
                               "it was written before snapshots existed or not from ingested data: re-run ingest")
        candidates = [s for s in map(self._load_snapshot, {r.snapshot for r in roots.values()}) if s is not None]
        fits = [s for s in candidates  # each root is in the snapshot, or names it (data carried forward)
                if all(s.members.get(r.name) == r.version or s.id == r.snapshot for r in roots.values())]
        if not fits:
            raise StorageError(f"{start.label} descends from {sorted(roots)}, which belong to different snapshots "
                               f"({sorted(s.label for s in candidates)}); no one snapshot holds them all")
        return max(fits, key=lambda s: s.sequence)
