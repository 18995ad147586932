"""Static checks of the scale-out deployment (docker-compose.yaml, Dockerfile, .env.example).

No Docker engine is needed: the compose file is read with PyYAML (which resolves
the ``x-airflow-common`` anchors and ``<<`` merges as Compose does) and checked
for the mistakes that only show up at ``docker compose up`` otherwise.

Each check is a function that returns a list of problems; a test asserts the
list is empty, and ``test_check_catches`` asserts each check does report a
deliberately broken copy.
"""

from __future__ import annotations

import copy
import itertools
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
    "MLFLOW_S3_ENDPOINT_URL",
    "MLFLOW_DISABLE_TELEMETRY",
}
CODE_VAR_PREFIXES = ("MLSYS_", "MLFLOW_", "AWS_")

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
    """The Airflow services set what include/mlsys reads, and nothing MLSYS_* that it doesn't."""
    problems = []
    required = (set(code_vars) - OPTIONAL_CODE_VARS) | LIBRARY_VARS
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
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+postgresql://",
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
        for flag, value in zip(args, args[1:]):
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
    if "--backend-store-uri=postgresql" not in args and "--backend-store-uri postgresql" not in args:
        problems.append("mlflow server has no Postgres backend store")
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
