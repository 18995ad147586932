"""A real Airflow 3 cluster for integration tests, without Docker.

It is the docker-compose deployment run as local processes: PostgreSQL as the
metadata database, the CeleryExecutor with Redis as the broker, and, as
separate subprocesses, ``airflow api-server``, ``airflow scheduler``,
``airflow dag-processor`` and ``airflow celery worker``.

PostgreSQL and Redis are not started here; they must already run (they do on
the dev machine and on CI).  :func:`check_servers` says which one is missing
and how to start it.

Isolation from other users of the same servers:

* each cluster gets its own PostgreSQL database (``mlsys_airflow_ci_<hex>``),
  dropped on :meth:`AirflowCluster.stop`; when the role may not create
  databases, a schema of the same name inside the base database is used
  instead (through ``search_path``);
* each cluster uses its own Celery queue (``[operators] default_queue``), so
  workers of concurrent runs never take each other's tasks.

``tests/e2e/compose_stack.py`` builds on this class: the same helpers, with
docker-compose.yaml's services and their compose environments as the components.

Environment overrides:

* ``MLSYS_CI_POSTGRES``: libpq URL of an existing database to connect to,
  default: tries ``postgresql://{postgres,root,$USER}@127.0.0.1:5432/test``;
* ``MLSYS_CI_REDIS``: Redis URL used as the Celery broker,
  default ``redis://127.0.0.1:6379/5``;
* ``MLSYS_CI_KEEP=1``: keep the temp database/schema after the run.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlsys.bench.harness import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_BASE_DB = "test"
REDIS_DEFAULT_URL = "redis://127.0.0.1:6379/5"

PG_START_HINT = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_START_HINT = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" '
    "--appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
)

TERMINAL_RUN_STATES = {"success", "failed"}


class ServerUnavailable(RuntimeError):
    """A server the cluster needs (PostgreSQL or Redis) is not reachable."""


class ClusterError(RuntimeError):
    """The Airflow cluster did not come up or did not behave."""


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class PgTarget:
    """Where Airflow's metadata lives: a database, and optionally a schema in it."""

    user: str
    host: str
    port: int
    dbname: str
    password: str | None = None
    schema: str | None = None  # set when we fall back to a schema in the base database
    owned: bool = False  # we created it (database or schema), so we drop it afterwards

    def connect_kwargs(self, dbname: str | None = None) -> dict[str, Any]:
        kw: dict[str, Any] = dict(
            user=self.user, host=self.host, port=self.port, dbname=dbname or self.dbname, connect_timeout=5
        )
        if self.password:
            kw["password"] = self.password
        return kw

    def sqlalchemy_url(self, scheme: str = "postgresql+psycopg2") -> str:
        auth = urllib.parse.quote(self.user, safe="")
        if self.password:
            auth += ":" + urllib.parse.quote(self.password, safe="")
        url = f"{scheme}://{auth}@{self.host}:{self.port}/{self.dbname}"
        if self.schema:
            # psycopg2 passes `options` to libpq: every session then creates and
            # finds its tables in our schema, not in `public`.
            url += "?options=" + urllib.parse.quote(f"-csearch_path={self.schema}", safe="")
        return url


def _pg_candidates() -> list[PgTarget]:
    override = os.environ.get("MLSYS_CI_POSTGRES")
    if override:
        u = urllib.parse.urlsplit(override)
        return [
            PgTarget(
                user=urllib.parse.unquote(u.username or getpass.getuser()),
                password=urllib.parse.unquote(u.password) if u.password else None,
                host=u.hostname or PG_HOST,
                port=u.port or PG_PORT,
                dbname=(u.path or "/").lstrip("/") or PG_BASE_DB,
            )
        ]
    users: list[str] = []
    for user in ("postgres", "root", getpass.getuser()):
        if user not in users:
            users.append(user)
    return [PgTarget(user=u, host=PG_HOST, port=PG_PORT, dbname=PG_BASE_DB) for u in users]


