"""Cerebro's randomized greedy scheduler for model hopper parallelism (MOP): pure bookkeeping, no torch.

The data is shuffled once and cut into p partitions, one per worker; worker w holds partition w and
nothing else. A *unit* is one configuration trained for one sub-epoch on one partition. Models hop,
data stays:

    time ->          sub-epoch 1     sub-epoch 2     sub-epoch 3     sub-epoch 4
    worker 0 (P0)   [ A  e0      ]  [ B  e0      ]  [ A  e1      ]  [ B  e1      ]
    worker 1 (P1)   [ B  e0      ]  [ A  e0      ]  [ B  e1      ]  [ A  e1      ]
                                  ^ A hops 0 -> 1 and B 1 -> 0 (weights + optimizer state, point to point)

Invariants (``check``): each configuration visits every partition exactly once per epoch; two units
of one configuration never overlap (a model is in one place); a worker runs one unit at a time; a
unit runs to its end (no preemption).

The policy (Cerebro, VLDB 2020, found near-optimal against a MILP): whenever workers are idle, take
them in random order; each takes a random configuration that is idle, not finished, and has not yet
visited that worker's partition in its current epoch. A configuration that has visited every partition
starts its next epoch, on any partition. ``simulate`` drives it on a virtual clock with unit costs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence


@dataclass(frozen=True)
class Visit:
    """One unit as it ran: configuration ``config`` trained epoch ``epoch`` on ``partition`` (held by ``worker``)."""

    config: str
    epoch: int
    partition: int
    worker: int
    start: float = 0.0
    end: float = 0.0


@dataclass
class _State:
    epochs: int
    done: int = 0  # epochs finished
    visited: set[int] = field(default_factory=set)  # partitions of the current epoch
    running: bool = False


class Scheduler:
    """Which configuration each idle worker trains next. Worker w holds partition w."""

    def __init__(self, epochs: Mapping[str, int], partitions: int, seed: int = 0,
                 done: Mapping[str, int] | None = None):
        if partitions < 1:
            raise ValueError(f"Scheduler partitions={partitions} is invalid: use at least 1 (one per worker)")
        if not epochs:
            raise ValueError("Scheduler epochs={} is invalid: give at least one configuration")
        bad = {c: e for c, e in epochs.items() if e < 1}
        if bad:
            raise ValueError(f"Scheduler epochs={bad} is invalid: every configuration needs at least 1 epoch")
        self.partitions = partitions
        self.rng = random.Random(seed)
        self.state = {c: _State(e, min((done or {}).get(c, 0), e)) for c, e in epochs.items()}
        self.busy: dict[int, str] = {}  # worker -> configuration running there

    @property
    def finished(self) -> bool:
        return all(s.done >= s.epochs for s in self.state.values())

    def epoch_of(self, config: str) -> int:
        return self.state[config].done

    def runnable(self, worker: int) -> list[str]:
        """Configurations worker ``worker`` may take now: idle, unfinished, its partition not yet seen this epoch."""
        return [c for c, s in self.state.items()
                if not s.running and s.done < s.epochs and worker not in s.visited]

    def assign(self, idle: Iterable[int]) -> list[tuple[int, str]]:
        """(worker, configuration) for as many idle workers as can be given work; marks them running."""
        workers = sorted(set(idle) - set(self.busy))
        bad = [w for w in workers if not 0 <= w < self.partitions]
        if bad:
            raise ValueError(f"idle workers {bad} do not exist: workers are 0..{self.partitions - 1}")
        self.rng.shuffle(workers)
        out = []
        for w in workers:
            choices = self.runnable(w)
            if not choices:
                continue
            c = self.rng.choice(choices)
            self.state[c].running = True
            self.busy[w] = c
            out.append((w, c))
        return out

    def complete(self, worker: int) -> tuple[str, bool]:
        """The unit on ``worker`` ended: (its configuration, whether that finished an epoch of it)."""
        if worker not in self.busy:
            raise ValueError(f"worker {worker} has no unit running; running: {self.busy}")
        c = self.busy.pop(worker)
        s = self.state[c]
        s.running = False
        s.visited.add(worker)
        if len(s.visited) == self.partitions:
            s.done += 1
            s.visited = set()
            return c, True
        return c, False


def simulate(costs: Mapping[str, Sequence[float]], epochs: Mapping[str, int], seed: int = 0,
             hop_s: Mapping[str, float] | None = None) -> list[Visit]:
    """The schedule on a virtual clock: ``costs[c][p]`` seconds for c's unit on partition p, plus ``hop_s[c]``
    seconds to move c's state whenever it changes worker (network time; 0 by default). Returns every unit."""
    partitions = len(next(iter(costs.values())))
    sched = Scheduler(epochs, partitions, seed)
    clock, free_at = 0.0, {w: 0.0 for w in range(partitions)}
    where: dict[str, int] = {}  # the worker holding each configuration's state
    running: dict[int, Visit] = {}
    visits: list[Visit] = []
    while not sched.finished:
        for w, c in sched.assign(w for w, t in free_at.items() if t <= clock and w not in running):
            move = (hop_s or {}).get(c, 0.0) if where.get(c, w) != w else 0.0
            running[w] = Visit(c, sched.epoch_of(c), w, w, clock, clock + move + costs[c][w])
        if not running:  # pragma: no cover - assign always finds work while some configuration is unfinished
            raise RuntimeError("the scheduler stalled")
        w, v = min(running.items(), key=lambda item: item[1].end)
        clock = v.end
        del running[w]
        sched.complete(w)
        where[v.config] = w
        free_at[w] = clock
        visits.append(v)
    return visits


def check(visits: Sequence[Visit], epochs: Mapping[str, int], partitions: int) -> None:
    """Raise AssertionError naming the first broken MOP invariant (see the module docstring)."""
    for c, n in epochs.items():
        mine = sorted((v for v in visits if v.config == c), key=lambda v: v.start)
        for e in range(n):
            seen = sorted(v.partition for v in mine if v.epoch == e)
            assert seen == list(range(partitions)), f"{c} epoch {e} visited partitions {seen}, not each once"
        for a, b in zip(mine, mine[1:]):
            assert b.start >= a.end, f"{c} ran twice at once: {a} and {b}"
            assert a.epoch <= b.epoch, f"{c} went back an epoch: {a} then {b}"
    for w in {v.worker for v in visits}:
        mine = sorted((v for v in visits if v.worker == w), key=lambda v: v.start)
        for a, b in zip(mine, mine[1:]):
            assert b.start >= a.end, f"worker {w} ran two units at once: {a} and {b}"
        assert all(v.partition == w for v in mine), f"worker {w} trained on a partition it does not hold"
