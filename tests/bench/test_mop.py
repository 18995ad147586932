"""``mlsys bench mop`` at a small size, through the CLI: MOP's losses equal task parallelism's (same visit order),
each MOP worker holds half the data, and MOP sends at least 10x fewer bytes than DDP (counted, not timed)."""

from __future__ import annotations

import json

from mlsys.bench import BENCHMARKS
from mlsys.cli import main


def test_bench_mop_small(capsys, tmp_path):
    assert BENCHMARKS["mop"].module == "mlsys.bench.mop"
    timeline = tmp_path / "timeline.json"
    assert main(["bench", "mop", "--configs", "2", "--epochs", "1", "--repeats", "1", "--num-buckets", "2048",
                 "--timeline", str(timeline)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"speedup_vs_ddp", "time_vs_task_parallel", "bytes_vs_ddp", "losses_match"} <= set(result)
    assert result["losses_match"] is True and result["max_loss_gap_vs_task"] <= 1e-5
    assert set(result["losses"]["mop"]) == set(result["losses"]["task"]) == set(result["losses"]["ddp"])
    assert result["data_vs_task_parallel"] == 0.5, "a MOP worker holds one of the two partitions"
    assert result["bytes_vs_ddp"] >= 10, result["medians"]
    assert result["medians"]["task"]["bytes_sent"] == 0 and result["mop_hops"] >= 2
    assert all(0 < loss < 0.69 for loss in result["losses"]["ddp"].values()), "DDP learns too (ln 2 = 0.69 at start)"
    units = json.loads(timeline.read_text())
    assert len(units) == 2 * 2 and {u[2] for u in units} == {0, 1}
