"""The champion/challenger gate on the real MLflow registry (SQLite)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from mlsys.datasets import CHALLENGER, CHAMPION
from mlsys.errors import SpecError
from mlsys.registry.stage import EvaluateSpec, classification_metrics, run
from mlsys.tracking import RunContext, stage_run
from mlsys.training.stage import TrainSpec
from mlsys.training.stage import run as train

MODEL = "spam-gate-test"


# -- metrics -------------------------------------------------------------------------


def test_classification_metrics_by_hand():
    y_true = [1, 1, 1, 0, 0, 0, 0, 1]
    y_pred = [1, 1, 0, 0, 1, 0, 0, 0]
    # tp=2 fp=1 fn=2 tn=3
    m = classification_metrics(y_true, y_pred)
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))


def test_classification_metrics_edge_cases():
    none_predicted = classification_metrics([0, 0, 1], [0, 0, 0])
    assert none_predicted == {"accuracy": 2 / 3, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert classification_metrics([1, 0], [1, 0]) == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert classification_metrics([0, 0], [1, 1])["precision"] == 0.0


def test_bad_spec_names_the_field():
    with pytest.raises(SpecError, match=r"EvaluateSpec\.model_uri=''"):
        EvaluateSpec()
    with pytest.raises(SpecError, match=r"EvaluateSpec\.gate_metric='auc'.*accuracy"):
        EvaluateSpec(model_uri="runs:/x/model", gate_metric="auc")


def test_serve_url_comes_from_the_param_or_the_environment_and_is_checked(monkeypatch):
    monkeypatch.delenv("MLSYS_SERVE_URL", raising=False)
    assert EvaluateSpec(model_uri="runs:/x/model").reload_url == ""  # the default: no reload call
    monkeypatch.setenv("MLSYS_SERVE_URL", "http://serve:8000/")
    assert EvaluateSpec(model_uri="runs:/x/model").reload_url == "http://serve:8000"
    assert EvaluateSpec(model_uri="runs:/x/model", serve_url="http://127.0.0.1:9").reload_url == "http://127.0.0.1:9"
    with pytest.raises(SpecError, match=r"EvaluateSpec\.serve_url='serve:8000'.*MLSYS_SERVE_URL"):
        EvaluateSpec(model_uri="runs:/x/model", serve_url="serve:8000")
    monkeypatch.setenv("MLSYS_SERVE_URL", "serve:8000")
    with pytest.raises(SpecError, match=r"EvaluateSpec\.serve_url='serve:8000'"):
        EvaluateSpec(model_uri="runs:/x/model")


# -- the gate ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gate(prepared_home):
    """Three models from the real data, evaluated in order: a middling one, a worse one, a better one."""
    import mlflow

    with prepared_home("registry-home", validate=True, model_name=MODEL) as env:
        small = {"num_buckets": 1 << 12, "dim": 32}  # quick to train, good enough to rank
        specs = {
            "middling": TrainSpec(epochs=1, lr=3e-5, **small),  # test f1 about 0.7
            "worse": TrainSpec(epochs=1, lr=1e-6, **small),  # barely trained: test f1 about 0.5
            "better": TrainSpec(epochs=4, **small),  # test f1 about 0.85
        }
        evaluated = {}
        for name, spec in specs.items():
            with stage_run(RunContext.cli("train")):
                trained = train(spec)
            with stage_run(RunContext.cli("evaluate")) as active:
                result = run(EvaluateSpec(model_uri=trained.model_uri))
            evaluated[name] = SimpleNamespace(trained=trained, result=result, run_id=active.info.run_id)
        client = mlflow.MlflowClient(f"sqlite:///{env.home / 'mlflow.db'}")
        yield SimpleNamespace(home=env.home, client=client, **evaluated)


def _alias(client, alias: str) -> str:
    return str(client.get_model_version_by_alias(MODEL, alias).version)


def test_first_model_is_version_1_challenger_and_champion(gate):
    first = gate.middling.result
    assert first.model_name == MODEL and first.version == "1"
    assert first.promoted and first.champion_version == "1"
    assert first.champion_metrics == {}
    assert 0.3 < first.challenger_metrics["f1"] < 0.8
    mv = gate.client.get_model_version(MODEL, "1")
    assert mv.tags["test_f1"] == f"{first.challenger_metrics['f1']:.4f}"
    assert mv.tags["test_dataset"] == first.test.label
    assert mv.run_id == gate.middling.trained.run_id


def test_worse_model_becomes_challenger_not_champion(gate):
    worse = gate.worse.result
    assert worse.version == "2"
    assert worse.challenger_metrics["f1"] < worse.champion_metrics["f1"]
    assert worse.champion_metrics == gate.middling.result.challenger_metrics  # the champion, rescored on test
    assert not worse.promoted and worse.champion_version == "1"
    eval_run = gate.client.get_run(gate.worse.run_id)
    assert eval_run.data.tags["mlsys.promoted"] == "False"
    assert eval_run.data.tags["mlsys.champion_version"] == "1"


def test_better_model_becomes_champion(gate):
    better = gate.better.result
    assert better.version == "3"
    assert better.challenger_metrics["f1"] > better.champion_metrics["f1"]
    assert better.promoted and better.champion_version == "3"
    assert _alias(gate.client, CHAMPION) == "3"
    assert _alias(gate.client, CHALLENGER) == "3"
    eval_run = gate.client.get_run(gate.better.run_id)
    assert eval_run.data.metrics["challenger_f1"] == pytest.approx(better.challenger_metrics["f1"])
    assert eval_run.data.metrics["champion_f1"] == pytest.approx(better.champion_metrics["f1"])
    assert eval_run.data.params["model_version"] == "3" and eval_run.data.params["gate_metric"] == "f1"
    (inp,) = eval_run.inputs.dataset_inputs
    assert inp.dataset.name == "comments_test" and inp.dataset.digest == better.test.version


def test_every_model_is_registered_once(gate):
    versions = gate.client.search_model_versions(f"name = '{MODEL}'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3]
    for v in versions:
        assert v.tags["test_dataset"].startswith("comments_test@")


def test_evaluate_result_round_trips_through_json(gate):
    data = json.loads(json.dumps(gate.better.result.to_json()))
    assert data["version"] == "3" and data["promoted"] is True
    assert data["test"]["version"] == gate.better.result.test.version


def test_gate_on_another_metric_and_a_tie(gate, monkeypatch, point_home):
    """Re-evaluating the champion's own model finds its version (no second registration) and ties it; a tie never
    moves the champion."""
    point_home(monkeypatch, gate.home, model_name=MODEL)
    result = run(EvaluateSpec(model_uri=gate.better.trained.model_uri, gate_metric="accuracy"))
    assert result.version == "3"
    assert result.challenger_metrics == result.champion_metrics
    assert not result.promoted and result.champion_version == "3"
    assert _alias(gate.client, CHAMPION) == "3" and _alias(gate.client, CHALLENGER) == "3"


# -- telling the online server to reload (runs last: each promotion registers one more version) ------------------


def _ready_version(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=10) as r:
        return json.loads(r.read())["model_version"]


@pytest.fixture
def champion_is_1(gate, monkeypatch, point_home):
    """The middling model (version 1) holds champion again, so the better model's next evaluation promotes it."""
    point_home(monkeypatch, gate.home, model_name=MODEL)
    monkeypatch.delenv("MLSYS_SERVE_URL", raising=False)
    before = _alias(gate.client, CHAMPION)
    gate.client.set_registered_model_alias(MODEL, CHAMPION, "1")
    yield gate
    gate.client.set_registered_model_alias(MODEL, CHAMPION, before)


