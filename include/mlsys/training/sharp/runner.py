"""SHARP on real devices: worker processes, one per device, fed shard units by the scheduler (torch only).

    parent                                   worker d (one per device, torch threads fixed)
    ------                                   --------
    pilot + spill store per job (files) ->   maps any job's store (SpillStore.open), runs one unit:
    Scheduler.assign: free device d      ->  load step state, bind the shard, run, write back,
       takes the LRTF runnable job            save step state
    Scheduler.complete                   <-  (device, seconds, loss at the step's last unit)

Every job's weights and optimizer state live in files under ``root`` (``/dev/shm`` by default:
memory, not disk; ``shm`` checks its free space first and reaps what killed jobs left), so any
worker can run any job's next unit. The step state (boundary activations,
RNG) stays in the memory of the worker that ran the job's last unit. When the scheduler gives the
job's next unit to the same worker (LRTF usually does: the job it just ran is the one with the most
work left among those not running), the worker uses it in place. Otherwise the parent tells that
worker to write it to ``state-<step>-<unit>.pt`` (atomically) before anything else, and the other
worker maps it in. A job trains exactly as it would alone: the RNG state flows with the step, not
with the process.

A job is built in every process by its *builder*, ``"package.module:function"`` called with the job's
``config``; it returns a ``Recipe`` (layers, optimizer, loss, batches, memory budget).
"""

from __future__ import annotations

import importlib
import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from mlsys.spec import require
from mlsys.training.parallel.checkpoint import set_rng_state
from mlsys.training.parallel.partitioner import layers_of
from mlsys.training.sharp import shm
from mlsys.training.sharp.scheduler import Scheduler, Slice, Task, idle_fraction
from mlsys.training.spill.partitioner import OptimizerFactory
from mlsys.training.spill.spiller import LossFn, Spiller, release
from mlsys.training.spill.store import SpillStore

PLAN = "plan.json"


@dataclass
class Recipe:
    """What a builder returns: how to train one job."""

    layers: Callable[[], Iterable[nn.Module]]  # fresh, seeded layers (a generator is fine)
    optimizer: OptimizerFactory
    loss_fn: LossFn
    batch: Callable[[int], tuple[tuple, tuple]]  # step -> (inputs, targets)
    budget_bytes: int  # device memory budget; a model that fits it trains unspilled (one shard)


@dataclass(frozen=True)
class Job:
    name: str
    builder: str  # "package.module:function" -> Recipe
    config: dict = field(default_factory=dict)  # JSON-safe, passed to the builder
    steps: int = 10
    seed: int = 0

    def __post_init__(self):
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            require(False, "Job", "name", self.name, "use letters, digits, '-', '_' and '.' only")
        if ":" not in self.builder:
            require(False, "Job", "builder", self.builder, "give 'package.module:function'")
        if self.steps < 1:
            require(False, "Job", "steps", self.steps, f"use at least 1 (job {self.name!r})")

    def recipe(self) -> Recipe:
        module, func = self.builder.split(":")
        return getattr(importlib.import_module(module), func)(self.config)


@dataclass
class JobResult:
    name: str
    losses: list[float]
    shards: list[list[int]]
    spilled: bool
    model: nn.Sequential | None = None  # the trained layers (when export=True)


@dataclass
class RunReport:
    results: dict[str, JobResult]
    seconds: float  # training makespan, workers already started
    plan_seconds: float  # pilots and stores
    idle_fraction: float
    timeline: list[Slice]


def default_root(jobs: list[Job] = ()) -> Path:
    """A fresh folder in /dev/shm for ``jobs`` (leaked folders of dead jobs reaped, free space checked: ``shm``)."""
    return shm.job_root(jobs)


def plan(job: Job, root: Path, device: str) -> dict:
    """Pilot and store one job under ``root/<name>``; returns its plan (also written as plan.json)."""
    recipe = job.recipe()
    torch.manual_seed(job.seed)
    sample = recipe.batch(0)[0]
    sp = Spiller.build(recipe.layers(), sample, recipe.optimizer, recipe.budget_bytes, tier="disk",
                       root=root / job.name, device=device, prefetch=False)
    sp.store.save_manifest()
    costs = []
    for unit in range(sp.units):
        shard = sp.shards[sp.unit_shard(unit)]
        fwd = sum(sp.costs[i].forward_s for i in shard)
        costs.append(fwd if unit < len(sp.shards) - 1 else fwd + sum(sp.costs[i].backward_s for i in shard))
    info = {"job": asdict(job), "shards": [list(s) for s in sp.shards], "unit_costs": costs}
    (root / job.name / PLAN).write_text(json.dumps(info))
    sp.close()
    return info


