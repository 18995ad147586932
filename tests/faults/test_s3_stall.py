"""Fault injection: the S3 endpoint stalls while ``mlsys label`` writes ``comments_labeled``.

The data stages (ingest -> label -> validate, the ``mlsys_data`` DAG's chain) run as ``mlsys`` CLI processes
against a real S3 endpoint (moto_server, started here so that this test may freeze it without disturbing
the session's shared one). While label writes, at a random request of its write phase (the upload of
``data.parquet``, the conditional-write probe, the sequence counter, the metadata, the pointer, the
history record), the endpoint is frozen with SIGSTOP for ``STALL_S`` seconds, then resumed with SIGCONT.
moto keeps its objects in memory, so a freeze, not a kill, is the "endpoint goes away for a while" fault.

Two clients meet the same stall:

* ``default-timeouts``: boto3's defaults, as the stages run in production (``S3Backend`` configures no
  client: 60 s connect and read timeouts, "standard" retries, 3 attempts): the write waits out the stall
  and completes;
* ``tight-timeouts``: 2 s timeouts, 2 attempts in all: the write fails with a clear error naming the
  endpoint, and label is re-run, as Airflow's retry would.

The clean run (ingest, label, validate) is the reference; each faulted run starts from a copy of the
bucket its ingest left, so only label and validate run again. Either way the end state must equal an
uninterrupted run's (same versions, same pointers, one snapshot), no version may be visible without its
metadata or with a partial file, no pointer may move back, and every stage must have finished exactly once
in MLflow with nothing left RUNNING. A write that never returns is a bug: the test dumps the stuck
process's stacks (faulthandler) and fails naming it.

Reproduce a point with MLSYS_FAULT_SEED=<seed printed in the summary>, or pin it with
MLSYS_S3_STALL_AT=<request number of the write phase>.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from mlsys.bench.harness import free_port

HOOK = Path(__file__).with_name("s3_stall_hook.py")
MLSYS = Path(sys.executable).parent / "mlsys"
STALL_S = 10.0
STAGE_TIMEOUT_S = 150  # a label run takes ~10 s; with the stall ~20 s; more is a hang
# 2 attempts of at most ~3 s each (1 s waiting for "100 Continue", 2 s read timeout) + backoff: < STALL_S
TIGHT = {"read_timeout": 2, "connect_timeout": 2, "retries": {"total_max_attempts": 2, "mode": "standard"}}
CLIENTS = {"default-timeouts": None, "tight-timeouts": TIGHT}


# --------------------------------------------------------------------------- the endpoint


@contextmanager
def _moto(log_dir: Path):
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.is_file():
        pytest.fail(f"moto_server not found at {exe}: install moto[server] in the virtual environment")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_ENDPOINT_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    log_path = log_dir / "moto_server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                stderr=subprocess.STDOUT, env=env)
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with code {proc.returncode}:\n{log_path.read_text()}")
            try:
                opener.open(endpoint, timeout=1).close()
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not answer at {endpoint} within 30 s")
                time.sleep(0.1)
        yield proc, endpoint
    finally:
        try:
            os.kill(proc.pid, signal.SIGCONT)  # never leave it frozen: terminate needs it running
        except ProcessLookupError:
            pass
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    with _moto(tmp_path_factory.mktemp("moto-stall")) as (proc, url):
        yield proc, url


def _aws_env(url: str) -> dict[str, str]:
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    return {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": url, "NO_PROXY": no_proxy,
            "no_proxy": no_proxy}


class Pipeline:
    """The data stages on one bucket and one MLSYS_HOME, as CLI processes."""

    def __init__(self, url: str, home: Path, ingested: str | None = None):
        """A fresh bucket; ``ingested``: a bucket to copy every object from (the state an ingest left)."""
        import boto3

        self.url, self.home = url, home
        home.mkdir(parents=True, exist_ok=True)
        self.bucket = f"mlsys-stall-{uuid.uuid4().hex[:12]}"
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
        s3.create_bucket(Bucket=self.bucket)
        if ingested:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=ingested):
                for obj in page.get("Contents", []):
                    s3.copy_object(Bucket=self.bucket, Key=obj["Key"], CopySource={"Bucket": ingested, "Key": obj["Key"]})
        self.root = f"s3://{self.bucket}/mlsys"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AIRFLOW", "MLSYS_", "MLFLOW_", "AWS_", "S3_STALL", "S3_CLIENT"))}
        self.env = {**env, **_aws_env(url), "MLSYS_HOME": str(home), "MLSYS_STORAGE_URI": self.root,
                    "MLFLOW_DISABLE_TELEMETRY": "true"}

    def cmd(self, stage: str, hooked: bool) -> list[str]:
        return [sys.executable, str(HOOK), stage] if hooked else [str(MLSYS), stage]

    def run(self, stage: str, hooked: bool = False, **hook_env: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.cmd(stage, hooked), env={**self.env, **hook_env}, capture_output=True,
                              text=True, timeout=STAGE_TIMEOUT_S, check=False)
        assert proc.returncode == 0, f"mlsys {stage} failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}"
        return proc

    def store(self):
        from mlsys.storage import DatasetStore

        return DatasetStore(self.root)


# --------------------------------------------------------------------------- what a run leaves


def _state(store) -> dict:
    names = [n for n in store.names() if n.startswith("comments")]
    return {
        "datasets": {n: sorted(r.version for r in store.versions(n)) for n in names},
        "pointers": {f"{n}@{p}": rec["version"] for n in names for p, rec in store.pointers(n).items()},
        "snapshots": sorted(s.id for s in store.snapshots("comments")),
    }


def _sequences(store) -> dict[str, int]:
    out = {f"{n}@{p}": int(rec["sequence"]) for n in store.names() for p, rec in store.pointers(n).items()}
    out |= {f"snapshot:comments@{p}": int(rec["sequence"]) for p, rec in store.snapshot_pointers("comments").items()}
    return out


def _visible_versions_are_whole(store) -> list[str]:
    """Every version a reader can see has its metadata and its complete Parquet file; returns the orphans
    (data files without metadata: invisible, and the retry overwrites them with the same bytes)."""
    import hashlib

    backend = store.backend
    orphans = []
    for name in store.names():
        committed = {r.version: r for r in store.versions(name)}
        for key in backend.list(f"datasets/{name}/"):
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == "data.parquet" and parts[2] not in committed:
                orphans.append(key)
        for version, ref in committed.items():
            data = backend.get_bytes(f"datasets/{name}/{version}/data.parquet")
            assert hashlib.sha256(data).hexdigest() == ref.sha256 and len(data) == ref.size_bytes, (
                f"{name}@{version} is visible (its metadata exists) but its data is not the committed file")
        for pointer, rec in store.pointers(name).items():
            assert rec["version"] in committed, f"{name}@{pointer} points at {rec['version']}, which has no metadata"
    return orphans


def _mlflow_runs(home: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(home / "mlflow.db")
    try:
        return db.execute(
            "select r.status, coalesce((select value from tags t where t.run_uuid = r.run_uuid"
            " and t.key = 'mlsys.stage'), '') from runs r").fetchall()
    finally:
        db.close()


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


# --------------------------------------------------------------------------- the scenario


@pytest.fixture(scope="module")
def clean(endpoint, tmp_path_factory):
    """An uninterrupted run on the same endpoint; label's S3 requests are logged to choose stall points."""
    _, url = endpoint
    pipe = Pipeline(url, tmp_path_factory.mktemp("s3-clean-home"))
    log = pipe.home / "label-requests.log"
    pipe.run("ingest")
    ingested = Pipeline(url, tmp_path_factory.mktemp("s3-ingested-home"), ingested=pipe.bucket).bucket
    pipe.run("label", hooked=True, S3_STALL_LOG=str(log))
    pipe.run("validate")
    points = [line.split(" ", 2) for line in log.read_text().splitlines() if not line.startswith("0 ")]
    with pytest.MonkeyPatch.context() as mp:
        for k, v in _aws_env(url).items():
            mp.setenv(k, v)
        mp.setenv("MLSYS_HOME", str(pipe.home))
        state = _state(pipe.store())
    assert points, "label made no S3 write requests"
    assert all(len(v) == 1 for v in state["datasets"].values()), state
    return {"state": state, "points": points, "ingested": ingested}


