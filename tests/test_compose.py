"""Static checks of the scale-out deployment (docker-compose.yaml, Dockerfile, .env.example).

Security (docs/security.md) is checked here too: no published port without authentication, no secret on a
command line, the Airflow passwords file only in the API server, MinIO's root keys only in minio-init, one MinIO
key and policy per service, and every secret through the secrets-check service that refuses placeholders.

No Docker engine is needed: the compose file is read with PyYAML (which resolves
the ``x-airflow-common`` anchors and ``<<`` merges as Compose does) and checked
for the mistakes that only show up at ``docker compose up`` otherwise.

Each check is a function that returns a list of problems; a test asserts the
list is empty, and ``test_check_catches`` asserts each check does report a
deliberately broken copy.
"""

from __future__ import annotations

import configparser
import copy
import fnmatch
import itertools
import json
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "Dockerfile"
CODE_ROOT = REPO_ROOT / "include" / "mlsys"

AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-worker-gpu",
)

# Variables include/mlsys may read that the deployment need not set. Keep this short:
# anything else the code reads must be set for every Airflow service.
OPTIONAL_CODE_VARS = {
    "AWS_PROFILE",  # credentials from a profile (real AWS); compose passes a key pair
    "AWS_SESSION_TOKEN",  # temporary credentials (real AWS); MinIO uses a static key pair
    "MLFLOW_ALLOW_FILE_STORE",  # only for a local file: tracking store, never with a server
    "MLSYS_CPU_DEVICES",  # CPU-only training hosts: processes per node (default: the core count)
    "MLSYS_RETRY_DELAY_S",  # Airflow retry delay (default 30 s); only the fault-injection tests shorten it
}
# Read by the libraries rather than by include/mlsys: boto3 and the MLflow client.
LIBRARY_VARS = {
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_S3_ENDPOINT_URL",
    "MLFLOW_DISABLE_TELEMETRY",
}
CODE_VAR_PREFIXES = ("MLSYS_", "MLFLOW_", "AWS_")
# Modules that run as their own one-shot service, not in the Airflow services: what they read, that service sets.
OWN_SERVICE_MODULES = {
    "include/mlsys/tracking/accounts.py": "mlflow-init",
    "include/mlsys/deploy_check.py": "secrets-check",
}

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, or bare $NAME
VAR_REF = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<modifier>:?[-?+][^}]*)?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")
# a value that is nothing but a required reference: ${NAME} or ${NAME:?error}
PURE_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*)?\}$")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN", re.IGNORECASE)
URL_CREDENTIALS = re.compile(r"://[^/\s:@]+:(?P<password>[^@\s]+)@")
CODE_ENV_READ = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']""")


# ---------------------------------------------------------------- helpers


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def env_example_vars() -> set[str]:
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.add(line.split("=", 1)[0].strip())
    return names


def code_env_vars() -> dict[str, set[str]]:
    """The MLSYS_/MLFLOW_/AWS_ variables include/mlsys (and the DAG files) read, each with the files reading it."""
    found: dict[str, set[str]] = {}
    for path in sorted([*CODE_ROOT.rglob("*.py"), *(REPO_ROOT / "dags").glob("*.py")]):
        for name in CODE_ENV_READ.findall(path.read_text()):
            if name.startswith(CODE_VAR_PREFIXES):
                found.setdefault(name, set()).add(str(path.relative_to(REPO_ROOT)))
    return found


def strings(node):
    """Every string value in a parsed YAML tree (keys excluded)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def var_refs(text: str):
    """(name, modifier) of each interpolation in `text`; `$$` is Compose's escape for a literal `$`."""
    for match in VAR_REF.finditer(text.replace("$$", "")):
        yield match["braced"] or match["bare"], match["modifier"] or ""


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: ("" if value is None else str(value)) for key, value in env.items()}


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def command_args(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(arg) for arg in cmd]


