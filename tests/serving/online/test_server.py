"""`mlsys serve` as a real uvicorn server on 127.0.0.1, against a real MLflow registry."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mlsys.bench.harness import free_port
from mlsys.bench.serve import stop

SERVE_MODEL = "spam-serve-test"
FAULTY = Path(__file__).with_name("faulty_serve.py")  # mlsys serve whose model raises on FAIL_TEXT
FAIL_TEXT = "__fail_inside_the_model__"
TOKEN = secrets.token_urlsafe(24)  # the servers' MLSYS_SERVE_TOKEN, and the test process's (reload_hook.notify reads it)
NOT_SET = ("MLSYS_STORAGE_URI", "MLFLOW_TRACKING_URI", "MLSYS_ARTIFACT_URI", "MLSYS_SERVE_TOKEN_FILE",
           "MLSYS_SERVE_PREDICT_AUTH")


def serve_env(home: Path, **changes: str | None) -> dict[str, str]:
    """The servers' environment: ``changes`` set variables, or remove them (None)."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_SET}
    env.update(MLSYS_HOME=str(home), MLFLOW_DISABLE_TELEMETRY="true", MLSYS_MODEL_NAME=SERVE_MODEL, MLSYS_SERVE_TOKEN=TOKEN)
    env.update({k: v for k, v in changes.items() if v is not None})
    return {k: v for k, v in env.items() if changes.get(k, "") is not None}


def _as_a_background_job() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a non-interactive shell's `cmd &` hands its job


def start_server(home: Path, port: int, *extra: str, background: bool = False, faulty: bool = False,
                 ready: str = "/ready", env: dict[str, str | None] | None = None) -> subprocess.Popen:
    """``mlsys serve`` (``faulty``: whose model fails on FAIL_TEXT), once ``ready`` answers 200; ``env``: changes."""
    from mlsys.bench.serve import wait_http

    log = open(home / f"serve-{port}.log", "ab")
    program = [str(FAULTY)] if faulty else ["-m", "mlsys.cli"]
    proc = subprocess.Popen([sys.executable, *program, "serve", "--port", str(port), *extra],
                            env=serve_env(home, **(env or {})), stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=_as_a_background_job if background else None)
    wait_http(f"http://127.0.0.1:{port}{ready}", proc, timeout_s=120)
    return proc


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A registry holding SERVE_MODEL v1 (champion); yields the home and pyfunc predictions for some texts."""
    home = tmp_path_factory.mktemp("serve-home")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in serve_env(home).items():
            mp.setenv(k, v)
        for var in NOT_SET:
            mp.delenv(var, raising=False)
        import mlflow
        import pandas as pd

        from mlsys.bench.workload import comments, register_model

        register_model(SERVE_MODEL, num_buckets=1 << 10, dim=16, depth=1, seed=0)
        texts = comments()[:40]
        expected = mlflow.pyfunc.load_model(f"models:/{SERVE_MODEL}/1").predict(pd.DataFrame({"text": texts}))
        yield SimpleNamespace(home=home, texts=texts, expected=expected, mp=mp)


def call(port: int, path: str, body=None, raw: bytes | None = None, method: str | None = None,
         token: str | None = None, authorization: str | None = None):
    """One request; ``token`` sends ``Authorization: Bearer <token>``, ``authorization`` the header as given."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"}
    if token is not None or authorization is not None:
        headers["Authorization"] = authorization if authorization is not None else f"Bearer {token}"
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data, headers,
                                 method=method or ("POST" if data is not None else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def counted(port: int) -> dict[str, float]:
    """mlsys_requests_total by status code."""
    text = call(port, "/metrics")[2].decode()
    return {line.split('code="')[1].split('"')[0]: float(line.split()[-1])
            for line in text.splitlines() if line.startswith("mlsys_requests_total{")}


def metric(port: int, name: str) -> float:
    text = call(port, "/metrics")[2].decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))


