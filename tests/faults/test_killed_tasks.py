"""Fault injection on the real stack: every stage's task is SIGKILLed once mid-run, Airflow retries, and the end
state equals an uninterrupted run's: the same dataset versions and pointers, one model version and the champion
alias, every task's MLflow run FINISHED once, each killed attempt's run marked FAILED, nothing left RUNNING.

The kills are real (``mlsys.faults.failpoint``: the task process sends itself SIGKILL at a named point after it
has written part of its work); the scheduler, the LocalExecutor, the retries and the Assets are Airflow's own.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from mlsys.bench.harness import free_port

pytestmark = pytest.mark.e2e

# One kill per stage, each after the stage has written (part of) its output.
FAILPOINTS = ("ingest.committed", "label.written", "validate.tagged", "train.logged", "evaluate.registered",
              "batch.scored")


def _pipeline(home: Path, failpoints: tuple[str, ...]) -> dict:
    """The nightly pipeline through airflow standalone on a fresh home; returns what it left behind."""
    from mlsys.local import Stack, airflow_env, run_scheduled

    with pytest.MonkeyPatch.context() as mp:
        for var in list(os.environ):
            if var.startswith(("AIRFLOW", "MLSYS_", "MLFLOW_TRACKING", "MLFLOW_S3")):
                mp.delenv(var)
        mp.setenv("MLSYS_HOME", str(home))
        mp.setenv("AIRFLOW__API__PORT", str(free_port()))
        mp.setenv("AIRFLOW__API__WORKERS", "1")
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("MLSYS_RETRY_DELAY_S", "1")
        mp.setenv("MLSYS_FAILPOINTS", ",".join(f"{p}=1" for p in failpoints))
        with Stack(airflow_env(), mlflow_ui=False, log_dir=home / "logs") as stack:
            stack.wait_healthy()
            run_scheduled(stack)
            tries = {}
            for dag_id in ("mlsys_data", "mlsys_training", "mlsys_batch_inference"):
                for run in stack.client.runs(dag_id):
                    for ti in stack.client.task_instances(dag_id, run["dag_run_id"]):
                        tries[f"{dag_id}.{ti['task_id']}"] = max(tries.get(f"{dag_id}.{ti['task_id']}", 0),
                                                                 ti["try_number"])
        from mlsys.faults import fired

        return {"state": _state(home), "tries": tries, "fired": {p: fired(p) for p in failpoints}}


def _state(home: Path) -> dict:
    storage = home / "storage" / "datasets"
    datasets = {d.name: sorted(v.name for v in d.iterdir() if v.is_dir() and not v.name.startswith("_"))
                for d in sorted(storage.iterdir()) if d.is_dir()}
    pointers = {f"{d.name}/{p.name}": json.loads(p.read_text()).get("version")
                for d in storage.iterdir() if d.is_dir() for p in d.glob("_*.json")}
    db = sqlite3.connect(home / "mlflow.db")
    versions = db.execute("select name, count(*) from model_versions group by name").fetchall()
    aliases = db.execute("select name, alias, version from registered_model_aliases").fetchall()
    runs = db.execute(
        "select r.status, coalesce((select value from tags t where t.run_uuid = r.run_uuid and t.key = 'airflow.task_id'), ''),"
        " coalesce((select value from tags t where t.run_uuid = r.run_uuid and t.key = 'mlsys.role'), '')"
        " from runs r").fetchall()
    db.close()
    finished: dict[str, int] = {}
    for status, task, role in runs:
        if task and role != "dag_run" and status == "FINISHED":
            finished[task] = finished.get(task, 0) + 1
    return {"datasets": datasets, "pointers": pointers, "model_versions": dict(versions),
            "aliases": sorted(aliases), "running": sum(s == "RUNNING" for s, _, _ in runs),
            "failed_task_runs": sum(s == "FAILED" and t != "" and r != "dag_run" for s, t, r in runs),
            "finished_per_task": finished}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    clean = _pipeline(tmp_path_factory.mktemp("clean-home"), ())
    faulted = _pipeline(tmp_path_factory.mktemp("faulted-home"), FAILPOINTS)
    return {"clean": clean, "faulted": faulted}


def test_every_failpoint_killed_its_task_once_and_airflow_retried_it(runs):
    faulted = runs["faulted"]
    assert faulted["fired"] == {p: 1 for p in FAILPOINTS}
    retried = {task for task, tries in faulted["tries"].items() if tries > 1}
    assert len(retried) >= len(FAILPOINTS), faulted["tries"]
    print(f"\nscenario sigkill-each-task: faults={len(FAILPOINTS)} retries={sum(t - 1 for t in faulted['tries'].values())}")


def test_nothing_lost_or_duplicated(runs):
    clean, faulted = runs["clean"]["state"], runs["faulted"]["state"]
    assert faulted["datasets"] == clean["datasets"], "a killed task lost or duplicated a dataset version"
    assert faulted["pointers"] == clean["pointers"], "a pointer differs from the uninterrupted run's"
    assert faulted["model_versions"] == clean["model_versions"], "a killed evaluate registered a second version"
    assert faulted["aliases"] == clean["aliases"]
    assert faulted["finished_per_task"] == clean["finished_per_task"], "a task has a missing or second finished run"
    lost = sum(len(v) for v in clean["datasets"].values()) - sum(len(v) for v in faulted["datasets"].values())
    print(f"\nscenario sigkill-each-task: lost={max(lost, 0)} duplicated={max(-lost, 0)}")


def test_no_mlflow_run_is_left_running_and_each_killed_attempt_is_failed(runs):
    faulted = runs["faulted"]["state"]
    assert faulted["running"] == 0
    assert faulted["failed_task_runs"] == len(FAILPOINTS)
