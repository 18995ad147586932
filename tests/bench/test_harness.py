"""The shared benchmark harness: repetitions, their summary and the targets."""

from __future__ import annotations

import pytest

from mlsys.bench import harness


def test_ratios_come_from_each_runs_fields_and_skip_what_a_run_did_not_measure():
    runs = [{"ours": 1.0, "peer": 3.0}, {"ours": 2.0, "peer": 3.0}, {"ours": 1.0, "peer": 5.0, "extra": 2.0}]
    got = harness.ratios(runs, {"speedup": lambda r: r["peer"] / r["ours"], "extra": lambda r: r.get("extra"),
                                "never": lambda r: None})
    assert got["speedup"] == {"median": 3.0, "range": [1.5, 5.0], "repeat": 3, "values": [3.0, 1.5, 5.0]}
    assert got["extra"]["repeat"] == 1 and "never" not in got
    fields = harness.report(got, [0.5, 0.7, 0.6], {"speedup": [">=", 2.0]})
    assert fields["median"] == {"speedup": 3.0, "extra": 2.0} and fields["range"]["speedup"] == [1.5, 5.0]
    assert fields["repeat"] == 3 and fields["load_average"] == [0.5, 0.7, 0.6]


def test_repeated_reads_the_load_before_each_repetition_and_refuses_none():
    calls = []
    results, loads = harness.repeated(lambda: calls.append(1) or len(calls), 3)
    assert results == [1, 2, 3] and len(loads) == 3 and all(x >= 0 for x in loads)
    with pytest.raises(ValueError, match="--repeat=0"):
        harness.repeated(lambda: 1, 0)


def test_targets_both_ways_and_a_bad_one_is_named():
    assert harness.meets(10.0, [">=", 10.0]) and not harness.meets(9.99, [">=", 10.0])
    assert harness.meets(-1.0, ["<=", 0.0]) and not harness.meets(0.1, ["<=", 0.0])
    with pytest.raises(ValueError, match="target \\['>', 1.0\\]"):
        harness.meets(1.0, [">", 1.0])
