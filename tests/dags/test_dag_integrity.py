"""Every DAG parses, is documented and safe to retry, times out if it hangs, and stays light at parse time.

Each file is imported in a fresh interpreter, so a heavy import anywhere in
its import chain (torch, mlflow, pandas, ...) is seen, and its parse time is
measured without the cost of importing Airflow itself.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
HEAVY = ["torch", "mlflow", "pandas", "snorkel", "great_expectations", "sklearn", "pyarrow", "numpy", "matplotlib"]
PARSE_BUDGET_S = 1.0
MAX_TASK_TIMEOUT_S = 6 * 3600  # every task has an execution_timeout, and none waits longer than this

PROBE = r"""
import json, runpy, sys, time
import airflow.sdk  # paid once by every DAG processor; not part of a file's parse time
from airflow.sdk import DAG
sys.path.insert(0, sys.argv[2])
before = set(sys.modules)
t = time.perf_counter()
ns = runpy.run_path(sys.argv[1])
elapsed = time.perf_counter() - t
dags = {}
for obj in ns.values():
    if isinstance(obj, DAG):
        dags[obj.dag_id] = {
            "tags": sorted(obj.tags), "doc_md": obj.doc_md or "", "params": {k: obj.params.get_param(k).description or "" for k in obj.params},
            "tasks": {t.task_id: {"owner": t.owner, "retries": t.retries,
                                  "execution_timeout_s": t.execution_timeout and t.execution_timeout.total_seconds()}
                      for t in obj.tasks},
            "schedule": str(obj.schedule), "catchup": obj.catchup,
        }
print(json.dumps({"elapsed": elapsed, "new_modules": sorted(set(sys.modules) - before), "dags": dags}))
"""


def _parse(path: Path) -> dict:
    env = dict(os.environ, AIRFLOW__CORE__LOAD_EXAMPLES="False", PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, "-c", PROBE, str(path), str(path.parent)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, f"{path.name} failed to import:\n{out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=DAG_FILES, ids=lambda p: p.name)
def parsed(request):
    return request.param, _parse(request.param)


def test_there_are_dags():
    assert {p.stem for p in DAG_FILES} >= {"mlsys_data", "mlsys_training", "mlsys_batch_inference"}


def test_parses_fast_and_light(parsed, record_property):
    path, info = parsed
    record_property(f"parse_s[{path.name}]", round(info["elapsed"], 4))
    print(f"\nparse time {path.name}: {info['elapsed'] * 1000:.1f} ms")
    heavy = [m for m in info["new_modules"] if m.split(".")[0] in HEAVY]
    assert not heavy, f"{path.name} imports heavy modules at parse time: {sorted({m.split('.')[0] for m in heavy})}"
    assert info["elapsed"] < PARSE_BUDGET_S, f"{path.name} took {info['elapsed']:.2f} s to parse"


def test_dags_are_documented_and_retried(parsed):
    path, info = parsed
    assert info["dags"], f"{path.name} defines no DAG"
    for dag_id, dag in info["dags"].items():
        assert dag["tags"], f"{dag_id} has no tags"
        assert "mlsys" in dag["tags"]
        assert len(dag["doc_md"].strip()) > 100, f"{dag_id} needs a doc_md that tells a user what it does"
        assert dag["catchup"] is False
        for task_id, task in dag["tasks"].items():
            assert task["owner"] and task["owner"] != "airflow", f"{dag_id}.{task_id} has no owner"
            assert task["retries"] >= 2, f"{dag_id}.{task_id} has retries={task['retries']}; use at least 2"
            timeout = task["execution_timeout_s"]
            assert timeout and 0 < timeout <= MAX_TASK_TIMEOUT_S, (
                f"{dag_id}.{task_id} has execution_timeout={timeout}; a hung task must fail (and retry) within "
                f"{MAX_TASK_TIMEOUT_S / 3600:g} h, not hold a worker forever")
        for name, description in dag["params"].items():
            assert description, f"{dag_id} param {name!r} has no description for the trigger form"


def test_first_dag_runs_nightly_and_the_rest_follow_assets():
    data = _parse(REPO / "dags" / "mlsys_data.py")["dags"]["mlsys_data"]
    assert data["schedule"] == "0 2 * * *"
    training = _parse(REPO / "dags" / "mlsys_training.py")["dags"]["mlsys_training"]
    assert "comments_labeled" in training["schedule"]
    batch = _parse(REPO / "dags" / "mlsys_batch_inference.py")["dags"]["mlsys_batch_inference"]
    assert "champion_model" in batch["schedule"]


def test_dagbag_has_no_import_errors(tmp_path):
    """The real loader Airflow's DAG processor uses, on a migrated metadata DB."""
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"), AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"))
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    out = subprocess.run([airflow, "dags", "list-import-errors", "--local", "-o", "json"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    errors = _json_line(out.stdout)
    assert errors == [], f"import errors: {errors}"
    listed = subprocess.run([airflow, "dags", "list", "--local", "-o", "json"], env=env, capture_output=True, text=True, timeout=300)
    ids = {d["dag_id"] for d in _json_line(listed.stdout)}
    assert ids >= {"mlsys_data", "mlsys_training", "mlsys_batch_inference"}


def _json_line(stdout: str):
    """The JSON array the CLI prints, among Airflow's warning lines."""
    return json.loads(next(line for line in reversed(stdout.splitlines()) if line.startswith("[")))
