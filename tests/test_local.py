"""`mlsys up` (what `make up` runs): Airflow standalone and the MLflow UI on the embedded state."""

import json
import os
import signal
import socket
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


def _processes_with(env_entry: str) -> list[str]:
    """Command lines of the live processes whose environment holds ``env_entry`` (the stack's children)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and env_entry.encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:  # gone, or not ours to read
            continue
    return found


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
        # as `make up &` or a supervisor starts it: SIGINT ignored, stopped by SIGTERM
        proc = subprocess.Popen([str(BIN / "mlsys"), "up"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
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

        def unpaused():  # nightly means nightly: `mlsys up` unpauses every mlsys DAG
            found = json.loads(_get(f"{api}/api/v2/dags?dag_id_pattern=mlsys", token)[1])["dags"]
            return {d["dag_id"]: d["is_paused"] for d in found} if not any(d["is_paused"] for d in found) else None

        assert len(_wait(unpaused, "the DAGs unpaused", 120, proc, log)) == 5
        os.kill(proc.pid, signal.SIGTERM)  # what `timeout`, a supervisor or `docker stop` sends
        stopped = time.monotonic()
        proc.wait(timeout=45)
        assert time.monotonic() - stopped < 35, "SIGTERM must stop `mlsys up` and its children within 30 s"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert _processes_with(f"MLSYS_HOME={tmp_path}") == [], "processes of the stack are still running"
    for port in (api_port, mlflow_port):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))  # free for the next `make up`
