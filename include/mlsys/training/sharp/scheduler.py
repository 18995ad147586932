"""Hydra's Shard Alternator Parallelism (SHARP): many models, G devices, one shard per device at a time.

Each training task is a sequence of units (a spilled model's step is 2k - 1 shard units, see
``spiller``; a model that fits the device is unspilled: one unit per step). A unit of a task can
only start when its previous unit has finished, so two shards of one model never run at once; but
while one model's shard runs on device 0, another model's shard runs on device 1:

    time ->        t0        t1        t2        t3        t4
    device 0   [A fwd 0 ][B step  ][A fwd 1 ][C step  ][A bwd 1 ] ...
    device 1   [B step  ][A ...   ][C step  ][B step  ][C step  ] ...
                (A is spilled into shards; B and C fit and run unspilled)

When a device frees, it takes the runnable task (not running, work left) with the *longest remaining
work* (LRTF), so the long models start early and the devices finish together. Remaining work is
the estimated cost of the task's remaining units (from the pilot's measured shard times), scaled by
how the task's measured unit times compare with their estimates.

The scheduler is pure bookkeeping: ``assign`` / ``complete``. ``simulate`` drives it with the
estimated costs on a virtual clock; ``mlsys.training.sharp.runner`` drives it with real worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class Task:
    name: str
    unit_costs: Sequence[float]  # estimated seconds of each unit of one step
    steps: int
    done: int = 0  # units finished
    running: bool = False
    measured: float = 0.0  # seconds the finished units took
    estimated: float = 0.0  # what the estimates said the finished units would take

    def __post_init__(self):
        if not self.unit_costs or any(c < 0 for c in self.unit_costs):
            raise ValueError(f"task {self.name!r}: unit_costs={list(self.unit_costs)} is invalid: give one "
                             "non-negative cost per unit of a step")
        if self.steps < 1:
            raise ValueError(f"task {self.name!r}: steps={self.steps} is invalid: use at least 1 step")

    @property
    def units_per_step(self) -> int:
        return len(self.unit_costs)

    @property
    def total_units(self) -> int:
        return self.steps * self.units_per_step

    @property
    def finished(self) -> bool:
        return self.done >= self.total_units

    @property
    def next_unit(self) -> tuple[int, int]:
        """(step, unit within the step) of the next unit to run."""
        return divmod(self.done, self.units_per_step)

    def remaining(self) -> float:
        """Estimated seconds of work left, corrected by the measured/estimated ratio so far."""
        per_step = sum(self.unit_costs)
        step, unit = self.next_unit
        left = (self.steps - step) * per_step - sum(self.unit_costs[:unit])
        scale = self.measured / self.estimated if self.estimated > 0 and self.measured > 0 else 1.0
        return max(left, 0.0) * scale


@dataclass
class Scheduler:
    tasks: list[Task]
    devices: int
    running: dict[int, int] = field(default_factory=dict)  # device -> task index

    def __post_init__(self):
        if self.devices < 1:
            raise ValueError(f"devices={self.devices} is invalid: use at least 1 device")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")

    @property
    def done(self) -> bool:
        return all(t.finished for t in self.tasks)

    def runnable(self) -> list[int]:
        return [i for i, t in enumerate(self.tasks) if not t.running and not t.finished]

    def assign(self) -> list[tuple[int, int]]:
        """Give every free device the runnable task with the longest remaining work: [(device, task index)]."""
        out = []
        for device in range(self.devices):
            if device in self.running:
                continue
            ready = self.runnable()
            if not ready:
                break
            best = max(ready, key=lambda i: (self.tasks[i].remaining(), -i))
            self.tasks[best].running = True
            self.running[device] = best
            out.append((device, best))
        return out

    def complete(self, device: int, seconds: float | None = None) -> int:
        """The unit on ``device`` finished (in ``seconds``, if measured); returns its task index."""
        index = self.running.pop(device)
        task = self.tasks[index]
        _, unit = task.next_unit
        if seconds is not None:
            task.measured += seconds
            task.estimated += task.unit_costs[unit]
        task.done += 1
        task.running = False
        return index


@dataclass(frozen=True)
class Slice:
    device: int
    task: str
    step: int
    unit: int
    start: float
    end: float


def simulate(tasks: list[Task], devices: int) -> tuple[list[Slice], float]:
    """Run the scheduler on a virtual clock with the tasks' estimated unit costs: (timeline, makespan)."""
    sched = Scheduler(tasks, devices)
    clock, ends, timeline = 0.0, {}, []
    while not sched.done:
        for device, index in sched.assign():
            task = tasks[index]
            step, unit = task.next_unit
            end = clock + task.unit_costs[unit]
            ends[device] = end
            timeline.append(Slice(device, task.name, step, unit, clock, end))
        device = min(ends, key=lambda d: (ends[d], d))
        clock = ends.pop(device)
        sched.complete(device)
    return timeline, clock


def sequential_time(tasks: Sequence[Task]) -> float:
    """Seconds to train the tasks one after another on one device."""
    return sum(sum(t.unit_costs) * t.steps for t in tasks)


def idle_fraction(timeline: Sequence[Slice], devices: int, makespan: float) -> float:
    """Share of device time spent idle between the start and the end of the schedule."""
    if makespan <= 0:
        return 0.0
    busy = sum(s.end - s.start for s in timeline)
    return max(0.0, 1.0 - busy / (devices * makespan))
