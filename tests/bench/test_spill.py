"""`mlsys bench spill` at a tiny size, through the CLI: its JSON keys, and the disk tier within its RAM budget."""

from __future__ import annotations

import json

import torch

from mlsys.cli import main


def test_bench_spill_tiny(capsys):
    threads = torch.get_num_threads()
    try:
        code = main(["bench", "spill", "--model-mb", "8", "--ram-budget-mb", "2", "--fit-mb", "1", "--fit-depth", "4",
                     "--steps", "1", "--batch", "4"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("overhead_fit", "steps_per_s_nofit", "model_mb", "ram_budget_mb", "peak_rss_mb", "device"):
        assert key in result, key
    assert result["device"] == "cpu" and result["tier"] == "disk"
    assert result["model_mb"] >= 4 * result["ram_budget_mb"]
    assert result["within_budget"] is True, result
    assert result["peak_rss_mb"] <= result["stated_overhead_mb"] + result["ram_budget_mb"]
    assert result["overhead_fit"] > 0 and result["steps_per_s_nofit"] > 0
