"""The SHARP scheduler's invariants, on a virtual clock."""

from __future__ import annotations

import random

import pytest

from mlsys.training.sharp.scheduler import (
    Scheduler,
    Task,
    idle_fraction,
    sequential_time,
    simulate,
)


def _tasks(seed: int, n: int) -> list[Task]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        units = rng.choice([1, 3, 5, 7])  # 1 = unspilled, 2k - 1 = k shards
        out.append(Task(f"t{i}", [rng.uniform(0.1, 2.0) for _ in range(units)], steps=rng.randint(1, 6)))
    return out


def _check_invariants(tasks: list[Task], devices: int) -> None:
    timeline, makespan = simulate(tasks, devices)
    # never two units of one task at once, and a task's units run in order
    for task in tasks:
        mine = sorted((s for s in timeline if s.task == task.name), key=lambda s: s.start)
        assert len(mine) == task.total_units
        assert [(s.step, s.unit) for s in mine] == [divmod(i, task.units_per_step) for i in range(task.total_units)]
        assert all(a.end <= b.start + 1e-12 for a, b in zip(mine, mine[1:]))
    # one unit per device at a time
    for d in range(devices):
        mine = sorted((s for s in timeline if s.device == d), key=lambda s: s.start)
        assert all(a.end <= b.start + 1e-12 for a, b in zip(mine, mine[1:]))
    # every device busy while work remains: at every start/end instant, a device is idle only if
    # every task with work left is running
    for t in sorted({s.start for s in timeline} | {s.end for s in timeline}):
        busy = [s for s in timeline if s.start <= t < s.end]
        idle_devices = devices - len(busy)
        running = {s.task for s in busy}
        waiting = [task for task in tasks if task.name not in running
                   and any(s.task == task.name and s.start >= t for s in timeline)]
        assert not (idle_devices > 0 and waiting), f"at t={t:.3f} a device idles while {[w.name for w in waiting]} wait"
    assert makespan <= sequential_time(tasks) + 1e-9


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("devices", [1, 2, 3])
def test_invariants_on_random_workloads(seed, devices):
    _check_invariants(_tasks(seed, 5), devices)


def test_longest_remaining_work_first():
    tasks = [Task("short", [1.0], steps=1), Task("long", [1.0, 1.0, 1.0], steps=3), Task("mid", [2.0], steps=2)]
    sched = Scheduler(tasks, devices=1)
    assert sched.assign() == [(0, 1)], "the longest task starts first"
    remaining = [t.remaining() for t in tasks]
    assert remaining == [1.0, 9.0, 4.0]
    sched.complete(0)
    assert tasks[1].remaining() == 8.0
    # 'long' keeps the device until its remaining work ties with 'mid' (4 s); the lower index wins a tie
    for _ in range(4):
        assert sched.assign() == [(0, 1)]
        sched.complete(0)
    assert tasks[1].remaining() == 4.0 and sched.assign() == [(0, 1)]


def test_a_running_task_is_never_assigned_twice():
    tasks = [Task("only", [1.0, 1.0, 1.0], steps=2)]
    sched = Scheduler(tasks, devices=3)
    assert sched.assign() == [(0, 0)], "one model, one shard at a time: the other devices wait"
    assert sched.assign() == []
    sched.complete(0)
    assert sched.assign() == [(0, 0)]


def test_measured_times_rescale_remaining_work():
    task = Task("a", [1.0, 1.0], steps=2)
    sched = Scheduler([task], devices=1)
    sched.assign()
    sched.complete(0, seconds=3.0)  # three times slower than estimated
    assert task.remaining() == pytest.approx(9.0)


def test_four_equal_models_on_two_devices_halve_the_time():
    tasks = [Task(f"m{i}", [0.5, 0.5, 1.0, 0.5, 0.5], steps=4) for i in range(4)]
    timeline, makespan = simulate(tasks, 2)
    assert sequential_time(tasks) / makespan == pytest.approx(2.0)
    assert idle_fraction(timeline, 2, makespan) == pytest.approx(0.0)


def test_bad_tasks():
    with pytest.raises(ValueError, match=r"unit_costs=\[\]"):
        Task("a", [], steps=1)
    with pytest.raises(ValueError, match="steps=0"):
        Task("a", [1.0], steps=0)
    with pytest.raises(ValueError, match="unique"):
        Scheduler([Task("a", [1.0], 1), Task("a", [1.0], 1)], 1)
    with pytest.raises(ValueError, match="devices=0"):
        Scheduler([], 0)
