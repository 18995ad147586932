"""Micro-batches and the bubble arithmetic."""

from __future__ import annotations

import pytest
import torch

from mlsys.training.parallel import microbatch


def test_scatter_keeps_rows_together():
    x, y = torch.arange(12).reshape(6, 2), torch.arange(6)
    chunks = microbatch.scatter([x, y], 3)
    assert len(chunks) == 3 and all(c[0].shape == (2, 2) for c in chunks)
    assert torch.equal(torch.cat([c[1] for c in chunks]), y)


@pytest.mark.parametrize("m, batch, message", [
    (9, 8, r"microbatches=9 is larger than the batch of 8 rows: use at most 8"),
    (0, 8, r"microbatches=0 is invalid"),
    (3, 8, r"batch=8 does not split into microbatches=3 equal chunks"),
])
def test_bad_microbatch_counts(m, batch, message):
    with pytest.raises(ValueError, match=message):
        microbatch.check(m, batch)


def test_bubble_and_bound():
    assert microbatch.bubble_theory(2, 8) == pytest.approx(1 / 9)
    assert microbatch.bubble_theory(4, 1) == pytest.approx(3 / 4)
    assert microbatch.ideal_speedup(2, 8) == pytest.approx(16 / 9)
    assert microbatch.bound_time(9.0, 2, 8) == pytest.approx(9.0 * 9 / 16)
    # the bound's time is the sequential time over the ideal speedup
    assert microbatch.bound_time(1.0, 4, 8) == pytest.approx(1 / microbatch.ideal_speedup(4, 8))
