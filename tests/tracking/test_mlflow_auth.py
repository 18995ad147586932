"""MLflow with authentication, as docker-compose.yaml runs it: a real ``mlflow server --app-name basic-auth``.

One server for the module, started with the compose file's own auth config (its ``mlflow-auth`` config, with a
SQLite database in place of Postgres) and flags; the admin comes from ``MLFLOW_AUTH_ADMIN_*`` as in compose. The
accounts are made by ``mlsys.tracking.accounts.main``, what the compose ``mlflow-init`` service runs
(``python -m mlsys.tracking.accounts``), with the environment that service gets. Then: no credentials -> 401; the
worker account runs the pipeline's MLflow path (mlsys.tracking's experiment, a run, a logged model, a version, an
alias); the serve account reads that model and is refused (403) every write; running the init again with a new
password rotates it.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
import yaml

from mlsys.bench.harness import free_port
from mlsys.tracking import accounts, tracker

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN = ("mlflow-admin", "admin-password-0123")
WORKER = ("pipeline-worker", "worker-password-0123")
SERVE = ("model-server", "serve-password-0123")
MODEL = "auth-test-model"
MODEL_CODE = '''
import mlflow.pyfunc
from mlflow.models import set_model


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


set_model(Echo())
'''


def _compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())


def _compose_auth_ini(database_uri: str) -> str:
    """The compose file's MLflow auth config, pointed at ``database_uri``."""
    config = configparser.ConfigParser()
    config.read_string(_compose()["configs"]["mlflow-auth"]["content"])
    config["mlflow"]["database_uri"] = database_uri
    lines = [f"{key} = {value}" for key, value in config["mlflow"].items()]
    return "[mlflow]\n" + "\n".join(lines) + "\n"


def _compose_server_flags() -> list[str]:
    """The auth-related flags of the compose file's ``mlflow server`` command."""
    command = _compose()["services"]["mlflow"]["command"]
    flags = [arg for arg in command if arg.startswith(("--app-name", "--enable-workspaces"))]
    assert "--app-name=basic-auth" in flags, f"compose runs mlflow server without basic-auth: {command}"
    return flags