@pytest.mark.parametrize("client", list(CLIENTS))
def test_s3_endpoint_stalls_while_label_writes(client, endpoint, clean, tmp_path, monkeypatch):
    moto, url = endpoint
    seed = int(os.environ.get("MLSYS_FAULT_SEED") or time.time_ns() % 2**32)
    point = int(os.environ.get("MLSYS_S3_STALL_AT") or random.Random(f"{seed}-{client}").randrange(len(clean["points"])) + 1)
    t0 = time.monotonic()

    # the state the clean run's ingest left (a copy of its bucket): the stages after it run here
    pipe = Pipeline(url, tmp_path / "home", ingested=clean["ingested"])
    for k, v in _aws_env(url).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLSYS_HOME", str(pipe.home))
    store = pipe.store()
    seqs = [_sequences(store)]

    # label, with the endpoint frozen just before the chosen request of its write phase
    mark = tmp_path / "stalled.json"
    hook_env = {"S3_STALL_AT": str(point), "S3_STALL_PID": str(moto.pid), "S3_STALL_MARK": str(mark),
                "S3_STALL_LOG": str(tmp_path / "label-requests.log")}
    if CLIENTS[client]:
        hook_env["S3_CLIENT_CONFIG"] = json.dumps(CLIENTS[client])
    label = subprocess.Popen(pipe.cmd("label", hooked=True), env={**pipe.env, **hook_env},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + STAGE_TIMEOUT_S
        while not mark.exists():
            assert label.poll() is None, f"label exited before the stall point:\n{label.stderr.read()[-4000:]}"
            assert time.monotonic() < deadline, "label never reached the stall point"
            time.sleep(0.05)
        stalled = json.loads(mark.read_text())
        op, key = stalled["operation"], stalled["key"]
        assert _proc_state(moto.pid) == "T", "the endpoint is not frozen"
        time.sleep(max(0.0, stalled["at"] + STALL_S - time.monotonic()))
        assert _proc_state(moto.pid) == "T"
    except BaseException:
        label.kill()
        label.communicate(timeout=30)
        raise
    finally:
        os.kill(moto.pid, signal.SIGCONT)
    resumed = time.monotonic()
    try:
        _, err = label.communicate(timeout=STAGE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        label.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack to stderr
        time.sleep(2)
        label.kill()
        _, err = label.communicate(timeout=30)
        pytest.fail(f"mlsys label hangs: still running {STAGE_TIMEOUT_S} s after the endpoint came back "
                    f"(stalled before request {point}: {op} {key}). Its threads:\n{err[-8000:]}")
    after_stall_s = time.monotonic() - resumed

    # a failed write fails clearly, leaves nothing half-visible, and moves no pointer back
    retries = 0
    error = ""
    if label.returncode != 0:
        error = [line for line in err.strip().splitlines() if line.strip()][-1]
        assert "timeout" in error.lower() and url.split("//")[1] in error, (
            f"label failed after the stall without a clear error (want a timeout naming the endpoint):\n"
            f"{err[-4000:]}")
    orphans = _visible_versions_are_whole(store)
    seqs.append(_sequences(store))
    if label.returncode != 0:
        pipe.run("label")  # Airflow's retry of the task
        retries += 1
        seqs.append(_sequences(store))
    pipe.run("validate")
    seqs.append(_sequences(store))
    assert _visible_versions_are_whole(store) == [], "an orphan data file is left after the retry committed it"

    state = _state(store)
    expected = clean["state"]
    lost = sum(len(set(v) - set(state["datasets"].get(n, []))) for n, v in expected["datasets"].items())
    duplicated = sum(len(set(v) - set(expected["datasets"].get(n, []))) for n, v in state["datasets"].items())
    runs = _mlflow_runs(pipe.home)
    finished = {s: sum(st == "FINISHED" and stage == s for st, stage in runs) for s in ("label", "validate")}
    print(f"\nscenario s3-stall[{client}]: faults=1 retries={retries} lost={lost} duplicated={duplicated}"
          f"  (seed {seed}: stalled {STALL_S:.0f} s before write-phase request {point}/{len(clean['points'])}"
          f" {op} {key}; label {'completed' if not error else 'failed: ' + error[:160]}"
          f" {after_stall_s:.1f} s after the resume; orphans before the retry: {len(orphans)};"
          f" {time.monotonic() - t0:.0f} s)")

    if client == "default-timeouts":
        assert label.returncode == 0, f"with boto3's default timeouts a {STALL_S:.0f} s stall must be ridden out:\n{err[-4000:]}"
    else:
        assert label.returncode != 0, "with 2 s timeouts the write must fail during a 10 s stall, not succeed"
    assert (lost, duplicated) == (0, 0), (state["datasets"], expected["datasets"])
    assert state == expected, "the end state differs from an uninterrupted run's"
    for before, after in itertools.pairwise(seqs):
        for pointer, sequence in before.items():
            assert after.get(pointer, -1) >= sequence, f"{pointer} moved back: {before} -> {after}"
    for name in store.names():
        for rec in store.history(name):
            assert rec.get("from_sequence") is None or rec["from_sequence"] < rec["sequence"], rec
    assert not [r for r in runs if r[0] == "RUNNING"], f"MLflow runs left RUNNING: {runs}"
    assert finished == {"label": 1, "validate": 1}, runs
    assert sum(st == "FAILED" for st, _ in runs) == retries, runs
