"""`mlsys bench pipeline` at a tiny size: the pipeline's gradients equal one process's, every ratio is the
timed fields' ratio, and a slowed baseline moves the ratio against it (and only that one)."""

from __future__ import annotations

import json
import time

import pytest

from mlsys import cli
from mlsys.bench import pipeline as bench
from tests.bench.ratios import check_ratios

KEYS = {"stages", "microbatches", "batch", "pipeline_efficiency", "speedup_vs_naive", "ideal_speedup",
        "bubble_measured", "bubble_theory", "ddp_efficiency", "speedup_vs_single", "speedup_vs_threads",
        "best_microbatches", "schedules", "median", "range", "repeat", "runs", "threads", "peer", "load_average"}
K, M = 2, 4
RATIOS = {  # written out again here, not imported: a wrong formula in the benchmark fails this test
    "pipeline_efficiency": lambda r: r["sequential_microbatches_s"] * (M + K - 1) / (K * M) / r["pipeline_s"],
    "speedup_vs_naive": lambda r: r["naive_pipeline_s"] / r["pipeline_s"],
    "speedup_vs_single": lambda r: r["full_batch_s"] / r["pipeline_s"],
    "speedup_vs_threads": lambda r: r["full_batch_threads_s"] / r["pipeline_s"],
}
TINY = ["bench", "pipeline", "--stages", str(K), "--microbatches", str(M), "--batch", "32", "--schedule", "gpipe",
        "--layers", "4", "--width", "32", "--steps", "1", "--warmup", "1", "--sweep", "1,4", "--repeat", "2"]


def _bench(capsys, *extra: str) -> dict:
    assert cli.main([*TINY, *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bench_pipeline_same_gradients_and_ratios_from_the_timed_fields(capsys):
    report = _bench(capsys, "--no-ddp")
    assert report["repeat"] == 2
    assert KEYS <= set(report)
    assert report["stages"] == K and report["microbatches"] == M and report["batch"] == 32
    assert report["grads_match"] is True and all(r["grad_max_rel_diff"] <= 1e-4 for r in report["runs"])
    assert report["bubble_theory"] == pytest.approx(1 / 5) and report["ideal_speedup"] == pytest.approx(8 / 5)
    check_ratios(report, RATIOS)
    assert all(report[name] == report["median"][name] for name in RATIOS)
    assert report["ddp_efficiency"] is None and "ddp_efficiency" not in report["median"]  # --no-ddp
    assert report["threads"]["baseline_threads"] == K and report["threads"]["pipeline_per_process"] == 1
    assert report["targets"]["pipeline_efficiency"] == [">=", 0.85]
    assert 0 <= report["bubble_measured"] < 1 and report["best_microbatches"] in (1, 4)
    assert report["schedules"]["gpipe"]["max_in_flight"] == 4 and report["schedules"]["1f1b"]["max_in_flight"] == 2


def test_a_slowed_threaded_baseline_moves_only_its_ratio(capsys, monkeypatch):
    """The loss is slowed in this process only: the one-process baseline runs here, the pipeline's ranks are
    spawned (a fresh import, the real loss)."""
    real = bench.mse

    def slowed(output, target):
        time.sleep(0.05)
        return real(output, target)

    monkeypatch.setattr(bench, "mse", slowed)
    report = _bench(capsys, "--no-ddp", "--repeat", "1")
    check_ratios(report, RATIOS)
    assert all(report[name] == report["median"][name] for name in RATIOS)
    assert all(r["full_batch_threads_s"] >= 0.05 for r in report["runs"])
    assert all(r["full_batch_s"] < 0.05 for r in report["runs"])  # rank 0's one-thread baseline: not slowed
    assert report["median"]["speedup_vs_threads"] > 2 * report["median"]["speedup_vs_single"]


def test_bench_rejects_more_microbatches_than_rows():
    with pytest.raises(ValueError, match=r"microbatches=64 is larger than the batch of 32 rows"):
        cli.main(["bench", "pipeline", "--microbatches", "64", "--batch", "32"])