def with_defaults(text: str) -> str:
    """``text`` as Compose would expand it with nothing set: ``${VAR-default}`` and ``${VAR:-default}`` become the
    default; any other reference (``${VAR}``, ``${VAR:?error}``) a placeholder ``x``."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?P<mod>:?[-?+])?(?P<rest>[^}]*)\}",
                  lambda m: m["rest"] if m["mod"] in ("-", ":-") else "x", text.replace("$$", "$"))


def host_of(url: str) -> str | None:
    return urlparse(with_defaults(url)).hostname


URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s,\"']+")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "0.0.0.0")


def volume_source(entry) -> tuple[str, str]:
    """('bind' | 'volume', source) of a service volume entry, short or long syntax."""
    if isinstance(entry, dict):
        source = entry.get("source", "")
        kind = entry.get("type")
    else:
        # the source ends at the first ':' outside a ${VAR:-default}
        source = re.match(r"(?:\$\{[^}]*\}|[^:])*", entry).group(0)
        kind = None
    return kind or ("bind" if source.startswith((".", "/", "~", "$")) else "volume"), source


# ---------------------------------------------------------------- checks


def image_problems(compose: dict) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        if "image" not in service and "build" not in service:
            problems.append(f"{name}: neither image nor build")
        if "image" in service:
            image = service["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if not tag or tag == "latest":
                problems.append(f"{name}: image {image!r} is not pinned to a tag (got {tag or 'none'!r})")
        if "build" in service:
            build = service["build"]
            build = {"context": build} if isinstance(build, str) else build
            context = REPO_ROOT / build.get("context", ".")
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not context.is_dir():
                problems.append(f"{name}: build context {context} does not exist")
            elif not dockerfile.is_file():
                problems.append(f"{name}: Dockerfile {dockerfile} does not exist")
    return problems


def dependency_problems(compose: dict) -> list[str]:
    services = compose["services"]
    problems = []
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            if target not in services:
                problems.append(f"{name}: depends on undefined service {target!r}")
            elif condition == "service_healthy" and "healthcheck" not in services[target]:
                problems.append(f"{name}: waits for {target} to be healthy, but {target} has no healthcheck")
            elif condition == "service_completed_successfully" and services[target].get("restart", "no") != "no":
                problems.append(f"{name}: waits for one-shot {target} to complete, but {target} restarts")

    # no cycles: depth-first search with the path on a stack
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "visiting"
        for target in depends_on(services[name]):
            if target not in services:
                continue
            if state.get(target) == "visiting":
                cycle = path[path.index(target):] + [target]
                problems.append("dependency cycle: " + " -> ".join(cycle))
            elif target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in services:
        if name not in state:
            visit(name, [name])
    return problems


def volume_problems(compose: dict) -> list[str]:
    declared_volumes = set(compose.get("volumes") or {})
    declared_configs = set(compose.get("configs") or {})
    problems = []
    for name, service in compose["services"].items():
        for entry in service.get("volumes") or []:
            kind, source = volume_source(entry)
            if kind == "volume" and source not in declared_volumes:
                problems.append(f"{name}: named volume {source!r} is not declared under top-level volumes")
            if kind == "bind" and source.startswith("./") and not (REPO_ROOT / source).exists():
                problems.append(f"{name}: bind-mounted host path {source} does not exist in the repository")
        for entry in service.get("configs") or []:
            source = entry["source"] if isinstance(entry, dict) else entry
            if source not in declared_configs:
                problems.append(f"{name}: config {source!r} is not declared under top-level configs")
    return problems


def variable_problems(compose: dict, documented: set[str]) -> list[str]:
    """Every interpolated variable is in .env.example or has a default."""
    problems = set()
    for text in strings(compose):
        for name, modifier in var_refs(text):
            has_default = modifier.startswith(("-", ":-"))
            if name not in documented and not has_default:
                problems.add(f"${{{name}}} is used but missing from .env.example (and has no default)")
    return sorted(problems)


def secret_problems(compose: dict) -> list[str]:
    """Secrets only by reference to .env: no literal value, and no literal default either."""
    problems = []
    envs = {"x-airflow-common": environment(compose["x-airflow-common"])}
    envs.update({name: environment(service) for name, service in compose["services"].items()})
    for owner, env in envs.items():
        for key, value in env.items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE") and not PURE_REF.match(value):
                problems.append(f"{owner}: {key} must be a ${{VAR}} reference to .env, not {value!r}")
    for text in strings(compose):
        for match in URL_CREDENTIALS.finditer(text):
            if not PURE_REF.match(match["password"]):
                problems.append(f"literal password in a URL: {text!r}")
    return problems


def code_env_problems(compose: dict, code_vars: dict[str, set[str]]) -> list[str]:
    """The Airflow services set what include/mlsys reads, and nothing MLSYS_* that it doesn't; a module that runs as
    a service of its own (OWN_SERVICE_MODULES) gets what it reads from that service instead."""
    problems = []
    airflow_read = {var for var, files in code_vars.items() if set(files) - set(OWN_SERVICE_MODULES)}
    required = (airflow_read - OPTIONAL_CODE_VARS) | LIBRARY_VARS
    for module, service in OWN_SERVICE_MODULES.items():
        env = environment(compose["services"].get(service, {}))
        for var in sorted(v for v, files in code_vars.items() if module in files):
            if var not in env:
                problems.append(f"{service}: {var} is read by {module} but not set")
    for name in AIRFLOW_SERVICES:
        env = environment(compose["services"][name])
        for var in sorted(required - set(env)):
            readers = ", ".join(sorted(code_vars.get(var, ()))) or "boto3/mlflow"
            problems.append(f"{name}: {var} is read by {readers} but not set")
    common = environment(compose["x-airflow-common"])
    for var in sorted(v for v in common if v.startswith("MLSYS_")):
        if var not in code_vars:
            problems.append(f"x-airflow-common sets {var}, which nothing under include/mlsys reads")
    return problems


def celery_problems(compose: dict) -> list[str]:
    services = compose["services"]
    env = environment(compose["x-airflow-common"])
    problems = []
    expected = {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    for key, value in expected.items():
        if env.get(key) != value:
            problems.append(f"{key} is {env.get(key)!r}, expected {value!r}")
    prefixes = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://",
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+postgresql+psycopg2://",  # SQLAlchemy 2.1: bare = psycopg 3
        "AIRFLOW__CELERY__BROKER_URL": "redis://",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://",
    }
    for key, prefix in prefixes.items():
        if not env.get(key, "").startswith(prefix):
            problems.append(f"{key} should start with {prefix}, got {env.get(key)!r}")
    if not env.get("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "").endswith("/execution/"):
        problems.append("AIRFLOW__CORE__EXECUTION_API_SERVER_URL must end with /execution/")
    # each in-cluster URL names a service of this file
    for key, value in env.items():
        host = host_of(value) if "://" in value and not value.startswith("s3://") else None
        if host and host not in ("localhost", "127.0.0.1") and host not in services:
            problems.append(f"{key}={value} points at {host!r}, which is not a service")
    for name in AIRFLOW_SERVICES:
        if name not in services:
            problems.append(f"Airflow service {name} is missing")
    init = " ".join(command_args(services.get("airflow-init", {})))
    if not re.search(r"airflow pools set gpu ", init):
        problems.append("airflow-init does not create the pool `gpu`")
    if not re.search(r"airflow pools set mlsys_promotion 1 ", init):
        problems.append("airflow-init does not create the one-slot pool `mlsys_promotion` (mlsys.registry.gate)")
    return problems


def url_host_problems(compose: dict) -> list[str]:
    """Every URL that a service is given (environment and command, defaults resolved) names a service of this file
    or the container itself; the serve service and the Airflow services agree on where they meet."""
    services = compose["services"]
    problems = []
    for name, service in services.items():
        texts = [f"{key}={value}" for key, value in environment(service).items()] + command_args(service)
        for text in texts:
            for url in URL.findall(with_defaults(text)):
                if url.startswith("s3://"):
                    continue  # a bucket, not a host
                host = urlparse(url).hostname
                if host not in LOCAL_HOSTS and host not in services:
                    problems.append(f"{name}: {text} points at {host!r}, which is not a service")
    serve = services.get("serve", {})
    serve_args = command_args(serve)
    serve_port = next((int(b) for a, b in itertools.pairwise(serve_args) if a == "--port"), None)
    for name in AIRFLOW_SERVICES:
        env = environment(services.get(name, {}))
        serve_url = urlparse(with_defaults(env.get("MLSYS_SERVE_URL", "")))
        if serve_url.hostname and (serve_url.hostname, serve_url.port) != ("serve", serve_port):
            problems.append(f"{name}: MLSYS_SERVE_URL's default {serve_url.geturl()!r} is not serve:{serve_port}")
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "MLSYS_MODEL_NAME"):
            if key in environment(serve) and environment(serve)[key] != env.get(key):
                problems.append(f"serve: {key}={environment(serve)[key]!r}, but {name} has {env.get(key)!r}")
    return problems


def placement_problems(compose: dict) -> list[str]:
    """Train goes to the gpu queue only when .env says so; a queued task without a worker fails after a bounded
    wait; the workers have room in /dev/shm for SHARP."""
    services = compose["services"]
    common = environment(compose["x-airflow-common"])
    problems = []
    queue = common.get("MLSYS_TRAIN_QUEUE", "")
    if not re.fullmatch(r"\$\{MLSYS_TRAIN_QUEUE:?-\}", queue):
        problems.append(f"MLSYS_TRAIN_QUEUE is {queue!r}: derive it from .env with an empty default, "
                        "${MLSYS_TRAIN_QUEUE:-} (a host without GPUs has no worker on `gpu`)")
    timeout = with_defaults(common.get("AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT", ""))
    try:
        ok = 0 < float(timeout) <= 3600
    except ValueError:
        ok = False
    if not ok:
        problems.append(f"AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT is {timeout!r}: set a bounded wait in seconds")
    for name in ("airflow-worker", "airflow-worker-gpu"):
        shm = str(services.get(name, {}).get("shm_size", ""))
        match = re.fullmatch(r"\$\{MLSYS_SHM_SIZE:?-(?P<size>\d+)(?P<unit>[kmg]?)b?\}", shm, re.IGNORECASE)
        scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}
        if not match:
            problems.append(f"{name}: shm_size is {shm!r}, expected ${{MLSYS_SHM_SIZE:-<size>}}")
        elif int(match["size"]) * scale[match["unit"].lower()] < 256 * 2**20:
            problems.append(f"{name}: shm_size's default {shm!r} is under 256 MB; SHARP keeps its state in /dev/shm")
    return problems


def gpu_worker_problems(compose: dict) -> list[str]:
    services = compose["services"]
    problems = []

    def queues(name: str) -> set[str]:
        args = command_args(services[name])
        for flag, value in itertools.pairwise(args):
            if flag in ("--queues", "-q"):
                return set(value.split(","))
        return {"default"}

    if queues("airflow-worker-gpu") != {"gpu"}:
        problems.append(f"airflow-worker-gpu serves {sorted(queues('airflow-worker-gpu'))}, expected only gpu")
    if "gpu" in queues("airflow-worker"):
        problems.append("airflow-worker (CPU) must not serve queue gpu")
    devices = (
        services["airflow-worker-gpu"].get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    )
    if not any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices):
        problems.append("airflow-worker-gpu reserves no NVIDIA GPU (deploy.resources.reservations.devices)")
    return problems


def mlflow_problems(compose: dict) -> list[str]:
    services = compose["services"]
    mlflow = services["mlflow"]
    args = " ".join(command_args(mlflow))
    env = environment(mlflow)
    problems = []
    root = re.search(r"--(?:default-artifact-root|artifacts-destination)[= ](s3://\S+)", args)
    if not root:
        problems.append("mlflow server keeps artifacts outside S3 (no --default-artifact-root s3://...)")
    if "--backend-store-uri" in args:
        problems.append("mlflow server takes its backend store on the command line: use MLFLOW_BACKEND_STORE_URI")
    if not env.get("MLFLOW_BACKEND_STORE_URI", "").startswith("postgresql"):
        problems.append("mlflow server has no Postgres backend store (MLFLOW_BACKEND_STORE_URI)")
    if host_of(env.get("MLFLOW_S3_ENDPOINT_URL", "")) != "minio":
        problems.append(f"mlflow MLFLOW_S3_ENDPOINT_URL is {env.get('MLFLOW_S3_ENDPOINT_URL')!r}, not MinIO")

    # every bucket the deployment writes to is created by minio-init
    common = environment(compose["x-airflow-common"])
    uris = [common.get("MLSYS_STORAGE_URI", ""), common.get("MLSYS_ARTIFACT_URI", "")]
    if root:
        uris.append(root.group(1))
    init = " ".join(command_args(services["minio-init"]))
    for uri in uris:
        bucket = urlparse(uri).netloc
        if not uri.startswith("s3://") or not re.search(rf"local/{re.escape(bucket)}(\s|$)", init):
            problems.append(f"{uri!r} is not in a bucket that minio-init creates")
    return problems


# ---------------------------------------------------------------- security checks (docs/security.md)

# Published ports and how each is authenticated; any other published port is a finding.
AUTHENTICATED_PORTS = {
    ("airflow-apiserver", 8080): "Airflow's auth manager",
    ("mlflow", 5000): "MLflow's basic-auth app",
    ("serve", 8000): "the serve bearer token",
    ("minio", 9000): "S3 request signatures (MinIO users)",
}
LOOPBACK_ONLY = {("minio", 9000)}  # published for the host's own users alone
PASSWORDS_FILE_VAR = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
UI_LOGIN_SERVICES = {"airflow-apiserver"}  # the only service that holds the Airflow UI login
# who may hold MinIO's root keys: the server itself, minio-init (its one user), and the placeholder check
MINIO_ROOT_HOLDERS = {"minio", "minio-init", "secrets-check"}
SECRETS_CHECK = "secrets-check"
SHELL_REF = re.compile(r"\$\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
# a line that hands a secret to a command on stdin through the shell's printf builtin: printf '...' "$$X" | cmd
STDIN_LINE = re.compile(r"""^\s*printf\s+'[^']*'(\s+"\$\$\{[A-Za-z_][A-Za-z0-9_]*\}")+\s*\|""")