SERVER_ARGS = ("--poll-s", "0.5", "--max-records", "50", "--max-body-bytes", "20000", "--max-queue", "45",
               "--reload-interval-s", "0")  # the throttle has its own tests


@pytest.fixture(scope="module")
def running(registry):
    """One server for the module; the last test kills and restarts it."""
    state = SimpleNamespace(port=free_port())
    state.proc = start_server(registry.home, state.port, *SERVER_ARGS)
    yield state
    stop(state.proc)  # terminate, then kill after 20 s


@pytest.fixture
def server(registry, running):
    return registry, running.port


def test_single_record_and_list_match_the_pyfunc(server):
    registry, port = server
    status, _, body = call(port, "/predict", {"text": registry.texts[0], "id": "a1"})
    one = json.loads(body)
    assert status == 200 and one["model_version"] == f"{SERVE_MODEL}/1" and one["id"] == "a1"
    assert one["prediction"] == registry.expected["prediction"][0]
    assert np.isclose(one["probabilities"][1], registry.expected["proba_1"][0], atol=1e-6)
    status, _, body = call(port, "/predict", [{"text": t} for t in registry.texts])
    many = json.loads(body)["predictions"]
    assert status == 200 and len(many) == len(registry.texts)
    assert [m["prediction"] for m in many] == registry.expected["prediction"].tolist()
    assert np.allclose([m["probabilities"][1] for m in many], registry.expected["proba_1"], atol=1e-6)


@pytest.mark.parametrize("raw,status,field", [
    (b'{"text": "unclosed', 400, "body"),
    (b"", 400, "body"),
    (b'{"txt": "typo"}', 422, "text"),
    (b'[{"text": "ok"}, {"text": 7}]', 422, "[1].text"),
    (b'[{"text": "ok"}, "bare"]', 422, "[1]"),
    (b"[]", 422, "records"),
    (b'"just a string"', 422, "body"),
    (json.dumps([{"text": "x"}] * 51).encode(), 413, "records"),
    (json.dumps({"text": "x" * 30000}).encode(), 413, "body"),
])
def test_bad_requests_get_4xx_naming_the_field_and_never_reach_the_model(server, raw, status, field):
    _, port = server
    batches = metric(port, "mlsys_batch_size_records_count")
    got, _, body = call(port, "/predict", raw=raw, method="POST")
    assert got == status
    assert json.loads(body)["field"] == field and json.loads(body)["error"].startswith(field + ":")
    assert metric(port, "mlsys_batch_size_records_count") == batches
    assert call(port, "/predict", {"text": "still serving"})[0] == 200


BOMB_BRACKETS = b"[" * 19_000  # under the test server's 20 000-byte limit; Python's parser gives up at ~1000


@pytest.mark.parametrize("raw,status,field,says", [
    (BOMB_BRACKETS, 400, "body", "nested too deeply"),
    (b'{"a":' * 3000, 400, "body", "nested too deeply"),
    (b'{"text": "x", "id": ' + b"7" * 5000 + b"}", 400, "body", "malformed JSON"),  # past 4300 digits: ValueError
    (b'{"text": "\\ud800 lone"}', 422, "text", "lone surrogate"),
    (b'{"text": "x", "id": ' + b"[" * 500 + b"]" * 500 + b"}", 422, "id", "nested deeper"),
])
def test_parse_failures_are_json_4xx_and_counted_under_their_code(server, raw, status, field, says):
    _, port = server
    before = counted(port)
    got, headers, body = call(port, "/predict", raw=raw, method="POST")
    assert (got, headers["content-type"]) == (status, "application/json")
    assert json.loads(body)["field"] == field and says in json.loads(body)["error"]
    after = counted(port)
    assert after.get(str(status), 0) == before.get(str(status), 0) + 1
    assert after.get("200") == before.get("200") and after.get("500") == before.get("500")


