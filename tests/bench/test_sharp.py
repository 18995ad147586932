"""`mlsys bench sharp` at a tiny size, through the CLI: its JSON keys and that SHARP changed no loss."""

from __future__ import annotations

import json

import torch

from mlsys.cli import main


def test_bench_sharp_tiny(capsys):
    threads = torch.get_num_threads()
    try:
        code = main(["bench", "sharp", "--models", "2", "--workers", "2", "--steps", "1", "--width", "32",
                     "--depth", "2", "--batch", "8", "--ceiling-rounds", "0"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("models", "workers", "speedup", "idle_fraction", "parallel_ceiling"):
        assert key in result, key
    assert result["models"] == 2 and result["workers"] == 2
    assert result["losses_match"] is True
    assert 0.0 <= result["idle_fraction"] <= 1.0 and result["speedup"] > 0
