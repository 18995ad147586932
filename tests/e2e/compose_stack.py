"""docker-compose.yaml's services as local processes, each with the environment the compose file gives it.

An :class:`~tests.e2e.airflow_cluster.AirflowCluster` (its REST, Celery and metadata-DB helpers) whose
components are the compose services, started in the compose file's dependency order:

    secrets-check          python -m mlsys.deploy_check (also refuses .env.example as it is)
    postgres               the local PostgreSQL: a role POSTGRES_USER/POSTGRES_PASSWORD, and databases of its own
                           for POSTGRES_DB and each CREATE DATABASE of the postgres-init config
    redis                  the local Redis; the Celery queues under a key prefix of their own
    minio                  moto_server -H 127.0.0.1 -p PORT
    minio-init             the buckets of its `mc mb` line (moto enforces no MinIO user or policy)
    mlflow                 its command (basic-auth app, S3 artifacts), its auth config, PGUSER/PGPASSWORD
    mlflow-init            python -m mlsys.tracking.accounts
    airflow-init           its bash script: airflow db migrate, the gpu and mlsys_promotion pools
    airflow-apiserver      its bash script: the passwords file from .env, then airflow api-server
    airflow-scheduler, airflow-dag-processor, airflow-triggerer, airflow-worker, airflow-worker-gpu
    serve                  mlsys serve

Each service's environment and command come from :mod:`tests.e2e.compose_env` (hostnames and container
paths made local). What a container gives that a process does not is added, and only that:
:attr:`ComposeStack.substitutions` lists it (ports, resources on a 2-core machine, isolation from other
tests on the same PostgreSQL and Redis).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from mlsys.bench.harness import free_port
from tests.e2e.airflow_cluster import (
    AirflowCluster,
    ClusterError,
    Component,
    PgTarget,
    check_python_deps,
    check_servers,
)
from tests.e2e.compose_env import (
    ENV_EXAMPLE,
    Localizer,
    example_values,
    load_compose,
    netloc,
    read_env_file,
    rebind,
    venv_bin,
)
from tests.test_compose import environment

AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker", "airflow-worker-gpu")
WORKERS = ("airflow-worker", "airflow-worker-gpu")
# the port each service listens on inside its container (its image's default, or its command's --port)
CONTAINER_PORTS = {"postgres": 5432, "redis": 6379, "minio": 9000, "mlflow": 5000, "airflow-apiserver": 8080,
                   "serve": 8000}
LOCAL = "127.0.0.1"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class ComposeStack(AirflowCluster):
    """The compose topology as processes. ``env_overrides`` win over the generated ``.env`` (e.g. MLSYS_TRAIN_QUEUE);
    ``values`` is that ``.env``."""

    env_overrides: dict[str, str] = field(default_factory=dict)
    mlflow_startup_timeout: float = 240.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.queue = f"mlsys_topo_{self.run_tag}"  # prefix of our databases, role and Redis keys
        self.health_required = ("metadatabase", "scheduler", "dag_processor", "triggerer")
        self.ports = {name: free_port() for name in ("minio", "mlflow", "airflow-apiserver", "serve")}
        self.port = self.ports["airflow-apiserver"]
        self.base_url = f"http://{LOCAL}:{self.port}"
        self.values = example_values({"POSTGRES_USER": self.queue, **self.env_overrides})
        self.admin = (self.values.get("AIRFLOW_ADMIN_USERNAME") or "admin", self.values["AIRFLOW_ADMIN_PASSWORD"])
        self.compose = load_compose()
        self.oneshots: list[Component] = []
        self.databases: dict[str, str] = {}
        self.substitutions: dict[str, dict[str, str]] = {}
        self.loc: Localizer | None = None

    def url(self, service: str) -> str:
        return f"http://{LOCAL}:{self.ports[service]}"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        t0 = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "component-logs").mkdir(exist_ok=True)
        check_python_deps()
        self._base_pg, self.broker_url = check_servers()
        self._create_postgres()
        self.loc = Localizer(self.compose, self.values, self.home, self._endpoints(), self.databases,
                             base_env={"PATH": f"{venv_bin()}:/usr/local/bin:/usr/bin:/bin", "HOME": "/home/airflow",
                                       "LANG": "C.UTF-8"})
        # Celery's broker as compose gives it (its database, not MLSYS_CI_REDIS's): stop() removes our keys there
        self.broker_url = self.loc.env("airflow-worker")["AIRFLOW__CELERY__BROKER_URL"]
        self.oneshot("secrets-check", timeout=120)
        self._start_minio()
        t = time.monotonic()
        init = self.start_oneshot("airflow-init", self._airflow_extra("airflow-init"))
        self._start_mlflow()
        self.oneshot("mlflow-init", timeout=180)
        self.finish_oneshot(init, timeout=420)
        self.timings["init"] = time.monotonic() - t
        for name in AIRFLOW_SERVICES:
            args = self.loc.command(name) or ["airflow", "version"]
            self.spawn(self._component(name, args, self._airflow_extra(name)))
        self.spawn(self._component("serve", rebind(self.loc.command("serve"), LOCAL, self.ports["serve"]), {}))
        self._wait_healthy()
        self._wait_http("serve", "/health", timeout=120)
        self.timings["startup"] = time.monotonic() - t0

    def stop(self) -> None:
        if self._stopped:
            return
        super().stop()  # every process, our Redis keys (*<queue>*), the Airflow database
        if self._base_pg is None or os.environ.get("MLSYS_CI_KEEP") == "1":
            return
        import psycopg2
        from psycopg2 import sql

        try:
            conn = psycopg2.connect(**self._base_pg.connect_kwargs())
            conn.autocommit = True
            with conn.cursor() as cur:
                for db in self.databases.values():
                    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(self.values["POSTGRES_USER"])))
            conn.close()
        except Exception as err:  # noqa: BLE001 - teardown must not mask the test result
            print(f"[compose_stack] could not drop the databases {sorted(self.databases.values())}: {err}")

    def format_logs(self, components: list[Component] | None = None, lines: int = 80) -> str:
        return super().format_logs(components or [*self.oneshots, *self.components], lines)

    # ------------------------------------------------------------------ services

    def _component(self, name: str, args: list[str], extra: dict[str, str]) -> Component:
        assert self.loc is not None
        if extra:
            self.substitutions[name] = dict(extra)
        return Component(name, args, self.home / "component-logs" / f"{name}.log",
                         env=self.loc.env(name, extra), cwd=self.loc.cwd(name))

    def start_oneshot(self, name: str, extra: dict[str, str] | None = None) -> Component:
        assert self.loc is not None
        comp = self.spawn(self._component(name, self.loc.command(name), extra or {}))
        self.components.remove(comp)  # it is meant to exit: not a component that must stay alive
        self.oneshots.append(comp)
        return comp

    def finish_oneshot(self, comp: Component, timeout: float) -> None:
        """Wait for a one-shot service; like `service_completed_successfully`, anything but exit 0 fails."""
        assert comp.proc is not None
        deadline = time.monotonic() + timeout
        while comp.proc.poll() is None:
            if time.monotonic() > deadline:
                raise ClusterError(f"{comp.name} still running after {timeout:.0f}s\n\n{comp.tail(60)}")
            self.check_alive()
            time.sleep(0.5)
        if comp.proc.returncode != 0:
            raise ClusterError(f"{comp.name} exited {comp.proc.returncode}:\n{comp.tail(60)}")

    def oneshot(self, name: str, timeout: float) -> Component:
        comp = self.start_oneshot(name)
        self.finish_oneshot(comp, timeout)
        return comp

    def secrets_check_refuses_env_example(self) -> subprocess.CompletedProcess:
        """secrets-check with .env.example as it is (placeholders and all): what a user who forgot to edit gets."""
        assert self.loc is not None
        raw = Localizer(self.compose, read_env_file(ENV_EXAMPLE), self.home / "raw", {}, base_env=self.loc.base_env)
        return subprocess.run(raw.command("secrets-check"), env=raw.env("secrets-check"), cwd=raw.cwd("secrets-check"),
                              capture_output=True, text=True, timeout=120)

    def _endpoints(self) -> dict[tuple[str, int], str]:
        assert self._base_pg is not None and self.broker_url is not None
        local = {"postgres": f"{self._base_pg.host}:{self._base_pg.port}", "redis": netloc(self.broker_url),
                 **{name: f"{LOCAL}:{port}" for name, port in self.ports.items()}}
        endpoints = {(name, CONTAINER_PORTS[name]): where for name, where in local.items()}
        for name, service in self.compose["services"].items():  # published ports: localhost:PORT on the host
            for spec in service.get("ports") or []:
                *_, published, target = str(spec).split(":")
                if name in local and int(target) == CONTAINER_PORTS[name]:
                    for host in ("localhost", LOCAL):
                        endpoints[(host, int(published))] = local[name]
        return endpoints

    def _create_postgres(self) -> None:
        """What the postgres image does on an empty volume: the role, POSTGRES_DB, then the init scripts."""
        import psycopg2
        from psycopg2 import sql

        assert self._base_pg is not None
        service = self.compose["services"]["postgres"]
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        wanted = [env["POSTGRES_DB"]]
        for entry in service.get("configs") or []:
            wanted += re.findall(r"CREATE DATABASE (\w+)", self.compose["configs"][entry["source"]]["content"])
        user, password = self.values["POSTGRES_USER"], self.values["POSTGRES_PASSWORD"]
        conn = psycopg2.connect(**self._base_pg.connect_kwargs())
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(user)), (password,))
                for db in wanted:
                    local = self.databases[db] = f"{self.queue}_{db}"
                    cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(local),
                                                                             sql.Identifier(user)))
        finally:
            conn.close()
        self.pg = PgTarget(self._base_pg.user, self._base_pg.host, self._base_pg.port, self.databases[wanted[0]],
                           self._base_pg.password, owned=True)

    def _start_minio(self) -> None:
        """moto_server plays MinIO; minio-init's buckets are made with the root keys. moto accepts any key pair and
        enforces no policy, so the per-service MinIO users and policies are not exercised here."""
        port = self.ports["minio"]
        self.spawn(Component("minio", [str(venv_bin() / "moto_server"), "-H", LOCAL, "-p", str(port)],
                             self.home / "component-logs" / "minio.log",
                             env={"PATH": os.environ.get("PATH", ""), "HOME": str(self.home)}, cwd=self.home))
        self._wait_http("minio", "/", timeout=60, ok=lambda status: True)
        import boto3

        script = "\n".join(self.compose["services"]["minio-init"]["command"])
        buckets = [b for line in script.splitlines() if " mc mb " in f" {line}"
                   for b in re.findall(r"\blocal/([\w.-]+)", line)]
        s3 = boto3.client("s3", endpoint_url=self.url("minio"), region_name=self.values["AWS_DEFAULT_REGION"],
                          aws_access_key_id=self.values["MINIO_ROOT_USER"],
                          aws_secret_access_key=self.values["MINIO_ROOT_PASSWORD"])
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
        self.buckets = buckets

    def _start_mlflow(self) -> None:
        assert self.loc is not None
        args = rebind(self.loc.command("mlflow"), LOCAL, self.ports["mlflow"])
        extra = {}
        if not any(a.split("=")[0] in ("--workers", "-w") for a in args):
            args.append("--workers=1")  # 4 by default: ~800 MB each, on a 2-core machine
            extra["(command)"] = "--workers=1"
        comp = self.spawn(self._component("mlflow", args, {}))
        if extra:
            self.substitutions["mlflow"] = extra
        self._wait_http("mlflow", "/health", timeout=self.mlflow_startup_timeout, comp=comp)

    def _airflow_extra(self, name: str) -> dict[str, str]:
        """What an Airflow component gets beyond the compose file, and why (see the test's docstring)."""
        extra = {
            # isolation from other tests on the same Redis: compose's `default` and `gpu` queues under our prefix
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": f"{self.queue}_",
            # ports a container has to itself, free ones on this machine
            "AIRFLOW__API__HOST": LOCAL,
            "AIRFLOW__API__PORT": str(self.ports["airflow-apiserver"]),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # a 2-core machine running every service at once
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            # only the runs the test triggers: no nightly run on unpausing mlsys_data, no Asset-triggered
            # duplicates of the runs it triggers itself
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        }
        clash = sorted(set(extra) & set(environment(self.compose["services"][name])))
        if clash:
            raise ClusterError(f"{name}: the test would override {clash}, which docker-compose.yaml sets")
        return extra

    # ------------------------------------------------------------------ HTTP

    def _wait_http(self, service: str, path: str, timeout: float, comp: Component | None = None,
                   ok=lambda status: status == 200) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if comp is not None and not comp.alive():
                raise ClusterError(f"{service} exited ({comp.proc.returncode}):\n{comp.tail(80)}")
            try:
                status, _, _ = self.http(service, "GET", path)
                if ok(status):
                    return
                last = f"HTTP {status}"
            except (urllib.error.URLError, ConnectionError, OSError) as err:
                last = repr(err)
            time.sleep(1)
        raise ClusterError(f"{service} not answering {path} after {timeout:.0f}s ({last})\n\n{self.format_logs()}")

    def http(self, service: str, method: str, path: str, body=None, headers: dict[str, str] | None = None,
             basic: tuple[str, str] | None = None, timeout: float = 30) -> tuple[int, dict[str, str], object]:
        """(status, headers (names in lower case), JSON body or text) of one request to a service's local endpoint."""
        hdrs = {"Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if basic:
            hdrs["Authorization"] = "Basic " + base64.b64encode(":".join(basic).encode()).decode()
        req = urllib.request.Request(self.url(service) + path, data=data, method=method, headers=hdrs)
        try:
            with _NO_PROXY.open(req, timeout=timeout) as resp:
                status, head, raw = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            status, head, raw = err.code, err.headers, err.read()
        head = {k.lower(): v for k, v in head.items()}
        try:
            return status, head, json.loads(raw) if raw else None
        except ValueError:
            return status, head, raw.decode(errors="replace")

