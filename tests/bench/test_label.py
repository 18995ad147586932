"""``mlsys bench label`` at a tiny size, through the CLI: its last line is the JSON the issue asks for."""

from __future__ import annotations

import json

from mlsys.bench import BENCHMARKS
from mlsys.cli import main


def test_bench_label_smoke(capsys):
    assert BENCHMARKS["label"].module == "mlsys.bench.label"
    assert main(["bench", "label", "--rows", "3000", "--pandas-rows", "500", "--jobs", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"rows", "pandas_rows_per_s", "ours_rows_per_s", "speedup", "identical"} <= set(result)
    assert result["rows"] == 3000 and result["pandas_rows"] == 500 and result["identical"] is True
    assert result["ours_rows_per_s"] > 0 and result["pandas_rows_per_s"] > 0
