"""Fault injection on the real stack: the MLflow tracking server is SIGKILLed while ``mlsys_training``'s ``train``
task is inside its MLflow run, stays down while that try fails, and is started again on the same port and SQLite
backend; Airflow's retries finish the chain. The end state equals the uninterrupted run's (``clean_run``, which
used SQLite directly: both keep the same ``mlflow.db`` tables), with nothing lost, duplicated or left RUNNING.

The tasks talk to the server over HTTP (``MLFLOW_TRACKING_URI=http://127.0.0.1:<port>``); the server is the test's
own ``mlflow server`` in its own process group (``Stack``'s would take its backend from ``MLFLOW_TRACKING_URI``,
the http URL itself). The tasks' MLflow client retries a refused connection 3 times (about 7 s in all) instead of
MLflow's default 7 times over about 4 minutes, so the outage (5 s down, then the server's start-up) fails the
try and Airflow's retry (1 s delay, 2 retries) is what recovers, as it would after a longer outage in production.

The kill lands at a random point of train's run (0-3 s after it opened: logging inputs, training epochs, logging
the model); reproduce one with ``MLSYS_FAULT_SEED=<seed in the summary line>``.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from tests.faults.stack_state import (
    MlflowServer,
    mlflow_runs_per_try,
    retries,
    running_stack,
    stack_env,
    state,
    task_instances,
    tracked_tasks,
)

pytestmark = pytest.mark.e2e

SCENARIO = "mlflow-server-killed"
SEED = int(os.environ.get("MLSYS_FAULT_SEED") or random.SystemRandom().randrange(10**6))
KILL_DELAY_S = random.Random(SEED).uniform(0.0, 3.0)  # after train's run opened: a random point of it
OUTAGE_S = 5.0  # from the kill to the restart; the server then takes its start-up time (10-20 s) to answer
WATCH_TIMEOUT_S = 360.0


def _train_run_open(home: Path) -> bool:
    """The train task's MLflow run exists and is RUNNING: the task is inside its run."""
    try:
        db = sqlite3.connect(f"file:{home / 'mlflow.db'}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("select count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
                              "where t.key = 'airflow.task_id' and t.value = 'train' and r.status = 'RUNNING'"
                              ).fetchone()[0] > 0
        finally:
            db.close()
    except sqlite3.Error:  # the tables are not there yet, or the file is locked for a moment
        return False


def _train_ti(client) -> dict | None:
    for run in client.runs("mlsys_training"):
        for ti in client.task_instances("mlsys_training", run["dag_run_id"]):
            if ti["task_id"] == "train":
                return ti
    return None


def _kill_during_train(stack, server: MlflowServer, home: Path, out: dict) -> None:
    """The fault: wait for train's run to be open, then ``KILL_DELAY_S`` more, SIGKILL the server, start it again
    ``OUTAGE_S`` later."""
    from mlsys.airflow_client import AirflowClient

    try:
        client = AirflowClient(stack.api_url, stack.client.password_file)
        give_up = time.monotonic() + WATCH_TIMEOUT_S
        while True:
            if time.monotonic() > give_up:
                raise TimeoutError(f"train was not seen running inside its MLflow run within {WATCH_TIMEOUT_S} s")
            ti = _train_ti(client)
            if ti is not None and ti["state"] == "running" and _train_run_open(home):
                break
            if ti is not None and ti["state"] in ("success", "failed"):
                raise RuntimeError(f"train ended ({ti['state']}) before the server could be killed")
            time.sleep(0.3)
        time.sleep(KILL_DELAY_S)
        killed_try = ti["try_number"]
        out["train_at_kill"] = (_train_ti(client) or {}).get("state")
        server.kill()
        killed = time.monotonic()
        out.update(killed_try=killed_try, faults=1)
        time.sleep(OUTAGE_S)
        server.start()
        out["restart_s"] = round(server.wait_healthy(timeout=120), 1)
        out["outage_s"] = round(time.monotonic() - killed, 1)
        out["train_after_outage"] = {k: (_train_ti(client) or {}).get(k) for k in ("state", "try_number")}
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        out["error"] = exc


