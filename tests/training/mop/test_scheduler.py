"""Cerebro's randomized greedy scheduler: its invariants hold under any unit costs, and it keeps workers busy."""

from __future__ import annotations

import random

import pytest

from mlsys.training.mop.scheduler import Scheduler, Visit, check, simulate


@pytest.mark.parametrize("seed", range(20))
def test_invariants_hold_for_random_costs(seed):
    rng = random.Random(seed)
    partitions = rng.randint(1, 5)
    configs = {f"c{i}": rng.randint(1, 3) for i in range(rng.randint(1, 9))}
    costs = {c: [rng.uniform(0.1, 3.0) for _ in range(partitions)] for c in configs}
    visits = simulate(costs, configs, seed=seed, hop_s={c: rng.uniform(0, 0.5) for c in configs})
    check(visits, configs, partitions)
    assert len(visits) == sum(configs.values()) * partitions


def test_check_catches_each_broken_invariant():
    ok = [Visit("a", 0, 0, 0, 0, 1), Visit("a", 0, 1, 1, 1, 2)]
    check(ok, {"a": 1}, 2)
    with pytest.raises(AssertionError, match="visited partitions"):
        check(ok[:1] + [Visit("a", 0, 0, 0, 1, 2)], {"a": 1}, 2)
    with pytest.raises(AssertionError, match="ran twice at once"):
        check([Visit("a", 0, 0, 0, 0, 2), Visit("a", 0, 1, 1, 1, 3)], {"a": 1}, 2)
    with pytest.raises(AssertionError, match="two units at once"):
        check([Visit("a", 0, 0, 0, 0, 2), Visit("b", 0, 0, 0, 1, 3), Visit("a", 0, 1, 1, 2, 3),
               Visit("b", 0, 1, 1, 3, 4)], {"a": 1, "b": 1}, 2)


def test_equal_units_keep_every_worker_busy():
    """8 configurations x 2 partitions of equal cost: the greedy scheduler finishes at the ideal makespan."""
    configs = {f"c{i}": 2 for i in range(8)}
    visits = simulate({c: [1.0, 1.0] for c in configs}, configs, seed=3)
    assert max(v.end for v in visits) == pytest.approx(8 * 2 * 2 / 2)


def test_an_idle_worker_takes_a_random_runnable_configuration():
    firsts = set()
    for seed in range(10):
        sched = Scheduler({"a": 1, "b": 1, "c": 1}, 2, seed=seed)
        firsts.add(tuple(sorted(sched.assign([0, 1]))))
    assert len(firsts) > 1, "the choice is random"
    sched = Scheduler({"a": 1, "b": 1}, 2, seed=0)
    (w0, c0), (w1, c1) = sorted(sched.assign([0, 1]))
    assert c0 != c1 and sched.assign([0, 1]) == [], "busy workers and running configurations are not assigned"
    assert sched.complete(0) == (c0, False)
    assert sched.assign([0]) == [], f"{c0} saw partition 0 already and {c1} is running"
    assert sched.complete(1) == (c1, False)
    assert sorted(sched.assign([0, 1])) == [(0, c1), (1, c0)]
    assert sched.complete(0) == (c1, True) and sched.complete(1) == (c0, True) and sched.finished


def test_a_resumed_schedule_skips_finished_epochs():
    sched = Scheduler({"a": 2, "b": 1}, 2, done={"a": 1, "b": 1})
    assert sched.epoch_of("a") == 1 and sched.runnable(0) == ["a"] and not sched.finished


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": {"a": 1}, "partitions": 0}, r"partitions=0 is invalid"),
    ({"epochs": {}, "partitions": 2}, r"epochs=\{\} is invalid"),
    ({"epochs": {"a": 0}, "partitions": 2}, r"epochs=\{'a': 0\} is invalid: every configuration needs at least 1"),
])
def test_bad_input_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Scheduler(**kwargs)
    with pytest.raises(ValueError, match=r"idle workers \[5\] do not exist"):
        Scheduler({"a": 1}, 2).assign([5])
