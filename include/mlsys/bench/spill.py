"""``mlsys bench spill``: spilled vs resident training, and a model larger than RAM on the disk tier (torch only).

    mlsys bench spill [--device cpu|cuda] [--model-mb 512] [--ram-budget-mb 128] [--fit-mb 64] [--steps 3]

1. *A model that fits* (``--fit-mb`` of weights, an MLP): steps/s resident (whole model, one optimizer)
   vs spilled into about 3 shards (a budget of a third of its training footprint), with prefetch on
   and off. CPU: the disk tier (files in a temporary folder). GPU: pinned host memory.
   ``overhead_fit`` = resident steps/s / spilled steps/s (prefetch on).
2. *A model that does not fit* (``--model-mb`` of weights, built one layer at a time from a generator),
   trained on the disk tier with ``--ram-budget-mb``, in a fresh subprocess that reads its own peak RSS
   (VmHWM in /proc/self/status). Its stated overhead is the process's RSS before the model exists
   (the interpreter, torch, the batches: ``baseline_rss_mb``) plus a fixed 32 MiB for the spiller's
   own objects (layer skeletons, pilot results, allocator slack): ``within_budget`` is
   ``peak_rss_mb <= baseline_rss_mb + 32 + ram_budget_mb``.
   On CUDA the budget is the device's: ``within_budget`` checks torch.cuda.max_memory_allocated.

Adam throughout (weights + gradients + two moments). ``losses_match``: the spilled model's losses equal the
resident model's (same weights, same batches; relative 1e-4). Both cases are repeated ``--repeat`` times
(a fresh model and, for the second, a fresh process each time); the last line is one JSON object with every
repetition's figures (``runs``) and the median and range of each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from mlsys.bench.harness import add_repeat_argument, print_ratios, ratios, repeated, report, sync, thread_counts
from mlsys.training.spill.partitioner import MB
from mlsys.training.spill.spiller import Spiller

FEATURES, CLASSES = 256, 16
FIXED_OVERHEAD_MB = 32.0  # the spiller's own objects: layer skeletons, pilot results, allocator slack


def mlp_blocks(width: int, depth: int, seed: int = 0):
    """A generator of layers: in-projection, depth x (Linear, GELU), head. Built one at a time."""
    torch.manual_seed(seed)
    yield nn.Linear(FEATURES, width)
    for _ in range(depth):
        yield nn.Sequential(nn.Linear(width, width), nn.GELU())
    yield nn.Linear(width, CLASSES)


def width_for(model_mb: float, depth: int) -> int:
    return max(8, int((model_mb * MB / 4 / depth) ** 0.5))


def batches(n: int, batch: int, device: str = "cpu", seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [((torch.randn(batch, FEATURES, generator=g).to(device),),
             (torch.randint(0, CLASSES, (batch,), generator=g).to(device),)) for _ in range(n)]


def adam(ps):
    return torch.optim.Adam(ps, lr=1e-4)


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _timed_steps(step, data, warmup: int, device: str, losses: list | None = None) -> float:
    """Steps per second after ``warmup`` steps; each step's loss is appended to ``losses``."""
    losses = [] if losses is None else losses
    for x, y in data[:warmup]:
        losses.append(step(x, y))
    sync(device)
    start = time.perf_counter()
    for x, y in data[warmup:]:
        losses.append(step(x, y))
    sync(device)
    return (len(data) - warmup) / (time.perf_counter() - start)


