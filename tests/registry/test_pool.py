"""Promotion is one critical section across DAGs: every evaluate task runs in the one-slot pool, and the pool exists.

The pool is created through a real Airflow API server (``airflow api-server`` on a fresh SQLite home), as
``mlsys up``/``mlsys demo`` create it; docker-compose's init creates it with ``airflow pools set``
(tests/test_compose.py). ``airflow dags test`` ignores pools, so the gate's compare-and-set guards that path.
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlsys.bench.harness import free_port
from mlsys.registry.gate import PROMOTION_POOL, PROMOTION_POOL_DESCRIPTION

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _dag(path: Path):
    from airflow.sdk import DAG

    (dag,) = [obj for obj in runpy.run_path(str(path)).values() if isinstance(obj, DAG)]
    return dag


@pytest.mark.parametrize("dag_file", ["mlsys_training.py", "mlsys_model_selection.py"])
def test_every_evaluate_task_runs_in_the_promotion_pool(dag_file):
    dag = _dag(REPO / "dags" / dag_file)
    evaluate = [t for t in dag.tasks if t.task_id.startswith("evaluate")]
    assert evaluate, f"{dag.dag_id} has no evaluate task"
    assert {t.task_id: t.pool for t in evaluate} == {t.task_id: PROMOTION_POOL for t in evaluate}
    assert all(t.pool_slots == 1 for t in evaluate)
    assert all(t.pool != PROMOTION_POOL for t in dag.tasks if t not in evaluate)  # nothing else waits on it


def test_only_the_evaluate_tasks_promote():
    """Every DAG task that runs the evaluate stage is one of the pooled ones (no promotion outside the pool)."""
    sources = {p.name: p.read_text() for p in (REPO / "dags").glob("*.py")}
    promoting = sorted(name for name, text in sources.items() if 'run_in_task("evaluate"' in text)
    assert promoting == ["mlsys_model_selection.py", "mlsys_training.py"]


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    """``airflow api-server`` on a fresh AIRFLOW_HOME (SQLite); yields an AirflowClient logged in as admin."""
    from mlsys.airflow_client import AirflowClient

    home = tmp_path_factory.mktemp("airflow-home")
    (home / "dags").mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env |= {"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"), "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    log = home / "api-server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN / "airflow"), "api-server", "--port", str(port)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    client = AirflowClient(f"http://127.0.0.1:{port}", home / "simple_auth_manager_passwords.json.generated")
    try:
        deadline = time.monotonic() + 180
        while not client.healthy():
            if proc.poll() is not None:
                pytest.fail(f"airflow api-server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"airflow api-server not up within 180 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield client
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ensure_pool_creates_the_pool_once_and_keeps_it_at_its_slots(api_server):
    client = api_server
    created = client.ensure_pool("some_pool", 1, "one at a time")
    assert (created["name"], created["slots"], created["description"]) == ("some_pool", 1, "one at a time")
    again = client.ensure_pool("some_pool", 1, "one at a time")  # 409 from the API: it exists, nothing to do
    assert (again["name"], again["slots"]) == ("some_pool", 1)
    client.api("PATCH", "/api/v2/pools/some_pool?update_mask=slots",
               {"name": "some_pool", "slots": 4, "include_deferred": False})  # someone widened it
    assert client.ensure_pool("some_pool", 1, "one at a time")["slots"] == 1
    assert client.api("GET", "/api/v2/pools/some_pool")["slots"] == 1
    names = [p["name"] for p in client.api("GET", "/api/v2/pools")["pools"]]
    assert names.count("some_pool") == 1


def test_the_stack_creates_the_promotion_pool(api_server):
    """`mlsys up` unpauses the DAGs (and `mlsys demo`'s run_scheduled triggers them) only after this."""
    from mlsys.airflow_client import AirflowError
    from mlsys.local import ensure_promotion_pool, unpause

    with pytest.raises(AirflowError, match="HTTP 404"):
        api_server.api("GET", f"/api/v2/pools/{PROMOTION_POOL}")  # a fresh Airflow: a task in it would never run
    stack = SimpleNamespace(client=api_server, alive=lambda: None)
    unpause(stack, dag_ids=())
    ensure_promotion_pool(stack)  # every start of the stack: idempotent
    pool = api_server.api("GET", f"/api/v2/pools/{PROMOTION_POOL}")
    assert (pool["slots"], pool["description"]) == (1, PROMOTION_POOL_DESCRIPTION)
