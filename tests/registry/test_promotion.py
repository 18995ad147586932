"""The gate under faults and races, on the real MLflow registry: it fails closed, and a lost race re-scores.

- a champion that cannot be read (a real ``mlflow server`` behind a proxy that answers 503 or 403 for the
  champion lookup) stops the evaluation: nothing registered, nothing promoted, the task fails and retries;
- two promotions at once (two threads, the interleaving forced at the gate's compare-and-set) end with the
  better model as champion, whichever of them sets the alias last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlsys.bench.harness import free_port
from mlsys.datasets import CHAMPION
from mlsys.registry import gate as gates
from mlsys.registry.gate import GateError
from mlsys.registry.stage import EvaluateSpec, run
from mlsys.tracking import RunContext, stage_run
from mlsys.training.stage import TrainSpec
from mlsys.training.stage import run as train

MODEL = "spam-promotion-test"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


@pytest.fixture(scope="module")
def models(prepared_home):
    """Three trained (not yet registered) models of clearly different quality, on the real data."""
    import mlflow

    with prepared_home("promotion-home", validate=True, model_name=MODEL) as env:
        small = {"num_buckets": 1 << 12, "dim": 32}
        specs = {"worse": TrainSpec(epochs=1, lr=1e-6, **small), "middling": TrainSpec(epochs=1, lr=3e-5, **small),
                 "better": TrainSpec(epochs=4, **small)}
        uris = {}
        for name, spec in specs.items():
            with stage_run(RunContext.cli("train")):
                uris[name] = train(spec).model_uri
        client = mlflow.MlflowClient(f"sqlite:///{env.home / 'mlflow.db'}")
        yield SimpleNamespace(home=env.home, client=client, mp=env.mp, **uris)


def _champion(client) -> str | None:
    return gates.champion_version(client, MODEL)


def _versions(client) -> list[int]:
    return sorted(int(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))


def _reset_champion(models, uri: str) -> str:
    """Make the model at ``uri`` champion (registering it if it was never evaluated); returns its version."""
    found = [v for v in models.client.search_model_versions(f"name = '{MODEL}'") if v.source == uri]
    version = found[0].version if found else run(EvaluateSpec(model_uri=uri)).version
    models.client.set_registered_model_alias(MODEL, CHAMPION, version)
    return str(version)


# -- what counts as "no champion" --------------------------------------------------------------------------


def test_no_model_and_no_alias_mean_no_champion_and_the_first_model_is_promoted(models):
    assert _champion(models.client) is None  # no registered model yet: RESOURCE_DOES_NOT_EXIST
    models.client.create_registered_model(MODEL)
    assert _champion(models.client) is None  # a model without the alias
    first = run(EvaluateSpec(model_uri=models.worse))
    assert first.promoted and first.champion_version == first.version == "1" and first.champion_metrics == {}
    assert _champion(models.client) == "1"


# -- failing closed, against a real MLflow server -------------------------------------------------------------


class _Proxy(BaseHTTPRequestHandler):
    """A real HTTP hop in front of the MLflow server: forwards every request, except that it answers the
    champion lookups (the registered model, or the alias) with ``status`` while ``failing`` is set."""

    upstream = ""
    failing = False
    status, body = 503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "the registry is restarting"}
    CHAMPION_READS = ("/registered-models/get", "/registered-models/alias")
    seen: list[str] = []  # noqa: RUF012 (reset by the fixture)

    def _forward(self):
        path = self.path.split("?", 1)[0]
        type(self).seen.append(f"{self.command} {path}")
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else None
        if self.failing and self.command == "GET" and path.endswith(self.CHAMPION_READS):
            status, body, ctype = self.status, json.dumps(self.body).encode(), "application/json"
        else:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
            req = urllib.request.Request(self.upstream + self.path, data=data, method=self.command, headers=headers)
            try:
                with OPENER.open(req, timeout=120) as resp:
                    status, body, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
            except urllib.error.HTTPError as err:
                status, body, ctype = err.code, err.read(), err.headers.get("Content-Type", "")
        self.send_response(status)
        self.send_header("Content-Type", ctype or "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _forward

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    """``mlflow server`` on the module's registry database, and a proxy in front of it; yields the proxy's URL."""
    port, log = free_port(), tmp_path_factory.mktemp("mlflow-server") / "server.log"
    env = {k: v for k, v in os.environ.items()
           if k not in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "MLFLOW_TRACKING_URI")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
             f"sqlite:///{models.home / 'mlflow.db'}", "--default-artifact-root", str(models.home / "mlartifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    _Proxy.upstream = f"http://127.0.0.1:{port}"
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with OPENER.open(f"{_Proxy.upstream}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy within 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{proxy.server_address[1]}"
    finally:
        proxy.shutdown()
        proxy.server_close()
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def through_server(models, server, monkeypatch):
    """The evaluation talks to the MLflow server through the proxy; the middling model is champion."""
    import mlflow

    champion = _reset_champion(models, models.middling)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's own retries would take minutes
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    monkeypatch.setenv("NO_PROXY", no_proxy)
    monkeypatch.setenv("no_proxy", no_proxy)
    _Proxy.seen, _Proxy.failing = [], False
    yield SimpleNamespace(champion=champion, url=server)
    _Proxy.failing = False
    mlflow.set_tracking_uri(None)


def test_the_champion_is_read_through_the_server(models, through_server):
    import mlflow

    client = mlflow.MlflowClient(through_server.url, registry_uri=through_server.url)
    assert gates.champion_version(client, MODEL) == through_server.champion
    assert gates.champion_version(client, "no-such-model") is None  # RESOURCE_DOES_NOT_EXIST over REST too
    assert any("/registered-models/get" in s for s in _Proxy.seen)


@pytest.mark.parametrize("status, error_code", [(503, "TEMPORARILY_UNAVAILABLE"), (500, "INTERNAL_ERROR"),
                                                (403, "PERMISSION_DENIED")])
def test_an_unreadable_champion_fails_closed(models, through_server, monkeypatch, status, error_code):
    """A 5xx or a refusal while reading the champion is not "no champion": nothing moves, the task fails."""
    monkeypatch.setattr(_Proxy, "status", status)
    monkeypatch.setattr(_Proxy, "body", {"error_code": error_code, "message": f"injected {status}"})
    before = _versions(models.client)
    _Proxy.failing = True
    with pytest.raises(GateError, match=rf"could not read the 'champion' alias of registered model '{MODEL}'"):
        run(EvaluateSpec(model_uri=models.worse))
    assert _champion(models.client) == through_server.champion  # read straight from the database
    assert _versions(models.client) == before  # it stopped before registering anything


def test_once_the_server_answers_again_the_retry_decides(models, through_server):
    _Proxy.failing = True
    with pytest.raises(GateError):
        run(EvaluateSpec(model_uri=models.better))
    _Proxy.failing = False  # Airflow's retry, a little later
    result = run(EvaluateSpec(model_uri=models.better))
    assert result.promoted and _champion(models.client) == result.version


# -- two promotions at once ---------------------------------------------------------------------------------


def _race(models, monkeypatch, slow_uri: str, fast_uri: str):
    """Evaluate ``slow_uri`` in a thread held at its compare-and-set until ``fast_uri``'s evaluation is done."""
    held, release, out = threading.Event(), threading.Event(), {}

    def hook(name, version, champion):
        if threading.current_thread() is slow:
            held.set()
            assert release.wait(300), "the race test never released the held promotion"

    def evaluate_slow():
        try:
            out["slow"] = run(EvaluateSpec(model_uri=slow_uri))
        except BaseException as exc:  # noqa: BLE001 (re-raised in the test's thread)
            out["error"] = exc
        finally:
            held.set()  # never leave the test waiting, whatever happened

    monkeypatch.setattr(gates, "before_compare_and_set", [hook])
    slow = threading.Thread(target=evaluate_slow, name="slow-promotion")
    slow.start()
    try:
        assert held.wait(300), "the held promotion never reached its compare-and-set"
        if "error" in out:
            raise out["error"]
        out["fast"] = run(EvaluateSpec(model_uri=fast_uri))  # decides and sets while the other waits
    finally:
        release.set()
        slow.join(300)
    if "error" in out:
        raise out["error"]
    return out["slow"], out["fast"]


