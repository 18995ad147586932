"""`mlsys bench stats`: ours and GX give the same statistics, the ratios are the timed fields' ratios,
and a slowed side moves them."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from mlsys import cli
from mlsys.bench import stats as bench
from mlsys.settings import settings
from tests.bench.ratios import check_ratios

RATIOS = {  # written out again here, not imported: a wrong formula in the benchmark fails this test
    "speedup_1t": lambda r: r["gx_s"] / r["ours_1t_s"],
    "speedup_1t_cpu": lambda r: r["gx_cpu_s"] / r["ours_1t_cpu_s"],
    "speedup": lambda r: r["gx_s"] / r["ours_s"],
    "threads_gain": lambda r: r["ours_1t_s"] / r["ours_s"],
}


def _bench(capsys, *args: str) -> tuple[int, dict]:
    code = cli.main(["bench", "stats", "--rows", "4000", *args])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bench_stats_agrees_with_gx_and_its_ratios_are_the_timed_fields(capsys):
    code, result = _bench(capsys, "--repeat", "2")
    assert code == 0 and result["agree"] is True
    assert result["rows"] == 4000 and result["repeat"] == 2
    check_ratios(result, RATIOS)
    assert result["targets"]["speedup_1t"] == [">=", 10.0]
    assert result["threads"]["ours_1t"] == 1 and result["threads"]["gx"] == 1 and result["peer"]["threads"] == 1
    assert result["gx_setup_s"] > 0 and result["peer"]["version"]


@pytest.mark.parametrize("strings", ["native", "object"])
def test_ours_equals_gx_on_every_shared_statistic_and_a_wrong_one_is_caught(strings):
    from mlsys.validation import statistics as ours_stats

    df = bench.sample(str(settings().data_dir / "chicago-taxi" / "data.csv"), 3000, seed=1, strings=strings)
    assert (df["company"].dtype == object) == (strings == "object")
    gx = bench.GXMetrics(df).compute()
    one, many = ours_stats.compute(df, workers=1), ours_stats.compute(df, workers=2)
    assert one.to_json() == many.to_json()  # threads change nothing
    assert bench._agree(one, gx) == []
    described = [k[0] for k in gx if k != "rows" and k[1] == "describe" and one.columns[k[0]].count > 1]
    assert len(described) >= 5
    c = described[0]
    wrong = dataclasses.replace(one, columns={**one.columns, c: dataclasses.replace(one.columns[c], mean=one.columns[c].mean + 1)})
    assert bench._agree(wrong, gx) == [f"{c} mean {one.columns[c].mean + 1} != {gx[(c, 'describe')].mean}"]
    wrong = dataclasses.replace(one, columns={**one.columns, c: dataclasses.replace(one.columns[c], missing=one.columns[c].missing + 1)})
    assert len(bench._agree(wrong, gx)) == 1


def test_a_slowed_side_moves_the_ratio(capsys, monkeypatch):
    from mlsys.validation import statistics as ours_stats

    _, fair = _bench(capsys, "--repeat", "2")
    real = ours_stats.compute

    def slowed(data, workers=None):
        time.sleep(0.3)
        return real(data, workers)

    monkeypatch.setattr(ours_stats, "compute", slowed)
    code, slow = _bench(capsys, "--repeat", "2")
    assert code == 0 and slow["agree"] is True
    check_ratios(slow, RATIOS)
    assert all(r["ours_1t_s"] >= 0.3 and r["ours_s"] >= 0.3 for r in slow["runs"])
    assert slow["median"]["speedup_1t"] < fair["median"]["speedup_1t"] / 2
    assert slow["median"]["speedup"] < fair["median"]["speedup"] / 2
