"""Fixtures shared by the whole test suite.

- every test starts from fixed random seeds (``random``, ``numpy``, ``torch`` if installed);
- ``mlsys_home``: a fresh ``$MLSYS_HOME`` under ``tmp_path``, so every default lives there; ``point_home``
  does the same for a module fixture's own folder;
- ``moto_server``: one real S3 endpoint (moto in server mode) for the whole session;
- ``s3_root``: a fresh bucket on that endpoint, with the AWS environment pointing at it;
- ``one_thread``: one torch intra-op thread for the test (training, streaming, explain);
- ``data_dir``: the shared data folder next to the repository; ``youtube_dir`` (``YOUTUBE_DIR``): its YouTube comments;
- ``prepared_home``: a module fixture's own home with the real YouTube data ingested, labeled (and validated).
- ``segment_files``: small real video segments of one stream (streaming tests and ``bench krypton``).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlsys.bench.harness import free_port

SEED = 1234
REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
YOUTUBE_DIR = DATA_DIR / "youtube-spam"


@pytest.fixture(autouse=True, scope="session")
def _data_roots():
    """Tests read and write their inputs under the temporary folder and read the shared data: both are data roots
    (MLSYS_DATA_ROOTS; tests of the confinement itself set their own)."""
    import tempfile

    os.environ.setdefault("MLSYS_DATA_ROOTS", os.pathsep.join([tempfile.gettempdir(), str(DATA_DIR)]))
    yield


@pytest.fixture
def one_thread():
    """Run the test with one intra-op thread: on a shared 2-core machine, intra-op threads only wait on each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Seed every random number generator a test might touch."""
    random.seed(SEED)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    else:
        np.random.seed(SEED)
    try:
        import torch  # imported here, not at the top: the suite runs without torch too
    except ImportError:
        pass
    else:
        torch.manual_seed(SEED)
    yield


def _point_home(mp: pytest.MonkeyPatch, home: Path, model_name: str | None = None) -> Path:
    """Point ``$MLSYS_HOME`` at ``home`` through ``mp``: storage, tracking and artifact URIs fall back to it."""
    mp.setenv("MLSYS_HOME", str(home))
    for var in ("MLSYS_STORAGE_URI", "MLFLOW_TRACKING_URI", "MLSYS_ARTIFACT_URI"):
        mp.delenv(var, raising=False)
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    if model_name:
        mp.setenv("MLSYS_MODEL_NAME", model_name)
    return home


@pytest.fixture(scope="session")
def point_home():
    """``point_home(mp, home, model_name=None)``: for module fixtures that build one home for many tests."""
    return _point_home


@pytest.fixture
def mlsys_home(tmp_path, monkeypatch) -> Path:
    """A private ``$MLSYS_HOME``; storage, tracking and artifact URIs fall back to it."""
    home = tmp_path / "mlsys-home"
    home.mkdir()
    return _point_home(monkeypatch, home)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """A moto S3 server on a free local port, for the whole session; yields its endpoint URL."""
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.is_file():
        pytest.fail(f"moto_server not found at {exe}: install moto[server] in the virtual environment")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    env = dict(os.environ)
    # the server must not pick up a stray endpoint or proxy meant for clients
    for var in ("AWS_ENDPOINT_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(var, None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with code {proc.returncode}:\n{log_path.read_text()}")
            try:
                opener.open(endpoint, timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # it answered, even if with an error status
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not answer at {endpoint} within 30 s:\n{log_path.read_text()}")
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_root(moto_server, monkeypatch) -> str:
    """A fresh, empty bucket on the moto server; returns ``s3://<bucket>/mlsys``."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", moto_server)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    # requests to the local server must never go through a proxy
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    monkeypatch.setenv("NO_PROXY", no_proxy)
    monkeypatch.setenv("no_proxy", no_proxy)

    import boto3

    bucket = f"mlsys-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/mlsys"


def _shared(path: Path) -> Path:
    if not path.is_dir():
        pytest.fail(f"shared data folder {path} is missing: the tests that read real data need it")
    return path