def published_ports(service: dict) -> list[tuple[str, int]]:
    """(host address, container port) of each published port; "" for every address."""
    out = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            out.append((str(entry.get("host_ip", "")), int(str(entry["target"]).split("/")[0])))
            continue
        parts = str(entry).split("/")[0].split(":")
        host_ip = parts[0] if len(parts) == 3 else ""
        out.append((host_ip, int(parts[-1].split("-")[0])))
    return out


def ref_names(value: str) -> set[str]:
    return {name for name, _ in var_refs(value)}


def auth_ini(compose: dict, service: str = "mlflow") -> configparser.ConfigParser | None:
    """The MLflow auth config that MLFLOW_AUTH_CONFIG_PATH of ``service`` points at, from its mounted config."""
    path = environment(compose["services"][service]).get("MLFLOW_AUTH_CONFIG_PATH")
    for entry in compose["services"][service].get("configs") or []:
        if isinstance(entry, dict) and entry.get("target") == path:
            config = configparser.ConfigParser()
            config.read_string(compose["configs"][entry["source"]]["content"])
            return config
    return None


def admin_port_problems(compose: dict) -> list[str]:
    """No published port without authentication; MinIO's console is not published, its S3 API only on loopback."""
    services = compose["services"]
    problems = []
    for name, service in services.items():
        for host_ip, port in published_ports(service):
            if (name, port) not in AUTHENTICATED_PORTS:
                problems.append(f"{name}: publishes port {port}, which is not one of the authenticated endpoints "
                                f"{sorted(AUTHENTICATED_PORTS)}")
            elif (name, port) in LOOPBACK_ONLY and host_ip != "127.0.0.1":
                problems.append(f"{name}: publishes {port} on {host_ip or 'every address'}; bind it to 127.0.0.1")
    mlflow_args = command_args(services["mlflow"])
    if "--app-name=basic-auth" not in mlflow_args and "basic-auth" not in itertools.chain(
            b for a, b in itertools.pairwise(mlflow_args) if a == "--app-name"):
        problems.append("mlflow: the server runs without --app-name=basic-auth: anyone who reaches it may write")
    ini = auth_ini(compose)
    if ini is None:
        problems.append("mlflow: MLFLOW_AUTH_CONFIG_PATH is not a config mounted in the service")
    else:
        if ini["mlflow"].get("default_permission") != "NO_PERMISSIONS":
            problems.append(f"mlflow: default_permission is {ini['mlflow'].get('default_permission')!r}: every "
                            "account would get it on what no role grants; use NO_PERMISSIONS")
        if "admin_password" in ini["mlflow"]:
            problems.append("mlflow: the auth config holds admin_password: give it as MLFLOW_AUTH_ADMIN_PASSWORD")
        if not ini["mlflow"].get("database_uri", "").startswith("postgresql"):
            problems.append("mlflow: the accounts' database_uri is not Postgres (a SQLite file dies with the container)")
    serve = environment(services["serve"])
    if not (serve.get("MLSYS_SERVE_TOKEN") or serve.get("MLSYS_SERVE_TOKEN_FILE")):
        problems.append("serve: no MLSYS_SERVE_TOKEN (or _FILE): /reload would be closed to the pipeline too")
    if serve.get("MLSYS_SERVE_PREDICT_AUTH", "").lower() != "true":
        problems.append("serve: MLSYS_SERVE_PREDICT_AUTH is not \"true\": /predict is open to anyone who reaches it")
    api = environment(services["airflow-apiserver"])
    if api.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "").lower() == "true":
        problems.append("airflow-apiserver: SIMPLE_AUTH_MANAGER_ALL_ADMINS turns the login off")
    return problems


