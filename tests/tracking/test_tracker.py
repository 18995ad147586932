"""MLflow tracking: a parent run per DAG run, nested runs per task, dataset inputs, artifact roots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from mlsys.bench.harness import free_port
from mlsys.storage import DatasetStore
from mlsys.tracking import (
    RunContext,
    configure,
    experiment_id,
    log_input,
    log_output,
    run_url,
    stage_run,
    tracker,
)

DAG, DAG_RUN = "youtube_spam_nightly", "manual__2026-01-01T00:00:00+00:00"


def _ctx(task: str, try_number: int = 1, run_id: str = DAG_RUN) -> RunContext:
    return RunContext(pipeline=DAG, stage=task, dag_id=DAG, run_id=run_id, task_id=task, try_number=try_number)


def _client():
    import mlflow

    return mlflow.MlflowClient(configure())


def _runs(exp_id: str):
    return _client().search_runs([exp_id], order_by=["attributes.start_time ASC"])


def _parents(exp_id: str):
    return [r for r in _runs(exp_id) if r.data.tags.get("mlsys.role") == "dag_run"]


# -- contexts -------------------------------------------------------------------------------


def test_context_tags():
    assert RunContext.cli("train").tags() == {"mlsys.stage": "train", "mlsys.pipeline": "mlsys-cli"}
    assert not RunContext.cli("train").in_airflow
    tags = RunContext(pipeline="p", stage="s", dag_id="d", run_id="r", task_id="t").tags()
    assert tags["airflow.try_number"] == "1" and tags["airflow.task_id"] == "t"


def test_configure_uses_sqlite_under_mlsys_home(mlsys_home):
    import mlflow

    uri = configure()
    assert uri == f"sqlite:///{mlsys_home / 'mlflow.db'}"
    assert mlflow.get_tracking_uri() == uri and mlflow.get_registry_uri() == uri


# -- parent and nested runs ------------------------------------------------------------------


def test_two_tasks_of_one_dag_run_share_one_parent(mlsys_home):
    import mlflow

    with stage_run(_ctx("ingest")) as first:
        mlflow.log_metric("rows", 1)
    with stage_run(_ctx("label", try_number=2)) as second:
        pass

    exp_id = experiment_id(DAG)
    (parent,) = _parents(exp_id)
    assert parent.data.tags["airflow.dag_id"] == DAG and parent.data.tags["airflow.run_id"] == DAG_RUN
    assert parent.info.run_name == f"{DAG} {DAG_RUN}"
    assert parent.info.status == "FINISHED"

    client = _client()
    for active, task, try_number in ((first, "ingest", 1), (second, "label", 2)):
        run = client.get_run(active.info.run_id)
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["airflow.dag_id"] == DAG and tags["airflow.run_id"] == DAG_RUN
        assert tags["airflow.task_id"] == task and tags["airflow.try_number"] == str(try_number)
        assert tags["mlsys.stage"] == task and tags["mlsys.pipeline"] == DAG
        assert run.info.run_name == task and run.info.status == "FINISHED"
        assert run.info.experiment_id == exp_id
    assert client.get_run(first.info.run_id).data.metrics == {"rows": 1.0}
    assert mlflow.active_run() is None


def test_another_dag_run_gets_its_own_parent(mlsys_home):
    with stage_run(_ctx("ingest")):
        pass
    with stage_run(_ctx("ingest", run_id="scheduled__2026-01-02T00:00:00+00:00")):
        pass
    parents = _parents(experiment_id(DAG))
    assert sorted(p.data.tags["airflow.run_id"] for p in parents) == sorted(
        [DAG_RUN, "scheduled__2026-01-02T00:00:00+00:00"]
    )


def test_a_failing_task_fails_the_parent_and_reraises(mlsys_home):
    with stage_run(_ctx("ingest")):
        pass
    with pytest.raises(RuntimeError, match="boom"):
        with stage_run(_ctx("label")) as failing:
            raise RuntimeError("boom")

    (parent,) = _parents(experiment_id(DAG))
    assert parent.info.status == "FAILED"
    assert _client().get_run(failing.info.run_id).info.status == "FAILED"

    # Airflow retries the task: try 2 nests under the same parent and succeeds
    with stage_run(_ctx("label", try_number=2)) as retry:
        pass
    (parent,) = _parents(experiment_id(DAG))
    assert _client().get_run(retry.info.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.info.status == "FINISHED"


def test_cli_runs_have_no_parent(mlsys_home):
    with stage_run(RunContext.cli("ingest")) as active:
        pass
    run = _client().get_run(active.info.run_id)
    assert "mlflow.parentRunId" not in run.data.tags
    assert not any(k.startswith("airflow.") for k in run.data.tags)
    assert _parents(experiment_id("mlsys-cli")) == []
    with pytest.raises(ValueError):
        with stage_run(RunContext.cli("ingest")) as failing:
            raise ValueError("bad")
    assert _client().get_run(failing.info.run_id).info.status == "FAILED"


# -- experiments and datasets ----------------------------------------------------------------


def test_experiment_artifacts_default_under_mlsys_home(mlsys_home):
    configure()
    exp = _client().get_experiment(experiment_id("some-pipeline"))
    assert exp.name == "some-pipeline"
    assert exp.artifact_location.removeprefix("file://") == f"{mlsys_home / 'mlartifacts'}/some-pipeline"
    assert experiment_id("some-pipeline") == exp.experiment_id  # found, not created twice


def test_experiment_artifacts_follow_mlsys_artifact_uri(mlsys_home, tmp_path, monkeypatch):
    monkeypatch.setenv("MLSYS_ARTIFACT_URI", str(tmp_path / "elsewhere") + "/")
    configure()
    exp = _client().get_experiment(experiment_id("p2"))
    assert exp.artifact_location.removeprefix("file://") == f"{tmp_path / 'elsewhere'}/p2"
    with stage_run(RunContext(pipeline="p2", stage="s")) as active:
        import mlflow

        mlflow.log_dict({"a": 1}, "x.json")
    assert (tmp_path / "elsewhere" / "p2" / active.info.run_id / "artifacts" / "x.json").is_file()


def test_log_input_and_output(mlsys_home):
    import mlflow

    store = DatasetStore()
    ref = store.write("tiny", pd.DataFrame({"id": ["a", "b"], "text": ["x", "y"]}))
    with stage_run(RunContext.cli("validate")) as active:
        log_input(ref, "validation")
        log_output(ref)
    run = _client().get_run(active.info.run_id)
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == "tiny" and inp.dataset.digest == ref.version
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "validation"
    assert ref.uri in inp.dataset.source
    assert run.data.tags["mlsys.input.tiny"] == ref.version == run.data.tags["mlsys.output.tiny"]
    local = _client().download_artifacts(active.info.run_id, "datasets/tiny.json")
    assert json.loads(Path(local).read_text()) == ref.to_json()
    assert mlflow.active_run() is None


def test_active_run_id_and_run_url(mlsys_home, monkeypatch):
    assert tracker.active_run_id() is None
    with stage_run(RunContext.cli("x")) as active:
        assert tracker.active_run_id() == active.info.run_id
    monkeypatch.setenv("MLSYS_MLFLOW_UI_URL", "http://mlflow.example:5000/")
    assert run_url("abc", "7") == "http://mlflow.example:5000/#/experiments/7/runs/abc"


# -- a real tracking server --------------------------------------------------------------------


@pytest.fixture
def mlflow_server(tmp_path, mlsys_home, monkeypatch):
    exe = Path(sys.executable).parent / "mlflow"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "mlflow-server.log"
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "MLFLOW_TRACKING_URI"):
        env.pop(var, None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'db.sqlite'}",
             "--default-artifact-root", str(tmp_path / "art"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,  # its own process group: the server and its workers stop together
        )
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with opener.open(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy at {url} within 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
        monkeypatch.setenv("NO_PROXY", no_proxy)
        monkeypatch.setenv("no_proxy", no_proxy)
        yield url
    finally:
        _stop(proc)
        import mlflow

        mlflow.set_tracking_uri(None)  # never leave later tests pointing at a server that is gone


def _stop(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_parent_and_nested_runs_over_http(mlflow_server):
    import mlflow

    with stage_run(_ctx("ingest")) as first:
        mlflow.log_metric("rows", 3)
    with stage_run(_ctx("label")) as second:
        pass
    assert mlflow.get_tracking_uri() == mlflow_server

    client = mlflow.MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name(DAG)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("mlsys.role") == "dag_run"]
    assert len(parents) == 1 and len(runs) == 3
    for active, task in ((first, "ingest"), (second, "label")):
        tags = client.get_run(active.info.run_id).data.tags
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["airflow.task_id"] == task and tags["airflow.run_id"] == DAG_RUN
    assert client.get_run(first.info.run_id).data.metrics["rows"] == 3.0