@pytest.fixture(scope="module")
def faulted(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("mlflow-killed-home")
    server = MlflowServer(home)
    extra = {
        "MLFLOW_TRACKING_URI": server.url, "MLSYS_MLFLOW_UI_URL": server.url,
        "MLSYS_ARTIFACT_URI": str(home / "mlartifacts"),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    }
    fault: dict = {}
    started = time.monotonic()
    with stack_env(home, extra=extra):
        try:
            server.start()
            server.wait_healthy(timeout=120)
            from mlsys.local import run_scheduled

            with running_stack(home, 540, f"scenario {SCENARIO}") as stack:
                killer = threading.Thread(target=_kill_during_train, args=(stack, server, home, fault), daemon=True)
                killer.start()
                try:
                    run_scheduled(stack)
                finally:
                    killer.join(timeout=WATCH_TIMEOUT_S)
                tis = task_instances(stack.client)
        finally:
            server.stop()
    if "error" in fault:
        raise AssertionError(f"the fault was not injected as planned: {fault['error']!r}") from fault["error"]
    return {"home": home, "state": state(home), "task_instances": tis, "fault": fault,
            "seconds": time.monotonic() - started}


def test_the_server_went_down_mid_train_and_airflow_retried_train(faulted):
    fault, tis = faulted["fault"], faulted["task_instances"]
    assert fault.get("faults") == 1, fault
    train = [ti for ti in tis if ti["dag_id"] == "mlsys_training" and ti["task_id"] == "train"]
    assert len(train) == 1 and train[0]["state"] == "success", train
    assert train[0]["try_number"] > fault["killed_try"], f"train's try broke by the outage was not retried: {fault}"
    assert all(ti["state"] == "success" for ti in tis), [ti for ti in tis if ti["state"] != "success"]


def test_end_state_equals_the_uninterrupted_run(clean_run, faulted):
    clean, got = clean_run["state"], faulted["state"]
    per_try = mlflow_runs_per_try(got, faulted["task_instances"], tracked_tasks(clean))
    lost = sum(len(set(v) - set(got["datasets"].get(k, []))) for k, v in clean["datasets"].items())
    duplicated = sum(len(set(v) - set(clean["datasets"].get(k, []))) for k, v in got["datasets"].items())
    lost += len(per_try["lost"])
    duplicated += len(per_try["duplicated"]) + max(sum(got["model_versions"].values())
                                                   - sum(clean["model_versions"].values()), 0)
    print(f"\nscenario {SCENARIO}: faults={faulted['fault'].get('faults', 0)} "
          f"retries={retries(faulted['task_instances'])} lost={lost} duplicated={duplicated} "
          f"(seed {SEED}: killed {KILL_DELAY_S:.1f} s into train's run, down {faulted['fault'].get('outage_s')} s "
          f"of which {faulted['fault'].get('restart_s')} s start-up; "
          f"{faulted['seconds']:.0f} s in all)")
    assert got["datasets"] == clean["datasets"], "a dataset version was lost or duplicated"
    assert got["pointers"] == clean["pointers"], "a dataset pointer differs from the uninterrupted run's"
    assert got["snapshot_pointers"] == clean["snapshot_pointers"]
    assert got["model_versions"] == clean["model_versions"], "a model version was lost or registered twice"
    assert got["aliases"] == clean["aliases"]
    assert got["finished_per_task"] == clean["finished_per_task"], "a task has a missing or second finished run"
    assert per_try == {"duplicated": [], "lost": [], "orphans": [], "running": []}
    assert (lost, duplicated) == (0, 0)


def test_the_broken_try_left_a_failed_run_not_a_running_one(faulted):
    got = faulted["state"]
    assert got["running"] == 0
    train_runs = sorted((r["try_number"], r["status"]) for r in got["mlflow_runs"] if r["task_id"] == "train")
    killed = str(faulted["fault"]["killed_try"])
    assert (killed, "FAILED") in train_runs, train_runs  # the try the outage broke
    assert train_runs[-1][1] == "FINISHED", train_runs
