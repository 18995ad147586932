"""docker-compose.yaml's topology run without Docker: every service a local process with the compose file's own
environment, the whole pipeline through Airflow's REST API, and the new champion answering on `serve`.

The environment of each process is read from docker-compose.yaml (``tests/e2e/compose_env.py``): ``.env``
is ``.env.example`` with each CHANGE_ME secret generated (checked by the compose ``secrets-check`` service,
``python -m mlsys.deploy_check``, which must also refuse ``.env.example`` as it is), ``MLSYS_TRAIN_QUEUE=gpu``;
hostnames point at the local processes, container paths at a folder per service (bind mounts and volumes
are symlinks in it: ``/opt/airflow/data`` -> ``../shared/data``). A variable the code needs that the file
does not give (or gives wrongly) fails here. ``tests/e2e/compose_stack.py`` starts the services:

    compose service            here
    postgres, redis            the local PostgreSQL (127.0.0.1:5432: a role and databases of the test's own)
                               and Redis (127.0.0.1:6379: Celery's keys under a prefix of the test's own)
    minio, minio-init          moto_server, with minio-init's buckets; moto enforces no MinIO user or policy,
                               so each service's key pair and policy are checked statically only
                               (tests/test_compose.py)
    mlflow, mlflow-init        mlflow server --app-name=basic-auth with the compose auth config, on the
                               PostgreSQL databases through PGUSER/PGPASSWORD; mlsys.tracking.accounts
    airflow-init               its script: db migrate, the gpu and mlsys_promotion pools
    airflow-apiserver          its script: the passwords file from .env, then airflow api-server
    airflow-scheduler, -dag-processor, -triggerer, -worker (CeleryExecutor)
    airflow-worker-gpu         the same Celery worker on queue `gpu`, on CPU: no GPU here
    serve                      mlsys serve: bearer token on /predict, signed models only

Beyond the compose environment the Airflow processes get only free ports (API, scheduler health, log
servers), the Redis key prefix, 2-core sizing (parallelism 4, 2 Celery slots, 1 API and MLflow worker, 1
parsing process) and ``use_job_schedule=False`` (only the runs the test triggers).

Run:  .venv/bin/python -m pytest tests/e2e/test_compose_topology.py -x -q -s
"""

from __future__ import annotations

import ast
import json
import time

import pytest

from tests.e2e.airflow_cluster import REPO_ROOT, require_servers_or_fail
from tests.e2e.compose_stack import WORKERS, ComposeStack

pytestmark = [pytest.mark.e2e, pytest.mark.scaleout]

RUN_TIMEOUT_S = 420
TRAIN_CONF = {"epochs": 2}  # the form's smallest sensible run: the test is about placement, not accuracy


def _fail_with_logs(stack: ComposeStack, dag_id: str, run_id: str, run: dict) -> None:
    tis = stack.task_instances(dag_id, run_id)
    states = {ti["task_id"]: ti["state"] for ti in tis}
    if run["state"] == "success" and all(s == "success" for s in states.values()):
        return
    logs = "\n\n".join(
        f"----- task log: {ti['task_id']} (try {ti['try_number']}, state {ti['state']}) -----\n"
        + stack.task_log(dag_id, run_id, ti["task_id"], max(ti["try_number"], 1), ti["map_index"])
        for ti in tis if ti["state"] != "success"
    )
    pytest.fail(f"run {run_id} of {dag_id} ended {run['state']!r}; task states: {states}\n\n{logs}")


def _value(xcom):
    """An XCom value from the REST API: the object, or its JSON or Python text."""
    if not isinstance(xcom, str):
        return xcom
    try:
        return json.loads(xcom)
    except ValueError:
        return ast.literal_eval(xcom)


def _run(stack: ComposeStack, dag_id: str, conf: dict | None = None) -> tuple[str, list[dict], dict]:
    run_id = stack.trigger(dag_id, conf)
    run = stack.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT_S)
    _fail_with_logs(stack, dag_id, run_id, run)
    tis = stack.task_instances(dag_id, run_id)
    return run_id, tis, stack.celery_evidence(dag_id, run_id, workers=WORKERS)


