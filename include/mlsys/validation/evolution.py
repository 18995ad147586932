"""Schema evolution: a registry of versions, proposed updates as diffs, explicit acceptance.

Layout (next to a schema file, or under ``schemas/`` in the storage root)::

    <name>.yaml                    the current schema (its ``version`` field)
    <name>.history/v<N>.yaml       every version ever used, immutable
    <name>.proposed.yaml           a pending update: version = current + 1
    <name>.proposed.diff           the same, as a unified diff against the current version

The schema never changes silently: validation only writes a proposal; a user
accepts it (``mlsys schema accept`` or the ``accept_schema_update`` DAG param).
A current file whose content differs from the history's copy of the same
version was edited without a version bump: that is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlsys.errors import SpecError
from mlsys.validation.anomalies import NEW_COLUMN, OUT_OF_RANGE, UNEXPECTED_VALUES, WARNING, Anomaly
from mlsys.validation.infer import infer_column
from mlsys.validation.schema import SCHEMA_DIR, Schema, resolve
from mlsys.validation.statistics import DatasetStatistics

if TYPE_CHECKING:
    from mlsys.storage import DatasetStore
    from mlsys.storage.backend import Backend


@dataclass(frozen=True)
class Proposal:
    schema: Schema
    diff: str
    uri: str
    reasons: list[str]

    def to_json(self) -> dict:
        return {"version": self.schema.version, "uri": self.uri, "diff": self.diff, "reasons": self.reasons}


class SchemaRegistry:
    def __init__(self, backend: "Backend", current_key: str, stem: str):
        self.backend, self.current_key, self.stem = backend, current_key, stem

    @classmethod
    def for_file(cls, path: str | Path) -> "SchemaRegistry":
        from mlsys.storage.backend import LocalBackend

        path = Path(path).resolve()
        return cls(LocalBackend(path.parent), path.name, path.stem)

    @classmethod
    def for_store(cls, store: "DatasetStore", name: str) -> "SchemaRegistry":
        """The registry of schema ``name`` in the storage root, seeded from the shipped file on first use."""
        reg = cls(store.backend, f"schemas/{name}.yaml", f"schemas/{name}")
        if not reg.backend.exists(reg.current_key):
            seed = Schema.load(name)
            reg.backend.put_bytes(reg.current_key, seed.to_yaml().encode())
        elif (SCHEMA_DIR / f"{name}.yaml").is_file():
            shipped = Schema.load(name)
            if shipped.version > max(reg.current().version, reg.latest()):
                reg.save(shipped)  # a newer shipped version (a release of this project) becomes current
        return reg

    @classmethod
    def open(cls, schema: str, store: "DatasetStore") -> "SchemaRegistry":
        """A path opens the registry next to that file; a name (or a shipped file) the one in the store."""
        path = Path(schema)
        if path.suffix and path.resolve().parent != SCHEMA_DIR.resolve():
            resolve(path)  # a clear error when the file is missing
            return cls.for_file(path)
        return cls.for_store(store, path.stem)

    @property
    def uri(self) -> str:
        return self.backend.uri(self.current_key)

    def _history_key(self, version: int) -> str:
        return f"{self.stem}.history/v{version}.yaml"

    def current(self) -> Schema:
        """The current schema, recorded in the history; an edit without a version bump is a SpecError."""
        schema = Schema.parse(self.backend.get_bytes(self.current_key).decode(), self.uri)
        key = self._history_key(schema.version)
        if self.backend.exists(key):
            recorded = Schema.parse(self.backend.get_bytes(key).decode(), self.backend.uri(key))
            if recorded.to_dict() != schema.to_dict():
                raise SpecError(
                    f"schema file {self.uri} does not match its version: it says version {schema.version}, "
                    f"but version {schema.version} in the history ({self.backend.uri(key)}) differs:\n"
                    f"{recorded.diff(schema, schema.dataset)}Bump 'version' to {self.latest() + 1} to make the edit a new version."
                )
        else:
            self.backend.put_bytes(key, schema.to_yaml().encode())
        return schema

    def versions(self) -> list[int]:
        prefix = f"{self.stem}.history/"
        out = []
        for key in self.backend.list(prefix):
            name = key.rsplit("/", 1)[-1]
            if name.startswith("v") and name.endswith(".yaml") and name[1:-5].isdigit():
                out.append(int(name[1:-5]))
        return sorted(out)

    def latest(self) -> int:
        return max(self.versions() or [0])

    def get(self, version: int) -> Schema:
        key = self._history_key(version)
        if not self.backend.exists(key):
            raise SpecError(f"schema {self.stem} has no version {version}; versions: {self.versions()}")
        schema = Schema.parse(self.backend.get_bytes(key).decode(), self.backend.uri(key))
        if schema.version != version:
            raise SpecError(f"schema file {self.backend.uri(key)} says version {schema.version}, not {version}")
        return schema

    def propose(self, schema: Schema, reasons: list[str]) -> Proposal:
        current = self.current()
        proposed = schema.with_changes(version=max(current.version, self.latest()) + 1)
        diff = current.diff(proposed, current.dataset)
        self.backend.put_bytes(f"{self.stem}.proposed.yaml", proposed.to_yaml().encode())
        self.backend.put_bytes(f"{self.stem}.proposed.diff", diff.encode())
        return Proposal(proposed, diff, self.backend.uri(f"{self.stem}.proposed.yaml"), reasons)

    def pending(self) -> Proposal | None:
        key = f"{self.stem}.proposed.yaml"
        if not self.backend.exists(key):
            return None
        proposed = Schema.parse(self.backend.get_bytes(key).decode(), self.backend.uri(key))
        current = self.current()
        if proposed.version <= current.version:
            return None  # accepted (or superseded) already
        return Proposal(proposed, current.diff(proposed, current.dataset), self.backend.uri(key), [])

    def accept(self) -> Schema:
        """Make the pending proposal the current schema (and record it in the history)."""
        pending = self.pending()
        if pending is None:
            raise SpecError(f"schema {self.uri} has no pending proposal to accept; validation writes one when it "
                            "sees a benign change (a rare new value, a slightly wider range, a new column)")
        return self.save(pending.schema)

    def save(self, schema: Schema) -> Schema:
        key = self._history_key(schema.version)
        if self.backend.exists(key):
            raise SpecError(f"schema version {schema.version} already exists in {self.backend.uri(key)}; history is immutable")
        self.backend.put_bytes(key, schema.to_yaml().encode())
        self.backend.put_bytes(self.current_key, schema.to_yaml().encode())
        return schema


def propose_update(schema: Schema, anomalies: list[Anomaly], stats: DatasetStatistics) -> tuple[Schema, list[str]] | None:
    """The schema with every benign warning folded in, and why; None when there is nothing benign."""
    columns = {name: dict(rule) for name, rule in schema.columns.items()}
    reasons = []
    for a in anomalies:
        if a.severity != WARNING:
            continue
        if a.type == NEW_COLUMN and a.column in stats.columns:
            rule = infer_column(stats.columns[a.column])
            rule["required"] = False  # older data lacks it
            rule.pop("min_presence", None)
            columns[a.column] = rule
            reasons.append(f"add column {a.column!r}")
        elif a.type == OUT_OF_RANGE and a.details.get("benign"):
            lo, hi = a.observed
            rule = columns[a.column]
            if rule.get("min") is not None and lo is not None and lo < rule["min"]:
                rule["min"] = _like(rule["min"], lo)
            if rule.get("max") is not None and hi is not None and hi > rule["max"]:
                rule["max"] = _like(rule["max"], hi)
            reasons.append(f"widen the range of {a.column!r} to [{rule.get('min')}, {rule.get('max')}]")
        elif a.type == UNEXPECTED_VALUES and a.details.get("benign"):
            rule = columns[a.column]
            new = [v["value"] for v in a.details["values"]]
            rule["domain"] = list(rule["domain"]) + [v for v in new if v not in rule["domain"]]
            reasons.append(f"add {new} to the domain of {a.column!r}")
    if not reasons:
        return None
    return schema.with_changes(columns=columns), reasons


def _like(old, new):
    return int(new) if isinstance(old, int) and float(new).is_integer() else float(new)