def command_secret_problems(compose: dict) -> list[str]:
    """No secret on a command line: no ${SECRET} (nor a URL with credentials) in a command, entrypoint or
    healthcheck, and a $${SECRET} the shell expands only as printf's argument, piped to a command's stdin."""
    problems = []
    for name, service in compose["services"].items():
        parts = {"command": service.get("command"), "entrypoint": service.get("entrypoint"),
                 "healthcheck": (service.get("healthcheck") or {}).get("test")}
        for part, value in parts.items():
            for text in strings(value or []):
                for ref in sorted(r for r in ref_names(text) if SECRET_NAME.search(r)):
                    problems.append(f"{name}: ${{{ref}}} is put on its {part} line; pass it in the environment")
                if URL_CREDENTIALS.search(text.replace("$$", "$")):
                    problems.append(f"{name}: a URL with credentials on its {part} line")
                for line in text.splitlines():
                    shell_secrets = [r for r in SHELL_REF.findall(line) if SECRET_NAME.search(r)]
                    if shell_secrets and not STDIN_LINE.match(line):
                        problems.append(f"{name}: the shell puts {', '.join(shell_secrets)} on a command line in "
                                        f"{line.strip()!r}; hand it over on stdin (printf ... |)")
    return problems


def passwords_file_problems(compose: dict) -> list[str]:
    """The Airflow UI login (the simple auth manager's passwords file, the admin password) only where the API server
    runs: never in the common environment or a volume of the containers that run tasks."""
    services = compose["services"]
    problems = []
    common = environment(compose["x-airflow-common"])
    for var in (PASSWORDS_FILE_VAR, "AIRFLOW_ADMIN_PASSWORD"):
        if var in common:
            problems.append(f"x-airflow-common sets {var}: every Airflow container, tasks' too, would get it")
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        holds = {var for var in (PASSWORDS_FILE_VAR, "AIRFLOW_ADMIN_PASSWORD") if var in env}
        holds |= {v for value in env.values() for v in ref_names(value) if v == "AIRFLOW_ADMIN_PASSWORD"}
        if holds and name not in UI_LOGIN_SERVICES:
            problems.append(f"{name}: holds {sorted(holds)}, the Airflow UI login; only {sorted(UI_LOGIN_SERVICES)} may")
    for name in UI_LOGIN_SERVICES:
        folder = environment(services[name]).get(PASSWORDS_FILE_VAR, "").rsplit("/", 1)[0]
        if not folder:
            problems.append(f"{name}: no {PASSWORDS_FILE_VAR}")
            continue
        shared = [volume_source(v)[1] for v in services[name].get("volumes") or []
                  if str(v if isinstance(v, str) else v.get("target", "")).rstrip("/").endswith(":" + folder)
                  or (isinstance(v, dict) and v.get("target", "").rstrip("/") == folder)]
        for other, service in services.items():
            if other in UI_LOGIN_SERVICES:
                continue
            mounted = {volume_source(v)[1] for v in service.get("volumes") or []}
            for source in sorted(mounted & set(shared)):
                problems.append(f"{other}: mounts {source!r}, which holds the Airflow passwords file")
    return problems


def _policy_allows(policy: dict, action: str, resource: str) -> bool:
    allowed = False
    for statement in policy.get("Statement", []):
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        if any(fnmatch.fnmatchcase(action, a) for a in actions) and any(
                fnmatch.fnmatchcase(resource, r) for r in resources):
            if statement.get("Effect") == "Deny":
                return False
            allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


def minio_policies(compose: dict) -> dict[str, dict]:
    """{MinIO user variable: the policy minio-init attaches to that user}."""
    init = compose["services"]["minio-init"]
    files = {}
    for entry in init.get("configs") or []:
        if isinstance(entry, dict) and entry.get("target", "").startswith("/policies/"):
            files[entry["target"]] = json.loads(compose["configs"][entry["source"]]["content"])
    script = "\n".join(command_args(init))
    # `mc admin policy create local NAME /policies/NAME.json`, or the same in `for policy in NAME ...; do`
    created = set(re.findall(r"mc admin policy create local ([\w-]+) ", script))
    for names in re.findall(r"for policy in ([\w -]+); do\s+mc admin policy create local \"\$\$\{policy\}\"", script):
        created |= set(names.split())
    policies = {n: files.get(f"/policies/{n}.json") for n in created}
    users = set(re.findall(r"""\| mc admin user add local "\$\$\{(\w+)\}\"""", script))
    out = {}
    for policy, user in re.findall(r"""mc admin policy attach local ([\w-]+) --user "\$\$\{(\w+)\}\"""", script):
        if user in users and policies.get(policy) is not None:
            out[user] = policies[policy]
    return out


def _object(uri: str, key: str = "probe") -> str:
    parsed = urlparse(uri)
    return f"arn:aws:s3:::{parsed.netloc}/{parsed.path.strip('/')}/{key}".replace("//", "/")