def fit_case(fit_mb: float, depth: int, batch: int, steps: int, device: str, tier: str) -> dict:
    """Steps/s of a model that fits: resident, and spilled into ~3 shards with prefetch on and off."""
    width = width_for(fit_mb, depth)
    data = batches(steps + 1, batch, device)
    loss_fn = nn.functional.cross_entropy
    model = nn.Sequential(*mlp_blocks(width, depth)).to(device)
    opt = adam(list(model.parameters()))

    def resident_step(x, y):
        loss = loss_fn(model(*x), *y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    resident_losses: list[float] = []
    resident = _timed_steps(resident_step, data, 1, device, resident_losses)
    del model, opt
    out = {"width": width, "depth": depth, "resident_steps_per_s": resident}
    with tempfile.TemporaryDirectory(prefix="mlsys-spill-bench-") as root:
        total = _train_bytes(width, depth, batch)
        sp = Spiller.build(mlp_blocks(width, depth), data[0][0], adam, int(total / 3 * 1.6), tier=tier,
                           root=root if tier == "disk" else None, device=device, prefetch=True)
        out["shards"] = len(sp.shards)
        for prefetch in (True, False):  # the same shards, prefetch on and off
            sp.prefetch = prefetch
            losses: list[float] = []
            rate = _timed_steps(lambda x, y: sp.train_step(x, y, loss_fn), data, 1, device, losses)
            if prefetch:  # from the same weights and batches as the resident model: the same losses
                out["loss_max_rel_diff"] = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(losses, resident_losses))
            out[f"spilled_steps_per_s_{'prefetch' if prefetch else 'no_prefetch'}"] = rate
        sp.close()
        del sp
    out["overhead_fit"] = resident / out["spilled_steps_per_s_prefetch"]
    out["overhead_fit_no_prefetch"] = resident / out["spilled_steps_per_s_no_prefetch"]
    return out


def _train_bytes(width: int, depth: int, batch: int) -> int:
    """Adam: 4 copies of the weights, plus activations; an estimate to size a budget that makes ~3 shards."""
    params = FEATURES * width + depth * width * width + width * CLASSES
    return 16 * params + 3 * depth * batch * width * 4


def nofit_case(model_mb: float, budget_mb: float, depth: int, batch: int, steps: int, device: str,
               root: str) -> dict:
    """Train a model of ``model_mb`` weights within ``budget_mb``; run in a fresh process (see ``main``)."""
    data = batches(steps + 1, batch, device)
    width = width_for(model_mb, depth)
    warm = nn.Linear(2, 2)  # import what the first optimizer step imports (torch._dynamo), before the baseline
    adam(list(warm.parameters())).step()
    baseline = rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_alloc = torch.cuda.memory_allocated()
    start = time.perf_counter()
    tier = "host" if device.startswith("cuda") else "disk"
    sp = Spiller.build(mlp_blocks(width, depth), data[0][0], adam, int(budget_mb * MB), tier=tier,
                       root=root if tier == "disk" else None, device=device, prefetch=True, bound_rss=True)
    build_s = time.perf_counter() - start
    built_rss = rss_mb()
    rate = _timed_steps(lambda x, y: sp.train_step(x, y, nn.functional.cross_entropy), data, 1, device)
    out = {"width": width, "depth": depth, "shards": len(sp.shards), "build_s": build_s, "steps_per_s_nofit": rate,
           "model_mb": sum(c.param_bytes for c in sp.costs) / MB,
           "store_mb": sp.store.nbytes / MB, "baseline_rss_mb": baseline, "peak_rss_mb": rss_mb("VmHWM"),
           "built_rss_mb": built_rss}
    if device.startswith("cuda"):
        out["max_memory_allocated_mb"] = (torch.cuda.max_memory_allocated() - base_alloc) / MB
        out["within_budget"] = out["max_memory_allocated_mb"] <= budget_mb
    else:
        out["within_budget"] = out["peak_rss_mb"] <= baseline + FIXED_OVERHEAD_MB + budget_mb
    sp.close()
    return out


