"""Where mlsys keeps its state, read from the environment.

Precedence: explicit arguments (trigger params, CLI flags) over environment
variables over these defaults. The embedded defaults keep everything under one
folder, ``$MLSYS_HOME`` (default ``./.mlsys``):

    $MLSYS_HOME/storage      datasets and files            MLSYS_STORAGE_URI  (or s3://bucket/prefix)
    $MLSYS_HOME/mlflow.db    MLflow runs and registry      MLFLOW_TRACKING_URI
    $MLSYS_HOME/mlartifacts  MLflow artifacts              MLSYS_ARTIFACT_URI (or s3://bucket/prefix)
    $MLSYS_HOME/airflow      Airflow home (SQLite)         AIRFLOW_HOME

``MLSYS_SERVE_URL`` (e.g. ``http://serve:8000``; empty by default) is the
online server that the evaluate stage tells to reload after it moves ``champion``.

Placement and engines: ``MLSYS_TRAIN_QUEUE`` (the Celery queue and pool of the
train task; empty = the default queue), ``MLSYS_CPU_DEVICES`` (CPU "devices" a
distributed job may use; default the core count), ``MLSYS_TORCHRUN_ARGS``
(torchrun's rendezvous flags; default ``--standalone``), ``MLSYS_STREAM`` and
``MLSYS_STREAM_POLL_S`` (the stream the segment watcher watches, and how often).
Security (docs/security.md): ``MLSYS_DATA_ROOTS`` (folders, ``:``-separated, that an ingest source may
come from; default the data dir and ``$MLSYS_HOME``), ``MLSYS_LF_MODULES`` (module prefixes, comma-separated,
that labeling functions may be imported from; default ``mlsys.labeling,lfs``), ``MLSYS_SERVE_TOKEN`` (the
bearer token of the online server's admin endpoints) and ``MLSYS_MODEL_SIGNING_KEY`` /
``MLSYS_MODEL_VERIFY_KEY`` (the pipeline signs the models it registers; serving loads only signed ones).
A secret ``X`` may also be given as a file: ``X_FILE`` names it (Docker secrets), never a command line.
This module imports the standard library alone: engines and DAG files read it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def secret(name: str, default: str = "") -> str:
    """The secret ``name`` from ``$name``, or from the file ``$name_FILE`` names; ``default`` if neither is set."""
    value = os.environ.get(name, "")
    path = os.environ.get(f"{name}_FILE", "")
    if value and path:
        raise ValueError(f"both {name} and {name}_FILE are set: give the secret one way")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ValueError(f"{name}_FILE={path!r} cannot be read ({exc.strerror}): mount the secret file there") from None
    return value.strip() or default


def local_secret(path: Path, make) -> Path:
    """``path``, created once with the text ``make()`` returns (mode 0600, folder 0700): a secret of the embedded
    setup. Written beside it and hard-linked into place, so two racing first users agree on one value."""
    import secrets as _secrets

    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(make() + "\n")
        try:
            os.link(tmp, path)  # atomic and never overwrites
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _home() -> Path:
    return Path(os.environ.get("MLSYS_HOME", ".mlsys")).expanduser().resolve()


@dataclass(frozen=True)
class Settings:
    home: Path
    storage_uri: str
    tracking_uri: str
    artifact_uri: str
    mlflow_ui_url: str
    airflow_ui_url: str  # links from MLflow runs back to their DAG runs
    data_dir: Path
    model_name: str
    serve_url: str  # `mlsys serve` to POST /reload after a promotion; "" = none
    train_queue: str  # Celery queue (and pool) of the train task; "" = the default queue
    cpu_devices: int  # CPU processes a distributed job may start
    torchrun_args: str  # torchrun's rendezvous flags; "" = --standalone
    stream: str  # the stream the segment watcher watches
    stream_poll_s: float  # seconds between the watcher's polls
    retry_delay_s: float  # Airflow's delay before a failed task's retry (the fault suite shortens it)
    data_roots: tuple[Path, ...]  # folders an ingest source may be read from
    lf_modules: tuple[str, ...]  # module prefixes labeling functions may be imported from
    dask_scheduler: str  # the label stage's applier=dask: a dask.distributed scheduler address; "" = a LocalCluster
    spark_master: str  # the label stage's applier=spark: a Spark master URL; "" = local[jobs]

    def in_data_roots(self, path: str | Path) -> bool:
        """Whether ``path`` (symlinks resolved) lies under one of the data roots: what a source param may read."""
        real = Path(path).expanduser().resolve()
        return any(real == root or real.is_relative_to(root) for root in self.data_roots)

    def lf_module_allowed(self, module: str) -> bool:
        """Whether labeling functions may be imported from ``module``: it is, or is under, an allowed prefix."""
        return any(module == p or module.startswith(p + ".") for p in self.lf_modules)

    @classmethod
    def from_env(cls) -> "Settings":
        home = _home()
        data_dir = Path(os.environ.get("MLSYS_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
        return cls(
            home=home,
            storage_uri=os.environ.get("MLSYS_STORAGE_URI", str(home / "storage")),
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}"),
            artifact_uri=os.environ.get("MLSYS_ARTIFACT_URI", str(home / "mlartifacts")),
            mlflow_ui_url=os.environ.get("MLSYS_MLFLOW_UI_URL", "http://localhost:5000").rstrip("/"),
            airflow_ui_url=os.environ.get(
                "MLSYS_AIRFLOW_UI_URL", f"http://localhost:{os.environ.get('AIRFLOW__API__PORT', '8080')}").rstrip("/"),
            data_dir=data_dir,
            model_name=os.environ.get("MLSYS_MODEL_NAME", "youtube-spam-classifier"),
            serve_url=os.environ.get("MLSYS_SERVE_URL", "").strip().rstrip("/"),
            train_queue=os.environ.get("MLSYS_TRAIN_QUEUE", "").strip(),
            cpu_devices=int(os.environ.get("MLSYS_CPU_DEVICES", os.cpu_count() or 1)),
            torchrun_args=os.environ.get("MLSYS_TORCHRUN_ARGS", ""),
            stream=os.environ.get("MLSYS_STREAM", "camera"),
            stream_poll_s=float(os.environ.get("MLSYS_STREAM_POLL_S", "30")),
            retry_delay_s=float(os.environ.get("MLSYS_RETRY_DELAY_S", "30")),
            data_roots=tuple(Path(p).expanduser().resolve() for p in os.environ.get(
                "MLSYS_DATA_ROOTS", "").split(os.pathsep) if p.strip()) or (data_dir.expanduser().resolve(), home),
            lf_modules=tuple(m.strip() for m in os.environ.get(
                "MLSYS_LF_MODULES", "mlsys.labeling,lfs").split(",") if m.strip()),
            dask_scheduler=os.environ.get("MLSYS_DASK_SCHEDULER", "").strip(),
            spark_master=os.environ.get("MLSYS_SPARK_MASTER", "").strip(),
        )


def settings() -> Settings:
    """The settings in force now (read fresh, so tests may change the environment)."""
    return Settings.from_env()


def use_embedded_home(home: str | Path) -> None:
    """Point this process at a self-contained embedded state under ``home`` (benchmarks, quality runs).

    Clears the storage, tracking and artifact overrides so every default lands under ``home``.
    """
    os.environ["MLSYS_HOME"] = str(home)
    for var in ("MLSYS_STORAGE_URI", "MLFLOW_TRACKING_URI", "MLSYS_ARTIFACT_URI"):
        os.environ.pop(var, None)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