def minio_credential_problems(compose: dict) -> list[str]:
    """MinIO's root keys only in minio-init (and the server, and the placeholder check); every other service has its
    own MinIO user, whose policy allows what it needs on its own prefixes and nothing of what it must not do."""
    services = compose["services"]
    problems = []
    for name, service in [("x-airflow-common", compose["x-airflow-common"]), *services.items()]:
        refs = {r for text in strings(service.get("environment") or {}) for r in ref_names(text)}
        root = sorted(r for r in refs if r.startswith("MINIO_ROOT_"))
        if root and name not in MINIO_ROOT_HOLDERS:
            problems.append(f"{name}: gets {root}; MinIO's root keys are minio-init's alone")
    key_of = {}  # service -> the .env variable of its access key
    for name, service in services.items():
        env = environment(service)
        if "AWS_ACCESS_KEY_ID" in env:
            user = next(iter(ref_names(env["AWS_ACCESS_KEY_ID"])), None)
            secret = next(iter(ref_names(env.get("AWS_SECRET_ACCESS_KEY", ""))), None)
            key_of[name] = user
            if not user or not secret or user.removesuffix("_USER") != secret.removesuffix("_PASSWORD"):
                problems.append(f"{name}: AWS_ACCESS_KEY_ID {env['AWS_ACCESS_KEY_ID']!r} and AWS_SECRET_ACCESS_KEY "
                                f"{env.get('AWS_SECRET_ACCESS_KEY')!r} are not one MinIO user's pair")
    groups = {"airflow": {key_of.get(n) for n in AIRFLOW_SERVICES}, "serve": {key_of.get("serve")},
              "mlflow": {key_of.get("mlflow")}}
    for group, keys in groups.items():
        if len(keys) != 1:
            problems.append(f"{group}: its services use different MinIO users {sorted(map(str, keys))}")
    for (a, ka), (b, kb) in itertools.combinations(groups.items(), 2):
        if ka & kb:
            problems.append(f"{a} and {b} share the MinIO user {sorted(ka & kb)}: each service gets its own")
    policies = minio_policies(compose)
    common = environment(compose["x-airflow-common"])
    mlflow_root = re.search(r"--default-artifact-root[= ](s3://\S+)", " ".join(command_args(services["mlflow"])))
    needs = {  # service -> (prefixes it writes, prefixes it reads only)
        "airflow-worker": ([common.get("MLSYS_STORAGE_URI", ""), common.get("MLSYS_ARTIFACT_URI", "")], []),
        "mlflow": ([mlflow_root.group(1) if mlflow_root else ""], []),
        "serve": ([], [common.get("MLSYS_ARTIFACT_URI", "")]),
    }
    everything = [common.get("MLSYS_STORAGE_URI", ""), common.get("MLSYS_ARTIFACT_URI", "")]
    for name, (writes, reads) in needs.items():
        user = key_of.get(name)
        policy = policies.get(user)
        if policy is None:
            problems.append(f"{name}: minio-init creates no user {user!r} with a policy (mc admin user add / policy "
                            "attach)")
            continue
        for uri in writes:
            for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
                if not _policy_allows(policy, action, _object(uri)):
                    problems.append(f"{name}: its MinIO policy does not allow {action} under {uri}")
        for uri in reads:
            if not _policy_allows(policy, "s3:GetObject", _object(uri)):
                problems.append(f"{name}: its MinIO policy does not allow reading {uri}")
        for uri in everything:
            if uri not in writes:
                for action in ("s3:PutObject", "s3:DeleteObject"):
                    if _policy_allows(policy, action, _object(uri)):
                        problems.append(f"{name}: its MinIO policy allows {action} under {uri}, which it only reads")
            if uri not in writes + reads and _policy_allows(policy, "s3:GetObject", _object(uri)):
                problems.append(f"{name}: its MinIO policy allows reading {uri}, which it does not need")
        for bucket in ("mlsys", "mlflow", "other-bucket"):
            for action in ("s3:DeleteBucket", "s3:PutBucketPolicy", "admin:CreateUser"):
                if _policy_allows(policy, action, f"arn:aws:s3:::{bucket}"):
                    problems.append(f"{name}: its MinIO policy allows {action} on {bucket}")
    return problems


def mlflow_account_problems(compose: dict) -> list[str]:
    """Each MLflow client has its own account: the admin only in mlflow and mlflow-init, the workers' and serve's
    accounts made by mlflow-init (mlsys.tracking.accounts) before anyone uses them."""
    services = compose["services"]
    problems = []
    admin = ref_names(environment(services["mlflow"]).get("MLFLOW_AUTH_ADMIN_PASSWORD", ""))
    if not admin:
        problems.append("mlflow: no MLFLOW_AUTH_ADMIN_PASSWORD from .env: the admin account cannot be created")
    init = services.get("mlflow-init", {})
    if command_args(init)[-3:] != ["python", "-m", "mlsys.tracking.accounts"]:
        problems.append(f"mlflow-init runs {command_args(init)}, not python -m mlsys.tracking.accounts")
    init_env = environment(init)
    if ref_names(init_env.get("MLFLOW_TRACKING_PASSWORD", "")) != admin:
        problems.append("mlflow-init does not sign in as the admin that mlflow creates")
    clients = {"serve": ("MLSYS_MLFLOW_SERVE_USER", "MLSYS_MLFLOW_SERVE_PASSWORD")}
    clients.update({n: ("MLSYS_MLFLOW_WORKER_USER", "MLSYS_MLFLOW_WORKER_PASSWORD") for n in AIRFLOW_SERVICES})
    for name, (user, password) in clients.items():
        env = environment(services[name])
        if ref_names(env.get("MLFLOW_TRACKING_USERNAME", "")) != {user} or ref_names(
                env.get("MLFLOW_TRACKING_PASSWORD", "")) != {password}:
            problems.append(f"{name}: MLFLOW_TRACKING_USERNAME/PASSWORD are not ${{{user}}} / ${{{password}}}")
        if ref_names(init_env.get(user, "")) != {user} or ref_names(init_env.get(password, "")) != {password}:
            problems.append(f"mlflow-init does not make the account of {name} ({user}, {password})")
        if name in ("serve", "airflow-worker", "airflow-worker-gpu") and not _reaches(services, name, "mlflow-init"):
            problems.append(f"{name}: does not wait for mlflow-init, which makes its MLflow account")
    for name, service in services.items():
        env = environment(service)
        holds = {r for v in env.values() for r in ref_names(v)} & admin
        if holds and name not in ("mlflow", "mlflow-init", SECRETS_CHECK):
            problems.append(f"{name}: holds the MLflow admin password")
    return problems


def _reaches(services: dict, start: str, target: str, condition: str | None = None) -> bool:
    """Whether ``start`` waits for ``target`` through depends_on (every edge into ``target`` with ``condition``)."""
    seen, stack = set(), [start]
    while stack:
        name = stack.pop()
        for dep, cond in depends_on(services.get(name, {})).items():
            if dep == target and (condition is None or cond == condition):
                return True
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
    return False


