"""Pointers that only move forward, per-series sequence numbers, and the history of every move.

A *series* is a named sequence of immutable, content-addressed versions:
``datasets/<name>`` (dataset versions) or ``snapshots/<name>`` (ingest snapshots).
Each has, beside its versions:

    <kind>/<name>/_seq.json                  {"sequence": n}: the last sequence number handed out
    <kind>/<name>/_<pointer>.json            "latest", "validated": the move record of its last move
    history/<kind>/<name>/<seq>-<pointer>.json   one create-only record per move, never rewritten

**Sequence numbers.** A version gets the next number of its series when it is
first committed (``next_sequence``: compare-and-set on ``_seq.json``), keeps it
for ever, and a re-write of the same content keeps the original. Numbers are
unique and increase in commit order; a writer that loses a race for the same
content leaves a gap, never a duplicate.

**Moves.** ``advance(pointer, version, sequence)`` reads the pointer, refuses to
move it to a version whose sequence is not higher than the one it holds, and
otherwise writes it by compare-and-set against what it read (retrying on a lost
race). A refused move is not an error: the ``Move`` it returns says
``moved=False`` and why, so an Airflow retry of an old task finishes without
rolling anything back.

**History.** After the pointer moves, its record is created under ``history/``.
A writer that dies between the two leaves the record in the pointer itself; the
next move writes it into the history first, and ``history()`` reads it from the
pointer meanwhile, so no move is ever missing.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import random
import re
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from mlsys.errors import StorageError

log = logging.getLogger(__name__)
HISTORY_PREFIX = "history"
SEQ_FILE = "_seq.json"
RETRIES = 500  # compare-and-set attempts before giving up (each one lost to another writer)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def valid_name(value: Any) -> bool:
    return isinstance(value, str) and bool(_NAME_RE.fullmatch(value))


def check_name(name: str, what: str = "dataset") -> None:
    if not valid_name(name):
        raise StorageError(
            f"{what} name {name!r} is not valid: start with a letter or digit, then use letters, digits, "
            "'.', '-' or '_' (no '/', no spaces)"
        )


def now() -> str:
    return datetime.now(UTC).isoformat()


def current_writer(created_by: dict[str, Any] | None = None) -> dict[str, str]:
    """Who moves a pointer: ``writer`` is the MLflow run id (from ``created_by`` or the active run), else
    ``cli (user@host pid N)``; ``airflow`` names the task when Airflow's ``AIRFLOW_CTX_*`` variables are set."""
    run_id = (created_by or {}).get("mlflow_run_id")
    if not run_id and "mlflow" in sys.modules:  # never import mlflow just to ask
        try:
            active = sys.modules["mlflow"].active_run()
            run_id = active.info.run_id if active else None
        except Exception:  # noqa: BLE001 - a writer name is never worth failing a write for
            run_id = None
    if run_id:
        out = {"writer": str(run_id)}
    else:
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001
            user = "?"
        out = {"writer": f"cli ({user}@{socket.gethostname()} pid {os.getpid()})"}
    ctx = [os.environ.get(f"AIRFLOW_CTX_{k}") for k in ("DAG_ID", "DAG_RUN_ID", "TASK_ID", "TRY_NUMBER")]
    if ctx[0]:
        out["airflow"] = f"{ctx[0]}/{ctx[1]}/{ctx[2]} try {ctx[3]}"
    return out


@dataclass(frozen=True)
class Move:
    """What asking a pointer to move did. ``moved`` False: it stayed at ``current`` (``reason`` says why)."""

    series: str  # "datasets/<name>" or "snapshots/<name>"
    pointer: str
    moved: bool
    version: str  # the version asked for
    sequence: int
    current: str  # the version the pointer holds now
    current_sequence: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _pause(attempt: int) -> None:
    time.sleep(min(0.001 * 2 ** min(attempt, 8), 0.2) * random.uniform(0.5, 1.5))


