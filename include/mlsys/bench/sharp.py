"""``mlsys bench sharp``: N models with SHARP on W worker processes vs one after another (torch only).

    mlsys bench sharp [--models 4] [--workers 2] [--steps 8] [--width 768] [--depth 8] [--batch 1024]

Compared, on the same jobs (MLPs of different widths; the wider ones spilled by a memory budget):

- ``sequential_s``: one after another in one process with 1 thread (the baseline);
- ``sequential_2threads_s``: one after another in one process with W threads;
- ``sharp_s``: SHARP on W worker processes of 1 thread each (workers started, pilots done).

The last line is one JSON object: ``models``, ``workers``, ``speedup`` (sequential_s / sharp_s),
``speedup_vs_threads``, ``idle_fraction`` (share of worker time idle during SHARP), ``losses_match``
(SHARP's per-step losses equal the sequential run's within 1e-5), and ``parallel_ceiling``: how much
faster W plain processes finish W equal jobs than one process, on this machine at that moment (a
loaded machine gives less than W, and no scheduler can beat it).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing as mp
import os
import sys
import time

import torch
from torch import nn

from mlsys.training.sharp.runner import Job, Recipe, train_many, train_sequential


def mlp_recipe(config: dict) -> Recipe:
    """A builder for SHARP jobs: an MLP of residual-free blocks on a synthetic classification task."""
    width, depth, batch, seed = config["width"], config["depth"], config["batch"], config.get("seed", 0)
    features, classes = 64, 10

    def layers():
        torch.manual_seed(seed)
        yield nn.Linear(features, width)
        for _ in range(depth):
            yield nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
        yield nn.Linear(width, classes)

    def batch_of(step: int):
        g = torch.Generator().manual_seed(10_000 * seed + step)
        return (torch.randn(batch, features, generator=g),), (torch.randint(0, classes, (batch,), generator=g),)

    lr = config.get("lr", 1e-3)
    return Recipe(layers, lambda ps: torch.optim.Adam(ps, lr=lr), nn.functional.cross_entropy, batch_of,
                  int(config["budget_mb"] * 2**20))


def jobs(models: int, steps: int, width: int, depth: int, batch: int) -> list[Job]:
    """Widths cycle through 1, 7/8, 3/4 and 5/8 of ``width``; the two widest get a budget that spills them.

    A grid whose widest model is most of the work cannot go faster than that one model (its shards run
    one at a time): with widths 1, 3/4, 1/2, 1/4 the widest is 53% of the work and caps 2 devices at
    1.9x. With these widths it is 37%, so the figure measures the scheduler, not the grid.
    """
    out = []
    for i in range(models):
        w = max(8, int(width * (1.0, 0.875, 0.75, 0.625)[i % 4]))
        layer_mb = (16 * w * w + 32 * batch * w) / 2**20  # Adam: weights, grads, 2 moments; activations
        budget_mb = 1024.0 if i % 4 >= 2 else max(depth * layer_mb / 2.5, 4 * layer_mb)
        out.append(Job(f"mlp{i}-w{w}", "mlsys.bench.sharp:mlp_recipe",
                       {"width": w, "depth": depth, "batch": batch, "seed": i, "budget_mb": budget_mb,
                        "lr": 1e-3 * (i + 1)}, steps=steps, seed=i))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlsys bench sharp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--ceiling-rounds", type=int, default=60, help="work per process of the parallel-ceiling probe (0: skip it)")
    args = parser.parse_args(argv)

    todo = jobs(args.models, args.steps, args.width, args.depth, args.batch)
    threads = torch.get_num_threads()
    seq1 = train_sequential(todo, "cpu", threads=1)
    seq2 = train_sequential(todo, "cpu", threads=args.workers)
    torch.set_num_threads(threads)
    report = train_many(todo, ["cpu"] * args.workers, threads=1)
    ceiling = parallel_ceiling(args.workers, args.ceiling_rounds) if args.ceiling_rounds > 0 else None
    match = all(np_close(report.results[j.name].losses, seq1["results"][j.name].losses) for j in todo)
    result = {
        "models": args.models, "workers": args.workers, "threads_per_worker": 1, "steps": args.steps,
        "spilled_models": sum(r.spilled for r in report.results.values()),
        "shards": {name: len(r.shards) for name, r in report.results.items()},
        "sequential_s": round(seq1["seconds"], 3), "sequential_threads_s": round(seq2["seconds"], 3),
        "sharp_s": round(report.seconds, 3), "speedup": round(seq1["seconds"] / report.seconds, 3),
        "speedup_vs_threads": round(seq2["seconds"] / report.seconds, 3),
        "idle_fraction": round(report.idle_fraction, 4), "plan_s": round(report.plan_seconds, 3),
        "parallel_ceiling": round(ceiling, 3) if ceiling else None, "losses_match": match, "load_average": round(os.getloadavg()[0], 2), "device": "cpu",
    }
    for name in result["shards"]:
        print(f"{name}: {result['shards'][name]} shard(s), losses {report.results[name].losses}", file=sys.stderr)
    print(json.dumps(result))
    return 0


def _burn(seconds_of_work: int) -> float:
    torch.set_num_threads(1)
    a = torch.randn(512, 512)
    start = time.perf_counter()
    for _ in range(seconds_of_work):
        a = torch.tanh(a @ a)
    return time.perf_counter() - start


def parallel_ceiling(workers: int, rounds: int = 60) -> float:
    """How much faster W processes finish W equal jobs than one process does them in turn, on this machine now.

    A loaded or oversubscribed machine gives less than W: no scheduler can beat this figure.
    """
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_burn, [1] * workers))  # start and warm the processes
        start = time.perf_counter()
        list(pool.map(_burn, [rounds] * workers))
        parallel = time.perf_counter() - start
        start = time.perf_counter()
        pool.submit(_burn, rounds * workers).result()
        serial = time.perf_counter() - start
    return serial / parallel


def np_close(a: list[float], b: list[float], tol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


if __name__ == "__main__":
    sys.exit(main())