def secrets_check_problems(compose: dict) -> list[str]:
    """One-shot secrets-check runs mlsys.deploy_check, without network, on every secret the file uses, and every
    other service waits for it to succeed."""
    services = compose["services"]
    check = services.get(SECRETS_CHECK)
    if check is None:
        return [f"no {SECRETS_CHECK} service: .env.example's placeholders would start the stack"]
    problems = []
    if command_args(check) != ["python", "-m", "mlsys.deploy_check"]:
        problems.append(f"{SECRETS_CHECK} runs {command_args(check)}, not python -m mlsys.deploy_check")
    if check.get("network_mode") != "none":
        problems.append(f"{SECRETS_CHECK} holds every secret: give it network_mode: none")
    if check.get("restart", "no") != "no":
        problems.append(f"{SECRETS_CHECK} is a one-shot: restart: \"no\"")
    checked = {name for name, value in environment(check).items() if ref_names(value) == {name}}
    used = {r for text in strings(compose) for r in ref_names(text) if SECRET_NAME.search(r)}
    for name in sorted(used - checked):
        problems.append(f"{SECRETS_CHECK} does not get ${{{name}}}: a placeholder there would pass")
    for name in services:
        if name != SECRETS_CHECK and not _reaches(services, name, SECRETS_CHECK, "service_completed_successfully"):
            problems.append(f"{name}: starts without waiting for {SECRETS_CHECK} to succeed")
    return problems


def env_example_placeholder_problems(text: str) -> list[str]:
    """Every secret of .env.example is a CHANGE_ME placeholder, which secrets-check refuses."""
    problems = []
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            name, value = (part.strip() for part in line.split("=", 1))
            if SECRET_NAME.search(name) and "CHANGE_ME" not in value:
                problems.append(f".env.example: {name}={value!r} is not a CHANGE_ME placeholder")
    return problems


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


def test_compose_parses_with_services_and_anchor(compose):
    assert isinstance(compose, dict)
    assert "x-airflow-common" in compose, "shared Airflow config belongs in the x-airflow-common anchor"
    expected = {"postgres", "redis", "mlflow", "minio", "minio-init", *AIRFLOW_SERVICES}
    assert expected <= set(compose["services"]), f"missing: {sorted(expected - set(compose['services']))}"


def test_images_pinned_and_builds_exist(compose):
    assert image_problems(compose) == []


def test_dependencies_defined_healthy_and_acyclic(compose):
    assert dependency_problems(compose) == []


def test_airflow_services_wait_for_init_and_healthy_stores(compose):
    for name in AIRFLOW_SERVICES:
        deps = depends_on(compose["services"][name])
        assert deps.get("postgres") == "service_healthy", name
        assert deps.get("redis") == "service_healthy", name
        if name != "airflow-init":
            assert deps.get("airflow-init") == "service_completed_successfully", name


def test_healthchecks(compose):
    services = compose["services"]
    expected = {
        "postgres": "pg_isready",
        "redis": "redis-cli",
        "minio": "ready",
        "mlflow": "/health",
        "airflow-apiserver": "/api/v2/",
        "airflow-scheduler": ":8974/health",
    }
    for name, needle in expected.items():
        test = " ".join(services[name].get("healthcheck", {}).get("test", []))
        assert needle in test, f"{name}: healthcheck {test!r} should use {needle!r}"


def test_volumes_declared_and_bind_mounts_exist(compose):
    assert volume_problems(compose) == []
    sources = {volume_source(v)[1] for v in compose["x-airflow-common"]["volumes"]}
    assert {"./dags", "./plugins", "./include", "mlsys-home"} <= sources


def test_variables_documented_in_env_example(compose):
    assert variable_problems(compose, env_example_vars()) == []


def test_env_example_has_no_unused_variables(compose):
    used = {name for text in strings(compose) for name, _ in var_refs(text)}
    assert env_example_vars() - used == set(), ".env.example lists variables docker-compose.yaml never uses"


def test_no_literal_secrets(compose):
    assert secret_problems(compose) == []


def test_airflow_env_matches_the_code(compose):
    code_vars = code_env_vars()
    assert "MLSYS_HOME" in code_vars, "the scan of include/mlsys found nothing: is the pattern stale?"
    assert code_env_problems(compose, code_vars) == []


def test_celery_executor_and_airflow_settings(compose):
    assert celery_problems(compose) == []


def test_gpu_worker(compose):
    assert gpu_worker_problems(compose) == []


def test_every_url_names_a_service(compose):
    assert url_host_problems(compose) == []


def test_train_placement_queued_timeout_and_shared_memory(compose):
    assert placement_problems(compose) == []
    assert {"MLSYS_TRAIN_QUEUE", "MLSYS_SHM_SIZE", "TASK_QUEUED_TIMEOUT_S"} <= env_example_vars()


def test_defaults_are_resolved_in_urls():
    assert host_of("${MLSYS_SERVE_URL-http://serve:8000}") == "serve"
    assert host_of("${MLSYS_SERVE_URL:-http://srv:8000}") == "srv"
    assert host_of("postgresql+psycopg2://${POSTGRES_USER}:${POSTGRES_PASSWORD}@postgres:5432/airflow") == "postgres"
    assert with_defaults("${MLSYS_TRAIN_QUEUE:-}") == ""


def test_mlflow_uses_postgres_and_minio(compose):
    assert mlflow_problems(compose) == []


def test_no_unauthenticated_port_is_published(compose):
    assert admin_port_problems(compose) == []


def test_no_secret_on_a_command_line(compose):
    assert command_secret_problems(compose) == []


def test_airflow_login_only_in_the_api_server(compose):
    assert passwords_file_problems(compose) == []


def test_minio_root_keys_only_in_minio_init_and_one_policy_per_service(compose):
    assert minio_credential_problems(compose) == []
    assert set(minio_policies(compose)) == {"MINIO_WORKER_USER", "MINIO_SERVE_USER", "MINIO_MLFLOW_USER"}


def test_each_mlflow_client_has_its_own_account(compose):
    assert mlflow_account_problems(compose) == []


def test_secrets_check_guards_every_service(compose):
    assert secrets_check_problems(compose) == []
    assert env_example_placeholder_problems(ENV_EXAMPLE.read_text()) == []
    assert env_example_placeholder_problems("MLSYS_SERVE_TOKEN=change-me-token\n") != []


