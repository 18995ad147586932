"""Adaptive batching (Clipper): queue requests, score them in batches sized by AIMD to keep p99 under an SLO.

    requests --submit--> [bounded queue] --take up to `limit` records--> score on the model thread --> futures

After every batch, with C = the batch's compute time and B = slo / 2 (a request waits for
at most the batch running now, then its own: two batch times):
    C > B                      -> limit = max(1, floor(limit * decrease))    (multiplicative decrease)
    C <= B and batch was full  -> limit = min(max_batch, limit + increase)   (additive increase)
As in Clipper, AIMD tracks the model's batch latency; queueing is the job of
admission control, since shrinking batches under a backlog would only lengthen the queue.

Back-pressure: a request whose estimated latency (queued records x the
measured wall time per record while busy, plus one batch cycle) exceeds the SLO
is refused at once with ``Overloaded`` (HTTP 503 + Retry-After) rather than
queued to miss it, and the queue never holds more than ``max_queue`` records.

A stall is not a cost: one cycle that took far longer than usual (a pause of the
whole process: the host descheduling it, a garbage collection) would, averaged in
as it is, multiply the per-record estimate and shed requests for many batches after
the stall has ended (1% 503s in a run with 300 ms stalls). The estimates are
therefore the medians of the last ``window`` batches: one stalled batch among them
changes nothing, while a real rise in cost (most of the window) moves them within
``window // 2 + 1`` batches, a few milliseconds.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from mlsys.spec import require


class Overloaded(Exception):
    """The request would miss the SLO: retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class BatcherConfig:
    slo_ms: float = 50.0
    max_batch: int = 512
    initial_batch: int = 32
    increase: int = 4
    decrease: float = 0.5
    max_queue: int = 4096  # records waiting, at most
    max_wait_ms: float = 0.0  # extra wait for a batch to fill once the model is free (0: take what is queued)
    settle_turns: int = 8  # at most this many event-loop turns spent letting a batch fill
    inline: bool = True  # score on the event loop's thread: no GIL hand-offs; the loop pauses for one batch
    window: int = 9  # batches whose median cycle and per-record times are the estimates (see above)

    def __post_init__(self):
        require(self.slo_ms > 0, "BatcherConfig", "slo_ms", self.slo_ms, "use a positive latency target in ms")
        require(self.max_batch >= 1, "BatcherConfig", "max_batch", self.max_batch, "use at least 1")
        require(1 <= self.initial_batch <= self.max_batch, "BatcherConfig", "initial_batch", self.initial_batch,
                f"use a value in [1, max_batch={self.max_batch}]")
        require(self.increase >= 1, "BatcherConfig", "increase", self.increase, "use at least 1")
        require(0 < self.decrease < 1, "BatcherConfig", "decrease", self.decrease, "use a factor in (0, 1)")
        require(self.max_queue >= 1, "BatcherConfig", "max_queue", self.max_queue, "use at least 1")
        require(self.max_wait_ms >= 0, "BatcherConfig", "max_wait_ms", self.max_wait_ms, "use 0 or more")
        require(self.window >= 1, "BatcherConfig", "window", self.window, "use at least 1 batch (odd: a true median)")


@dataclass
class _Item:
    texts: Sequence[str]
    future: asyncio.Future
    enqueued: float