def _clean_env() -> dict[str, str]:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=str(REPO_ROOT / "include"))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "MLFLOW_TRACKING_URI",
                "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        env.pop(var, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def status(url: str, path: str, method: str = "GET", body: dict | None = None, auth: tuple[str, str] | None = None):
    """The HTTP status of one REST call, with basic auth or none."""
    request = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A basic-auth MLflow server with the compose config; its URL."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    ini = root / "basic_auth.ini"
    ini.write_text(_compose_auth_ini(f"sqlite:///{root / 'auth.db'}"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    env = _clean_env() | {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-flask-secret-key-0123",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", *_compose_server_flags(),
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--default-artifact-root", str(root / "art"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
            start_new_session=True,  # its own process group: the server and its workers stop together
        )
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy at {url} within 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        _stop(proc)
        import mlflow

        mlflow.set_tracking_uri(None)  # never leave later tests pointing at a server that is gone
        mlflow.set_registry_uri(None)


def _healthy(url: str) -> bool:
    try:
        return status(url, "/health") == 200
    except (urllib.error.URLError, OSError):
        return False


def run_init(url: str, worker_password: str = WORKER[1], serve_password: str = SERVE[1]) -> str:
    """``python -m mlsys.tracking.accounts`` (its ``main``, in this process) with the environment compose gives
    mlflow-init; what it prints."""
    env = {
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_TRACKING_USERNAME": ADMIN[0],
        "MLFLOW_TRACKING_PASSWORD": ADMIN[1],
        "MLSYS_MODEL_NAME": MODEL,
        "MLSYS_MLFLOW_WORKER_USER": WORKER[0],
        "MLSYS_MLFLOW_WORKER_PASSWORD": worker_password,
        "MLSYS_MLFLOW_SERVE_USER": SERVE[0],
        "MLSYS_MLFLOW_SERVE_PASSWORD": serve_password,
    }
    out = StringIO()
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(out):
        for name, value in env.items():
            mp.setenv(name, value)
        assert accounts.main([]) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def initialised(server):
    return server, run_init(server)


@contextmanager
def signed_in(url: str, account: tuple[str, str]):
    """An MlflowClient (and the fluent API) acting as ``account``, as MLFLOW_TRACKING_* in compose make it."""
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", url)
        mp.setenv("MLFLOW_TRACKING_USERNAME", account[0])
        mp.setenv("MLFLOW_TRACKING_PASSWORD", account[1])
        mlflow.set_tracking_uri(url)
        mlflow.set_registry_uri(url)  # not the registry an earlier stage in this process configured (tracker)
        yield mlflow.MlflowClient(url, registry_uri=url)


@pytest.fixture(scope="module")
def pipeline_model(initialised, tmp_path_factory):
    """What the pipeline's account does in a DAG run: an experiment, a run, a logged model, a version, an alias."""
    import mlflow

    url, _ = initialised
    folder = tmp_path_factory.mktemp("pipeline")
    (folder / "model_code.py").write_text(MODEL_CODE)
    with signed_in(url, WORKER) as client, pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLSYS_ARTIFACT_URI", str(folder / "artifacts"))
        exp_id = tracker.experiment_id("auth-test-pipeline")  # with its artifact_location, as every DAG run's
        with mlflow.start_run(experiment_id=exp_id) as run:
            mlflow.log_param("epochs", 2)
            mlflow.log_metric("f1", 0.9)
            # models from code: the model is a Python file in the artifact, not a pickle
            info = mlflow.pyfunc.log_model(name="model", python_model=str(folder / "model_code.py"),
                                           pip_requirements=["mlflow"])
        version = mlflow.register_model(info.model_uri, MODEL).version
        client.set_registered_model_alias(MODEL, "champion", version)
        client.set_model_version_tag(MODEL, version, "mlsys.test", "yes")
    return {"url": url, "experiment_id": exp_id, "run_id": run.info.run_id, "version": str(version)}


# -- without credentials --------------------------------------------------------------------


def test_no_or_wrong_credentials_get_401_and_health_stays_open(server):
    assert status(server, "/api/2.0/mlflow/experiments/search?max_results=1") == 401
    assert status(server, "/api/2.0/mlflow/experiments/search?max_results=1", auth=(ADMIN[0], "wrong-password-0")) == 401
    assert status(server, "/api/2.0/mlflow/registered-models/search") == 401
    assert status(server, "/health") == 200  # the compose healthcheck needs no account


def test_the_init_makes_each_account_with_its_role(initialised):
    url, out = initialised
    assert f"created MLflow account '{WORKER[0]}' with role {accounts.PIPELINE}" in out
    assert f"created MLflow account '{SERVE[0]}' with role {accounts.READER}" in out
    assert f"created registered model '{MODEL}'" in out
    assert status(url, "/api/2.0/mlflow/users/get?username=" + SERVE[0], auth=WORKER) == 403  # not an admin


# -- the worker account ---------------------------------------------------------------------


def test_the_worker_runs_the_pipeline_path(pipeline_model):
    url = pipeline_model["url"]
    with signed_in(url, WORKER) as client:
        run = client.get_run(pipeline_model["run_id"])
        assert run.data.metrics["f1"] == 0.9
        assert client.get_model_version_by_alias(MODEL, "champion").version == pipeline_model["version"]
    # on what it did not create itself it has EDIT, not MANAGE: it writes, but deletes and grants nothing
    with signed_in(url, ADMIN) as client:
        other = client.create_experiment("auth-test-made-by-admin")
    assert status(url, "/api/2.0/mlflow/runs/create", "POST", {"experiment_id": other}, auth=WORKER) == 200
    assert status(url, "/api/2.0/mlflow/experiments/delete", "POST", {"experiment_id": other}, auth=WORKER) == 403
    assert status(url, "/api/2.0/mlflow/registered-models/delete", "DELETE", {"name": MODEL}, auth=WORKER) == 403
    grant = {"username": SERVE[0], "resource_type": "registered_model", "resource_id": MODEL, "permission": "MANAGE"}
    assert status(url, "/api/3.0/mlflow/users/permissions/grant", "POST", grant, auth=WORKER) == 403
    user = {"username": "intruder", "password": "intruder-password-0123"}
    assert status(url, "/api/2.0/mlflow/users/create", "POST", user, auth=WORKER) == 403


# -- the serve account ----------------------------------------------------------------------


def test_serve_reads_the_champion(pipeline_model):
    import mlflow

    with signed_in(pipeline_model["url"], SERVE) as client:
        mv = client.get_model_version_by_alias(MODEL, "champion")
        assert mv.version == pipeline_model["version"] and mv.tags["mlsys.test"] == "yes"
        assert client.get_run(pipeline_model["run_id"]).info.status == "FINISHED"
        local = mlflow.artifacts.download_artifacts(f"models:/{MODEL}@champion")
        assert (Path(local) / "MLmodel").is_file()


def test_serve_is_refused_every_write(pipeline_model):
    url, version = pipeline_model["url"], pipeline_model["version"]
    writes = {
        "set the alias": ("/api/2.0/mlflow/registered-models/alias", "POST",
                          {"name": MODEL, "alias": "champion", "version": version}),
        "delete the alias": ("/api/2.0/mlflow/registered-models/alias", "DELETE", {"name": MODEL, "alias": "champion"}),
        "create a run": ("/api/2.0/mlflow/runs/create", "POST", {"experiment_id": pipeline_model["experiment_id"]}),
        "log to the run": ("/api/2.0/mlflow/runs/log-metric", "POST",
                           {"run_id": pipeline_model["run_id"], "key": "f1", "value": 1.0, "timestamp": 0}),
        "create a version": ("/api/2.0/mlflow/model-versions/create", "POST",
                             {"name": MODEL, "source": "/tmp/elsewhere", "run_id": pipeline_model["run_id"]}),
        "rename the model": ("/api/2.0/mlflow/registered-models/rename", "POST", {"name": MODEL, "new_name": "x"}),
    }
    got = {what: status(url, path, method, body, auth=SERVE) for what, (path, method, body) in writes.items()}
    assert got == dict.fromkeys(writes, 403)
    # the served model exists from the start (the init made it): nobody can create it and own it
    create = {"name": MODEL}
    assert status(url, "/api/2.0/mlflow/registered-models/create", "POST", create, auth=SERVE) not in range(200, 300)
    with signed_in(url, SERVE) as client:  # and nothing moved
        assert client.get_model_version_by_alias(MODEL, "champion").version == version


# -- rotation (last: it changes the passwords) ----------------------------------------------


def test_running_the_init_again_rotates_a_password(pipeline_model):
    url = pipeline_model["url"]
    new = "serve-password-rotated-0123"
    again = run_init(url, serve_password=new)
    assert f"updated MLflow account '{SERVE[0]}' with role {accounts.READER}" in again
    assert f"registered model '{MODEL}' exists" in again
    path = f"/api/2.0/mlflow/registered-models/alias?name={MODEL}&alias=champion"
    assert status(url, path, auth=(SERVE[0], new)) == 200
    assert status(url, path, auth=SERVE) == 401
    assert status(url, path, auth=WORKER) == 200  # the other accounts keep theirs


def test_the_admin_rotates_its_own_password(server):
    """docs/security.md's way: MLflow reads MLFLOW_AUTH_ADMIN_PASSWORD only when it creates the admin."""
    from mlflow.server.auth.client import AuthServiceClient

    new = "admin-password-rotated-0123"
    with signed_in(server, ADMIN):
        AuthServiceClient(server).update_user_password(ADMIN[0], new, ADMIN[1])
    path = "/api/2.0/mlflow/users/get?username=" + SERVE[0]
    assert status(server, path, auth=(ADMIN[0], new)) == 200
    assert status(server, path, auth=ADMIN) == 401


def test_an_account_is_checked_before_any_request(monkeypatch):
    with pytest.raises(ValueError, match="account 's': its password has 5 characters, MLflow needs at least 12"):
        accounts.Account("s", "short", accounts.READER)
    with pytest.raises(ValueError, match="role 'owner' is not one of"):
        accounts.Account("s", "long-enough-password", "owner")
    monkeypatch.delenv("MLSYS_MLFLOW_SERVE_PASSWORD", raising=False)
    monkeypatch.delenv("MLSYS_MLFLOW_SERVE_PASSWORD_FILE", raising=False)
    monkeypatch.setenv("MLSYS_MLFLOW_WORKER_PASSWORD", "worker-password-0123")
    with pytest.raises(ValueError, match="MLSYS_MLFLOW_SERVE_PASSWORD .* is not set"):
        accounts.accounts_from_env()
