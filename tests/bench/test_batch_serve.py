"""Smoke tests: `mlsys bench batch` and `mlsys bench serve` run at a tiny size and print their JSON last line."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def _bench(*args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLSYS_STORAGE_URI", "MLFLOW_TRACKING_URI", "MLSYS_ARTIFACT_URI")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    out = subprocess.run([sys.executable, "-m", "mlsys.cli", "bench", *args], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bench_batch_json():
    data = _bench("batch", "--rows", "3000", "--no-isolate")  # the subprocess-per-job path is the default; slow to start
    assert data["rows"] == [3000]
    for key in ("ours_rows_per_s", "floor_rows_per_s", "pyfunc_rows_per_s", "ours_peak_rss_mb", "pyfunc_peak_rss_mb"):
        assert len(data[key]) == 1 and data[key][0] > 0, key


def test_bench_serve_json_against_mlflow_models_serve():
    data = _bench("serve", "--concurrency", "2", "--duration-s", "0.5", "--warmup-s", "0.1", "--max-requests", "200")
    assert {(r["server"], r["concurrency"]) for r in data["results"]} == {("mlsys", 2), ("mlflow", 2)}
    for row in data["results"]:
        assert row["rps"] > 0 and row["errors"] == 0 and row["p99_ms"] >= row["p50_ms"] > 0
    assert data["same_answers"] is True
