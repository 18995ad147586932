"""``mlsys bench pipeline``: GPipe / 1F1B pipeline efficiency and DDP scaling, side by side in one run (torch only).

    python -m mlsys.bench.pipeline --stages 2 --microbatches 8 --batch 1024 --schedule gpipe

The model is an MLP of ``--layers`` x (Linear(width) + ReLU). Each pipeline and
DDP process runs one thread, pinned to its own core. In one spawned group of K
processes, rank 0 times the one-thread baselines (the full batch, and the same M
micro-batches one after another) before the pipeline set-ups. The parent process
then times the baseline a CPU user would reach for first: one process with
``--baseline-threads`` intra-op threads (default: as many as the processes it is
compared with), unpinned. Per step (forward + backward, no optimizer):

    pipeline_efficiency  = T_seq x (M + K - 1) / (K M) / T_pipe      (the bound's time over the measured time)
    speedup_vs_naive     = T_pipe(M=1) / T_pipe(M)                     (naive model parallelism: no micro-batches)
    speedup_vs_single    = T_full(1 thread) / T_pipe(M)
    speedup_vs_threads   = T_full(K threads, one process) / T_pipe(M)
    bubble_measured      = mean share of the step a stage is not computing (from the stages' own clocks)
    ddp_efficiency       = T(1 process, R rows) / T(2 processes, R rows each, with all-reduce)
    ddp_speedup_vs_threads = T(1 process, 2 threads, 2R rows) / T(2 processes, R rows each)

``grads_match``: one pipeline step's gradients equal the same micro-batches run
one after another in one process (max relative difference 1e-4). Everything is
repeated ``--repeat`` times (a new process group each time); the JSON's last line
carries every repetition's timings (``runs``), the median and range of each
ratio, and the sweep, schedules and timeline of the last repetition. ``--device cuda`` runs NCCL across GPUs when
there are at least K; on fewer GPUs it reports the single-GPU figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mlsys.bench.harness import add_repeat_argument, free_port, print_ratios, ratios, repeated, sync
from mlsys.bench.harness import report as report_fields
from mlsys.training.parallel import microbatch, partitioner
from mlsys.training.parallel.affinity import pin_cpus


def mlp(layers: int, width: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(layers)])


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (output - target).pow(2).mean()


def time_sequential(model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: int, device: torch.device) -> float:
    """Seconds for forward + backward of the batch as m micro-batches one after another (m=1: the full batch)."""
    sync(device)
    t0 = time.perf_counter()
    for xb, yb in zip(torch.tensor_split(x, m), torch.tensor_split(y, m)):
        mse(model(xb), yb).backward()
    sync(device)
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for backward after one micro-batch's forward through ``module``."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x.requires_grad_(True)).sum()
    return total


def _init(rank: int, world: int, port: int, device: str) -> torch.device:
    torch.set_num_threads(1)
    dev = torch.device("cuda", rank) if device == "cuda" else torch.device("cpu")
    if dev.type == "cpu":
        pin_cpus(rank, world)  # one core per rank: no migrations mid-step
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world, device_id=dev if dev.type == "cuda" else None)
    return dev


def _pipeline_worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    from mlsys.training.parallel.pipeline import (
        PipelineStrategy,
        bubble_fraction,
        gather_timeline,
    )

    device = _init(rank, world, port, args.device)
    model = mlp(args.layers, args.width).to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, args.width, generator=gen).to(device)
    y = torch.randn(args.batch, args.width, generator=gen).to(device)
    box = [None]
    if rank == 0:
        box = [partitioner.balance_by_time(model, (x[: args.batch // args.microbatches],), world)[0]]
    dist.broadcast_object_list(box, src=0)
    balance = box[0]
    sweep = sorted({m for m in args.sweep if m <= args.batch and args.batch % m == 0} | {1, args.microbatches})
    configs = [(args.schedule, m) for m in sweep]
    other = "1f1b" if args.schedule == "gpipe" else "gpipe"
    if args.microbatches >= world:
        configs.append((other, args.microbatches))
    strategies = {c: PipelineStrategy(model, balance, c[1], c[0], device=device, loss_fn=mse) for c in configs
                  if not (c[0] == "1f1b" and c[1] < world)}
    times = {c: [] for c in strategies}
    base = {"full": [], "seq": []}
    timelines = {c: [] for c in strategies}
    in_flight = {c: 0 for c in strategies}
    if rank == 0:  # the one-process baselines, first, while the other ranks wait
        for rep in range(args.warmup + args.steps):
            base["full"].append(time_sequential(model, x, y, 1, device))
        for rep in range(args.warmup + args.steps):
            base["seq"].append(time_sequential(model, x, y, args.microbatches, device))
    # each set-up gets its own warm-up and timed steps in a row: interleaving them would time every
    # step right after a different set-up's (cold caches and allocator), which no training job sees
    for c, strategy in strategies.items():
        for rep in range(args.warmup + args.steps):
            dist.barrier()
            sync(device)
            t0 = time.perf_counter()
            strategy.step((x,), y)
            sync(device)
            t1 = time.perf_counter()
            spans: list = [None] * world
            dist.all_gather_object(spans, (t0, t1))
            timeline = gather_timeline(strategy, t0, t1)
            for p in strategy.parameters():
                p.grad = None
            if rep >= args.warmup:
                times[c].append(max(s[1] for s in spans) - min(s[0] for s in spans))
                in_flight[c] = max(in_flight[c], strategy.stage.max_in_flight)
                if rank == 0:
                    timelines[c].append(timeline)
    # activation memory per micro-batch of this rank's stage, x the most micro-batches held at once
    chunk = x[: args.batch // args.microbatches].detach()
    for i in range(rank):
        chunk = partitioner.split(model, balance)[i](chunk).detach()
    per_mb = saved_bytes(strategies[configs[-1]].module, chunk.clone())
    memory: list = [None] * world
    dist.all_gather_object(memory, {c: in_flight[c] * per_mb for c in strategies})
    diffs: list = [None] * world
    dist.all_gather_object(diffs, grad_difference(strategies[(args.schedule, args.microbatches)], args, x, y, device))
    if rank == 0:
        med = {c: statistics.median(v) for c, v in times.items()}
        bubbles = {}
        for c, tls in timelines.items():
            bubbles[c] = statistics.median(bubble_fraction(t) for t in tls)
        result = {
            "grad_max_rel_diff": max(diffs), "balance": balance, "full": statistics.median(base["full"][args.warmup:]),
            "seq": statistics.median(base["seq"][args.warmup:]),
            "runs": [{"schedule": c[0], "microbatches": c[1], "step_s": med[c], "bubble": bubbles[c],
                      "max_in_flight": in_flight[c],
                      "peak_activation_mb": max(m[c] for m in memory) / 2**20} for c in strategies],
            "timeline": timelines[(args.schedule, args.microbatches)][len(timelines[(args.schedule, args.microbatches)]) // 2],
        }
        Path(out).write_text(json.dumps(result))
    dist.destroy_process_group()


def grad_difference(strategy, args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor, device) -> float:
    """Max relative difference of one pipeline step's gradients (this stage's layers) from the same
    micro-batches run one after another through a fresh copy of the model in this process."""
    for p in strategy.parameters():
        p.grad = None
    strategy.step((x,), y)
    reference = mlp(args.layers, args.width).to(device)
    for xb, yb in zip(torch.tensor_split(x, args.microbatches), torch.tensor_split(y, args.microbatches)):
        mse(reference(xb), yb).backward()  # gradients summed over micro-batches, as the pipeline's (scale_grads=False)
    a, b = strategy.layer_range
    ref = [p.grad for p in nn.Sequential(*list(reference)[a:b]).parameters()]
    got = [p.grad for p in strategy.parameters()]
    if len(ref) != len(got) or any(g is None for g in got):
        return float("inf")
    scale = max(float(r.abs().max()) for r in ref) or 1.0
    return max(float((g - r).abs().max()) for g, r in zip(got, ref)) / scale


def threaded_baseline(args: argparse.Namespace, threads: int, rows: int) -> float:
    """Seconds per forward + backward of ``rows`` rows in this process with ``threads`` intra-op threads, unpinned."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        device = torch.device(args.device)
        model = mlp(args.layers, args.width).to(device)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(rows, args.width, generator=gen).to(device)
        y = torch.randn(rows, args.width, generator=gen).to(device)
        return statistics.median([time_sequential(model, x, y, 1, device)
                                  for _ in range(args.warmup + args.steps)][args.warmup:])
    finally:
        torch.set_num_threads(before)


