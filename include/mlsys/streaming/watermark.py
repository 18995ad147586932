"""A stream's segments and its watermark: how far the stream has been processed and committed.

Layout under the storage root::

    streams/<stream>/segments/<name>-<seq>.mp4     segments, numbered 1, 2, 3, ... (any name, digits last)
    streams/<stream>/state/<seq>.pt                 engine state after segment <seq> (its base input frame)
    streams/<stream>/_watermark.json                the commit point, written last:
        {"segment": 7, "frames": 840, "predictions": "<dataset version>", "state": "streams/.../7.pt"}

A run reads the watermark, processes the segments after it in order, writes
the predictions dataset and the state, and only then moves the watermark
(one atomic put). A crash anywhere before that leaves the old watermark: the
retry redoes the same segments from the same state and writes the same
content, which the content-addressed dataset store maps to the same version.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from mlsys.errors import DataError
from mlsys.storage import DatasetStore

_SEQ = re.compile(r"(\d+)\.mp4$")


class SegmentOrderError(DataError):
    """A segment arrived out of order: the next one after the watermark is missing while later ones exist."""


@dataclass(frozen=True)
class Watermark:
    segment: int = 0  # last committed segment number (0: none yet)
    frames: int = 0  # frames committed so far
    predictions: str = ""  # the predictions dataset version that holds them
    state: str = ""  # key of the engine state after ``segment``


def prefix(stream: str) -> str:
    return f"streams/{stream}"


def segment_key(stream: str, seq: int, name: str = "segment") -> str:
    return f"{prefix(stream)}/segments/{name}-{seq:06d}.mp4"


def read(store: DatasetStore, stream: str) -> Watermark:
    key = f"{prefix(stream)}/_watermark.json"
    if not store.backend.exists(key):
        return Watermark()
    return Watermark(**json.loads(store.get_bytes(key)))


def commit(store: DatasetStore, stream: str, mark: Watermark) -> None:
    """Move the watermark: the one atomic write that makes a run's outputs count."""
    store.put_bytes(f"{prefix(stream)}/_watermark.json", json.dumps(asdict(mark)).encode())


def segments(store: DatasetStore, stream: str) -> list[tuple[int, str]]:
    """Every segment of ``stream`` as (seq, key), in sequence order."""
    found = []
    for key in store.backend.list(f"{prefix(stream)}/segments/"):
        match = _SEQ.search(key)
        if match is None:
            raise DataError(f"segment {key!r} has no sequence number: name segments like 'segment-000001.mp4'")
        found.append((int(match.group(1)), key))
    found.sort()
    for (a, ka), (b, kb) in zip(found, found[1:]):
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
