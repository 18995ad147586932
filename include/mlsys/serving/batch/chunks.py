"""The batch scoring pipeline: chunks of (id, text) in, prediction record batches out, in order, on all cores.

    read (Prefetcher) -> score chunk k, k+1, ... on `workers` threads -> record batches, in input order -> writer

numpy's kernels and torch release the GIL, so threads score chunks in
parallel; at most ``workers + 1`` chunks are in flight, so memory stays flat.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlsys.errors import DataError
from mlsys.serving.scorer import Scorer, Scores

A, B = TypeVar("A"), TypeVar("B")

OUTPUT_SCHEMA = pa.schema([("id", pa.large_string()), ("prediction", pa.int64()), ("proba_0", pa.float64()),
                           ("proba_1", pa.float64()), ("model_version", pa.large_string())])


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def ordered_map(fn: Callable[[A], B], items: Iterable[A], workers: int) -> Iterator[B]:
    """fn over items on a thread pool, results in input order, at most workers + 1 in flight."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlsys-score") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def utf8_buffers(column: pa.Array | pa.ChunkedArray, name: str = "text") -> tuple[np.ndarray, np.ndarray]:
    """(data uint8, offsets int64) of a string column, zero-copy where Arrow allows; nulls are a DataError."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise DataError(f"column {name!r} has {column.null_count} null values; fill or drop them before scoring")
    if not pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.large_string())
    n = len(column)
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int64)[column.offset: column.offset + n + 1]
    data = np.frombuffer(column.buffers()[2], dtype=np.uint8) if n else np.zeros(0, dtype=np.uint8)
    data = data[offsets[0]: offsets[-1]]
    return data, offsets - offsets[0]


MICRO_ROWS = 8192  # rows featurised and forwarded together: the intermediates stay in cache, memory stays small


def score_table(scorer: Scorer, table: pa.Table) -> Scores:
    """Scores for a chunk, computed in micro-batches of MICRO_ROWS counted from the chunk's first row."""
    text = table.column("text")
    parts = [scorer.score_utf8(*utf8_buffers(text.slice(i, MICRO_ROWS))) for i in range(0, table.num_rows, MICRO_ROWS)]
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return Scores(np.zeros(0, dtype=np.int64), np.zeros((0, scorer.num_classes), dtype=np.float32))
    return Scores(np.concatenate([p.prediction for p in parts]), np.concatenate([p.proba for p in parts]))


def to_record_batch(ids: pa.Array | pa.ChunkedArray, scores: Scores, label: str) -> pa.RecordBatch:
    if scores.proba.shape[1] != 2:
        raise DataError(f"the predictions schema has proba_0 and proba_1; model {label} has {scores.proba.shape[1]} classes")
    n = len(scores)
    proba = scores.proba.astype(np.float64)
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    return pa.RecordBatch.from_arrays(
        [pc.cast(ids, pa.large_string()), pa.array(scores.prediction), pa.array(proba[:, 0]), pa.array(proba[:, 1]),
         pa.repeat(pa.scalar(label, pa.large_string()), n)],
        schema=OUTPUT_SCHEMA)


def score_chunks(scorer: Scorer, chunks: Iterable[pa.Table], workers: int) -> Iterator[pa.RecordBatch]:
    """Record batches of predictions, one per input chunk, in order."""
    def one(table: pa.Table) -> pa.RecordBatch:
        return to_record_batch(table.column("id"), score_table(scorer, table), scorer.label)

    yield from ordered_map(one, chunks, workers)
