"""`mlsys bench batch` and `mlsys bench serve` at a tiny size: ours and the peer give the same answers, every ratio
is the median of the ratios of the timed fields, and a deliberately slowed side moves the ratio."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

from mlsys.bench.loadgen import wrk_path

NOT_SET = ("MLSYS_STORAGE_URI", "MLFLOW_TRACKING_URI", "MLSYS_ARTIFACT_URI")


def _run(args: list[str], code: str | None = None) -> dict:
    """A benchmark's JSON last line; ``code``: Python run before its main (e.g. a slowed scorer)."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_SET}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    cmd = [sys.executable, "-m", "mlsys.cli", "bench", *args] if code is None else [sys.executable, "-c", code, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _assert_summaries(data: dict, values: dict[str, list[float]], repeat: int) -> None:
    """Every reported median and range is the one of the values the test computed from the timed fields."""
    assert data["repeat"] == repeat and len(data["load_average"]) == repeat
    for name, got in values.items():
        assert len(got) == repeat, name
        assert data["median"][name] == pytest.approx(statistics.median(got), rel=2e-3, abs=2e-3), name
        assert data["range"][name] == pytest.approx([min(got), max(got)], rel=2e-3, abs=2e-3), name


def _rate(run: dict, mode: str, n: int, t: int) -> float:
    return next(r["rows_per_s"] for r in run["results"] if (r["mode"], r["size"], r["threads"]) == (mode, n, t))


def test_bench_batch_same_predictions_and_ratios_from_the_timed_fields():
    data = _run(["batch", "--rows", "3000", "--no-isolate", "--threads", "1,2", "--repeat", "2"])
    assert data["rows"] == [3000] and data["threads"] == [1, 2] and data["same_predictions"] is True
    for run in data["runs"]:
        assert {(r["mode"], r["threads"]) for r in run["results"]} == {(m, t) for m in ("ours", "floor", "pyfunc")
                                                                     for t in (1, 2)}
        assert all(r["rows"] == 3000 and r["rows_per_s"] > 0 for r in run["results"])
        for check in run["checks"]:  # every job's answers, compared here too
            sample = check["sample"]
            for peer in ("floor", "pyfunc"):
                assert check[f"{peer}_class_mismatches"] == 0 and check[f"{peer}_max_proba_diff"] <= 1e-5
                assert sample[peer]["prediction"] == sample["ours"]["prediction"]
                assert sample[peer]["proba_1"] == pytest.approx(sample["ours"]["proba_1"], abs=1e-5)
    values = {f"{name}_3000_t{t}": [_rate(run, "ours", 3000, t) / _rate(run, peer, 3000, t) for run in data["runs"]]
              for t in (1, 2) for name, peer in (("speedup_vs_pyfunc", "pyfunc"), ("fraction_of_floor", "floor"))}
    _assert_summaries(data, values, repeat=2)
    assert data["targets"]["speedup_vs_pyfunc_3000_t1"] == [">=", 3.0]
    assert "VectorFeaturizer" in data["peer"]["pyfunc"]["featurizer"] and data["thread_counts"]["cpus"] >= 1

    slowed = _run(["--rows", "3000", "--no-isolate", "--threads", "1", "--repeat", "1"], code=(
        "import sys, time\n"
        "from mlsys.serving.scorer import Scorer\n"
        "score = Scorer.score_utf8\n"
        "Scorer.score_utf8 = lambda self, *a: (time.sleep(1.0), score(self, *a))[1]  # ours and the floor: 1 s more\n"
        "from mlsys.bench.batch import main\n"
        "sys.exit(main(sys.argv[1:]))\n"))
    assert slowed["same_predictions"] is True
    assert slowed["median"]["speedup_vs_pyfunc_3000_t1"] < data["median"]["speedup_vs_pyfunc_3000_t1"] / 2


def _row(run: dict, key: str, server: str, t: int, c: int) -> dict:
    return next(r for r in run[key] if (r["server"], r["threads"], r["concurrency"]) == (server, t, c))


def test_bench_serve_against_mlflow_models_serve_same_answers_and_ratios_from_the_timed_fields():
    data = _run(["serve", "--concurrency", "2", "--duration-s", "0.5", "--warmup-s", "0.1", "--threads", "1",
                 "--wrk-duration-s", "1", "--wrk-concurrency", "4", "--repeat", "2"])
    ours, theirs = data["answers"]["mlsys"], data["answers"]["mlflow"]
    assert len(ours) == len(theirs) == 20 and data["same_answers"] is True
    for a, b in zip(ours, theirs):  # MLflow's protocol, MLflow's answer shape, the same model's numbers
        assert a.keys() == b.keys() == {"prediction", "proba_0", "proba_1"} and a["prediction"] == b["prediction"]
        assert a["proba_1"] == pytest.approx(b["proba_1"], abs=1e-5)
    for run in data["runs"]:
        for server in ("mlsys", "mlflow"):
            row = _row(run, "results", server, 1, 2)
            assert row["rps"] > 0 and row["errors"] == 0 and row["p99_ms"] >= row["p50_ms"] > 0
            assert row["seconds"] >= 0.5, "both servers run for the whole duration"
        assert run["mlsys_metrics"]["t1"]["responses_503"] == 0
    values = {"speedup_c2_t1": [_row(r, "results", "mlsys", 1, 2)["rps"] / _row(r, "results", "mlflow", 1, 2)["rps"]
                                for r in data["runs"]]}
    if wrk_path() is not None:
        for run in data["runs"]:
            assert _row(run, "wrk", "mlsys", 1, 4)["errors"] == 0 and _row(run, "wrk", "mlflow", 1, 4)["requests"] > 0
        values["wrk_speedup_c4_t1"] = [_row(r, "wrk", "mlsys", 1, 4)["rps"] / _row(r, "wrk", "mlflow", 1, 4)["rps"]
                                       for r in data["runs"]]
        values["wrk_p99_ms_mlsys_t1"] = [_row(r, "wrk", "mlsys", 1, 4)["p99_ms"] for r in data["runs"]]
    _assert_summaries(data, values, repeat=2)
    assert data["servers"]["mlflow"]["torch_threads"] == data["servers"]["mlsys"]["torch_threads"] == [1]
    assert data["servers"]["mlflow"]["workers"] == 1 and "OMP_NUM_THREADS" in data["servers"]["mlflow"]["threads_set_by"]