class _Runner:
    """One process's view of the jobs: skeleton layers and optimizers, built once per job, and held step states."""

    def __init__(self, root: Path, device: str):
        self.root, self.device = root, torch.device(device)
        self._jobs: dict[str, tuple[Spiller, Recipe, Job]] = {}
        self._held: dict[str, tuple[tuple[int, int], dict]] = {}  # job -> ((step, unit) it feeds, state)

    def spiller(self, name: str) -> tuple[Spiller, Recipe, Job]:
        if name not in self._jobs:
            info = json.loads((self.root / name / PLAN).read_text())
            job = Job(**info["job"])
            recipe = job.recipe()
            layers = list(layers_of(recipe.layers()))
            for layer in layers:
                release(layer, self.device)  # the weights are in the store
            shards = [range(s[0], s[-1] + 1) for s in info["shards"]]
            store = SpillStore.open(self.root / name, keep_mapped=self.device.type == "cpu")  # in /dev/shm: RAM anyway
            sp = Spiller(layers, shards, store, recipe.optimizer, self.device, prefetch=False)
            self._jobs[name] = (sp, recipe, job)
        return self._jobs[name]

    def flush(self, name: str) -> None:
        """Write the held step state of ``name`` where another worker can map it (write, then rename)."""
        (step, unit), state = self._held.pop(name)
        path = self.root / name / f"state-{step}-{unit}.pt"
        torch.save(state, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)

    def _take(self, name: str, step: int, unit: int, cached: bool) -> dict | None:
        if cached:
            key, state = self._held.pop(name)
            if key != (step, unit):
                raise RuntimeError(f"job {name!r}: holds the state for {key}, was asked to run {(step, unit)}")
            return state
        if (step, unit) == (0, 0):
            return None
        path = self.root / name / f"state-{step}-{unit}.pt"
        deadline = time.monotonic() + 120
        while not path.exists():  # the previous worker writes it first thing after its unit; wait for the rename
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {name!r}: step state {path} never appeared; the worker holding it died?")
            time.sleep(0.0005)
        state = torch.load(path, weights_only=True, mmap=True)  # tensors and plain data: nothing to unpickle
        path.unlink()  # the mapping stays valid
        return state

    def run(self, name: str, step: int, unit: int, cached: bool = False) -> float | None:
        sp, recipe, job = self.spiller(name)
        state = self._take(name, step, unit, cached)
        if unit == 0:
            if step == 0:
                torch.manual_seed(job.seed)
            else:
                set_rng_state(state["rng"], self.device)
            inputs, targets = recipe.batch(step)
            state = sp.new_step(inputs, targets)
        sp.run_unit(state, unit, recipe.loss_fn)
        if unit == sp.units - 1:
            self._held[name] = ((step + 1, 0), {"rng": state["rng"]})
            return float(state["loss"])
        self._held[name] = ((step, unit + 1), state)
        return None


def _worker(device_index: int, device: str, threads: int, root: str, inbox, outbox) -> None:
    torch.set_num_threads(threads)
    runner = _Runner(Path(root), device)
    while True:
        msg = inbox.get()
        if msg is None:
            return
        kind, name, step, unit, cached = msg
        start = time.perf_counter()
        try:
            if kind == "flush":
                runner.flush(name)
                continue
            loss = runner.run(name, step, unit, cached) if step >= 0 else runner.spiller(name) and None  # step -1: warm up
        except BaseException as exc:  # reported to the parent, which raises it
            outbox.put((device_index, name, step, unit, start, time.perf_counter(), None, repr(exc)))
            return
        outbox.put((device_index, name, step, unit, start, time.perf_counter(), loss, None))


