"""Scale-out: the data DAG on Airflow with PostgreSQL, the CeleryExecutor, Redis and a Celery worker.

This is the docker-compose deployment without Docker. The PostgreSQL
(127.0.0.1:5432) and Redis (127.0.0.1:6379) servers must already run; if one
does not, the test FAILS and says how to start it. In a temp AIRFLOW_HOME, on
a fresh database of its own and a Celery queue of its own, it starts
``airflow api-server``, ``scheduler``, ``dag-processor`` and
``celery worker`` as subprocesses, triggers the DAG through the REST API and
checks that the run and every task succeeded, and that each task went through
Celery: queued on the worker's queue, received and finished by the worker, and
recorded as SUCCESS in the Celery result backend.

Run:  .venv/bin/python -m pytest tests/e2e/test_scaleout.py -x -q -s

``MLSYS_SCALEOUT_DAGS_FOLDER`` and ``MLSYS_SCALEOUT_DAG_ID`` run another DAG
through the same checks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.e2e.airflow_cluster import REPO_ROOT, AirflowCluster, require_servers_or_fail

DAGS_FOLDER = Path(os.environ.get("MLSYS_SCALEOUT_DAGS_FOLDER", REPO_ROOT / "dags"))
DAG_ID = os.environ.get("MLSYS_SCALEOUT_DAG_ID", "mlsys_data")
RUN_TIMEOUT_S = 480


@pytest.mark.scaleout
def test_dag_runs_on_celery_workers(show_cluster_logs_on_failure, tmp_path):
    require_servers_or_fail()  # PostgreSQL and Redis must run: FAIL, never skip, without them
    t0 = time.monotonic()
    mlsys_home = tmp_path / "mlsys-home"
    mlsys_home.mkdir()
    cluster = AirflowCluster(
        home=tmp_path / "airflow",
        dags_folder=DAGS_FOLDER,
        plugins_folder=REPO_ROOT / "plugins",
        parallelism=4,
        worker_concurrency=2,
        extra_env={
            "MLSYS_HOME": str(mlsys_home),
            "MLFLOW_DISABLE_TELEMETRY": "true",
        },
        # everything of mlsys under the temp MLSYS_HOME
        drop_env=("MLSYS_STORAGE_URI", "MLFLOW_TRACKING_URI", "MLSYS_ARTIFACT_URI"),
    )
    show_cluster_logs_on_failure(cluster)

    with cluster:
        cluster.wait_for_dag(DAG_ID)
        dag_tasks = {t["task_id"] for t in cluster.api("GET", f"/api/v2/dags/{DAG_ID}/tasks")["tasks"]}
        t_run = time.monotonic()
        run_id = cluster.trigger(DAG_ID)
        run = cluster.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT_S)
        run_s = time.monotonic() - t_run
        tis = cluster.task_instances(DAG_ID, run_id)
        celery = cluster.celery_evidence(DAG_ID, run_id)

        states = {ti["task_id"]: ti["state"] for ti in tis}
        if run["state"] != "success" or any(s != "success" for s in states.values()):
            failed = [ti for ti in tis if ti["state"] != "success"]
            logs = "\n\n".join(
                f"----- task log: {ti['task_id']} (try {ti['try_number']}, state {ti['state']}) -----\n"
                + cluster.task_log(DAG_ID, run_id, ti["task_id"], max(ti["try_number"], 1), ti["map_index"])
                for ti in failed
            )
            pytest.fail(f"run {run_id} of {DAG_ID} ended {run['state']!r}; task states: {states}\n\n{logs}")

    print(
        f"\n[scaleout] {DAG_ID}: {len(tis)} task instances on queue {cluster.queue}; "
        f"startup {cluster.timings['startup']:.0f}s (db migrate {cluster.timings['db_migrate']:.0f}s), "
        f"run {run_s:.0f}s, total {time.monotonic() - t0:.0f}s"
    )

    assert tis, "the run has no task instances"
    assert {ti["task_id"] for ti in tis} == dag_tasks, "every task of the DAG ran in this run"
    assert all(s == "success" for s in states.values()), states

    # Through Celery: each task instance was sent to this cluster's own queue,
    # which only our `airflow celery worker` consumes ...
    assert {ti["queue"] for ti in tis} == {cluster.queue}
    assert all(ti["pid"] for ti in tis), "every task reports the pid of the process that ran it"
    # ... under a Celery task id the scheduler's CeleryExecutor assigned, which
    # the worker received and finished, and the result backend recorded.
    for key, ev in celery.items():
        assert ev["celery_task_id"], f"{key}: no Celery task id (external_executor_id)"
        assert ev["worker_received"], f"{key}: the Celery worker never received {ev['celery_task_id']}"
        assert ev["worker_succeeded"], f"{key}: the Celery worker did not finish {ev['celery_task_id']}"
        assert ev["result_backend_state"] == "SUCCESS", f"{key}: Celery result backend says {ev}"

    # The tasks did their work under the temp MLSYS_HOME.
    assert any(mlsys_home.iterdir()), f"nothing written under MLSYS_HOME={mlsys_home}"
