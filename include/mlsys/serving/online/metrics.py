"""Server metrics in the Prometheus text exposition format (version 0.0.4), without a client library.

Counters, gauges and histograms, each with optional labels; ``render`` writes
them all. Updated from the event loop thread and the batch thread, so every
update takes one small lock.
"""

from __future__ import annotations

import bisect
import gc
import threading
import time
from typing import Iterable

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                    for k, v in sorted(labels.items()))
    return "{" + body + "}"


class Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str):
        self.name, self.help = name, help
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(Metric):
    kind = "counter"

    def __init__(self, name: str, help: str):
        super().__init__(name, help)
        self.values: dict[tuple, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self.values[key] = self.values.get(key, 0.0) + amount

    def lines(self) -> list[str]:
        return self.header() + [f"{self.name}{_labels(dict(k))} {v:g}" for k, v in sorted(self.values.items())]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self.values[tuple(sorted(labels.items()))] = float(value)

    def reset(self) -> None:
        with self._lock:
            self.values.clear()


class Histogram(Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Iterable[float]):
        super().__init__(name, help)
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.bounds, value)] += 1
            self.sum += value

    def observe_many(self, values: Iterable[float]) -> None:
        with self._lock:
            for value in values:
                self.counts[bisect.bisect_left(self.bounds, value)] += 1
                self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def lines(self) -> list[str]:
        out, running = self.header(), 0
        for bound, n in zip(self.bounds, self.counts):
            running += n
            out.append(f'{self.name}_bucket{{le="{bound:g}"}} {running}')
        running += self.counts[-1]
        out += [f'{self.name}_bucket{{le="+Inf"}} {running}', f"{self.name}_sum {self.sum:g}", f"{self.name}_count {running}"]
        return out


class Registry:
    def __init__(self):
        self.metrics: list[Metric] = []

    def add(self, metric: Metric) -> Metric:
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        return "\n".join(line for m in self.metrics for line in m.lines()) + "\n"


class ServerMetrics:
    """What ``mlsys serve`` exposes at /metrics."""

    def __init__(self):
        self.registry = r = Registry()
        self.latency = r.add(Histogram("mlsys_request_latency_seconds", "End-to-end /predict latency.", LATENCY_BUCKETS))
        self.batch_size = r.add(Histogram("mlsys_batch_size_records", "Records per model batch.", SIZE_BUCKETS))
        self.batch_seconds = r.add(Histogram("mlsys_batch_compute_seconds", "Model time per batch.", LATENCY_BUCKETS))
        self.requests = r.add(Counter("mlsys_requests_total", "/predict requests by HTTP status."))
        self.queue_depth = r.add(Gauge("mlsys_queue_depth_records", "Records waiting for the model."))
        self.batch_limit = r.add(Gauge("mlsys_batch_limit_records", "The AIMD batch size limit now."))
        self.cache_hits = r.add(Gauge("mlsys_cache_hits_total", "Prediction cache hits."))
        self.cache_misses = r.add(Gauge("mlsys_cache_misses_total", "Prediction cache misses."))
        self.cache_hit_rate = r.add(Gauge("mlsys_cache_hit_rate", "Prediction cache hits / lookups."))
        self.model = r.add(Gauge("mlsys_model_info", "The model version serving now (value 1)."))
        self.reloads = r.add(Gauge("mlsys_model_reloads_total", "Model loads by result."))
        self.reload_requests = r.add(Counter("mlsys_reload_requests_total", "POST /reload by HTTP status."))
        self.gc_pauses = r.add(Histogram("mlsys_gc_pause_seconds", "Garbage collections: pause of the whole process.",
                                         LATENCY_BUCKETS))
        self.gc_frozen = r.add(Gauge("mlsys_gc_frozen_objects", "Objects frozen out of the collector at start."))


def watch_gc(histogram) -> None:
    """Observe every garbage collection's pause (all threads stop for it) in ``histogram``."""
    started = [0.0]

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            histogram.observe(time.perf_counter() - started[0])

    gc.callbacks.append(callback)
