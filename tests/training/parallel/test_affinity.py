"""pin_cpus gives each local rank its own cores, and leaves the affinity alone when there are too few."""

import multiprocessing as mp
import os

import pytest

from mlsys.training.parallel.affinity import pin_cpus


def _pin_and_report(rank, world, threads, queue):
    got = pin_cpus(rank, world, threads)
    queue.put((got, sorted(os.sched_getaffinity(0))))


def _run(rank, world, threads):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_pin_and_report, args=(rank, world, threads, queue))
    proc.start()
    out = queue.get(timeout=60)
    proc.join(60)
    return out


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_each_rank_gets_its_own_core():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs 2 cores")
    seen = []
    for rank in range(2):
        got, affinity = _run(rank, 2, 1)
        assert got == {cpus[rank]} and affinity == [cpus[rank]]
        seen.append(affinity[0])
    assert seen[0] != seen[1]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_too_many_ranks_leave_the_affinity_alone():
    cpus = sorted(os.sched_getaffinity(0))
    got, affinity = _run(0, len(cpus) + 1, 1)
    assert got is None and affinity == cpus