def _nofit(args: argparse.Namespace) -> dict:
    """The no-fit case in a fresh process (its peak RSS is its own)."""
    child = [sys.executable, "-m", "mlsys.bench.spill", "--child", "--device", args.device,
             "--model-mb", str(args.model_mb), "--ram-budget-mb", str(args.ram_budget_mb), "--depth", str(args.depth),
             "--batch", str(args.batch), "--steps", str(args.steps), "--spill-dir", args.spill_dir,
             "--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                   os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(child, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise RuntimeError(f"the no-fit training process failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


FORMULAS = {
    "overhead_fit": lambda r: r["resident_steps_per_s"] / r["spilled_steps_per_s_prefetch"],
    "overhead_fit_no_prefetch": lambda r: r["resident_steps_per_s"] / r["spilled_steps_per_s_no_prefetch"],
    "steps_per_s_nofit": lambda r: r["steps_per_s_nofit"],
    "rss_over_budget_mb": lambda r: r["peak_rss_mb"] - r["stated_budget_mb"],
}
TARGETS = {"rss_over_budget_mb": ["<=", 0.0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlsys bench spill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-mb", type=float, default=512.0, help="weights of the model that does not fit")
    parser.add_argument("--ram-budget-mb", type=float, default=128.0, help="memory budget (RAM on cpu, device on cuda)")
    parser.add_argument("--fit-mb", type=float, default=64.0, help="weights of the model that fits")
    parser.add_argument("--depth", type=int, default=0,
                        help="hidden layers of the model that does not fit (0: 14 x model/budget, so a layer fits)")
    parser.add_argument("--fit-depth", type=int, default=12)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady figures on a shared machine)")
    parser.add_argument("--spill-dir", default="", help="disk tier folder (default: a temporary folder)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_repeat_argument(parser)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.depth <= 0:
        args.depth = int(-(-14 * args.model_mb // args.ram_budget_mb))
    if args.child:
        with tempfile.TemporaryDirectory(prefix="mlsys-spill-", dir=args.spill_dir or None) as root:
            print(json.dumps(nofit_case(args.model_mb, args.ram_budget_mb, args.depth, args.batch, args.steps,
                                        args.device, root)))
        return 0
    if args.model_mb < 4 * args.ram_budget_mb:
        print(f"note: --model-mb {args.model_mb} is less than 4 x --ram-budget-mb {args.ram_budget_mb}", file=sys.stderr)
    tier = "host" if args.device.startswith("cuda") else "disk"
    details: list = []

    def measure() -> dict:
        fit, nofit = fit_case(args.fit_mb, args.fit_depth, args.batch, args.steps, args.device, tier), _nofit(args)
        details.append((fit, nofit))
        keys = ("resident_steps_per_s", "spilled_steps_per_s_prefetch", "spilled_steps_per_s_no_prefetch", "loss_max_rel_diff")
        return {**{k: fit[k] for k in keys}, "steps_per_s_nofit": nofit["steps_per_s_nofit"],
                "peak_rss_mb": nofit["peak_rss_mb"], "baseline_rss_mb": nofit["baseline_rss_mb"],
                "stated_budget_mb": nofit["baseline_rss_mb"] + FIXED_OVERHEAD_MB + args.ram_budget_mb,
                "within_budget": nofit["within_budget"]}

    runs, loads = repeated(measure, args.repeat)
    for run, load in zip(runs, loads):
        run["load_average"] = load
    fields = report(ratios(runs, FORMULAS), loads, TARGETS)
    fit, nofit = details[-1]
    result = {
        "benchmark": "spill", "device": args.device, "tier": "host (pinned)" if tier == "host" else "disk", **fields,
        **{k: fields["median"][k] for k in ("overhead_fit", "overhead_fit_no_prefetch", "steps_per_s_nofit")},
        "runs": runs, "losses_match": all(r["loss_max_rel_diff"] <= 1e-4 for r in runs),
        "within_budget": all(r["within_budget"] for r in runs),
        "resident_steps_per_s": round(fit["resident_steps_per_s"], 3),
        "spilled_steps_per_s_fit": round(fit["spilled_steps_per_s_prefetch"], 3),
        "shards_fit": fit["shards"], "fit_mb": args.fit_mb, "model_mb": round(nofit["model_mb"], 1),
        "store_mb": round(nofit["store_mb"], 1), "shards_nofit": nofit["shards"], "ram_budget_mb": args.ram_budget_mb,
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1), "baseline_rss_mb": round(nofit["baseline_rss_mb"], 1),
        "stated_overhead_mb": round(nofit["baseline_rss_mb"] + FIXED_OVERHEAD_MB, 1), "build_s": round(nofit["build_s"], 2),
        "threads": {"resident": args.threads, "spilled": args.threads, **thread_counts()},
        "peer": {"name": "resident training", "model": "the same MLP, whole in memory, one Adam optimizer",
                 "threads": args.threads},
        "notes": "peak_rss_mb is the largest of the repetitions; the other single figures are the last repetition's",
    }
    if "max_memory_allocated_mb" in nofit:
        result["max_memory_allocated_mb"] = round(nofit["max_memory_allocated_mb"], 1)
    print_ratios(fields)
    print(json.dumps(result))
    return 0 if result["losses_match"] and result["within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())
