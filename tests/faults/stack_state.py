"""Shared by the fault-injection scenarios: run the nightly pipeline on the real stack, read back what it left.

- ``pipeline(home, failpoints)``: the whole chain through ``airflow standalone`` (``mlsys.local.Stack`` and
  ``run_scheduled``) on a fresh ``$MLSYS_HOME``; returns its ``state`` and Airflow's task instances.
- ``stack_env`` / ``running_stack``: the same environment and stack, for scenarios that do more than one run.
- ``state(home)``: every dataset version and pointer, snapshot pointer, model version, alias and MLflow run.
- ``mlflow_runs_per_try``: MLflow's task runs checked against Airflow's task instances (one run per try).
- ``MlflowServer``: an ``mlflow server`` of the test's own (its own process group), to kill and restart.
- ``deadline``: every scenario runs under a wall-clock limit (SIGALRM), so none can hang.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mlsys.bench.harness import free_port

DAG_IDS = ("mlsys_data", "mlsys_training", "mlsys_batch_inference")


@contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Raise TimeoutError in the main thread if the block runs longer than ``seconds``."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"{what}: not done within {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextmanager
def stack_env(home: Path, failpoints: tuple[str, ...] = (), extra: dict[str, str] | None = None) -> Iterator[None]:
    """This process's environment for a stack on ``home`` (Airflow and the tasks it starts inherit it)."""
    with pytest.MonkeyPatch.context() as mp:
        for var in list(os.environ):
            if var.startswith(("AIRFLOW", "MLSYS_", "MLFLOW_TRACKING", "MLFLOW_S3", "MLFLOW_HTTP")):
                mp.delenv(var)
        mp.setenv("MLSYS_HOME", str(home))
        mp.setenv("AIRFLOW__API__PORT", str(free_port()))
        mp.setenv("AIRFLOW__API__WORKERS", "1")
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("MLSYS_RETRY_DELAY_S", "1")
        mp.setenv("MLSYS_FAILPOINTS", ",".join(f"{p}=1" for p in failpoints))
        for var, value in (extra or {}).items():
            mp.setenv(var, value)
        yield


@contextmanager
def running_stack(home: Path, timeout: float, what: str) -> Iterator[Any]:
    """``airflow standalone`` on ``home`` (inside ``stack_env``), healthy; the block runs under ``deadline``.

    The deadline is inside the stack, so a timeout still stops every process of it."""
    from mlsys.local import Stack, airflow_env

    with Stack(airflow_env(), mlflow_ui=False, log_dir=home / "logs") as stack, deadline(timeout, what):
        stack.wait_healthy()
        yield stack


def task_instances(client: Any, dag_ids: tuple[str, ...] = DAG_IDS) -> list[dict]:
    """Every task instance of every run of ``dag_ids``: dag_id, run_id, task_id, try_number, state."""
    out = []
    for dag_id in dag_ids:
        for run in client.runs(dag_id):
            for ti in client.task_instances(dag_id, run["dag_run_id"]):
                out.append({"dag_id": dag_id, "run_id": run["dag_run_id"], "task_id": ti["task_id"],
                            "map_index": ti.get("map_index", -1), "try_number": ti["try_number"],
                            "state": ti["state"], "run_state": run["state"]})
    return out


def tries_per_task(tis: list[dict]) -> dict[str, int]:
    """The highest try of each ``dag.task`` over all its runs (what test_killed_tasks compares)."""
    tries: dict[str, int] = {}
    for ti in tis:
        key = f"{ti['dag_id']}.{ti['task_id']}"
        tries[key] = max(tries.get(key, 0), ti["try_number"])
    return tries


def retries(tis: list[dict]) -> int:
    return sum(ti["try_number"] - 1 for ti in tis)


def pipeline(home: Path, failpoints: tuple[str, ...] = (), timeout: float = 480) -> dict:
    """The nightly pipeline through airflow standalone on a fresh home; returns what it left behind."""
    from mlsys.faults import fired
    from mlsys.local import run_scheduled

    with stack_env(home, failpoints):
        with running_stack(home, timeout, f"the pipeline on {home}") as stack:
            run_scheduled(stack)
            tis = task_instances(stack.client)
        return {"home": home, "state": state(home), "tries": tries_per_task(tis), "task_instances": tis,
                "fired": {p: fired(p) for p in failpoints}}


def _pointer_files(folder: Path) -> dict[str, str | None]:
    if not folder.is_dir():
        return {}
    return {f"{d.name}/{p.name}": json.loads(p.read_text()).get("version")
            for d in sorted(folder.iterdir()) if d.is_dir() for p in sorted(d.glob("_*.json"))}