class AdaptiveBatcher:
    """``score(texts) -> (label, results)`` runs inline (or on one model thread); ``submit`` is awaited on the event loop.

    Inline scoring is the default: on a GIL-bound server a model thread only
    trades the GIL back and forth with the HTTP parsing; inline, the loop
    parses every request that arrived, scores them as one batch, and repeats.
    """

    def __init__(self, score: Callable[[list[str]], tuple[str, list[Any]]], config: BatcherConfig = BatcherConfig(),
                 on_batch: Callable[[int, float, list[float]], None] | None = None):
        self.score = score
        self.config = config
        self.limit = config.initial_batch
        self.on_batch = on_batch  # (batch records, compute seconds, request latencies) -> None
        self.queue: deque[_Item] = deque()
        self.queued_records = 0
        self.cycle_seconds = 0.002  # median wall time per batch while busy: model + parsing + answering
        self.record_seconds = 0.0001  # median cycle time per record
        self._cycles: deque[float] = deque(maxlen=config.window)
        self._per_record: deque[float] = deque(maxlen=config.window)
        self._last_done: float | None = None
        self._wake: asyncio.Event | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlsys-model")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mlsys-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)

    def estimated_wait_s(self, records: int = 1) -> float:
        """Queued records times the measured cost per record (model and HTTP work), plus one batch cycle."""
        return (self.queued_records + records) * self.record_seconds + self.cycle_seconds

    async def submit(self, texts: Sequence[str]) -> tuple[str, list[Any]]:
        cfg = self.config
        wait = self.estimated_wait_s(len(texts))
        if self.queued_records + len(texts) > cfg.max_queue or (self.queue and wait * 1000 > cfg.slo_ms):
            raise Overloaded(f"queue holds {self.queued_records} records; estimated latency {wait * 1000:.0f} ms "
                             f"exceeds the {cfg.slo_ms:g} ms SLO", retry_after=max(1, math.ceil(wait)))
        future = asyncio.get_running_loop().create_future()
        self.queue.append(_Item(texts, future, time.perf_counter()))
        self.queued_records += len(texts)
        self._wake.set()
        return await future

    def _take(self) -> list[_Item]:
        items, records = [], 0
        while self.queue and (not items or records + len(self.queue[0].texts) <= self.limit):
            item = self.queue.popleft()
            items.append(item)
            records += len(item.texts)
        self.queued_records -= records
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        idle = 0.0
        while True:
            if not self.queue:
                self._wake.clear()
                idle_from = time.perf_counter()
                await self._wake.wait()
                idle += time.perf_counter() - idle_from
            if self.config.max_wait_ms and self.queued_records < self.limit:
                await asyncio.sleep(self.config.max_wait_ms / 1000)
            else:
                # Let requests that already arrived be parsed and join this batch: a request takes a few
                # loop turns from socket to submit(), so yield until the queue stops growing (or is full).
                for _ in range(self.config.settle_turns):
                    before = self.queued_records
                    await asyncio.sleep(0)
                    if self.queued_records >= self.limit or (self.queued_records == before and _ > 0):
                        break
            items = self._take()
            texts = [t for item in items for t in item.texts]
            started = time.perf_counter()
            try:
                if self.config.inline:
                    label, results = self.score(texts)
                else:
                    label, results = await loop.run_in_executor(self._pool, self.score, texts)
            except Exception as exc:  # handed to every waiting request, which raises it
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            done = time.perf_counter()
            compute = done - started
            # busy wall time since the last batch: the model, plus parsing and answering requests
            cycle = max(compute, done - self._last_done - idle) if self._last_done is not None else compute
            self._last_done, idle = done, 0.0
            self._learn(cycle, len(texts))
            i = 0
            latencies = []
            for item in items:
                n = len(item.texts)
                if not item.future.done():
                    item.future.set_result((label, results[i:i + n]))
                latencies.append(done - item.enqueued)
                i += n
            self._adapt(len(texts), compute)
            if self.on_batch is not None:
                self.on_batch(len(texts), compute, latencies)

    def _learn(self, cycle_s: float, records: int) -> None:
        """Add one batch to the window; the estimates are the window's medians, deaf to a lone stall."""
        self._cycles.append(cycle_s)
        self._per_record.append(cycle_s / records)
        self.cycle_seconds = _median(self._cycles)
        self.record_seconds = _median(self._per_record)

    def _adapt(self, records: int, compute_s: float) -> None:
        cfg = self.config
        if compute_s * 1000 > cfg.slo_ms / 2:
            self.limit = max(1, int(self.limit * cfg.decrease))
        elif records >= self.limit:
            self.limit = min(cfg.max_batch, self.limit + cfg.increase)


def _median(values: deque[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
