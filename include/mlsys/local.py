"""The embedded deployment on one machine: ``mlsys demo`` and ``mlsys up``.

Both run the real thing: ``airflow standalone`` (API server, scheduler, DAG
processor, triggerer with the LocalExecutor), so task logs, durations, tries and
Asset events are what a user sees in the UI afterwards.

Everything lives under ``$MLSYS_HOME`` (default ``./.mlsys``): Airflow's SQLite
database, MLflow's SQLite database and artifacts, and the datasets.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
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
    # Task runners reach the API server's execution API: on its port, whichever it is.
    env.setdefault("AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                   f"http://localhost:{env.get('AIRFLOW__API__PORT', '8080')}/execution/")
    env.setdefault("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "120")
    env.setdefault("AIRFLOW__CORE__DAG_FILE_PROCESSOR_TIMEOUT", "180")
    env.setdefault("MLFLOW_TRACKING_URI", s.tracking_uri)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("GIT_PYTHON_REFRESH", "quiet")
    from mlsys.serving.online.guard import use_local_token

    use_local_token(env, s.home)  # `mlsys serve` and evaluate's POST /reload share $MLSYS_HOME/secrets/serve-token
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


DAGS = (*PIPELINE, "mlsys_model_selection", "mlsys_video_stream")
STOP_TIMEOUT_S = 30


def _reset_sigint() -> None:
    """In a child: take SIGINT's default back (a shell's background job inherits it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Stack:
    """``airflow standalone`` (API server, scheduler, DAG processor, triggerer) and optionally ``mlflow server``
    on the embedded state, each in its own process group, stopped together (SIGINT/SIGTERM, then SIGKILL)."""

    def __init__(self, env: dict[str, str], mlflow_ui: bool = True, log_dir: Path | None = None):
        self.env = env
        self.mlflow_ui = mlflow_ui
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        home = Path(env["AIRFLOW_HOME"])
        self.api_url = f"http://127.0.0.1:{env.get('AIRFLOW__API__PORT', '8080')}"
        from mlsys.airflow_client import AirflowClient

        self.client = AirflowClient(self.api_url, home / "simple_auth_manager_passwords.json.generated")

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.log_dir / f"{name}.log", "w") if self.log_dir else None  # noqa: SIM115 (closed with the process)
        self.procs[name] = subprocess.Popen(argv, env=self.env, start_new_session=True, preexec_fn=_reset_sigint,
                                            stdout=out, stderr=subprocess.STDOUT if out else None)

    def start(self) -> "Stack":
        Path(self.env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        bindir = Path(sys.executable).parent
        if self.mlflow_ui:
            s = settings()
            port = s.mlflow_ui_url.rsplit(":", 1)[-1].split("/")[0] if s.mlflow_ui_url.count(":") == 2 else "5000"
            self._spawn("mlflow", [str(bindir / "mlflow"), "server", "--backend-store-uri", s.tracking_uri,
                                   "--default-artifact-root", s.artifact_uri, "--host", "127.0.0.1", "--port", port])
        self._spawn("airflow", [str(bindir / "airflow"), "standalone"])
        return self

    def alive(self) -> None:
        """Raise if a component has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with code {proc.returncode}"
                                 + (f"; see {self.log_dir / (name + '.log')}" if self.log_dir else ""))

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not self.client.healthy():
            self.alive()
            if time.monotonic() > deadline:
                raise SystemExit(f"the Airflow API server at {self.api_url} did not answer within {timeout:.0f} s")
            time.sleep(1)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGINT to standalone (it stops its children), SIGTERM to MLflow; SIGKILL to any group left after timeout."""
        for name, proc in self.procs.items():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT if name == "airflow" else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group: workers, task runners
            except ProcessLookupError:
                pass
            proc.wait()

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def ensure_promotion_pool(stack: Stack) -> None:
    """The one-slot Airflow pool every evaluate task runs in: one champion promotion at a time, across DAGs."""
    from mlsys.registry.gate import PROMOTION_POOL, PROMOTION_POOL_DESCRIPTION, PROMOTION_POOL_SLOTS

    stack.client.ensure_pool(PROMOTION_POOL, PROMOTION_POOL_SLOTS, PROMOTION_POOL_DESCRIPTION)


def unpause(stack: Stack, dag_ids: tuple[str, ...] = DAGS) -> None:
    ensure_promotion_pool(stack)  # before any DAG runs: a task in a missing pool never starts
    stack.client.wait_for_dags(list(dag_ids), alive=stack.alive)
    for dag_id in dag_ids:
        stack.client.set_paused(dag_id, False)


def run_scheduled(stack: Stack) -> None:
    """Trigger mlsys_data through the REST API and let the scheduler run the rest of the chain by Assets.

    The run takes the logical date of the DAG's pending nightly run, so unpausing does not start a second one.
    """
    from datetime import datetime, timezone

    from mlsys.airflow_client import AirflowError

    client = stack.client
    ensure_promotion_pool(stack)  # before triggering: the chain's evaluate task runs in it
    client.wait_for_dags(list(PIPELINE), alive=stack.alive)
    started = datetime.now(timezone.utc).isoformat()
    pending = (client.dag("mlsys_data") or {}).get("next_dagrun_logical_date")
    try:
        run_id = client.trigger("mlsys_data", logical_date=pending)
    except AirflowError as err:  # a run for that date exists already (the schedule ran it): a fresh manual one
        if "HTTP 409" not in str(err):
            raise
        run_id = client.trigger("mlsys_data")
    unpause(stack, PIPELINE)
    for dag_id in PIPELINE:
        t0 = time.perf_counter()
        if dag_id == "mlsys_data":
            run = client.wait_for_run(dag_id, run_id, timeout=600, alive=stack.alive)
        else:  # started by the Asset its upstream DAG emitted
            run = client.wait_for_run(dag_id, after=started, timeout=600, alive=stack.alive)
        print(f"=== {dag_id}: {run['state']} ({run['dag_run_id']}, {time.perf_counter() - t0:.0f} s) ===", flush=True)


def demo(args: object = None) -> int:
    """The nightly pipeline through a real scheduler: trigger mlsys_data, the Assets run the rest."""
    started = time.perf_counter()
    env = airflow_env()
    s = settings()
    logs = s.home / "logs"
    print(f"starting airflow standalone (logs under {logs}) ...", flush=True)
    with Stack(env, mlflow_ui=False, log_dir=logs) as stack:
        stack.wait_healthy()
        run_scheduled(stack)
    from mlflow import MlflowClient

    from mlsys.tracking import configure

    configure()
    mv = MlflowClient().get_model_version_by_alias(s.model_name, "champion")
    print(
        f"\nThe nightly pipeline ran through Airflow in {time.perf_counter() - started:.0f} s.\n"
        f"  registered model : {s.model_name} version {mv.version} (alias 'champion')\n"
        f"  model URI        : models:/{s.model_name}@champion\n"
        f"  state            : {s.home}\n"
        f"Run `make up` to open the Airflow UI (http://localhost:{env.get('AIRFLOW__API__PORT', '8080')}), where its "
        f"task logs are, and the MLflow UI ({s.mlflow_ui_url})."
    )
    return 0


def up(args: object = None) -> int:
    """Airflow standalone + MLflow UI, the mlsys DAGs unpaused, until Ctrl-C or SIGTERM."""
    env = airflow_env()
    s = settings()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = Stack(env, mlflow_ui=True, log_dir=s.home / "logs").start()
    try:
        pw = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
        print(f"Airflow UI: {stack.api_url} (user admin, password in {pw})\nMLflow UI:  {s.mlflow_ui_url}\n"
              f"Logs:       {s.home / 'logs'}\nServe token: export MLSYS_SERVE_TOKEN_FILE={env.get('MLSYS_SERVE_TOKEN_FILE', '')}"
              f" before `mlsys serve` (its POST /reload needs it)\nCtrl-C (or SIGTERM) stops both.", flush=True)
        while not stop.is_set() and not stack.client.healthy():
            stack.alive()
            stop.wait(1)
        if not stop.is_set() and not getattr(args, "paused", False):
            unpause(stack)
            print(f"DAGs unpaused: {', '.join(DAGS)} (mlsys_data runs nightly at 02:00 UTC)", flush=True)
        while not stop.is_set():
            stack.alive()
            stop.wait(1)
    finally:
        stack.stop()
    return 0


def add_up_arguments(parser) -> None:
    parser.add_argument("--paused", action="store_true",
                        help="leave the DAGs as they are (by default every mlsys DAG is unpaused: nightly means nightly)")
