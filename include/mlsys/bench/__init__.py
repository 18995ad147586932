"""Benchmarks: ``mlsys bench NAME`` runs ``mlsys.bench.NAME.main(argv)``; its last line is one JSON object.

Each benchmark runs ours and its peer on the same input, in one run, and says
what it measured. ``workload`` and ``loadgen`` are shared helpers, not benchmarks.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

from mlsys.catalog import Entry, index, lookup


@dataclass(frozen=True)
class Benchmark(Entry):
    def load(self) -> Callable[[list[str]], int]:
        return self.attr("main")


def _bench(name: str, help: str) -> Benchmark:
    return Benchmark(name, f"mlsys.bench.{name}", help)


BENCHMARKS: dict[str, Benchmark] = index((
    _bench("stats", "column statistics: ours vs the same statistics through GX metrics"),
    _bench("label", "labeling functions: FastLFApplier vs Snorkel's PandasLFApplier"),
    _bench("label_scale", "labeling functions at scale: ours vs Snorkel's Dask and Spark appliers"),
    _bench("label_quality", "weak-label and end-model accuracy on the held-out group"),
    _bench("pipeline", "GPipe / 1F1B pipeline efficiency and DDP scaling"),
    _bench("spill", "spilled vs resident training; a model larger than RAM on disk"),
    _bench("sharp", "N models with SHARP on W workers vs one after another"),
    _bench("mop", "model hopper parallelism (Cerebro) vs task parallelism vs DDP per configuration"),
    _bench("batch", "batch scoring: ours vs mlflow.pyfunc predict vs the compute floor"),
    _bench("serve", "online serving: mlsys serve vs mlflow models serve, closed loop"),
    _bench("krypton", "incremental vs full per-frame CNN inference on video"),
    _bench("explain", "occlusion heatmaps: incremental (exact, approximate) vs full inference of every copy"),
    _bench("all", "every benchmark above, then docs/benchmarks.md (tables) and docs/images/bench-*.png (plots)"),
))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=sorted(BENCHMARKS), metavar="NAME",
                        help="; ".join(f"{b.name}: {b.help}" for b in BENCHMARKS.values()))
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options (NAME --help)")


def run(args: argparse.Namespace) -> int:
    return lookup(BENCHMARKS, "benchmark", args.name).load()(args.rest)