@pytest.fixture
def data_dir() -> Path:
    """The shared data folder next to the repository (``../shared/data``)."""
    return _shared(DATA_DIR)


@pytest.fixture(scope="session")
def youtube_dir() -> Path:
    """The shipped YouTube spam comments (``../shared/data/youtube-spam``), one CSV per video."""
    return _shared(YOUTUBE_DIR)


@pytest.fixture(scope="session")
def prepared_home(tmp_path_factory, youtube_dir):
    """``prepare(name, ...)``: a context manager giving a fresh home with the real data ingested and labeled.

    ``with prepare("train-home", validate=True, tracked=True) as env:`` makes ``tmp_path_factory.mktemp(name)``,
    points ``$MLSYS_HOME`` (and ``$MLSYS_MODEL_NAME`` if ``model_name``) at it, and runs ingest (``gold_size``,
    ``ingest_options`` for the other ``IngestSpec`` fields), label (``label_epochs``) and, with ``validate``,
    validate. ``tracked`` runs every stage inside its own CLI-style MLflow run; a collection of stage names
    (``{"label"}``) tracks only those. The environment points at the home until the ``with`` block ends, so a
    module fixture that yields inside it keeps it for its tests; ``env.mp`` is that ``MonkeyPatch``.

    ``env`` has ``home``, ``ingested``, ``labeled`` and ``validated`` (the stages' results; ``validated`` is
    ``None`` without ``validate``), ``runs`` (stage name -> MLflow run id, for the tracked stages) and ``store``
    (a ``DatasetStore`` on the home).
    """

    @contextmanager
    def prepare(name: str, *, gold_size: int = 200, label_epochs: int = 50, validate: bool = False,
                tracked: bool | Collection[str] = False, model_name: str | None = None,
                **ingest_options) -> Iterator[SimpleNamespace]:
        from mlsys.ingest.stage import IngestSpec
        from mlsys.ingest.stage import run as ingest
        from mlsys.labeling.stage import LabelSpec
        from mlsys.labeling.stage import run as label
        from mlsys.storage import DatasetStore
        from mlsys.tracking import RunContext, stage_run
        from mlsys.validation.stage import ValidateSpec
        from mlsys.validation.stage import run as validate_stage

        stages = ("ingest", "label", "validate")
        tracked_stages = set(stages if tracked is True else tracked or ())
        if not tracked_stages <= set(stages):
            raise ValueError(f"tracked={tracked!r}: track some of {stages}")
        runs: dict[str, str] = {}

        def step(stage: str, fn):
            if stage not in tracked_stages:
                return fn()
            with stage_run(RunContext.cli(stage)) as active:
                result = fn()
            runs[stage] = active.info.run_id
            return result

        home = tmp_path_factory.mktemp(name)
        with pytest.MonkeyPatch.context() as mp:
            _point_home(mp, home, model_name=model_name)
            ingested = step("ingest", lambda: ingest(
                IngestSpec(source=str(youtube_dir), gold_size=gold_size, **ingest_options)))
            labeled = step("label", lambda: label(LabelSpec(epochs=label_epochs)))
            validated = step("validate", lambda: validate_stage(ValidateSpec())) if validate else None
            yield SimpleNamespace(home=home, mp=mp, ingested=ingested, labeled=labeled, validated=validated,
                                  runs=runs, store=DatasetStore())

    return prepare


@pytest.fixture(scope="session")
def segment_files(tmp_path_factory):
    """Three consecutive 8-frame segments of one synthetic fixed-camera stream, plus a corrupt file."""
    from mlsys.streaming.incremental.synthetic import synthetic_frames
    from mlsys.streaming.video import write_video

    folder = tmp_path_factory.mktemp("segments")
    frames = synthetic_frames(24, 64, 0.05, speed=3, seed=7)
    paths = [write_video(folder / f"part{i + 1}.mp4", frames[8 * i:8 * i + 8]) for i in range(3)]
    junk = folder / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00 ftypisom" + b"garbage" * 200)
    return {"segments": paths, "corrupt": junk, "frames": frames}
