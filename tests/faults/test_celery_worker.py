"""Fault injection: the Celery worker is SIGKILLed while it runs the ``label`` task of ``mlsys_data``.

On the scale-out deployment (tests/e2e/airflow_cluster.py: PostgreSQL, Redis, the CeleryExecutor, the
api-server, scheduler, dag-processor and a Celery worker as processes), the test triggers ``mlsys_data``,
waits (REST API) until ``label`` is running and its stage has opened its MLflow run, waits a random
0-1.5 s more (label computes for several seconds, then writes ``comments_labeled``), and SIGKILLs every process of the
worker: the ``airflow celery worker``, its pool, the task supervisor and the task process (which the
supervisor puts in a process group of its own). Nobody tells Airflow: the task instance simply stops
heartbeating. A new worker is started on the same queue. The scheduler must notice the missing heartbeat
(``[scheduler] task_instance_heartbeat_timeout``, set to ``HEARTBEAT_TIMEOUT_S`` here, checked every
``task_instance_heartbeat_timeout_detection_interval``), put ``label`` up for retry, and the new worker must
run try 2 to success.

Then the end state must be an uninterrupted run's: each dataset has exactly one version, the pointers name
them, one ingest snapshot; a second, uninterrupted run of the DAG on the same input writes no new version
and moves no pointer; every task finished once per run in MLflow, the killed try's run (if it had opened
one) is FAILED, and nothing is left RUNNING.

Reproduce a kill moment with MLSYS_FAULT_SEED=<seed printed in the summary>.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
import urllib.parse
from datetime import datetime
from pathlib import Path

import pytest
from tests.e2e.airflow_cluster import REPO_ROOT, AirflowCluster, ClusterError, require_servers_or_fail

pytestmark = pytest.mark.scaleout

DAG_ID = "mlsys_data"
TASK = "label"
HEARTBEAT_TIMEOUT_S = 20
RUNNING_TIMEOUT_S = 240  # trigger -> label running (ingest before it)
RUN_TIMEOUT_S = 300  # kill -> run finished: heartbeat timeout + retry + label + validate


def _ti(cluster: AirflowCluster, run_id: str, task_id: str) -> dict:
    q = urllib.parse.quote
    return cluster.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{q(run_id)}/taskInstances/{q(task_id)}")


def _trigger(cluster: AirflowCluster, run_id: str) -> str:
    cluster.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    cluster.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": {}})
    return run_id


def _wait_running(cluster: AirflowCluster, run_id: str, task_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    ti: dict = {}
    while time.monotonic() < deadline:
        cluster.check_alive()
        ti = _ti(cluster, run_id, task_id)
        if ti["state"] == "running":
            return ti
        if ti["state"] in ("success", "failed", "upstream_failed", "skipped"):
            raise ClusterError(f"{task_id} ended {ti['state']!r} before it was seen running")
        time.sleep(0.3)
    raise ClusterError(f"{task_id} not running after {timeout:.0f}s (state {ti.get('state')!r})\n\n"
                       + cluster.format_logs())


def _storage_state(home: Path) -> dict:
    """Datasets (committed versions: those with metadata), pointers (version, sequence), snapshots, orphans."""
    root = home / "storage"
    datasets, pointers, orphans = {}, {}, []
    for d in sorted((root / "datasets").iterdir()):
        if not d.is_dir():
            continue
        versions = sorted(v.name for v in d.iterdir() if v.is_dir() and (v / "_metadata.json").is_file())
        orphans += [f"{d.name}/{v.name}" for v in d.iterdir() if v.is_dir() and v.name not in versions
                    and not v.name.startswith(".")]
        datasets[d.name] = versions
        for p in d.glob("_*.json"):
            if p.name != "_seq.json":
                rec = json.loads(p.read_text())
                pointers[f"{d.name}@{p.stem[1:]}"] = (rec["version"], rec.get("sequence"))
    snapshots = sorted(p.stem for p in (root / "snapshots").glob("*.json"))
    return {"datasets": datasets, "pointers": pointers, "snapshots": snapshots, "orphans": sorted(orphans)}


def _mlflow_runs(home: Path) -> list[tuple[str, str, str, str]]:
    """(status, airflow run id, task id, try number) of every task run (not the DAG runs' parent runs)."""
    db = sqlite3.connect(home / "mlflow.db")

    def tag(key: str) -> str:
        return f"coalesce((select value from tags t where t.run_uuid = r.run_uuid and t.key = '{key}'), '')"

    try:
        rows = db.execute(f"select r.status, {tag('airflow.run_id')}, {tag('airflow.task_id')}, "
                          f"{tag('airflow.try_number')}, {tag('mlsys.role')} from runs r").fetchall()
    finally:
        db.close()
    return [row[:4] for row in rows if row[2] and row[4] != "dag_run"]


def _wait_stage_started(cluster: AirflowCluster, home: Path, run_id: str, task_id: str, timeout: float) -> None:
    """Wait until the task's stage has opened its MLflow run (the task process is past its start-up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster.check_alive()
        try:
            if any(r[0] == "RUNNING" and r[1] == run_id and r[2] == task_id for r in _mlflow_runs(home)):
                return
        except sqlite3.Error:
            pass  # not created yet, or locked by a writer: ask again
        time.sleep(0.2)
    raise ClusterError(f"{task_id} opened no MLflow run within {timeout:.0f}s\n\n" + cluster.format_logs())


def test_celery_worker_sigkilled_mid_task(tmp_path):
    require_servers_or_fail()  # PostgreSQL and Redis must run: FAIL, never skip, without them
    seed = int(os.environ.get("MLSYS_FAULT_SEED") or time.time_ns() % 2**32)
    delay = random.Random(seed).uniform(0.0, 1.5)  # how long after label's stage started the worker dies
    t0 = time.monotonic()
    mlsys_home = tmp_path / "mlsys-home"
    mlsys_home.mkdir()
    cluster = AirflowCluster(
        home=tmp_path / "airflow",
        dags_folder=REPO_ROOT / "dags",
        plugins_folder=REPO_ROOT / "plugins",
        parallelism=4,
        worker_concurrency=2,
        extra_env={
            "MLSYS_HOME": str(mlsys_home),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLSYS_RETRY_DELAY_S": "1",
            # a task whose supervisor is gone stops heartbeating: fail it (and retry) after 20 s, checked every 2 s
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            # live supervisors heartbeat every 5 s (the default, well inside 20 s)
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "5",
        },
        drop_env=("MLSYS_STORAGE_URI", "MLFLOW_TRACKING_URI", "MLSYS_ARTIFACT_URI", "MLSYS_FAILPOINTS",
                  "AWS_ENDPOINT_URL"),
    )
    try:
        with cluster:
            cluster.wait_for_dag(DAG_ID)
            dag_tasks = {t["task_id"] for t in cluster.api("GET", f"/api/v2/dags/{DAG_ID}/tasks")["tasks"]}

            # ---- run 1: the worker dies under label
            faulted = _trigger(cluster, f"faulted_{cluster.run_tag}")
            _wait_running(cluster, faulted, TASK, RUNNING_TIMEOUT_S)
            _wait_stage_started(cluster, mlsys_home, faulted, TASK, 60)
            time.sleep(delay)
            ti = _ti(cluster, faulted, TASK)
            assert ti["state"] == "running" and ti["try_number"] == 1, (
                f"label finished within {delay:.1f}s of starting: no kill mid-task ({ti['state']}, try {ti['try_number']})")
            worker_pids = cluster.component_pids("celery-worker")
            assert ti["pid"] in worker_pids, f"label's process {ti['pid']} is not one of the worker's {worker_pids}"
            t_kill = time.monotonic()
            killed = cluster.kill_component("celery-worker")
            assert ti["pid"] in killed and not cluster.component_pids("celery-worker")
            log_offset = cluster.component("celery-worker").log_path.stat().st_size
            cluster.restart_component("celery-worker")

            run = cluster.wait_for_run(DAG_ID, faulted, timeout=RUN_TIMEOUT_S)
            recovered_s = time.monotonic() - t_kill
            tis = {t["task_id"]: t for t in cluster.task_instances(DAG_ID, faulted)}
            if run["state"] != "success":
                logs = "\n\n".join(f"----- {t} try {x['try_number']} ({x['state']}) -----\n"
                                   + cluster.task_log(DAG_ID, faulted, t, max(x["try_number"], 1))
                                   for t, x in tis.items() if x["state"] != "success")
                pytest.fail(f"run {faulted} ended {run['state']!r}: {({t: x['state'] for t, x in tis.items()})}\n{logs}")
            heartbeat_timeouts = cluster.sql(
                "SELECT count(*) FROM log WHERE event = 'heartbeat timeout' AND dag_id = %s AND run_id = %s "
                "AND task_id = %s", (DAG_ID, faulted, TASK))[0][0]
            celery_id = cluster.sql("SELECT external_executor_id FROM task_instance WHERE dag_id = %s AND run_id = %s "
                                    "AND task_id = %s", (DAG_ID, faulted, TASK))[0][0]
            new_log = cluster.component("celery-worker").log_path.read_bytes()[log_offset:].decode(errors="replace")
            after_faulted = _storage_state(mlsys_home)

            # ---- run 2: the same DAG, uninterrupted, on the same input
            clean = _trigger(cluster, f"clean_{cluster.run_tag}")
            run2 = cluster.wait_for_run(DAG_ID, clean, timeout=RUN_TIMEOUT_S)
            tis2 = {t["task_id"]: t for t in cluster.task_instances(DAG_ID, clean)}
            after_clean = _storage_state(mlsys_home)
    except BaseException:
        print(f"\n##### Airflow cluster logs ({cluster.home}) #####\n{cluster.format_logs(lines=150)}")
        raise

    runs = _mlflow_runs(mlsys_home)
    retries = sum(t["try_number"] - 1 for t in tis.values()) + sum(t["try_number"] - 1 for t in tis2.values())
    expected = {n: v[:1] for n, v in after_clean["datasets"].items()}
    lost = sum(len(set(v) - set(after_faulted["datasets"].get(n, []))) for n, v in expected.items())
    duplicated = sum(max(len(v) - 1, 0) for v in after_clean["datasets"].values())
    killed_runs = [r for r in runs if r[1] == faulted and r[2] == TASK and r[3] == "1"]
    span = [datetime.fromisoformat(tis2[TASK][k]) for k in ("start_date", "end_date")]
    print(f"\nscenario celery-worker-sigkill: faults=1 retries={retries} lost={lost} duplicated={duplicated}"
          f"  (seed {seed}: worker killed {delay:.1f}s into {TASK}'s stage, {len(killed)} processes;"
          f" heartbeat timeout {HEARTBEAT_TIMEOUT_S}s; killed try's MLflow run: "
          f"{[r[0] for r in killed_runs] or 'none opened'}; run succeeded {recovered_s:.0f}s after the kill;"
          f" an uninterrupted {TASK} takes {(span[1] - span[0]).total_seconds():.0f}s;"
          f" total {time.monotonic() - t0:.0f}s)")

    # Airflow noticed the dead worker by the missing heartbeat and retried label on the new worker
    assert {t for t in tis} == dag_tasks and all(t["state"] == "success" for t in tis.values())
    assert tis[TASK]["try_number"] >= 2, f"{TASK} was not retried: {tis[TASK]}"
    assert heartbeat_timeouts >= 1, "the scheduler logged no heartbeat timeout for label"
    assert celery_id and f"execute_workload[{celery_id}] received" in new_log, (
        "the retried label did not run on the new worker")
    assert run2["state"] == "success" and all(t["try_number"] == 1 for t in tis2.values()), tis2

    # the datasets are an uninterrupted run's: one version each, pointers on them, one snapshot
    assert (lost, duplicated) == (0, 0)
    assert after_faulted["orphans"] == [], "a killed write left a data file without metadata"
    assert all(len(v) == 1 for v in after_faulted["datasets"].values()), after_faulted["datasets"]
    for name, (version, _) in ((k.split("@")[0], v) for k, v in after_faulted["pointers"].items()):
        assert [version] == after_faulted["datasets"][name]
    assert "comments_labeled@validated" in after_faulted["pointers"]
    assert len(after_faulted["snapshots"]) == 1
    assert after_clean == after_faulted, "the uninterrupted run wrote a new version or moved a pointer"

    # MLflow: each task finished once per run, the killed try's run is FAILED, nothing RUNNING
    assert not [r for r in runs if r[0] == "RUNNING"], f"MLflow runs left RUNNING: {runs}"
    for run_id in (faulted, clean):
        finished = sorted(task for status, rid, task, _ in runs if rid == run_id and status == "FINISHED")
        assert finished == sorted(dag_tasks), f"{run_id}: finished task runs {finished}"
    assert all(r[0] == "FAILED" for r in killed_runs), killed_runs
    assert len([r for r in runs if r[0] == "FAILED"]) == len(killed_runs), runs