def test_a_promotion_tells_the_running_server_to_reload(champion_is_1, tmp_path, monkeypatch):
    """A real `mlsys serve` that never polls in the test's time switches to the new champion when evaluate returns
    (its authenticated POST /reload: server and evaluate share the token)."""
    import secrets

    from mlsys.bench.harness import free_port
    from mlsys.bench.serve import wait_http

    monkeypatch.setenv("MLSYS_SERVE_TOKEN", secrets.token_urlsafe(24))
    gate, port = champion_is_1, free_port()
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mlsys.cli", "serve", "--port", str(port), "--poll-s", "3600"],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", proc, timeout_s=120)
        assert _ready_version(port) == f"{MODEL}/1"
        result = run(EvaluateSpec(model_uri=gate.better.trained.model_uri, serve_url=f"http://127.0.0.1:{port}"))
        assert result.promoted and _alias(gate.client, CHAMPION) == result.version
        assert result.serve_reload == {"url": f"http://127.0.0.1:{port}", "ok": True,
                                       "answer": {"model_version": f"{MODEL}/{result.version}", "changed": True,
                                                  "error": None}}
        assert _ready_version(port) == f"{MODEL}/{result.version}"  # at once: the next poll is an hour away
    finally:
        proc.terminate()
        proc.wait(timeout=20)


class _Endpoint(BaseHTTPRequestHandler):
    """A tiny real HTTP server standing in for `mlsys serve`: records each request, answers with `status`."""

    calls: list[str] = []
    status = 500

    def do_POST(self):  # noqa: N802 (http.server's naming)
        type(self).calls.append(self.path)
        body = json.dumps({"model_version": None, "changed": False, "error": "no such model"}).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    _Endpoint.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_failed_reload_keeps_the_promotion_and_is_logged(champion_is_1, endpoint, monkeypatch, caplog):
    """The server answers 500 (its load failed): champion has still moved, the error is logged and tagged."""
    gate = champion_is_1
    monkeypatch.setenv("MLSYS_SERVE_URL", endpoint)  # from the environment, as docker-compose sets it
    with caplog.at_level(logging.ERROR, logger="mlsys.registry.stage"):
        with stage_run(RunContext.cli("evaluate")) as active:
            result = run(EvaluateSpec(model_uri=gate.better.trained.model_uri))
    assert _Endpoint.calls == ["/reload"]
    assert result.promoted and _alias(gate.client, CHAMPION) == result.version
    assert result.serve_reload["ok"] is False and "HTTP Error 500" in result.serve_reload["error"]
    assert "no such model" in result.serve_reload["error"]  # the server's own reason
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert f"{MODEL} version {result.version} is champion, but telling the server at {endpoint} to reload failed" in (
        record.getMessage())
    assert gate.client.get_run(active.info.run_id).data.tags["mlsys.serve_reload"].startswith("failed: HTTPError")


def test_nothing_listening_still_promotes(champion_is_1, monkeypatch, caplog):
    from mlsys.bench.harness import free_port

    gate, url = champion_is_1, f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.ERROR, logger="mlsys.registry.stage"):
        result = run(EvaluateSpec(model_uri=gate.better.trained.model_uri, serve_url=url))
    assert result.promoted and _alias(gate.client, CHAMPION) == result.version
    assert result.serve_reload["ok"] is False and "URLError" in result.serve_reload["error"]
    assert any(url in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert json.loads(json.dumps(result.to_json()))["serve_reload"] == result.serve_reload


def test_no_promotion_no_reload_call(gate, endpoint, monkeypatch, point_home):
    point_home(monkeypatch, gate.home, model_name=MODEL)
    result = run(EvaluateSpec(model_uri=gate.worse.trained.model_uri, serve_url=endpoint))
    assert not result.promoted and result.serve_reload == {}
    assert _Endpoint.calls == []