def _ddp_worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    device = _init(rank, world, port, args.device)
    model = mlp(args.layers, args.width).to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    gen = torch.Generator().manual_seed(2 + rank)
    x = torch.randn(args.ddp_rows, args.width, generator=gen).to(device)
    y = torch.randn(args.ddp_rows, args.width, generator=gen).to(device)
    one, two = [], []
    for rep in range(args.warmup + args.steps):
        if rank == 0:
            t = time_sequential(model, x, y, 1, device)
            one.append(t)
        dist.barrier()
        sync(device)
        t0 = time.perf_counter()
        mse(ddp(x), y).backward()
        sync(device)
        t1 = time.perf_counter()
        ddp.zero_grad(set_to_none=True)
        spans: list = [None] * world
        dist.all_gather_object(spans, (t0, t1))
        two.append(max(s[1] for s in spans) - min(s[0] for s in spans))
    if rank == 0:
        Path(out).write_text(json.dumps({"one": statistics.median(one[args.warmup:]),
                                         "two": statistics.median(two[args.warmup:])}))
    dist.destroy_process_group()


def _spawn(fn, world: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        mp.start_processes(fn, args=(world, free_port(), args, out), nprocs=world, join=True, start_method="spawn")
        return json.loads(Path(out).read_text())


def _single_device(args: argparse.Namespace) -> dict:
    """Fewer GPUs than stages: the single-device figures (full batch vs M micro-batches, balance, memory)."""
    device = torch.device(args.device)
    torch.set_num_threads(1)
    model = mlp(args.layers, args.width).to(device)
    x = torch.randn(args.batch, args.width, device=device)
    y = torch.randn(args.batch, args.width, device=device)
    full, seq = [], []
    for _ in range(args.warmup + args.steps):
        full.append(time_sequential(model, x, y, 1, device))
        seq.append(time_sequential(model, x, y, args.microbatches, device))
    balance, stats = partitioner.balance_by_time(model, (x[: args.batch // args.microbatches],), args.stages)
    t_full, t_seq = statistics.median(full[args.warmup:]), statistics.median(seq[args.warmup:])
    return {"balance": balance, "full": t_full, "seq": t_seq,
            "samples_per_s": args.batch / t_full, "stage_times_s": [sum(s["time_s"] for s in stats[a:b])
                                                                    for a, b in partitioner.boundaries(balance)]}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mlsys bench pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--stages", type=int, default=2, help="K pipeline stages (processes)")
    p.add_argument("--microbatches", type=int, default=8, help="M micro-batches per batch")
    p.add_argument("--batch", type=int, default=1024, help="rows per batch")
    p.add_argument("--schedule", choices=["gpipe", "1f1b"], default="gpipe")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--sweep", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2, 4, 8, 16],
                   help="micro-batch counts to time for best M")
    p.add_argument("--ddp-rows", type=int, default=512, help="rows per rank for DDP")
    p.add_argument("--no-ddp", action="store_true")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--timeline", default="", help="write the main run's schedule timeline (JSON) to this file")
    p.add_argument("--baseline-threads", type=int, default=0,
                   help="threads of the one-process baseline (0: as many as the processes it is compared with)")
    add_repeat_argument(p)
    args = p.parse_args(argv)
    if args.repeat < 1 or args.baseline_threads < 0:
        p.error(f"--repeat={args.repeat} must be >= 1 and --baseline-threads={args.baseline_threads} >= 0")
    microbatch.check(args.microbatches, args.batch)
    partitioner.check_stages(args.stages, args.layers)
    if args.stages < 2:
        p.error(f"--stages={args.stages}: a pipeline needs at least 2 stages")
    if args.schedule == "1f1b" and args.microbatches < args.stages:
        p.error(f"--microbatches={args.microbatches}: 1F1B needs at least --stages={args.stages} micro-batches")
    return args


def _single_device_main(args: argparse.Namespace, report: dict, gpus: int) -> int:
    r = _single_device(args)
    report.update({"gpus": gpus, "path": "single-device", "balance": r["balance"], "stage_times_s": r["stage_times_s"],
                   "full_batch_s": r["full"], "sequential_microbatches_s": r["seq"],
                   "microbatching_cost": r["seq"] / r["full"], "samples_per_s": r["samples_per_s"],
                   "pipeline_efficiency": None, "speedup_vs_naive": None, "bubble_measured": None,
                   "ddp_efficiency": None})
    print(f"{gpus} GPU(s) < {args.stages} stages: single-device figures only")
    print(json.dumps(report))
    return 0


def repetition(args: argparse.Namespace) -> tuple[dict, dict]:
    """One repetition: the pipeline group, the threaded baselines, the DDP group. (timed fields, details)."""
    K, M = args.stages, args.microbatches
    r = _spawn(_pipeline_worker, K, args)
    runs = {(x["schedule"], x["microbatches"]): x for x in r["runs"]}
    main_run, naive = runs[(args.schedule, M)], runs[(args.schedule, 1)]
    timed = {"full_batch_s": r["full"], "sequential_microbatches_s": r["seq"], "pipeline_s": main_run["step_s"],
             "naive_pipeline_s": naive["step_s"], "full_batch_threads_s": threaded_baseline(args, args.baseline_threads or K, args.batch),
             "bubble_measured": main_run["bubble"], "grad_max_rel_diff": r["grad_max_rel_diff"]}
    if not args.no_ddp:
        ddp_threads = threaded_baseline(args, args.baseline_threads or 2, 2 * args.ddp_rows)
        d = _spawn(_ddp_worker, 2, args)
        timed.update({"ddp_one_process_s": d["one"], "ddp_two_processes_s": d["two"], "ddp_threads_s": ddp_threads})
    return timed, {"r": r, "runs": runs}


FORMULAS = {
    "pipeline_efficiency": lambda r, K, M: microbatch.bound_time(r["sequential_microbatches_s"], K, M) / r["pipeline_s"],
    "speedup_vs_naive": lambda r, K, M: r["naive_pipeline_s"] / r["pipeline_s"],
    "speedup_vs_single": lambda r, K, M: r["full_batch_s"] / r["pipeline_s"],
    "speedup_vs_threads": lambda r, K, M: r["full_batch_threads_s"] / r["pipeline_s"],
    "ddp_efficiency": lambda r, K, M: r["ddp_one_process_s"] / r["ddp_two_processes_s"] if "ddp_one_process_s" in r else None,
    "ddp_speedup_vs_threads": lambda r, K, M: r["ddp_threads_s"] / r["ddp_two_processes_s"] if "ddp_threads_s" in r else None,
}
TARGETS = {"pipeline_efficiency": [">=", 0.85], "ddp_efficiency": [">=", 0.85]}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    K, M = args.stages, args.microbatches
    report = {"benchmark": "pipeline", "stages": K, "microbatches": M, "batch": args.batch, "schedule": args.schedule,
              "device": args.device, "model": f"{args.layers}x(Linear({args.width})+ReLU)", "threads_per_process": 1,
              "bubble_theory": microbatch.bubble_theory(K, M), "ideal_speedup": microbatch.ideal_speedup(K, M)}
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    if args.device == "cuda" and gpus < K:
        return _single_device_main(args, report, gpus)
    details: list = []

    def measure() -> dict:
        timed, detail = repetition(args)
        details.append(detail)
        print(f"pipeline {timed['pipeline_s'] * 1e3:.1f} ms/step; one process: 1 thread {timed['full_batch_s'] * 1e3:.1f}, "
              f"{args.baseline_threads or K} threads {timed['full_batch_threads_s'] * 1e3:.1f} ms/step")
        return timed

    timed_runs, loads = repeated(measure, args.repeat)
    for run, load in zip(timed_runs, loads):
        run["load_average"] = load
    figures = ratios(timed_runs, {k: (lambda r, f=f: f(r, K, M)) for k, f in FORMULAS.items()})
    fields = report_fields(figures, loads, TARGETS)
    r, runs = details[-1]["r"], details[-1]["runs"]
    if args.timeline:
        Path(args.timeline).write_text(json.dumps({"stages": r["timeline"]}))
    sweep = {m: x["step_s"] for (s, m), x in runs.items() if s == args.schedule}
    last = timed_runs[-1]
    report.update({
        "path": "nccl" if args.device == "cuda" else "gloo", **fields,
        **{k: fields["median"].get(k) for k in FORMULAS}, "runs": timed_runs,
        "grads_match": all(t["grad_max_rel_diff"] <= 1e-4 for t in timed_runs),
        "bubble_measured": statistics.median(t["bubble_measured"] for t in timed_runs),
        "threads": {"pipeline_per_process": 1, "single": 1, "baseline_threads": args.baseline_threads or K,
                    "ddp_per_process": 1, "ddp_baseline_threads": args.baseline_threads or 2},
        "peer": {"single": "one process, 1 thread, pinned, full batch", "naive": "the same pipeline with M=1",
                 "threads": f"one process, {args.baseline_threads or K} intra-op threads, unpinned, full batch",
                 "ddp_threads": f"one process, {args.baseline_threads or 2} threads, both ranks' rows"},
        "balance": r["balance"], "full_batch_s": last["full_batch_s"], "sequential_microbatches_s": last["sequential_microbatches_s"],
        "microbatching_cost": last["sequential_microbatches_s"] / last["full_batch_s"], "pipeline_s": last["pipeline_s"],
        "best_microbatches": min(sweep, key=sweep.get),
        "sweep": {str(m): {"step_s": t, "bubble_measured": runs[(args.schedule, m)]["bubble"],
                           "bubble_theory": microbatch.bubble_theory(K, m)} for m, t in sorted(sweep.items())},
        "schedules": {s: {"step_s": x["step_s"], "max_in_flight": x["max_in_flight"],
                          "peak_activation_mb": x["peak_activation_mb"], "bubble_measured": x["bubble"]}
                      for (s, m), x in runs.items() if m == M},
        "ddp_rows_per_rank": None if args.no_ddp else args.ddp_rows,
    })
    for m, t in sorted(sweep.items()):
        print(f"M={m:>3}: {t * 1e3:8.1f} ms/step  bubble {runs[(args.schedule, m)]['bubble']:.2f} "
              f"(theory {microbatch.bubble_theory(K, m):.2f})  [last repetition]")
    print_ratios(fields)
    print(json.dumps(report))
    return 0 if report["grads_match"] else 1


if __name__ == "__main__":
    sys.exit(main())
