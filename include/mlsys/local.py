"""The embedded deployment on one machine: ``mlsys demo`` and ``mlsys up``.

Everything lives under ``$MLSYS_HOME`` (default ``./.mlsys``): Airflow's SQLite
database, MLflow's SQLite database and artifacts, and the datasets.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlsys.settings import REPO_ROOT, settings

PIPELINE = ("mlsys_data", "mlsys_training", "mlsys_batch_inference")


def airflow_env() -> dict[str, str]:
    """The environment for Airflow commands on the embedded state (existing values win)."""
    s = settings()
    env = dict(os.environ)
    # `airflow standalone` starts its components as `airflow ...` from PATH: use this venv's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("MLSYS_HOME", str(s.home))
    env.setdefault("AIRFLOW_HOME", str(s.home / "airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO_ROOT / "dags"))
    env.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO_ROOT / "plugins"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__CORE__PARALLELISM", "4")
    env.setdefault("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "120")
    env.setdefault("AIRFLOW__CORE__DAG_FILE_PROCESSOR_TIMEOUT", "180")
    env.setdefault("MLFLOW_TRACKING_URI", s.tracking_uri)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("GIT_PYTHON_REFRESH", "quiet")
    return env


def _airflow(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).with_name("airflow"))
    return subprocess.run([exe, *args], env=env, check=check)


def run_pipeline(env: dict[str, str] | None = None, dags: tuple[str, ...] = PIPELINE) -> None:
    """Run each DAG of the pipeline through Airflow (``airflow dags test``), in Asset order."""
    env = env or airflow_env()
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    _airflow("db", "migrate", env=env)
    for dag_id in dags:
        print(f"\n=== airflow dags test {dag_id} ===", flush=True)
        started = time.perf_counter()
        # `dags test` exits non-zero when the DAG run fails.
        done = _airflow("dags", "test", dag_id, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"DAG {dag_id} failed; see its task logs above and under {env['AIRFLOW_HOME']}/logs")
        print(f"=== {dag_id}: success in {time.perf_counter() - started:.0f} s ===", flush=True)


def demo(args: object = None) -> int:
    started = time.perf_counter()
    env = airflow_env()
    run_pipeline(env)
    from mlflow import MlflowClient

    from mlsys.tracking import configure

    configure()
    s = settings()
    mv = MlflowClient().get_model_version_by_alias(s.model_name, "champion")
    print(
        f"\nThe nightly pipeline ran through Airflow in {time.perf_counter() - started:.0f} s.\n"
        f"  registered model : {s.model_name} version {mv.version} (alias 'champion')\n"
        f"  model URI        : models:/{s.model_name}@champion\n"
        f"  state            : {s.home}\n"
        f"Run `make up` to open the Airflow UI (http://localhost:8080) and the MLflow UI ({s.mlflow_ui_url})."
    )
    return 0


def up(args: object = None) -> int:
    """Airflow standalone + MLflow UI, until Ctrl-C."""
    env = airflow_env()
    s = settings()
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    port = s.mlflow_ui_url.rsplit(":", 1)[-1].split("/")[0] if s.mlflow_ui_url.count(":") == 2 else "5000"
    mlflow_ui = subprocess.Popen(
        [str(bindir / "mlflow"), "server", "--backend-store-uri", s.tracking_uri,
         "--default-artifact-root", s.artifact_uri, "--host", "127.0.0.1", "--port", port],
        env=env, start_new_session=True,
    )
    airflow = subprocess.Popen([str(bindir / "airflow"), "standalone"], env=env, start_new_session=True)
    pw = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    api_port = env.get("AIRFLOW__API__PORT", "8080")
    print(f"Airflow UI: http://localhost:{api_port} (user admin, password in {pw})\nMLflow UI:  {s.mlflow_ui_url}\nCtrl-C stops both.", flush=True)
    try:
        while airflow.poll() is None and mlflow_ui.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        # SIGINT lets `airflow standalone` stop its children; SIGTERM would orphan them.
        for proc in (airflow, mlflow_ui):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        for proc in (airflow, mlflow_ui):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    return 0