def train_many(jobs: list[Job], devices: list[str], threads: int = 1, root: str | Path | None = None,
               export: bool = False) -> RunReport:
    """Train every job to its last step with SHARP on ``devices`` (one worker process each)."""
    if not jobs:
        raise ValueError("train_many needs at least one job")
    if not devices:
        raise ValueError("train_many needs at least one device, e.g. ['cpu', 'cpu'] or ['cuda:0', 'cuda:1']")
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique, got {names}")
    owns_root = root is None
    if owns_root:
        root = default_root(jobs)
    else:
        root = Path(root)
        shm.check_space(jobs, root)
    ctx = mp.get_context("spawn")
    workers, inboxes = [], []
    outbox = ctx.Queue()
    try:
        t0 = time.perf_counter()
        plans = {j.name: plan(j, root, devices[0]) for j in jobs}
        plan_seconds = time.perf_counter() - t0
        for d, device in enumerate(devices):
            inbox = ctx.Queue()
            proc = ctx.Process(target=_worker, args=(d, device, threads, str(root), inbox, outbox), daemon=True)
            proc.start()
            workers.append(proc)
            inboxes.append(inbox)
        tasks = [Task(j.name, plans[j.name]["unit_costs"], j.steps) for j in jobs]
        sched = Scheduler(tasks, len(devices))
        for inbox in inboxes:  # warm up: every worker imports torch and builds skeletons before the clock starts
            for j in jobs:
                inbox.put(("run", j.name, -1, -1, False))
        for _ in range(len(devices) * len(jobs)):
            _check(outbox.get())
        losses: dict[str, list[float]] = {j.name: [] for j in jobs}
        timeline: list[Slice] = []
        start = time.perf_counter()
        holder: dict[str, int] = {}  # job -> the worker that holds its step state in memory
        while not sched.done:
            assigned = {tasks[index].name: device for device, index in sched.assign()}
            for name, device in list(holder.items()):
                if assigned.get(name) != device:  # it moves (or waits): its holder writes it out first
                    inboxes[device].put(("flush", name, 0, 0, False))
                    del holder[name]
            for name, device in assigned.items():
                step, unit = tasks[names.index(name)].next_unit
                inboxes[device].put(("run", name, step, unit, holder.pop(name, None) == device))
            d, name, step, unit, t_start, t_end, loss, _ = _check(outbox.get())
            sched.complete(d, t_end - t_start)
            holder[name] = d
            timeline.append(Slice(d, name, step, unit, t_start - start, t_end - start))
            if loss is not None:
                losses[name].append(loss)
        seconds = time.perf_counter() - start
        results = {}
        for j in jobs:
            shards = plans[j.name]["shards"]
            model = _Runner(root, "cpu").spiller(j.name)[0].export() if export else None
            results[j.name] = JobResult(j.name, losses[j.name], shards, len(shards) > 1, model)
        return RunReport(results, seconds, plan_seconds, idle_fraction(timeline, len(devices), seconds), timeline)
    finally:
        for inbox in inboxes:
            inbox.put(None)
        for proc in workers:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
        if owns_root:
            shutil.rmtree(root, ignore_errors=True)


def _check(msg: tuple) -> tuple:
    if msg[-1] is not None:
        raise RuntimeError(f"SHARP worker {msg[0]} failed on job {msg[1]!r} (step {msg[2]}, unit {msg[3]}): {msg[-1]}")
    return msg


def train_sequential(jobs: list[Job], device: str = "cpu", threads: int = 1) -> dict[str, Any]:
    """The baseline: the same jobs one after another in this process (spilled only where needed)."""
    torch.set_num_threads(threads)
    results, seconds = {}, 0.0
    for job in jobs:
        recipe = job.recipe()
        torch.manual_seed(job.seed)
        # the same shards as SHARP's plan (prefetch off); on CPU the host tier is zero-copy, nothing to prefetch
        sp = Spiller.build(recipe.layers(), recipe.batch(0)[0], recipe.optimizer, recipe.budget_bytes,
                           tier="host", device=device, prefetch=torch.device(device).type == "cuda")
        torch.manual_seed(job.seed)
        start = time.perf_counter()
        losses = [sp.train_step(*recipe.batch(step), recipe.loss_fn) for step in range(job.steps)]
        sp.synchronize()
        seconds += time.perf_counter() - start
        results[job.name] = JobResult(job.name, losses, [list(s) for s in sp.shards], len(sp.shards) > 1)
        sp.close()
    return {"results": results, "seconds": seconds}