def find_postgres() -> PgTarget:
    """Return a PostgreSQL login that works, or raise :class:`ServerUnavailable`."""
    import psycopg2

    errors = []
    for target in _pg_candidates():
        try:
            psycopg2.connect(**target.connect_kwargs()).close()
            return target
        except psycopg2.OperationalError as err:
            errors.append(f"  as {target.user!r}: {str(err).strip()}")
    where = f"{target.host}:{target.port}, database {target.dbname!r}"
    raise ServerUnavailable(
        f"PostgreSQL is not reachable at {where}.\n"
        + "\n".join(errors)
        + f"\nStart it with:\n  {PG_START_HINT}\n"
        "(or point MLSYS_CI_POSTGRES at another server, e.g. postgresql://postgres@127.0.0.1:5432/test)"
    )


def redis_url() -> str:
    return os.environ.get("MLSYS_CI_REDIS", REDIS_DEFAULT_URL)


def check_redis(url: str | None = None) -> str:
    """Return the broker URL if Redis answers PING, else raise :class:`ServerUnavailable`."""
    import redis

    url = url or redis_url()
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except Exception as err:  # noqa: BLE001 - any failure means "not usable"
        raise ServerUnavailable(
            f"Redis is not reachable at {url}: {err}\n"
            f"Start it with:\n  {REDIS_START_HINT}\n"
            "(or point MLSYS_CI_REDIS at another server)"
        ) from err
    return url


def check_python_deps() -> None:
    """Fail early, with the fix, on dependency problems that otherwise kill a component."""
    import importlib.util

    problems = []
    if importlib.util.find_spec("asyncpg") is None:
        problems.append(
            "asyncpg is not installed. Airflow 3 opens an async engine on its metadata DB, and for "
            "PostgreSQL that needs asyncpg (apache-airflow[postgres] brings it): pip install asyncpg==0.31.0"
        )
    try:
        # apache-airflow-providers-celery 3.26.0 imports this; celery 5.7.0 removed it.
        from celery.backends.database import retry  # noqa: F401
    except ImportError:
        import celery

        problems.append(
            f"celery {celery.__version__} does not fit apache-airflow-providers-celery: the provider imports "
            "celery.backends.database.retry, which celery 5.7 removed, so `airflow celery worker` and the "
            "scheduler's CeleryExecutor fail to import. Pin celery==5.6.3."
        )
    if problems:
        raise ClusterError("\n".join(problems))


def check_servers() -> tuple[PgTarget, str]:
    """Check both servers; the error lists every server that is missing."""
    problems: list[str] = []
    pg = broker = None
    try:
        pg = find_postgres()
    except ServerUnavailable as err:
        problems.append(str(err))
    try:
        broker = check_redis()
    except ServerUnavailable as err:
        problems.append(str(err))
    if problems:
        raise ServerUnavailable("\n\n".join(problems))
    assert pg is not None and broker is not None
    return pg, broker


def require_servers_or_fail() -> tuple[PgTarget, str]:
    """For tests: fail (never skip) with what is missing and how to fix it."""
    import pytest

    problem = None
    try:
        check_python_deps()
    except ClusterError as err:
        problem = f"Python dependencies of the Celery/PostgreSQL deployment are broken:\n{err}"
    try:
        servers = check_servers()
    except ServerUnavailable as err:
        problem = f"{problem}\n\n{err}" if problem else str(err)
    if problem:
        pytest.fail(problem, pytrace=False)
    return servers


def create_metadata_db(base: PgTarget, name: str) -> PgTarget:
    """A metadata database of our own: database ``name``; if the role may not create
    databases, schema ``name`` in the base database; if not that either, the base
    database itself (shared, never dropped)."""
    import psycopg2
    from psycopg2 import errors, sql

    conn = psycopg2.connect(**base.connect_kwargs())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            try:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                return PgTarget(base.user, base.host, base.port, name, base.password, owned=True)
            except errors.InsufficientPrivilege:
                pass
            try:
                cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
                return PgTarget(base.user, base.host, base.port, base.dbname, base.password, schema=name, owned=True)
            except errors.InsufficientPrivilege:
                pass
            print(
                f"[airflow_cluster] {base.user!r} may create neither a database nor a schema: "
                f"using database {base.dbname!r} itself",
                file=sys.stderr,
            )
            return base
    finally:
        conn.close()