def mlflow_runs(home: Path) -> list[dict]:
    """Every MLflow run in ``$home/mlflow.db`` with its status and Airflow tags."""
    keys = ("airflow.dag_id", "airflow.run_id", "airflow.task_id", "airflow.try_number", "airflow.map_index",
            "mlsys.role")
    db = sqlite3.connect(f"file:{home / 'mlflow.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("select run_uuid, status from runs").fetchall()
        tags: dict[str, dict[str, str]] = {}
        for run_uuid, key, value in db.execute(
                f"select run_uuid, key, value from tags where key in ({','.join('?' * len(keys))})", keys):
            tags.setdefault(run_uuid, {})[key] = value
    finally:
        db.close()
    return [{"run_uuid": r, "status": s, **{k.split(".", 1)[1]: tags.get(r, {}).get(k, "") for k in keys}}
            for r, s in rows]


def state(home: Path) -> dict:
    storage = home / "storage" / "datasets"
    datasets = {d.name: sorted(v.name for v in d.iterdir() if v.is_dir() and not v.name.startswith("_"))
                for d in sorted(storage.iterdir()) if d.is_dir()}
    pointers = _pointer_files(storage)
    snapshot_pointers = {k: v for k, v in _pointer_files(home / "storage" / "snapshots").items()
                         if not k.endswith("/_seq.json")}
    db = sqlite3.connect(f"file:{home / 'mlflow.db'}?mode=ro", uri=True, timeout=30)
    try:
        versions = db.execute("select name, count(*) from model_versions group by name").fetchall()
        aliases = db.execute("select name, alias, version from registered_model_aliases").fetchall()
        version_tags: dict[str, dict[str, str]] = {}
        for name, version, key, value in db.execute("select name, version, key, value from model_version_tags"):
            version_tags.setdefault(f"{name}/{version}", {})[key] = value
    finally:
        db.close()
    runs = mlflow_runs(home)
    finished: dict[str, int] = {}
    for r in runs:
        if r["task_id"] and r["role"] != "dag_run" and r["status"] == "FINISHED":
            finished[r["task_id"]] = finished.get(r["task_id"], 0) + 1
    return {"datasets": datasets, "pointers": pointers, "snapshot_pointers": snapshot_pointers,
            "model_versions": dict(versions), "aliases": sorted(aliases), "model_version_tags": version_tags,
            "running": sum(r["status"] == "RUNNING" for r in runs),
            "failed_task_runs": sum(r["status"] == "FAILED" and r["task_id"] != "" and r["role"] != "dag_run"
                                    for r in runs),
            "finished_per_task": finished, "mlflow_runs": runs}


def tracked_tasks(st: dict) -> set[tuple[str, str]]:
    """(dag_id, task_id) of every task that opened an MLflow run in ``st`` (``plan``, and ``merge`` of one shard,
    open none)."""
    return {(r["dag_id"], r["task_id"]) for r in st["mlflow_runs"] if r["task_id"] and r["role"] != "dag_run"}


def mlflow_runs_per_try(st: dict, tis: list[dict], tracked: set[tuple[str, str]]) -> dict[str, list]:
    """MLflow's task runs against Airflow's task instances.

    ``duplicated``: a task try with more than one run; ``lost``: a successful task instance of a ``tracked`` task
    whose last try has no FINISHED run (or more than one run); ``orphans``: a task run that names no task instance
    Airflow knows; ``running``: runs left RUNNING (task runs and DAG-run parents alike).
    """
    by_try: dict[tuple, list[str]] = {}
    for r in st["mlflow_runs"]:
        if r["task_id"] and r["role"] != "dag_run":
            key = (r["dag_id"], r["run_id"], r["task_id"], r["map_index"] or "-1", r["try_number"])
            by_try.setdefault(key, []).append(r["status"])
    known = {(ti["dag_id"], ti["run_id"], ti["task_id"], str(ti["map_index"])) for ti in tis}
    lost = [f"{ti['dag_id']}/{ti['run_id']}/{ti['task_id']}[{ti['map_index']}] try {ti['try_number']}" for ti in tis
            if ti["state"] == "success" and (ti["dag_id"], ti["task_id"]) in tracked
            and by_try.get((ti["dag_id"], ti["run_id"], ti["task_id"], str(ti["map_index"]), str(ti["try_number"])))
            != ["FINISHED"]]
    return {"duplicated": [f"{k}: {v}" for k, v in by_try.items() if len(v) > 1],
            "lost": lost,
            "orphans": [str(k) for k in by_try if k[:4] not in known],
            "running": [f"{r['dag_id']}/{r['run_id']}/{r['task_id'] or r['role']}" for r in st["mlflow_runs"]
                        if r["status"] == "RUNNING"]}


class MlflowServer:
    """``mlflow server`` on ``$home/mlflow.db`` (SQLite) and local artifacts, in a process group of its own."""

    def __init__(self, home: Path, port: int | None = None):
        self.home = home
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        mlflow_exe = str(Path(sys.executable).with_name("mlflow"))
        self.argv = [mlflow_exe, "server", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
                     "--default-artifact-root", str(home / "mlartifacts"), "--no-serve-artifacts",
                     "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "MLFLOW_HTTP"))}
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = open(self.home / "logs" / f"mlflow-server-{self.starts}.log", "w")  # noqa: SIM115 (the child holds it)
        self.proc = subprocess.Popen(self.argv, env=env, start_new_session=True, cwd=self.home,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def healthy(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{self.url}/health", timeout=3) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def wait_healthy(self, timeout: float = 120) -> float:
        """Seconds until ``/health`` answered; raises if the server exits or does not answer in time."""
        started = time.monotonic()
        while not self.healthy():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with code {self.proc.returncode}; see "
                                   f"{self.home / 'logs' / f'mlflow-server-{self.starts}.log'}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"mlflow server at {self.url} did not answer within {timeout:.0f} s")
            time.sleep(0.3)
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the server's whole process group (uvicorn and its workers): no shutdown of any kind."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # what is left of the group
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