def test_no_model_is_a_json_503_and_a_bomb_still_a_400(registry):
    """The alias names no version: /predict says so in JSON; a 200 kB bracket bomb is a 400; both counted truly.
    The server has no token: /reload is closed to everyone (fail closed), /predict stays open (predict-auth off)."""
    port = free_port()
    proc = start_server(registry.home, port, "--alias", "no-such-alias", ready="/health", env={"MLSYS_SERVE_TOKEN": None})
    try:
        for token in (None, TOKEN):
            status, _, body = call(port, "/reload", raw=b"", method="POST", token=token)
            assert status == 403 and "MLSYS_SERVE_TOKEN" in json.loads(body)["error"]
        status, headers, body = call(port, "/predict", {"text": "hello"})
        assert status == 503 and headers["retry-after"] == "1" and json.loads(body) == {"error": "no model loaded yet; retry"}
        status, headers, body = call(port, "/predict", raw=b"[" * 200_000, method="POST")
        assert (status, headers["content-type"]) == (400, "application/json") and "nested" in json.loads(body)["error"]
        status, _, body = call(port, "/no-such-path")
        assert status == 404 and "/no-such-path" in json.loads(body)["error"]
        assert call(port, "/predict")[0] == 405  # GET
        assert counted(port) == {"503": 1, "400": 1}
    finally:
        stop(proc)


def test_a_model_error_is_a_json_500_counted_as_500_and_the_server_goes_on(registry):
    port = free_port()
    proc = start_server(registry.home, port, "--poll-s", "60", faulty=True)
    try:
        status, headers, body = call(port, "/predict", [{"text": "fine"}, {"text": FAIL_TEXT}])
        assert (status, headers["content-type"]) == (500, "application/json")
        assert "RuntimeError: the model failed on purpose" in json.loads(body)["error"]
        assert call(port, "/predict", {"text": "fine"})[0] == 200
        assert counted(port) == {"500": 1, "200": 1}
        assert metric(port, "mlsys_request_latency_seconds_count") == 1  # latency: answered requests only
    finally:
        stop(proc)
    log = (registry.home / f"serve-{port}.log").read_text()
    assert "/predict failed" in log and "Traceback" in log


