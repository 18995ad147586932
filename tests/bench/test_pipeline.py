"""`mlsys bench pipeline` at a tiny size: runs through the CLI and prints the JSON keys the issue asks for."""

from __future__ import annotations

import json

import pytest

from mlsys import cli

KEYS = {"stages", "microbatches", "batch", "pipeline_efficiency", "speedup_vs_naive", "ideal_speedup",
        "bubble_measured", "bubble_theory", "ddp_efficiency", "speedup_vs_single", "best_microbatches", "schedules"}


def test_bench_pipeline_smoke(capsys):
    rc = cli.main(["bench", "pipeline", "--stages", "2", "--microbatches", "4", "--batch", "32", "--schedule", "gpipe",
                   "--layers", "4", "--width", "32", "--steps", "1", "--warmup", "1", "--sweep", "1,4",
                   "--no-ddp"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert KEYS <= set(report)
    assert report["stages"] == 2 and report["microbatches"] == 4 and report["batch"] == 32
    assert report["bubble_theory"] == pytest.approx(1 / 5) and report["ideal_speedup"] == pytest.approx(8 / 5)
    assert 0 < report["pipeline_efficiency"] and report["ddp_efficiency"] is None  # --no-ddp
    assert 0 <= report["bubble_measured"] < 1 and report["best_microbatches"] in (1, 4)
    assert report["schedules"]["gpipe"]["max_in_flight"] == 4 and report["schedules"]["1f1b"]["max_in_flight"] == 2


def test_bench_rejects_more_microbatches_than_rows():
    with pytest.raises(ValueError, match=r"microbatches=64 is larger than the batch of 32 rows"):
        cli.main(["bench", "pipeline", "--microbatches", "64", "--batch", "32"])