def test_compose_topology_runs_the_pipeline_and_serves_the_champion(show_cluster_logs_on_failure, tmp_path):
    require_servers_or_fail()  # PostgreSQL and Redis must run: FAIL, never skip, without them
    t0 = time.monotonic()
    stack = ComposeStack(home=tmp_path / "compose", dags_folder=REPO_ROOT / "dags",
                         env_overrides={"MLSYS_TRAIN_QUEUE": "gpu"})
    show_cluster_logs_on_failure(stack)
    values = stack.values
    model = values["MLSYS_MODEL_NAME"]
    token = {"Authorization": f"Bearer {values['MLSYS_SERVE_TOKEN']}"}
    reader = (values["MLSYS_MLFLOW_SERVE_USER"], values["MLSYS_MLFLOW_SERVE_PASSWORD"])

    with stack:
        # secrets-check passed with the generated secrets (start() runs it); .env.example as it is is refused
        refused = stack.secrets_check_refuses_env_example()
        assert refused.returncode == 1 and "CHANGE_ME" in refused.stderr, refused.stderr

        # mlflow-init's accounts work against the basic-auth server: none -> 401, the serve account reads
        assert stack.http("mlflow", "GET", "/api/2.0/mlflow/experiments/search?max_results=1")[0] == 401
        status, _, body = stack.http("mlflow", "GET", f"/api/2.0/mlflow/registered-models/get?name={model}",
                                     basic=reader)
        assert status == 200, f"serve's MLflow account cannot read {model} made by mlflow-init: {body}"
        # no champion yet: serve is alive but not ready
        assert stack.http("serve", "GET", "/ready")[0] == 503

        stack.wait_for_dag("mlsys_data")
        stack.wait_for_dag("mlsys_training")
        t_run = time.monotonic()
        data_run, data_tis, data_celery = _run(stack, "mlsys_data")
        data_s = time.monotonic() - t_run
        t_run = time.monotonic()
        train_run, train_tis, train_celery = _run(stack, "mlsys_training", TRAIN_CONF)
        train_s = time.monotonic() - t_run

        # the champion: what the registry says, read with serve's own account
        status, _, body = stack.http("mlflow", "GET", "/api/2.0/mlflow/registered-models/alias"
                                     f"?name={model}&alias=champion", basic=reader)
        assert status == 200, body
        label = f"{model}/{body['model_version']['version']}"

        # evaluate told serve to reload (MLSYS_SERVE_URL, MLSYS_SERVE_TOKEN): serve polls too, so only this shows
        # that the workers reach serve with a token it takes
        xcom = stack.api("GET", f"/api/v2/dags/mlsys_training/dagRuns/{train_run}/taskInstances/evaluate_register"
                                "/xcomEntries/return_value")["value"]
        evaluated = _value(xcom)
        assert evaluated["serve_reload"].get("ok") and evaluated["serve_reload"]["url"] == stack.url("serve"), (
            f"evaluate did not get serve to reload: {evaluated['serve_reload']}")
        deadline = time.monotonic() + 60
        while (ready := stack.http("serve", "GET", "/ready"))[0] != 200 and time.monotonic() < deadline:
            time.sleep(1)
        assert ready[0] == 200 and ready[2]["model_version"] == label, ready
        assert stack.http("serve", "POST", "/predict", {"text": "check out my channel"})[0] == 401
        status, headers, answer = stack.http("serve", "POST", "/predict", {"text": "check out my channel"},
                                             headers=token)
        assert status == 200, answer
        assert headers.get("x-model-version") == label and answer["model_version"] == label, (headers, answer)

    print(
        f"\n[compose topology] startup {stack.timings['startup']:.0f}s (init {stack.timings['init']:.0f}s), "
        f"mlsys_data {data_s:.0f}s, mlsys_training {train_s:.0f}s, total {time.monotonic() - t0:.0f}s; "
        f"served {label}; beyond compose, airflow-worker got {sorted(stack.substitutions['airflow-worker'])}, "
        f"mlflow {stack.substitutions.get('mlflow')}"
    )

    # every task through Celery: the default queue on airflow-worker, train on `gpu` on airflow-worker-gpu
    expected = {"train": ("gpu", "airflow-worker-gpu")}
    for tis, celery in ((data_tis, data_celery), (train_tis, train_celery)):
        for ti in tis:
            queue, worker = expected.get(ti["task_id"], ("default", "airflow-worker"))
            ev = celery[ti["task_id"]]
            assert ti["queue"] == queue, f"{ti['task_id']} ran on queue {ti['queue']!r}, not {queue!r}"
            assert ev["worker"] == worker, f"{ti['task_id']}: taken by {ev['worker']!r}, not {worker}: {ev}"
            assert ev["worker_succeeded"] and ev["result_backend_state"] == "SUCCESS", ev
    train = next(ti for ti in train_tis if ti["task_id"] == "train")
    assert train["pool"] == "gpu", train
    assert {ti["task_id"] for ti in train_tis} == {"train", "evaluate_register"}
    assert {ti["task_id"] for ti in data_tis} == {"ingest", "label", "validate"}
