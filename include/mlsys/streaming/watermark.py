"""A stream's segments, its engine state and its watermark: how far the stream has been processed and committed.

Layout under the storage root::

    streams/<stream>/segments/<name>-<seq>.mp4    segments, numbered 1, 2, 3, ... (any name, digits last); create-only
    streams/<stream>/state/<seq>-<sha>.pt          engine state after segment <seq>; only the watermark's is kept
    streams/<stream>/_watermark.json               the commit point, moved by compare-and-set:
        {"segment": 7, "frames": 840, "predictions": "<segment 7's predictions version>", "state": "streams/..."}
    datasets/video_predictions_<stream>/<version>/ one small version per segment (``mlsys.streaming.predictions``)

A run reads the watermark (segment N), processes the segments after it in order and, per segment, writes that
segment's predictions and the state, and only then moves the watermark from what it read to N+1 by
compare-and-set. The watermark never moves backwards: a writer that read N may commit N+1 only while the
watermark is still N; if another writer (the DAG, or ``mlsys stream`` beside it) moved it meanwhile, the commit
raises ``WatermarkConflict`` and nothing of the stale run counts (Airflow's retry re-reads the watermark). A
crash before the commit leaves the old watermark: the retry redoes the same segments from the same state and
writes the same content, which the content-addressed names map to the same objects. After each commit the
state blobs up to the watermark other than the one it names are deleted.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path

from mlsys.errors import DataError
from mlsys.storage import DatasetStore
from mlsys.streaming import conditional

_SEQ = re.compile(r"(\d+)\.mp4$")
_STATE = re.compile(r"/state/(\d+)(?:-[0-9a-f]+)?\.pt$")


class SegmentOrderError(DataError):
    """A segment arrived out of order: the next one after the watermark is missing while later ones exist."""


class WatermarkConflict(conditional.ConflictError):
    """The watermark moved since this writer read it (another writer committed): this writer's commit is refused."""


class SegmentExists(conditional.AlreadyExists):
    """A segment number is taken: segments are immutable."""


@dataclass(frozen=True)
class Watermark:
    segment: int = 0  # last committed segment number (0: none yet)
    frames: int = 0  # frames committed so far
    predictions: str = ""  # the predictions dataset version of segment ``segment`` (it names the one before)
    state: str = ""  # key of the engine state after ``segment``


def prefix(stream: str) -> str:
    return f"streams/{stream}"


def segment_key(stream: str, seq: int, name: str = "segment") -> str:
    return f"{prefix(stream)}/segments/{name}-{seq:06d}.mp4"


def _key(stream: str) -> str:
    return f"{prefix(stream)}/_watermark.json"


def _encode(mark: Watermark) -> bytes:
    return json.dumps(asdict(mark)).encode()


def read(store: DatasetStore, stream: str) -> Watermark:
    key = _key(stream)
    if not store.backend.exists(key):
        return Watermark()
    return Watermark(**json.loads(store.get_bytes(key)))


def _swap(store: DatasetStore, key: str, old: bytes | None, new: bytes) -> None:
    """The one compare-and-set the watermark uses (switch to mlsys.storage's general one here)."""
    conditional.compare_and_set(store.backend, key, old, new)


def commit(store: DatasetStore, stream: str, mark: Watermark, expected: Watermark) -> None:
    """Move the watermark from ``expected`` (what this writer read) to ``mark``: the write that makes outputs count.

    Only forward by one segment, and only if the watermark still is ``expected``; else ``WatermarkConflict``.
    """
    if mark.segment != expected.segment + 1:
        raise WatermarkConflict(f"stream {stream!r}: a writer that read the watermark at segment {expected.segment} "
                                f"may commit segment {expected.segment + 1}, not {mark.segment}")
    try:
        _swap(store, _key(stream), None if expected == Watermark() else _encode(expected), _encode(mark))
    except conditional.ConflictError as exc:
        now = read(store, stream)
        raise WatermarkConflict(
            f"stream {stream!r}: the watermark moved to segment {now.segment} while this run processed segment "
            f"{mark.segment} from segment {expected.segment} (another writer: the DAG, or `mlsys stream` beside "
            "it). This run's commit is refused and nothing of it counts; rerun (an Airflow retry re-reads the "
            "watermark)") from exc


def put_state(store: DatasetStore, stream: str, seq: int, data: bytes) -> str:
    """Store the engine state after segment ``seq`` under a content-addressed key (a stale writer cannot clobber)."""
    key = f"{prefix(stream)}/state/{seq:06d}-{hashlib.sha256(data).hexdigest()[:16]}.pt"
    store.put_bytes(key, data)
    return key


def states(store: DatasetStore, stream: str) -> list[tuple[int, str]]:
    """Every stored state blob of ``stream`` as (seq, key), in sequence order."""
    found = [(int(m.group(1)), k) for k in store.backend.list(f"{prefix(stream)}/state/")
             if (m := _STATE.search("/" + k))]
    return sorted(found)


def prune(store: DatasetStore, stream: str, mark: Watermark) -> list[str]:
    """Delete the state blobs up to the watermark except the one it names; later ones may be another run's."""
    gone = [key for seq, key in states(store, stream) if seq <= mark.segment and key != mark.state]
    for key in gone:
        conditional.delete(store.backend, key)
    return gone


def put_segment(store: DatasetStore, stream: str, seq: int, video: Path) -> str:
    """Upload ``video`` as segment ``seq``, create-only: of two puts of one number exactly one succeeds."""
    taken = [k for s, k in segments(store, stream) if s == seq]
    key = segment_key(stream, seq)
    try:
        if taken:
            raise conditional.AlreadyExists(taken[0])
        conditional.create_only(store.backend, key, Path(video))
    except conditional.AlreadyExists as exc:
        raise SegmentExists(f"stream {stream!r} already has segment {seq} ({exc}): segments are immutable, "
                            "upload under the next number") from exc
    return key


def segments(store: DatasetStore, stream: str) -> list[tuple[int, str]]:
    """Every segment of ``stream`` as (seq, key), in sequence order."""
    found = []
    for key in store.backend.list(f"{prefix(stream)}/segments/"):
        match = _SEQ.search(key)
        if match is None:
            raise DataError(f"segment {key!r} has no sequence number: name segments like 'segment-000001.mp4'")
        found.append((int(match.group(1)), key))
    found.sort()
    for (a, ka), (b, kb) in pairwise(found):
        if a == b:
            raise DataError(f"segments {ka!r} and {kb!r} share the sequence number {a}: give each its own")
    return found


def pending(store: DatasetStore, stream: str, mark: Watermark) -> tuple[list[tuple[int, str]], SegmentOrderError | None]:
    """The segments that follow the watermark without a gap, and the error for the first one out of order."""
    todo: list[tuple[int, str]] = []
    expected = mark.segment + 1
    for seq, key in segments(store, stream):
        if seq <= mark.segment:
            continue
        if seq != expected:
            return todo, SegmentOrderError(
                f"stream {stream!r}: segment {seq} ({key!r}) arrived before segment {expected}; segments up to "
                f"{expected - 1} are committed and the watermark stops there. Upload segment {expected}, then rerun")
        todo.append((seq, key))
        expected += 1
    return todo, None