def test_policy_evaluation():
    policy = {"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::b/p/*"]}]}
    assert _policy_allows(policy, "s3:GetObject", "arn:aws:s3:::b/p/x")
    assert not _policy_allows(policy, "s3:GetObject", "arn:aws:s3:::b/q/x")
    assert not _policy_allows(policy, "s3:PutObject", "arn:aws:s3:::b/p/x")
    deny = {"Statement": [*policy["Statement"], {"Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"}]}
    assert not _policy_allows(deny, "s3:GetObject", "arn:aws:s3:::b/p/x")
    assert published_ports({"ports": ["127.0.0.1:9000:9000", "8000:8000", 5000]}) == [
        ("127.0.0.1", 9000), ("", 8000), ("", 5000)]


def test_dockerfile():
    text = DOCKERFILE.read_text()
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    requirements = text.index("pip install -r requirements.txt")
    assert requirements < text.index("pip install --no-deps ."), "the pinned set goes in first, then mlsys alone"
    for folder in ("dags/", "plugins/", "include/"):
        assert re.search(rf"^COPY {folder} ", text, re.MULTILINE), f"{folder} is not copied into the image"
    assert "index-url" not in text and "find-links" not in text, "the image installs from the default index"
    for line in instructions:
        if line.startswith("COPY") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (REPO_ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"


# Each check must be able to fail: break a copy of the file and expect a report.


def _break_depends_on_undefined(c):
    c["services"]["airflow-scheduler"]["depends_on"]["no-such-service"] = {"condition": "service_started"}


def _break_healthy_without_healthcheck(c):
    del c["services"]["redis"]["healthcheck"]


def _break_cycle(c):
    c["services"]["postgres"]["depends_on"] = {"airflow-scheduler": {"condition": "service_started"}}


def _break_latest_image(c):
    c["services"]["redis"]["image"] = "redis:latest"


def _break_untagged_image(c):
    c["services"]["minio"]["image"] = "minio/minio"


def _break_build_context(c):
    c["services"]["mlflow"]["build"] = {"context": "no-such-dir"}


def _break_undeclared_volume(c):
    c["services"]["redis"]["volumes"] = ["redis-data:/data"]


def _break_missing_bind_path(c):
    c["services"]["redis"]["volumes"] = ["./no-such-folder:/data"]


def _break_undocumented_variable(c):
    c["services"]["redis"]["environment"] = {"REDIS_ARGS": "${UNDOCUMENTED_VAR}"}


def _break_literal_password(c):
    c["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] = "hunter2"


def _break_literal_default_secret(c):
    c["services"]["minio"]["environment"]["MINIO_ROOT_PASSWORD"] = "${MINIO_ROOT_PASSWORD:-minioadmin}"


def _break_password_in_url(c):
    c["x-airflow-common"]["environment"]["AIRFLOW__CELERY__BROKER_URL"] = "redis://user:hunter2@redis:6379/0"


def _break_missing_code_var(c):
    del c["services"]["airflow-worker"]["environment"]["MLSYS_STORAGE_URI"]


def _break_unread_mlsys_var(c):
    c["x-airflow-common"]["environment"]["MLSYS_NOT_READ_ANYWHERE"] = "1"


def _break_executor(c):
    c["x-airflow-common"]["environment"]["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"


def _break_url_host(c):
    c["x-airflow-common"]["environment"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = "http://apiserver:8080/execution/"


def _break_serve_url_default(c):
    c["x-airflow-common"]["environment"]["MLSYS_SERVE_URL"] = "${MLSYS_SERVE_URL-http://server:8000}"


def _break_serve_url_port(c):
    c["x-airflow-common"]["environment"]["MLSYS_SERVE_URL"] = "${MLSYS_SERVE_URL-http://serve:8080}"


def _break_serve_tracking_host(c):
    c["services"]["serve"]["environment"]["MLFLOW_TRACKING_URI"] = "http://mlflow-server:5000"


def _break_serve_default_host(c):
    c["services"]["serve"]["environment"]["AWS_ENDPOINT_URL"] = "${S3_URL:-http://s3:9000}"


def _break_command_url(c):
    c["services"]["minio-init"]["command"] = ["mc alias set local http://objects:9000 a b"]


def _break_hardcoded_train_queue(c):
    c["x-airflow-common"]["environment"]["MLSYS_TRAIN_QUEUE"] = "gpu"


def _break_no_queued_timeout(c):
    del c["x-airflow-common"]["environment"]["AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT"]


def _break_no_shm_size(c):
    del c["services"]["airflow-worker"]["shm_size"]


def _break_small_shm_size(c):
    c["services"]["airflow-worker-gpu"]["shm_size"] = "${MLSYS_SHM_SIZE:-64m}"


def _break_gpu_queue(c):
    c["services"]["airflow-worker-gpu"]["command"] = ["airflow", "celery", "worker"]


def _break_gpu_reservation(c):
    del c["services"]["airflow-worker-gpu"]["deploy"]


def _break_mlflow_artifacts(c):
    c["services"]["mlflow"]["command"] = [a for a in c["services"]["mlflow"]["command"] if "artifact-root" not in a]


def _break_bucket_not_created(c):
    c["x-airflow-common"]["environment"]["MLSYS_STORAGE_URI"] = "s3://other-bucket/storage"


def _break_publish_minio_console(c):
    c["services"]["minio"]["ports"].append("9001:9001")


def _break_minio_api_on_every_address(c):
    c["services"]["minio"]["ports"] = ["9000:9000"]


def _break_publish_postgres(c):
    c["services"]["postgres"]["ports"] = ["5432:5432"]


def _break_mlflow_without_auth(c):
    c["services"]["mlflow"]["command"] = [a for a in c["services"]["mlflow"]["command"] if "app-name" not in a]


def _break_mlflow_default_read(c):
    ini = c["configs"]["mlflow-auth"]["content"]
    c["configs"]["mlflow-auth"]["content"] = ini.replace("NO_PERMISSIONS", "READ")


def _break_serve_predict_open(c):
    c["services"]["serve"]["environment"]["MLSYS_SERVE_PREDICT_AUTH"] = "false"


def _break_secret_in_command(c):
    c["services"]["mlflow"]["command"].append("--backend-store-uri=postgresql://u:${POSTGRES_PASSWORD}@postgres/mlflow")


def _break_secret_as_shell_argument(c):
    c["services"]["minio-init"]["command"][0] += 'mc admin user add local "$${MINIO_SERVE_USER}" "$${MINIO_SERVE_PASSWORD}"\n'


def _break_secret_in_healthcheck(c):
    c["services"]["postgres"]["healthcheck"]["test"] = ["CMD-SHELL", "PGPASSWORD=${POSTGRES_PASSWORD} pg_isready"]


def _break_passwords_file_in_common(c):
    c["x-airflow-common"]["environment"][PASSWORDS_FILE_VAR] = "/opt/airflow/auth/passwords.json"


def _break_admin_password_in_worker(c):
    c["services"]["airflow-worker"]["environment"]["AIRFLOW_ADMIN_PASSWORD"] = "${AIRFLOW_ADMIN_PASSWORD}"


def _break_passwords_volume_shared(c):
    c["services"]["airflow-apiserver"]["volumes"] = [*c["x-airflow-common"]["volumes"], "airflow-auth:/opt/airflow/auth"]
    c["services"]["airflow-worker"]["volumes"] = [*c["x-airflow-common"]["volumes"], "airflow-auth:/opt/airflow/auth"]


def _break_root_keys_in_serve(c):
    c["services"]["serve"]["environment"]["AWS_ACCESS_KEY_ID"] = "${MINIO_ROOT_USER}"
    c["services"]["serve"]["environment"]["AWS_SECRET_ACCESS_KEY"] = "${MINIO_ROOT_PASSWORD}"


def _break_serve_uses_worker_key(c):
    c["services"]["serve"]["environment"]["AWS_ACCESS_KEY_ID"] = "${MINIO_WORKER_USER}"
    c["services"]["serve"]["environment"]["AWS_SECRET_ACCESS_KEY"] = "${MINIO_WORKER_PASSWORD}"


def _break_serve_policy_writes(c):
    c["configs"]["minio-policy-serve"]["content"] = c["configs"]["minio-policy-worker"]["content"]


def _break_worker_policy_narrow(c):
    policy = c["configs"]["minio-policy-worker"]["content"]
    c["configs"]["minio-policy-worker"]["content"] = policy.replace('"arn:aws:s3:::mlsys/*", ', "")


def _break_policy_not_attached(c):
    lines = c["services"]["minio-init"]["command"][0].splitlines()
    c["services"]["minio-init"]["command"][0] = "\n".join(line for line in lines if "attach local mlsys-mlflow" not in line)


def _break_serve_mlflow_admin(c):
    c["services"]["serve"]["environment"]["MLFLOW_TRACKING_USERNAME"] = "${MLFLOW_ADMIN_USERNAME:-admin}"
    c["services"]["serve"]["environment"]["MLFLOW_TRACKING_PASSWORD"] = "${MLFLOW_ADMIN_PASSWORD}"


def _break_workers_before_accounts(c):
    del c["services"]["airflow-worker"]["depends_on"]["mlflow-init"]


def _break_no_secrets_check_wait(c):
    del c["services"]["minio"]["depends_on"]


def _break_unchecked_secret(c):
    del c["services"]["secrets-check"]["environment"]["MLSYS_SERVE_TOKEN"]


def _break_secrets_check_networked(c):
    del c["services"]["secrets-check"]["network_mode"]


def _break_own_service_var(c):
    del c["services"]["mlflow-init"]["environment"]["MLFLOW_TRACKING_USERNAME"]


BREAKAGES = [
    (_break_depends_on_undefined, dependency_problems),
    (_break_healthy_without_healthcheck, dependency_problems),
    (_break_cycle, dependency_problems),
    (_break_latest_image, image_problems),
    (_break_untagged_image, image_problems),
    (_break_build_context, image_problems),
    (_break_undeclared_volume, volume_problems),
    (_break_missing_bind_path, volume_problems),
    (_break_undocumented_variable, lambda c: variable_problems(c, env_example_vars())),
    (_break_literal_password, secret_problems),
    (_break_literal_default_secret, secret_problems),
    (_break_password_in_url, secret_problems),
    (_break_missing_code_var, lambda c: code_env_problems(c, code_env_vars())),
    (_break_unread_mlsys_var, lambda c: code_env_problems(c, code_env_vars())),
    (_break_executor, celery_problems),
    (_break_url_host, celery_problems),
    (_break_serve_url_default, url_host_problems),
    (_break_serve_url_port, url_host_problems),
    (_break_serve_tracking_host, url_host_problems),
    (_break_serve_default_host, url_host_problems),
    (_break_command_url, url_host_problems),
    (_break_hardcoded_train_queue, placement_problems),
    (_break_no_queued_timeout, placement_problems),
    (_break_no_shm_size, placement_problems),
    (_break_small_shm_size, placement_problems),
    (_break_gpu_queue, gpu_worker_problems),
    (_break_gpu_reservation, gpu_worker_problems),
    (_break_mlflow_artifacts, mlflow_problems),
    (_break_bucket_not_created, mlflow_problems),
    (_break_publish_minio_console, admin_port_problems),
    (_break_minio_api_on_every_address, admin_port_problems),
    (_break_publish_postgres, admin_port_problems),
    (_break_mlflow_without_auth, admin_port_problems),
    (_break_mlflow_default_read, admin_port_problems),
    (_break_serve_predict_open, admin_port_problems),
    (_break_secret_in_command, command_secret_problems),
    (_break_secret_as_shell_argument, command_secret_problems),
    (_break_secret_in_healthcheck, command_secret_problems),
    (_break_passwords_file_in_common, passwords_file_problems),
    (_break_admin_password_in_worker, passwords_file_problems),
    (_break_passwords_volume_shared, passwords_file_problems),
    (_break_root_keys_in_serve, minio_credential_problems),
    (_break_serve_uses_worker_key, minio_credential_problems),
    (_break_serve_policy_writes, minio_credential_problems),
    (_break_worker_policy_narrow, minio_credential_problems),
    (_break_policy_not_attached, minio_credential_problems),
    (_break_serve_mlflow_admin, mlflow_account_problems),
    (_break_workers_before_accounts, mlflow_account_problems),
    (_break_no_secrets_check_wait, secrets_check_problems),
    (_break_unchecked_secret, secrets_check_problems),
    (_break_secrets_check_networked, secrets_check_problems),
    (_break_own_service_var, lambda c: code_env_problems(c, code_env_vars())),
]


@pytest.mark.parametrize(("breaker", "check"), BREAKAGES, ids=[b.__name__.removeprefix("_break_") for b, _ in BREAKAGES])
def test_check_catches(compose, breaker, check):
    assert check(compose) == [], "the unbroken file must pass this check"
    broken = copy.deepcopy(compose)
    breaker(broken)
    assert check(broken) != [], f"{breaker.__name__} went unnoticed"


def test_code_scan_finds_each_read_form(tmp_path, monkeypatch):
    package = tmp_path / "include" / "mlsys"
    package.mkdir(parents=True)
    (package / "a.py").write_text(
        'import os\nfrom os import environ, getenv\n'
        'os.environ.get("MLSYS_A")\nos.environ["MLFLOW_B"]\ngetenv("AWS_C", "x")\nenviron.get("OTHER_D")\n'
    )
    monkeypatch.setitem(globals(), "REPO_ROOT", tmp_path)
    monkeypatch.setitem(globals(), "CODE_ROOT", package)
    assert set(code_env_vars()) == {"MLSYS_A", "MLFLOW_B", "AWS_C"}
