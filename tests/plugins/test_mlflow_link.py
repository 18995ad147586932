"""The "View in MLflow" global extra link, checked through a real Airflow.

A temp AIRFLOW_HOME (SQLite) loads ``plugins/mlflow_link.py``; ``airflow dags
test`` runs a DAG whose tasks push (or do not push) the ``mlflow_run_url``
XCom; then a real ``airflow api-server`` answers the links route the UI uses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from mlsys.bench.harness import free_port

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAG_ID = "mlflow_link_probe"
RUN_URL = "http://localhost:5000/#/experiments/1/runs/0123456789abcdef"

DAG_SOURCE = f'''
from airflow.sdk import dag, get_current_context, task


@dag(dag_id="{DAG_ID}", schedule=None)
def probe():
    @task
    def logs_to_mlflow():
        get_current_context()["ti"].xcom_push(key="mlflow_run_url", value="{RUN_URL}")

    @task
    def no_mlflow():
        return None

    @task
    def bad_url():
        get_current_context()["ti"].xcom_push(key="mlflow_run_url", value="javascript:alert(1)")

    logs_to_mlflow() >> no_mlflow() >> bad_url()


probe()
'''


def _airflow(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        [AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"airflow {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _request(url: str, *, token: str | None = None, data: dict | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body else "GET")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow_home")
    dags = home / "dags"
    dags.mkdir()
    (dags / "mlflow_link_probe.py").write_text(DAG_SOURCE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
    )
    _airflow(env, "db", "migrate")
    _airflow(env, "dags", "test", DAG_ID)
    return env


@pytest.fixture(scope="module")
def api(airflow_env):
    """A real API server on a free port, and a JWT for the admin user."""
    port = free_port()
    home = Path(airflow_env["AIRFLOW_HOME"])
    log = open(home / "api-server.log", "w")
    proc = subprocess.Popen(
        [AIRFLOW, "api-server", "--port", str(port), "--host", "127.0.0.1", "--workers", "1", "--apps", "core"],
        env=airflow_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (home / "api-server.log").read_text()[-3000:]
            try:
                _request(f"{base}/api/v2/monitor/health")
                break
            except OSError:
                assert time.monotonic() < deadline, "api-server not healthy within 60 s"
                time.sleep(0.3)
        passwords = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
        token = _request(f"{base}/auth/token", data={"username": "admin", "password": passwords["admin"]})
        yield base, token["access_token"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: only what this fixture started
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_plugin_is_listed(airflow_env):
    plugins = json.loads(_airflow(airflow_env, "plugins", "--output", "json"))
    ours = [p for p in plugins if p["name"] == "mlflow_link"]
    assert ours, plugins
    assert ours[0]["global_operator_extra_links"] == ["<mlflow_link.MLflowRunLink object>"]


def test_links_route_resolves_the_pushed_url(api):
    base, token = api
    runs = _request(f"{base}/api/v2/dags/{DAG_ID}/dagRuns", token=token)["dag_runs"]
    assert len(runs) == 1 and runs[0]["state"] == "success", runs
    run_id = urllib.parse.quote(runs[0]["dag_run_id"], safe="")

    def links(task_id: str) -> dict:
        url = f"{base}/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/links"
        return _request(url, token=token)["extra_links"]

    assert links("logs_to_mlflow") == {"View in MLflow": RUN_URL}
    # get_link returned "", which the API turns into null: the UI shows no usable link.
    assert links("no_mlflow") == {"View in MLflow": None}
    assert links("bad_url") == {"View in MLflow": None}


def test_get_link_returns_empty_string_without_xcom(airflow_env):
    """The link's own return value, against the same migrated DB, via plugins_manager."""
    code = f"""
from airflow import plugins_manager
from airflow.models.dagrun import DagRun
from airflow.models.taskinstancekey import TaskInstanceKey
from airflow.utils.session import create_session

(link,) = [l for l in plugins_manager.get_global_operator_extra_links() if l.name == "View in MLflow"]
with create_session() as s:
    run_id = s.query(DagRun.run_id).filter(DagRun.dag_id == "{DAG_ID}").scalar()
print(repr(link.get_link(None, ti_key=TaskInstanceKey("{DAG_ID}", "logs_to_mlflow", run_id))))
print(repr(link.get_link(None, ti_key=TaskInstanceKey("{DAG_ID}", "no_mlflow", run_id))))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], env=airflow_env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-2:] == [repr(RUN_URL), repr("")]