def drop_metadata_db(base: PgTarget, target: PgTarget) -> None:
    if not target.owned:
        return
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(**base.connect_kwargs())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            if target.schema:
                cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema)))
            else:
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target.dbname))
                )
    finally:
        conn.close()


# --------------------------------------------------------------------------- processes


@dataclass
class Component:
    name: str
    args: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None
    env: dict[str, str] | None = None  # default: the cluster's environment
    cwd: Path | None = None  # default: the cluster's home

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text[-lines:])


@dataclass
class AirflowCluster:
    """Airflow with PostgreSQL + CeleryExecutor/Redis + one Celery worker, as subprocesses.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    home: Path
    dags_folder: Path
    plugins_folder: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    drop_env: tuple[str, ...] = ()  # variables of this process not to pass on
    parallelism: int = 4
    worker_concurrency: int = 2
    startup_timeout: float = 120.0
    # what /api/v2/monitor/health must call healthy before start() returns
    health_required: tuple[str, ...] = ("metadatabase", "scheduler", "dag_processor")
    # log in as this (username, password); default: the simple auth manager's generated admin password
    admin: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        self.home = Path(self.home)
        self.dags_folder = Path(self.dags_folder)
        self.run_tag = secrets.token_hex(4)
        self.queue = f"mlsys_ci_{self.run_tag}"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.components: list[Component] = []
        self.timings: dict[str, float] = {}
        self._token: str | None = None
        self._base_pg: PgTarget | None = None
        self.pg: PgTarget | None = None
        self.broker_url: str | None = None
        self.env: dict[str, str] = {}
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> AirflowCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _build_env(self) -> dict[str, str]:
        assert self.pg is not None and self.broker_url is not None
        env = dict(os.environ)
        # Do not let a developer's own Airflow settings leak in.
        for key in list(env):
            if key.startswith("AIRFLOW__") or key == "AIRFLOW_CONFIG" or key in self.drop_env:
                del env[key]
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.pg.sqlalchemy_url("postgresql+psycopg2"),
                "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.pg.sqlalchemy_url("postgresql+psycopg2"),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.queue,
                # One secret for every component: the scheduler signs task JWTs,
                # the api-server checks them when the worker's tasks call it.
                # (64+ bytes: HS512 warns on shorter keys)
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(64),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__WORKERS": "1",
                # Only the runs the test triggers: no runs from cron schedules.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.plugins_folder is not None:
            env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(self.plugins_folder)
        env.update(self.extra_env)
        return env

    def _airflow(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "airflow", *args]

    def start(self) -> None:
        t0 = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        self._base_pg, self.broker_url = check_servers()
        self.pg = create_metadata_db(self._base_pg, f"mlsys_airflow_ci_{self.run_tag}")
        self.env = self._build_env()

        t = time.monotonic()
        migrate = subprocess.run(
            self._airflow("db", "migrate"),
            env=self.env,
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
        )
        (self.home / "db-migrate.log").write_text(migrate.stdout)
        if migrate.returncode != 0:
            raise ClusterError(f"`airflow db migrate` failed (rc={migrate.returncode}):\n{migrate.stdout[-6000:]}")
        self.timings["db_migrate"] = time.monotonic() - t

        logs = self.home / "component-logs"
        logs.mkdir(exist_ok=True)
        specs = [
            ("api-server", self._airflow("api-server", "--host", "127.0.0.1", "--port", str(self.port))),
            ("scheduler", self._airflow("scheduler")),
            ("dag-processor", self._airflow("dag-processor")),
            (
                "celery-worker",
                self._airflow(
                    "celery",
                    "worker",
                    "--queues",
                    self.queue,
                    "--concurrency",
                    str(self.worker_concurrency),
                    "--celery-hostname",
                    f"{self.queue}@%h",
                    "--skip-serve-logs",  # no fixed log-server port (8793) to clash on
                    "--without-gossip",
                    "--without-mingle",
                ),
            ),
        ]
        for name, args in specs:
            self.spawn(Component(name, args, logs / f"{name}.log"))

        self._wait_healthy()
        self.timings["startup"] = time.monotonic() - t0

    def spawn(self, comp: Component, mode: str = "wb") -> Component:
        """Start ``comp`` in a session of its own (so that we can stop all its children), its output in its log;
        add it to the cluster's components."""
        with open(comp.log_path, mode) as out:
            if "a" in mode:
                out.write(f"\n===== [airflow_cluster] {comp.name} restarted =====\n".encode())
                out.flush()
            comp.proc = subprocess.Popen(
                comp.args,
                env=comp.env if comp.env is not None else self.env,
                cwd=comp.cwd or self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if comp not in self.components:
            self.components.append(comp)
        return comp

    def stop(self) -> None:
        """Stop every component (SIGTERM, then SIGKILL to its process group); drop the database."""
        if self._stopped:
            return
        self._stopped = True
        for comp in self.components:
            if comp.proc is not None and comp.proc.poll() is None:
                _signal_group(comp.proc, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for comp in self.components:
            if comp.proc is None:
                continue
            try:
                comp.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # The leader may be gone while children (uvicorn workers, task
            # supervisors, celery pool processes) linger: kill the whole group.
            _signal_group(comp.proc, signal.SIGKILL)
            try:
                comp.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self.broker_url is not None:
            _drop_redis_keys(self.broker_url, f"*{self.queue}*")  # kombu's bindings of our queue
        if self.pg is not None and self._base_pg is not None and os.environ.get("MLSYS_CI_KEEP") != "1":
            try:
                drop_metadata_db(self._base_pg, self.pg)
            except Exception as err:  # noqa: BLE001 - teardown must not mask the test result
                print(f"[airflow_cluster] could not drop {self.pg}: {err}", file=sys.stderr)
            self.pg = None

    def component_pids(self, name: str) -> list[int]:
        """Every live process of a component: its session (``start_new_session``), which holds the process
        groups its children make (Airflow's task supervisor puts each task process in a group of its own,
        so the leader's process group alone misses the task)."""
        comp = self.component(name)
        if comp.proc is None:
            return []
        sid = comp.proc.pid
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited meanwhile
            if fields[0] not in ("Z", "X") and int(fields[3]) == sid:  # state, ..., session id
                pids.append(int(entry))
        return sorted(pids)

    def kill_component(self, name: str, sig: int = signal.SIGKILL, timeout: float = 30) -> list[int]:
        """Send ``sig`` to every process of a component (the leader, its children and the tasks they run),
        as a lost node or the OOM killer would; wait until they are gone. Returns the pids signalled."""
        comp = self.component(name)
        assert comp.proc is not None
        _signal_group(comp.proc, sig)  # the leader's group first: it forks no more children after this
        signalled: set[int] = set()
        deadline = time.monotonic() + timeout
        while pids := self.component_pids(name):
            if time.monotonic() > deadline:
                raise ClusterError(f"{name}: processes {pids} still alive {timeout:.0f}s after signal {sig}")
            for pid in pids:
                try:
                    os.kill(pid, sig)
                    signalled.add(pid)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        try:
            comp.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{name}: leader {comp.proc.pid} did not exit after signal {sig}") from None
        return sorted(signalled | {comp.proc.pid})

    def restart_component(self, name: str) -> Component:
        """Start a component again with its arguments and environment (a new process in a session of its
        own), after it exited or was killed; its log goes on in the same file."""
        comp = self.component(name)
        if comp.alive():
            raise ClusterError(f"{name} is still running (pid {comp.proc.pid}): kill or stop it first")
        return self.spawn(comp, mode="ab")

    def check_alive(self) -> None:
        dead = [c for c in self.components if not c.alive()]
        if dead:
            names = ", ".join(f"{c.name} (rc={c.proc.returncode if c.proc else None})" for c in dead)
            raise ClusterError(f"Airflow component(s) exited: {names}\n\n" + self.format_logs(dead))

    def format_logs(self, components: list[Component] | None = None, lines: int = 80) -> str:
        parts = []
        for comp in components or self.components:
            parts.append(f"===== {comp.name}: last {lines} lines of {comp.log_path} =====\n{comp.tail(lines)}")
        return "\n\n".join(parts)

    def _wait_healthy(self) -> None:
        """Wait until the api-server answers and reports scheduler and dag-processor healthy."""
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                health = self._request("GET", "/api/v2/monitor/health", auth=False)
                states = {k: (v or {}).get("status") for k, v in health.items()}
                last = json.dumps(states)
                if all(states.get(k) == "healthy" for k in self.health_required):
                    return
            except (urllib.error.URLError, ConnectionError, OSError) as err:
                last = repr(err)
            time.sleep(1)
        raise ClusterError(
            f"Airflow not healthy after {self.startup_timeout:.0f}s (last health: {last})\n\n" + self.format_logs()
        )

    # ------------------------------------------------------------------ REST API

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True, timeout: float = 30) -> Any:
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the public REST API; on an HTTP error, raise with the response body."""
        try:
            return self._request(method, path, body)
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")
            raise ClusterError(f"{method} {path} -> HTTP {err.code}: {detail}") from err

    def token(self) -> str:
        """A JWT from the simple auth manager: as ``self.admin`` if set, else as the admin whose password
        the simple auth manager generated."""
        if self._token is None and self.admin is not None:
            user, password = self.admin
            resp = self._request("POST", "/auth/token", {"username": user, "password": password}, auth=False)
            self._token = resp["access_token"]
        if self._token is None:
            pw_file = self.home / "simple_auth_manager_passwords.json.generated"
            deadline = time.monotonic() + 30
            while not pw_file.exists() and time.monotonic() < deadline:
                time.sleep(0.5)
            passwords = json.loads(pw_file.read_text())
            user, password = next(iter(passwords.items()))
            resp = self._request(
                "POST", "/auth/token", {"username": user, "password": password}, auth=False
            )
            self._token = resp["access_token"]
        return self._token

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict:
        """Wait until the dag-processor has serialized ``dag_id``; fail early on an import error."""
        deadline = time.monotonic() + timeout
        q = urllib.parse.quote
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                return self.api("GET", f"/api/v2/dags/{q(dag_id)}")
            except ClusterError as err:
                if "HTTP 404" not in str(err):
                    raise
            errors = self.api("GET", "/api/v2/importErrors").get("import_errors", [])
            if errors:
                text = "\n\n".join(f"{e.get('filename')}:\n{e.get('stack_trace')}" for e in errors)
                raise ClusterError(f"DAG {dag_id!r} not loaded; import errors in the DAGs folder:\n{text}")
            time.sleep(1)
        raise ClusterError(
            f"DAG {dag_id!r} did not appear within {timeout:.0f}s\n\n" + self.format_logs()
        )

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """Unpause ``dag_id`` and trigger a manual run; return its run id."""
        q = urllib.parse.quote
        self.api("PATCH", f"/api/v2/dags/{q(dag_id)}", {"is_paused": False})
        run_id = f"ci_scaleout_{self.run_tag}"
        self.api(
            "POST",
            f"/api/v2/dags/{q(dag_id)}/dagRuns",
            {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}},
        )
        return run_id

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 480, poll: float = 2) -> dict:
        """Poll until the run is success or failed; return the dag run."""
        q = urllib.parse.quote
        deadline = time.monotonic() + timeout
        run: dict = {}
        while time.monotonic() < deadline:
            self.check_alive()
            run = self.api("GET", f"/api/v2/dags/{q(dag_id)}/dagRuns/{q(run_id)}")
            if run.get("state") in TERMINAL_RUN_STATES:
                return run
            time.sleep(poll)
        tis = self.task_instances(dag_id, run_id)
        states = {ti["task_id"]: ti["state"] for ti in tis}
        raise ClusterError(
            f"run {run_id} of {dag_id} still {run.get('state')!r} after {timeout:.0f}s; tasks: {states}\n\n"
            + self.format_logs()
        )

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        q = urllib.parse.quote
        resp = self.api("GET", f"/api/v2/dags/{q(dag_id)}/dagRuns/{q(run_id)}/taskInstances?limit=1000")
        return resp["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        q = urllib.parse.quote
        path = (
            f"/api/v2/dags/{q(dag_id)}/dagRuns/{q(run_id)}/taskInstances/{q(task_id)}/logs/{try_number}"
            f"?full_content=true&map_index={map_index}"
        )
        try:
            resp = self.api("GET", path)
        except ClusterError as err:
            return f"(log not available: {err})"
        content = resp.get("content") if isinstance(resp, dict) else resp
        if isinstance(content, list):
            lines = []
            for item in content:
                if isinstance(item, dict):
                    lines.append(" ".join(str(item[k]) for k in ("timestamp", "level", "event") if item.get(k)))
                    lines.extend(_format_error_detail(item.get("error_detail")))
                else:
                    lines.append(str(item))
            return "\n".join(lines)
        return str(content)

    # ------------------------------------------------------------------ Celery evidence

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def celery_evidence(self, dag_id: str, run_id: str, timeout: float = 60,
                        workers: tuple[str, ...] = ("celery-worker",)) -> dict[str, dict]:
        """How the Celery side saw each task instance of the run.

        For each task instance (key ``task_id`` or ``task_id[map_index]``): the
        Celery task id the scheduler assigned (``external_executor_id``),
        whether our worker's log shows it received and succeeded (``worker``:
        which of ``workers``, component names, did), and its state in the Celery
        result backend.  The Airflow task state is final before
        the worker's Celery task returns (a few seconds later), so this waits up
        to ``timeout`` for every Celery task to report SUCCESS.
        """
        rows = self.sql(
            "SELECT task_id, map_index, external_executor_id FROM task_instance WHERE dag_id = %s AND run_id = %s",
            (dag_id, run_id),
        )
        worker_logs = {name: self.component(name).log_path for name in workers}
        deadline = time.monotonic() + timeout
        while True:
            logs = {name: p.read_text(errors="replace") if p.exists() else "" for name, p in worker_logs.items()}
            try:
                results = dict(self.sql("SELECT task_id, status FROM celery_taskmeta"))
            except Exception:  # noqa: BLE001 - the table appears with the first result
                results = {}
            info: dict[str, dict] = {}
            for task_id, map_index, celery_id in rows:
                key = task_id if map_index < 0 else f"{task_id}[{map_index}]"
                took = [n for n, log in logs.items() if celery_id and f"execute_workload[{celery_id}] received" in log]
                info[key] = {
                    "celery_task_id": celery_id,
                    "worker": took[0] if len(took) == 1 else took or None,
                    "worker_received": bool(took),
                    "worker_succeeded": any(f"execute_workload[{celery_id}] succeeded" in logs[n] for n in took),
                    "result_backend_state": results.get(celery_id),
                }
            done = all(v["worker_succeeded"] and v["result_backend_state"] == "SUCCESS" for v in info.values())
            if done or time.monotonic() > deadline:
                return info
            time.sleep(1)

    # ------------------------------------------------------------------ metadata DB

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        """Run a read query against this cluster's metadata database."""
        import psycopg2

        assert self.pg is not None
        kw = self.pg.connect_kwargs()
        if self.pg.schema:
            kw["options"] = f"-csearch_path={self.pg.schema}"
        conn = psycopg2.connect(**kw)
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall()
        finally:
            conn.close()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the group we created with start_new_session
    except (ProcessLookupError, PermissionError):
        pass


def _drop_redis_keys(url: str, pattern: str) -> None:
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        keys = list(client.scan_iter(match=pattern))
        if keys:
            client.delete(*keys)
        client.close()
    except Exception as err:  # noqa: BLE001 - teardown must not mask the test result
        print(f"[airflow_cluster] could not clean Redis keys {pattern}: {err}", file=sys.stderr)


def _format_error_detail(detail: Any) -> list[str]:
    """Airflow 3 structured task logs carry exceptions as ``error_detail``: render them as a traceback."""
    if not isinstance(detail, list):
        return []
    lines = []
    for exc in detail:
        if not isinstance(exc, dict):
            continue
        lines.append("  Traceback (most recent call last):")
        for fr in exc.get("frames") or []:
            lines.append(f"    File \"{fr.get('filename')}\", line {fr.get('lineno')}, in {fr.get('name')}")
        lines.append(f"  {exc.get('exc_type')}: {exc.get('exc_value')}")
    return lines
