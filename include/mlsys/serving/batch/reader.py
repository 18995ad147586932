"""A prefetching chunk reader: Parquet record batches of a fixed size, the next one read while this one computes.

    reader thread:  read c0 | read c1 | read c2 | ...        (pyarrow releases the GIL while decoding)
    scoring thread:         | score c0 | score c1 | ...
                    <- a queue of `prefetch` chunks bounds memory ->

Chunks are re-cut to exactly ``chunk_rows`` rows, counted from the start of
the row range, whatever the file's row groups are: a chunk's content depends
only on the data, so a shard (a row range) scores bit-identically to the same
rows inside a whole-dataset run.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from mlsys.storage.dataset import row_group_batches

_DONE = object()


def row_range(path: str | Path, start: int, stop: int, chunk_rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Tables of exactly chunk_rows rows (the last may be shorter) covering rows [start, stop) of the file."""
    pf = pq.ParquetFile(path)
    groups, first, skip = [], 0, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if first < stop and first + n > start:
            if not groups:
                skip = start - first
            groups.append(g)
        first += n
    if not groups or start >= stop:
        return
    want = stop - start
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in row_group_batches(pf, groups, chunk_rows, columns):
        if skip:
            cut = min(skip, batch.num_rows)
            batch, skip = batch.slice(cut), skip - cut
        if batch.num_rows > want:
            batch = batch.slice(0, want)
        want -= batch.num_rows
        pending.append(batch)
        held += batch.num_rows
        while held >= chunk_rows:
            table = pa.Table.from_batches(pending).combine_chunks()
            yield table.slice(0, chunk_rows)
            rest = table.slice(chunk_rows)
            pending, held = ([rest.to_batches()[0]] if rest.num_rows else []), rest.num_rows
        if want == 0:
            break
    if held:
        yield pa.Table.from_batches(pending).combine_chunks()


class Prefetcher:
    """Iterate an iterator in a background thread, keeping up to ``depth`` items ready."""

    def __init__(self, source: Iterator, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(source,), daemon=True, name="mlsys-prefetch")
        self._thread.start()

    def _fill(self, source: Iterator) -> None:
        try:
            for item in source:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._queue.put(exc)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