def test_a_worse_promotion_that_sets_last_loses(models, monkeypatch):
    """Both beat the champion they read; the worse one reaches its alias-set last, re-scores, and stays out."""
    worse = _reset_champion(models, models.worse)
    middling, better = _race(models, monkeypatch, slow_uri=models.middling, fast_uri=models.better)
    assert better.promoted and better.champion_version == better.version
    assert middling.challenger_metrics["f1"] > 0  # it beat the champion it read (worse) ...
    assert not middling.promoted and middling.champion_version == better.version  # ... not the one that won
    assert middling.champion_metrics == better.challenger_metrics  # re-scored against the new champion
    assert _champion(models.client) == better.version != worse


def test_a_better_promotion_that_sets_last_wins_against_the_new_champion(models, monkeypatch):
    _reset_champion(models, models.worse)
    better, middling = _race(models, monkeypatch, slow_uri=models.better, fast_uri=models.middling)
    assert middling.promoted  # over the worse model, while the better one waited
    assert better.promoted and better.champion_metrics == middling.challenger_metrics
    assert _champion(models.client) == better.version


def test_a_promotion_that_keeps_losing_gives_up_without_promoting(models, monkeypatch):
    """The champion moves before every compare-and-set: after MAX_ROUNDS the gate raises, champion untouched."""
    others = (_reset_champion(models, models.middling), _reset_champion(models, models.worse))
    moves = []

    def move_champion(name, version, champion):  # another writer wins every race
        moves.append(champion)
        models.client.set_registered_model_alias(MODEL, CHAMPION, others[0] if champion == others[1] else others[1])

    monkeypatch.setattr(gates, "before_compare_and_set", [move_champion])
    monkeypatch.setattr(gates, "MAX_ROUNDS", 3)
    before = _versions(models.client)
    with pytest.raises(GateError, match="moved 3 times"):
        run(EvaluateSpec(model_uri=models.better))
    assert moves == [others[1], others[0], others[1]]  # each round re-read the champion the last one lost to
    assert _champion(models.client) in others
    # registered as challenger at most once (an earlier test may have registered this model), never champion
    assert len(_versions(models.client)) - len(before) in (0, 1)


def test_a_retried_evaluate_registers_its_model_once(models):
    """A killed evaluate's retry finds the version the first attempt registered instead of adding a second one."""
    first = run(EvaluateSpec(model_uri=models.worse))
    before = _versions(models.client)
    again = run(EvaluateSpec(model_uri=models.worse))
    assert again.version == first.version and _versions(models.client) == before