class Series:
    """One series' sequence counter, pointers and history on a backend (see the module docstring)."""

    def __init__(self, backend: Any, kind: str, name: str, *, known_max: Callable[[], int],
                 sequence_of: Callable[[str], int]):
        self.backend, self.kind, self.name = backend, kind, name
        self.prefix = f"{kind}/{name}"
        self.known_max = known_max  # the highest sequence already committed (when _seq.json is missing)
        self.sequence_of = sequence_of  # a version's sequence (for pointers written before sequences)

    def pointer_key(self, pointer: str) -> str:
        return f"{self.prefix}/_{pointer}.json"

    def history_key(self, record: dict[str, Any]) -> str:
        return f"{HISTORY_PREFIX}/{self.prefix}/{int(record['sequence']):012d}-{record['pointer']}.json"

    def next_sequence(self) -> int:
        key = f"{self.prefix}/{SEQ_FILE}"
        for attempt in range(RETRIES):
            got = self.backend.get_versioned(key)
            last = json.loads(got[0])["sequence"] if got else self.known_max()
            if self.backend.put_if_match(key, json.dumps({"sequence": last + 1}).encode(), got[1] if got else None):
                return last + 1
            _pause(attempt)
        raise StorageError(f"{self.prefix}: no sequence number after {RETRIES} tries; too many writers at once")

    def pointer(self, pointer: str) -> dict[str, Any] | None:
        got = self.backend.get_versioned(self.pointer_key(pointer))
        return self._record(json.loads(got[0]), pointer) if got else None

    def _record(self, data: dict[str, Any], pointer: str) -> dict[str, Any]:
        if "sequence" not in data:  # written before sequence numbers: ask the version
            data = {**data, "sequence": self.sequence_of(data["version"]), "pointer": pointer}
        return data

    def advance(self, pointer: str, version: str, sequence: int, writer: dict[str, str]) -> Move:
        key = self.pointer_key(pointer)
        for attempt in range(RETRIES):
            got = self.backend.get_versioned(key)
            cur = self._record(json.loads(got[0]), pointer) if got else None
            if cur is not None and cur["version"] == version:
                return Move(self.prefix, pointer, False, version, sequence, version, cur["sequence"], "already there")
            if cur is not None and cur["sequence"] >= sequence:
                move = Move(self.prefix, pointer, False, version, sequence, cur["version"], cur["sequence"],
                            f"refused to move backwards: {pointer} holds {cur['version']} (sequence "
                            f"{cur['sequence']}), newer than {version} (sequence {sequence})")
                log.warning("%s: %s", self.prefix, move.reason)  # the task goes on: a retry must not fail for ever
                return move
            if cur is not None and "at" in cur:
                self._remember(cur)  # a writer that died after moving it never wrote its history record
            record = {"series": self.prefix, "pointer": pointer, "version": version, "sequence": sequence,
                      "from_version": cur["version"] if cur else None,
                      "from_sequence": cur["sequence"] if cur else None, **writer, "at": now()}
            if self.backend.put_if_match(key, json.dumps(record, indent=2).encode(), got[1] if got else None):
                self._remember(record)
                return Move(self.prefix, pointer, True, version, sequence, version, sequence, "moved")
            _pause(attempt)
        raise StorageError(f"{self.prefix}: {pointer} could not be moved after {RETRIES} tries; too many writers")

    def _remember(self, record: dict[str, Any]) -> None:
        key = self.history_key(record)
        if not self.backend.exists(key):
            self.backend.put_if_absent(key, json.dumps(record, indent=2).encode())

    def pointers(self) -> dict[str, dict[str, Any]]:
        """Every pointer of the series, by name."""
        out = {}
        for key in self.backend.list(f"{self.prefix}/"):
            parts = key.split("/")
            if len(parts) == 3 and parts[2].startswith("_") and parts[2].endswith(".json") and parts[2] != SEQ_FILE:
                name = parts[2][1:-len(".json")]
                if valid_name(name):
                    got = self.pointer(name)
                    if got is not None:
                        out[name] = got
        return out

    def history(self) -> list[dict[str, Any]]:
        """Every pointer move, ordered by the sequence of the version it moved to (then pointer name)."""
        moves = {}
        for key in self.backend.list(f"{HISTORY_PREFIX}/{self.prefix}/"):
            record = json.loads(self.backend.get_bytes(key))
            moves[(record["sequence"], record["pointer"])] = record
        for pointer, record in self.pointers().items():
            if "at" in record:  # its history record may not be written yet
                moves.setdefault((record["sequence"], pointer), record)
        return [moves[k] for k in sorted(moves)]