def test_health_ready_and_metrics(server):
    registry, port = server
    assert call(port, "/health")[0] == 200
    status, _, body = call(port, "/ready")
    assert status == 200 and json.loads(body)["model_version"] == f"{SERVE_MODEL}/1"
    for _ in range(3):
        call(port, "/predict", {"text": "the same text every time"})
    status, headers, body = call(port, "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in ("mlsys_request_latency_seconds_bucket{le=\"0.05\"}", "mlsys_batch_size_records_count",
                 "mlsys_queue_depth_records", "mlsys_batch_limit_records", "mlsys_cache_hit_rate",
                 f'mlsys_model_info{{version="{SERVE_MODEL}/1"}} 1', 'mlsys_requests_total{code="200"}'):
        assert name in text, name
    assert metric(port, "mlsys_cache_hit_rate") > 0


MLFLOW_BODIES = [
    lambda texts: {"dataframe_records": [{"text": t} for t in texts]},
    lambda texts: {"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}},
    lambda texts: {"instances": texts},
    lambda texts: {"inputs": {"text": texts}},
]


@pytest.mark.parametrize("path", ["/predict", "/invocations"])
@pytest.mark.parametrize("make", MLFLOW_BODIES, ids=["dataframe_records", "dataframe_split", "instances", "inputs"])
def test_mlflows_scoring_protocol_gets_the_pyfuncs_answer_in_mlflows_shape(server, path, make):
    """A client of `mlflow models serve` works unchanged: its bodies, its answer {"predictions": [rows]}."""
    registry, port = server
    texts = registry.texts[:7]
    status, headers, body = call(port, path, make(texts))
    rows = json.loads(body)["predictions"]
    assert status == 200 and headers["x-model-version"] == f"{SERVE_MODEL}/1" and list(json.loads(body)) == ["predictions"]
    assert [sorted(r) for r in rows] == [["prediction", "proba_0", "proba_1"]] * len(texts)
    assert [r["prediction"] for r in rows] == registry.expected["prediction"][:7].tolist()
    for c in (0, 1):
        assert np.allclose([r[f"proba_{c}"] for r in rows], registry.expected[f"proba_{c}"][:7], atol=1e-6)
    status, _, body = call(port, path, {"dataframe_records": [{"text": 5}]})
    assert status == 422 and json.loads(body)["error_code"] == "INVALID_PARAMETER_VALUE"
    assert json.loads(body)["field"] == "dataframe_records[0].text"


def test_open_inference_protocol_infer_metadata_and_another_models_name(server):
    registry, port = server
    texts = registry.texts[:5]
    request = {"id": "r-1", "inputs": [{"name": "text", "shape": [5], "datatype": "BYTES", "data": texts}]}
    status, _, body = call(port, f"/v2/models/{SERVE_MODEL}/infer", request)
    answer = json.loads(body)
    assert status == 200 and (answer["model_name"], answer["model_version"], answer["id"]) == (SERVE_MODEL, "1", "r-1")
    prediction, proba = answer["outputs"]
    assert (prediction["name"], prediction["datatype"], prediction["shape"]) == ("prediction", "INT64", [5])
    assert prediction["data"] == registry.expected["prediction"][:5].tolist()
    assert (proba["name"], proba["datatype"], proba["shape"]) == ("probabilities", "FP32", [5, 2])
    assert np.allclose(np.reshape(proba["data"], (5, 2))[:, 1], registry.expected["proba_1"][:5], atol=1e-6)
    status, _, body = call(port, f"/v2/models/{SERVE_MODEL}")
    assert status == 200 and json.loads(body)["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert call(port, f"/v2/models/{SERVE_MODEL}/ready")[0] == 200 and call(port, "/v2/health/ready")[0] == 200
    before = counted(port)
    status, _, body = call(port, "/v2/models/another-model/infer", request)
    assert status == 404 and SERVE_MODEL in json.loads(body)["error"]
    assert counted(port).get("404") == before.get("404", 0) + 1
    assert call(port, "/v2/models/another-model")[0] == 404


def test_the_openapi_document_declares_every_body_and_schemathesis_finds_no_5xx(server, tmp_path):
    """schemathesis generates requests from /openapi.json (valid and invalid) and checks every answer against it:
    no 5xx, documented status codes, content types and bodies. Not checked: that every schema-valid body is
    accepted, since JSON Schema cannot state what else the server checks (a dataframe_split row as long as
    its columns, a v2 shape equal to its data's length, the size limits), refused with a 4xx naming the field."""
    _, port = server
    doc = json.loads(call(port, "/openapi.json")[2])
    for path, method in (("/predict", "post"), ("/invocations", "post"), ("/v2/models/{model_name}/infer", "post")):
        operation = doc["paths"][path][method]
        assert operation["requestBody"]["content"]["application/json"]["schema"], path
        assert {"200", "413", "422", "503"} <= set(operation["responses"]), path
    assert {"Record", "DataframeSplit", "MlflowAnswer", "InferRequest", "InferAnswer"} <= set(doc["components"]["schemas"])
    assert call(port, "/docs")[0] == 200
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.model_name" = "{SERVE_MODEL}"\n')
    before = counted(port)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config), "run",
         f"http://127.0.0.1:{port}/openapi.json", "--checks", "all", "--exclude-checks", "positive_data_acceptance",
         "--max-examples", "30", "--seed", "17", "--workers", "1", "--generation-database", "none", "--no-color",
         "-H", f"Authorization: Bearer {TOKEN}", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:]
    assert "generated" in done.stdout and "passed" in done.stdout
    after = counted(port)
    assert sum(after.values()) - sum(before.values()) > 100  # the prediction routes were really exercised
    assert after.get("500", 0) == before.get("500", 0)


def test_the_start_up_heap_is_frozen_out_of_the_collector(server):
    """A full collection used to walk ~400k start-up objects: 250-650 ms with the whole process stopped."""
    _, port = server
    assert metric(port, "mlsys_gc_frozen_objects") > 100_000
    assert metric(port, "mlsys_gc_pause_seconds_count") > 0


def test_alias_move_reloads_without_dropping_requests_and_a_bad_version_keeps_the_old(server):
    import mlflow

    from mlsys.bench.workload import register_model

    registry, port = server
    statuses, versions, stop = [], set(), threading.Event()

    def client():
        while not stop.is_set():
            status, _, body = call(port, "/predict", {"text": f"check my channel {time.perf_counter()}"})
            if status == 503 and b"no model" not in body.lower():
                continue  # load shed by the adaptive batcher (it would miss the SLO on a busy host), not a swap gap
            statuses.append(status)
            if status == 200:
                versions.add(json.loads(body)["model_version"])

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        assert register_model(SERVE_MODEL, num_buckets=1 << 10, dim=16, depth=1, seed=1) == "2"  # moves champion
        deadline = time.monotonic() + 30
        while f"{SERVE_MODEL}/2" not in versions and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert versions == {f"{SERVE_MODEL}/1", f"{SERVE_MODEL}/2"}
    assert set(statuses) == {200}, "no request dropped during the swap"

    client = mlflow.MlflowClient()
    bad = client.create_model_version(SERVE_MODEL, source=str(registry.home / "no-such-model"))
    client.set_registered_model_alias(SERVE_MODEL, "champion", bad.version)
    try:
        status, _, body = call(port, "/reload", raw=b"", method="POST", token=TOKEN)
        assert status == 500 and json.loads(body)["model_version"] == f"{SERVE_MODEL}/2" and json.loads(body)["error"]
        status, _, body = call(port, "/predict", {"text": "hello"})
        assert status == 200 and json.loads(body)["model_version"] == f"{SERVE_MODEL}/2"
        assert metric(port, 'mlsys_model_reloads_total{result="failed"}') >= 1
        log = "".join(p.read_text() for p in registry.home.glob("serve-*.log"))
        assert f"reload of {SERVE_MODEL}@champion failed; still serving {SERVE_MODEL}/2" in log
    finally:
        client.set_registered_model_alias(SERVE_MODEL, "champion", "2")
    from mlsys.serving.online.reload_hook import notify

    assert notify(f"http://127.0.0.1:{port}") == {"model_version": f"{SERVE_MODEL}/2", "changed": False, "error": None}


def test_overload_gets_503_with_retry_after(server):
    _, port = server
    status, headers, body = call(port, "/predict", [{"text": "a"}] * 46)  # more records than the queue may hold
    assert status == 503 and int(headers["retry-after"]) >= 1 and "SLO" in json.loads(body)["error"]
    assert call(port, "/predict", [{"text": "a"}] * 40)[0] == 200


def test_kill_under_load_then_restart_answers_correctly(registry, running):
    """Clients see connection errors while the server is down, then correct answers after the restart."""
    port = running.port
    outcomes, stop = [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                status, _, body = call(port, "/predict", {"text": registry.texts[1]})
                outcomes.append(("ok", json.loads(body)["prediction"]) if status == 200 else ("status", status))
            except OSError:
                outcomes.append(("conn", None))
                time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        running.proc.kill()  # SIGKILL under load
        running.proc.wait()
        time.sleep(0.5)
        killed_at = len(outcomes)
        running.proc = start_server(registry.home, port, *SERVER_ARGS)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    kinds = [k for k, _ in outcomes]
    assert kinds[0] == "ok" and "conn" in kinds[:killed_at + 3]
    after = [o for o in outcomes[killed_at:] if o[0] == "ok"]
    assert after, "the restarted server answered"
    import mlflow
    import pandas as pd

    v2 = mlflow.pyfunc.load_model(f"models:/{SERVE_MODEL}/2").predict(pd.DataFrame({"text": registry.texts[1:2]}))
    assert {p for _, p in after} == {int(v2["prediction"][0])}  # champion is v2 by now
    status, _, body = call(port, "/predict", {"text": registry.texts[1]})
    assert json.loads(body)["model_version"] == f"{SERVE_MODEL}/2"
    assert np.isclose(json.loads(body)["probabilities"][1], v2["proba_1"][0], atol=1e-6)
    assert kinds[-1] == "ok"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_within_30_s_and_frees_its_port(registry, sig):
    import socket

    port = free_port()
    proc = start_server(registry.home, port, "--poll-s", "0.5", background=sig == signal.SIGTERM)
    assert call(port, "/ready")[0] == 200
    started = time.monotonic()
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert time.monotonic() - started < 30 and proc.returncode is not None
    with socket.socket() as sock:  # nothing listens there any more (a closed connection's TIME_WAIT may remain)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


# --- Authentication and the /reload throttle: a server whose token comes from a file, with --predict-auth ---

AUTH_MODEL = "spam-serve-auth-test"


@pytest.fixture(scope="module")
def guarded(registry, tmp_path_factory):
    """``mlsys serve`` of AUTH_MODEL (v1 champion at start, v2 registered beside it): the token in a file
    (MLSYS_SERVE_TOKEN_FILE), /predict behind it, one /reload per 60 s, and no poll to change the model meanwhile."""
    from mlsys.bench.workload import register_model

    token = secrets.token_urlsafe(24)
    token_file = tmp_path_factory.mktemp("secrets") / "serve-token"
    token_file.write_text(token + "\n")
    assert register_model(AUTH_MODEL, num_buckets=1 << 10, dim=16, depth=1, seed=2) == "1"
    port = free_port()
    proc = start_server(registry.home, port, "--model-name", AUTH_MODEL, "--poll-s", "600", "--predict-auth",
                        "--reload-interval-s", "60", env={"MLSYS_SERVE_TOKEN": None, "MLSYS_SERVE_TOKEN_FILE": str(token_file)})
    try:
        assert register_model(AUTH_MODEL, num_buckets=1 << 10, dim=16, depth=1, seed=3) == "2"  # champion -> v2
        yield SimpleNamespace(port=port, token=token)
    finally:
        stop(proc)


def serving(port: int) -> str:
    return json.loads(call(port, "/ready")[2])["model_version"]


@pytest.mark.parametrize("authorization,says", [
    (None, "missing"),
    (f"Bearer {TOKEN}", "not this server's"),  # the other servers' token: not this one's (its file holds another)
    ("Bearer ", "not this server's"),
    ("Basic dXNlcjpwYXNz", "scheme 'Basic' is not accepted"),
])
def test_reload_without_the_token_is_a_401_and_reloads_nothing(guarded, authorization, says):
    port, before = guarded.port, serving(guarded.port)
    reloads = metric(port, "mlsys_model_reloads_total")
    status, headers, body = call(port, "/reload", raw=b"", method="POST", authorization=authorization)
    assert (status, headers["content-type"]) == (401, "application/json")
    assert headers["www-authenticate"].startswith("Bearer") and says in json.loads(body)["error"]
    assert json.loads(body)["field"] == "Authorization" and guarded.token not in body.decode()
    assert serving(port) == before, "the model was not reloaded"  # champion is v2 meanwhile: a reload would switch
    assert metric(port, "mlsys_model_reloads_total") == reloads
    assert metric(port, 'mlsys_reload_requests_total{code="401"}') >= 1


def test_reload_with_the_token_from_a_file_reloads_then_throttles_without_a_registry_check(guarded):
    import mlflow

    port = guarded.port
    assert serving(port) == f"{AUTH_MODEL}/1"  # champion is v2, but only an authorized /reload may switch (poll: 600 s)
    status, headers, body = call(port, "/reload", raw=b"", method="POST", token=guarded.token)
    assert status == 200 and json.loads(body) == {"model_version": f"{AUTH_MODEL}/2", "changed": True, "error": None}
    assert serving(port) == f"{AUTH_MODEL}/2"
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(AUTH_MODEL, "champion", "1")  # a reload now would switch back to v1
    try:
        reloads = metric(port, "mlsys_model_reloads_total")
        for _ in range(3):
            status, headers, body = call(port, "/reload", raw=b"", method="POST", token=guarded.token)
            assert status == 429 and 30 <= int(headers["retry-after"]) <= 60
            assert "--reload-interval-s" in json.loads(body)["error"]
        assert serving(port) == f"{AUTH_MODEL}/2" and metric(port, "mlsys_model_reloads_total") == reloads
        assert call(port, "/reload", raw=b"", method="POST")[0] == 401  # the token is checked before the throttle
        from mlsys.serving.online.reload_hook import notify

        with pytest.raises(urllib.error.HTTPError) as refused:
            notify(f"http://127.0.0.1:{port}", timeout_s=2, token=guarded.token)  # Retry-After is past its deadline
        assert refused.value.code == 429
        assert metric(port, 'mlsys_reload_requests_total{code="429"}') == 4
        assert metric(port, 'mlsys_reload_requests_total{code="200"}') == 1
    finally:
        client.set_registered_model_alias(AUTH_MODEL, "champion", "2")


def test_predict_needs_the_token_under_predict_auth_and_health_ready_metrics_stay_open(guarded):
    port = guarded.port
    before = counted(port)
    for authorization in (None, "Bearer wrong-token-of-enough-length", f"Bearer {TOKEN}"):
        status, headers, body = call(port, "/predict", {"text": "check out my channel"}, authorization=authorization)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert json.loads(body)["field"] == "Authorization" and "prediction" not in json.loads(body)
    status, _, body = call(port, "/predict", raw=b"[" * 19_000, method="POST")  # 401 before the body is read
    assert status == 401
    status, _, body = call(port, "/predict", {"text": "check out my channel"}, token=guarded.token)
    assert status == 200 and json.loads(body)["model_version"].startswith(AUTH_MODEL)
    after = counted(port)
    assert after["401"] == before.get("401", 0) + 4 and after["200"] == before.get("200", 0) + 1
    for path in ("/health", "/ready", "/metrics"):
        assert call(port, path)[0] == 200, path


def test_predict_auth_without_a_token_or_a_bad_setting_stops_the_server_before_it_starts(registry, tmp_path):
    """Fail closed at start, naming the setting and the fix: exit code 2, no port opened."""
    cases = [
        (["--predict-auth"], {"MLSYS_SERVE_TOKEN": None}, "ServeConfig.predict_auth=True is invalid"),
        ([], {"MLSYS_SERVE_TOKEN": None, "MLSYS_SERVE_PREDICT_AUTH": "true"}, "set MLSYS_SERVE_TOKEN"),
        ([], {"MLSYS_SERVE_PREDICT_AUTH": "maybe"}, "MLSYS_SERVE_PREDICT_AUTH='maybe' is not a boolean"),
        ([], {"MLSYS_SERVE_TOKEN": "short"}, "under the minimum of 16"),
        ([], {"MLSYS_SERVE_TOKEN": None, "MLSYS_SERVE_TOKEN_FILE": str(tmp_path / "absent")}, "cannot be read"),
        (["--reload-interval-s", "-1"], {}, "ServeConfig.reload_interval_s=-1.0 is invalid"),
    ]
    for args, env, says in cases:
        done = subprocess.run([sys.executable, "-m", "mlsys.cli", "serve", "--port", str(free_port()), *args],
                              env=serve_env(registry.home, **env), capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2 and says in done.stderr, (args, env, done.stderr[-2000:])
    done = subprocess.run([sys.executable, "-m", "mlsys.cli", "serve", "--help"], capture_output=True, text=True, check=False)
    assert "--predict-auth, --no-predict-auth" in done.stdout and "MLSYS_SERVE_TOKEN" in done.stdout
