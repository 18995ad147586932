"""`mlsys up` (what `make up` runs): Airflow standalone and the MLflow UI on the embedded state."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mlsys.bench.harness import free_port

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


def _get(url: str, token: str | None = None, timeout: float = 5):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read().decode()


def _wait(fn, what: str, timeout: float, proc: subprocess.Popen, log: Path):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`mlsys up` exited with {proc.returncode} while waiting for {what}:\n{log.read_text()[-4000:]}")
        try:
            result = fn()
            if result:
                return result
        except Exception as exc:  # the servers are still starting
            last = exc
        time.sleep(1)
    pytest.fail(f"{what} not ready after {timeout} s (last error: {last}):\n{log.read_text()[-4000:]}")


def test_up_serves_airflow_with_project_dags_and_mlflow_on_the_same_state(tmp_path):
    api_port, mlflow_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLSYS_", "MLFLOW_TRACKING"))}
    env |= {
        "MLSYS_HOME": str(tmp_path),
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__WORKERS": "1",
        "MLSYS_MLFLOW_UI_URL": f"http://127.0.0.1:{mlflow_port}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    # Something to see in MLflow: one CLI stage run on the same state.
    subprocess.run([str(BIN / "mlsys"), "ingest", "--gold-size", "50"], env=env, check=True, capture_output=True, timeout=300)

    log = tmp_path / "up.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "mlsys"), "up"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        _wait(lambda: _get(f"{mlflow_url}/health")[0] == 200, "MLflow UI", 120, proc, log)
        _, body = _get(f"{mlflow_url}/ajax-api/2.0/mlflow/experiments/search?max_results=10")
        assert "mlsys-cli" in {e["name"] for e in json.loads(body)["experiments"]}

        api = f"http://127.0.0.1:{api_port}"
        _wait(lambda: _get(f"{api}/api/v2/version")[0] == 200, "Airflow API server", 180, proc, log)
        pw_file = tmp_path / "airflow" / "simple_auth_manager_passwords.json.generated"
        _wait(pw_file.is_file, "admin password file", 60, proc, log)
        password = json.loads(pw_file.read_text())["admin"]
        req = urllib.request.Request(f"{api}/auth/token", data=json.dumps({"username": "admin", "password": password}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            token = json.loads(resp.read())["access_token"]

        def dags():
            ids = {d["dag_id"] for d in json.loads(_get(f"{api}/api/v2/dags", token)[1])["dags"]}
            return ids if {"mlsys_data", "mlsys_training", "mlsys_batch_inference"} <= ids else None

        assert _wait(dags, "the project's DAGs in the Airflow UI", 180, proc, log)
        _, home = _get(f"{api}/")
        assert "<html" in home.lower()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]
