"""`mlsys bench label`: both appliers label the same rows identically, the ratios are the timed fields'
ratios, a wrong label matrix fails the benchmark, and a slowed side moves the ratio."""

from __future__ import annotations

import json
import time

import pytest

from mlsys.bench import BENCHMARKS
from mlsys.cli import main
from mlsys.labeling import applier
from tests.bench.ratios import check_ratios

RATIOS = {  # written out again here, not imported: a wrong formula in the benchmark fails this test
    "speedup_cpu": lambda r: r["pandas_cpu_s"] / r["ours_cpu_s"],
    "speedup": lambda r: r["pandas_s"] / r["ours_s"],
}


def _bench(capsys, *args: str) -> tuple[int, dict]:
    code = main(["bench", "label", "--rows", "3000", "--jobs", "1", *args])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _burn(seconds: float) -> None:
    """Spend ``seconds`` of CPU time (the headline counts CPU seconds: a sleep would not slow it)."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass


def test_bench_label_same_rows_same_labels_ratios_from_the_timed_fields(capsys, monkeypatch):
    assert BENCHMARKS["label"].module == "mlsys.bench.label"
    code, fair = _bench(capsys, "--repeat", "2")
    assert code == 0 and fair["identical"] is True and all(r["identical"] for r in fair["runs"])
    assert fair["rows"] == fair["pandas_rows"] == fair["peer"]["rows"] == 3000
    assert fair["threads"]["ours"] == 1 and fair["threads"]["pandas"] == 1
    check_ratios(fair, RATIOS)
    assert fair["speedup_cpu"] == fair["median"]["speedup_cpu"]

    real = applier.FastLFApplier.apply

    def slowed(self, df):
        _burn(0.5)
        return real(self, df)

    monkeypatch.setattr(applier.FastLFApplier, "apply", slowed)
    code, slow = _bench(capsys, "--repeat", "2")
    assert code == 0 and slow["identical"] is True
    check_ratios(slow, RATIOS)
    assert all(r["ours_cpu_s"] >= 0.45 for r in slow["runs"])
    assert slow["median"]["speedup_cpu"] < fair["median"]["speedup_cpu"] / 2


def test_a_wrong_label_fails_the_benchmark(capsys, monkeypatch):
    real = applier.FastLFApplier.apply

    def one_wrong(self, df):
        labels = real(self, df)
        labels[len(df) // 2, 0] = 1 - labels[len(df) // 2, 0] if labels[len(df) // 2, 0] >= 0 else 0
        return labels

    monkeypatch.setattr(applier.FastLFApplier, "apply", one_wrong)
    code, result = _bench(capsys, "--repeat", "1")
    assert code == 1 and result["identical"] is False
