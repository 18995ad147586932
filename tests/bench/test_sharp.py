"""`mlsys bench sharp` at a tiny size: SHARP's losses equal the jobs trained alone, every ratio is the timed
fields' ratio (the share of the ceiling too), and a slowed baseline moves the speedup."""

from __future__ import annotations

import json
import time

import pytest
import torch

from mlsys.cli import main
from tests.bench.ratios import check_ratios

RATIOS = {  # written out again here, not imported: a wrong formula in the benchmark fails this test
    "speedup": lambda r: r["sequential_s"] / r["sharp_s"],
    "speedup_vs_threads": lambda r: r["sequential_threads_s"] / r["sharp_s"],
    "share_of_ceiling": lambda r: r["sequential_s"] / r["sharp_s"] / ((r["ceiling_before"] + r["ceiling_after"]) / 2),
}
TINY = ["bench", "sharp", "--models", "2", "--workers", "2", "--steps", "1", "--width", "32", "--depth", "2",
        "--batch", "8"]


def _bench(capsys, *extra: str) -> dict:
    threads = torch.get_num_threads()
    try:
        code = main([*TINY, *extra])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bench_sharp_same_losses_and_ratios_from_the_timed_fields(capsys):
    result = _bench(capsys, "--repeat", "2", "--ceiling-rounds", "1")
    assert result["models"] == 2 and result["workers"] == 2 and result["repeat"] == 2
    assert result["losses_match"] is True and all(r["losses_match"] for r in result["runs"])
    check_ratios(result, RATIOS)
    assert result["targets"] == {"speedup": [">=", 1.8], "share_of_ceiling": [">=", 0.95]}
    assert result["threads"]["sharp_per_worker"] == 1 and result["threads"]["sequential"] == 1
    assert all(0.0 <= r["idle_fraction"] <= 1.0 and r["parallel_ceiling"] > 0 for r in result["runs"])


def test_a_slowed_sequential_baseline_moves_the_speedup(capsys, monkeypatch):
    """The loss is slowed in this process only: the sequential baselines train here, SHARP's workers are
    spawned (a fresh import, the real loss). Each of the 2 jobs x 1 step calls it once per run."""
    real = torch.nn.functional.cross_entropy

    def slowed(*args, **kwargs):
        time.sleep(0.5)
        return real(*args, **kwargs)

    fair = _bench(capsys, "--repeat", "1", "--ceiling-rounds", "0")
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", slowed)
    slow = _bench(capsys, "--repeat", "1", "--ceiling-rounds", "0")
    assert slow["losses_match"] is True
    check_ratios(slow, {k: RATIOS[k] for k in ("speedup", "speedup_vs_threads")})
    assert slow["median"].get("share_of_ceiling") is None  # no ceiling probed
    assert all(r["sequential_s"] >= 1.0 and r["sequential_threads_s"] >= 1.0 for r in slow["runs"])
    assert slow["median"]["speedup"] > fair["median"]["speedup"] + 1.0 / slow["runs"][0]["sharp_s"] / 2
