"""A small client of Airflow 3's public REST API (``/api/v2``), for ``mlsys demo``, ``mlsys up`` and the tests.

Standard library only: it talks HTTP, it imports nothing of Airflow. It logs in
with the simple auth manager's generated admin password (a JWT from
``POST /auth/token``), then unpauses, triggers and watches DAG runs.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from mlsys.errors import MlsysError

TERMINAL = ("success", "failed")


class AirflowError(MlsysError):
    """The Airflow API refused a request, or a run did not finish as expected."""


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text) if text else datetime.min.replace(tzinfo=timezone.utc)


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


class AirflowClient:
    def __init__(self, base_url: str, password_file: Path, username: str = "admin"):
        self.base_url = base_url.rstrip("/")
        self.password_file = Path(password_file)
        self.username = username
        self._token: str | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True, timeout: float = 30) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        with self._opener.open(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the REST API; an HTTP error raises AirflowError with the response body."""
        try:
            return self._request(method, path, body)
        except urllib.error.HTTPError as err:
            raise AirflowError(f"{method} {path} -> HTTP {err.code}: {err.read().decode(errors='replace')}") from err

    def token(self) -> str:
        """A JWT for the admin user (the password is the one ``airflow standalone`` generated)."""
        if self._token is None:
            passwords = json.loads(self.password_file.read_text())
            password = passwords.get(self.username) or next(iter(passwords.values()))
            self._token = self._request("POST", "/auth/token", {"username": self.username, "password": password},
                                        auth=False)["access_token"]
        return self._token

    def healthy(self) -> bool:
        try:
            self._request("GET", "/api/v2/version", auth=False, timeout=5)
        except (urllib.error.URLError, ConnectionError, OSError):
            return False
        return self.password_file.is_file()

    def dag(self, dag_id: str) -> dict | None:
        try:
            return self.api("GET", f"/api/v2/dags/{_q(dag_id)}")
        except AirflowError as err:
            if "HTTP 404" in str(err):
                return None
            raise

    def import_errors(self) -> list[dict]:
        return self.api("GET", "/api/v2/importErrors").get("import_errors", [])

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.api("PATCH", f"/api/v2/dags/{_q(dag_id)}", {"is_paused": paused})

    def ensure_pool(self, name: str, slots: int, description: str = "") -> dict:
        """Create the pool ``name`` with ``slots`` slots, or set an existing one's slots back; returns the pool.

        Idempotent: a 409 from ``POST /api/v2/pools`` means the pool exists, and its slots are then patched to
        ``slots`` if someone changed them (a one-slot pool is a critical section only while it has one slot).
        """
        try:
            return self.api("POST", "/api/v2/pools", {"name": name, "slots": slots, "description": description})
        except AirflowError as err:
            if "HTTP 409" not in str(err):
                raise
        pool = self.api("GET", f"/api/v2/pools/{_q(name)}")
        if pool.get("slots") != slots:
            pool = self.api("PATCH", f"/api/v2/pools/{_q(name)}?update_mask=slots",
                            {"name": name, "slots": slots, "include_deferred": pool.get("include_deferred", False)})
        return pool

    def trigger(self, dag_id: str, conf: dict | None = None, logical_date: str | None = None) -> str:
        """Create a DAG run; returns its run id."""
        run = self.api("POST", f"/api/v2/dags/{_q(dag_id)}/dagRuns",
                       {"logical_date": logical_date, "conf": conf or {}})
        return run["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns?limit=100&order_by=-run_after")["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.api("GET", f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances?limit=1000"
        return self.api("GET", path)["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        """The task's log as the UI shows it, one line per event."""
        path = (f"/api/v2/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/logs/{try_number}"
                f"?full_content=true&map_index={map_index}")
        content = self.api("GET", path).get("content", "")
        if isinstance(content, list):
            return "\n".join(item.get("event", "") if isinstance(item, dict) else str(item) for item in content)
        return str(content)

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 180, alive: Callable[[], None] = lambda: None) -> None:
        """Wait until the DAG processor has parsed every DAG; an import error fails at once."""
        deadline = time.monotonic() + timeout
        missing = list(dag_ids)
        while time.monotonic() < deadline:
            alive()
            missing = [d for d in dag_ids if self.dag(d) is None]
            if not missing:
                return
            errors = self.import_errors()
            if errors:
                raise AirflowError("import errors in the DAGs folder:\n" + "\n\n".join(
                    f"{e.get('filename')}:\n{e.get('stack_trace')}" for e in errors))
            time.sleep(1)
        raise AirflowError(f"DAGs {missing} were not parsed within {timeout:.0f} s")

    def wait_for_run(self, dag_id: str, run_id: str | None = None, after: str = "", timeout: float = 300,
                     alive: Callable[[], None] = lambda: None) -> dict:
        """Wait for a run to finish: ``run_id``, or else the first run queued after ``after`` (ISO time).

        Returns the finished run; a failed run raises AirflowError naming its failed tasks.
        """
        deadline = time.monotonic() + timeout
        run: dict = {}
        while time.monotonic() < deadline:
            alive()
            if run_id is None:
                found = [r for r in self.runs(dag_id) if r.get("queued_at") and _time(r["queued_at"]) > _time(after)]
                run = min(found, key=lambda r: _time(r["queued_at"])) if found else {}
            else:
                run = self.run(dag_id, run_id)
            if run.get("state") in TERMINAL:
                if run["state"] != "success":
                    failed = [t["task_id"] for t in self.task_instances(dag_id, run["dag_run_id"])
                              if t["state"] not in ("success", "skipped")]
                    raise AirflowError(f"{dag_id} run {run['dag_run_id']} failed; failed tasks: {failed}")
                return run
            time.sleep(1)
        raise AirflowError(f"{dag_id} run {run_id or '(next)'} not finished within {timeout:.0f} s "
                           f"(state {run.get('state')!r})")
