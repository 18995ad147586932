"""Adaptive batching: requests share batches, answers go back to their request, AIMD moves the limit, overload refuses."""

from __future__ import annotations

import asyncio
import time

import pytest

from mlsys.errors import SpecError
from mlsys.serving.online.batcher import AdaptiveBatcher, BatcherConfig, Overloaded


def _echo(sizes: list[int], delay_s: float = 0.0):
    def score(texts):
        sizes.append(len(texts))
        if delay_s:
            time.sleep(delay_s)
        return "m/1", [t.upper() for t in texts]
    return score


async def _with(batcher: AdaptiveBatcher, coro):
    batcher.start()
    try:
        return await coro
    finally:
        await batcher.stop()


def test_concurrent_requests_share_batches_and_get_their_own_answers():
    sizes: list[int] = []
    b = AdaptiveBatcher(_echo(sizes), BatcherConfig(initial_batch=64))

    async def go():
        return await asyncio.gather(*(b.submit([f"a{i}", f"b{i}"]) for i in range(20)))

    answers = asyncio.run(_with(b, go()))
    assert answers == [("m/1", [f"A{i}", f"B{i}"]) for i in range(20)]
    assert sum(sizes) == 40 and max(sizes) > 2  # batched, not one by one


def test_limit_grows_while_batches_are_fast_and_full_and_halves_when_slow():
    b = AdaptiveBatcher(_echo([]), BatcherConfig(slo_ms=50, initial_batch=8, increase=4, max_batch=16))
    b._adapt(records=8, compute_s=0.001)
    assert b.limit == 12
    b._adapt(records=5, compute_s=0.001)  # not full: no reason to grow
    assert b.limit == 12
    b._adapt(records=12, compute_s=0.001)
    b._adapt(records=16, compute_s=0.001)
    assert b.limit == 16  # capped at max_batch
    b._adapt(records=16, compute_s=0.030)  # over slo / 2
    assert b.limit == 8


def test_a_request_that_would_miss_the_slo_is_refused_with_retry_after():
    b = AdaptiveBatcher(_echo([], delay_s=0.03), BatcherConfig(slo_ms=50, initial_batch=1, max_batch=1, max_queue=100))

    async def go():
        first = [asyncio.ensure_future(b.submit([f"t{i}"])) for i in range(3)]
        await asyncio.sleep(0.2)  # the batcher learns ~30 ms per record
        for f in first:
            await f
        waiting = [asyncio.ensure_future(b.submit([f"u{i}"])) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as refused:
            await b.submit(["one too many"])
        await asyncio.gather(*waiting)
        return refused.value

    refused = asyncio.run(_with(b, go()))
    assert refused.retry_after >= 1 and "SLO" in str(refused)


def test_queue_bound_and_model_errors_reach_the_caller():
    def broken(texts):
        raise RuntimeError("model exploded")

    b = AdaptiveBatcher(broken, BatcherConfig(max_queue=3))

    async def go():
        with pytest.raises(Overloaded):
            await b.submit(["a", "b", "c", "d"])
        with pytest.raises(RuntimeError, match="model exploded"):
            await b.submit(["a"])

    asyncio.run(_with(b, go()))


def test_bad_config_names_the_field():
    with pytest.raises(SpecError, match=r"BatcherConfig\.decrease=1\.5"):
        BatcherConfig(decrease=1.5)
    with pytest.raises(SpecError, match=r"BatcherConfig\.initial_batch=64"):
        BatcherConfig(max_batch=32, initial_batch=64)
