"""The one module that knows Airflow: Assets and the task-side stage runner.

DAG files import this at parse time, so it imports only ``airflow.sdk``
at module level; everything heavy loads inside ``run_in_task``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset

from mlsys.settings import settings

# Assets chain the DAGs (data-aware scheduling): producer outlets -> consumer schedules.
COMMENTS = Asset(name="comments", uri="mlsys://datasets/comments_unlabeled")
LABELED = Asset(name="comments_labeled", uri="mlsys://datasets/comments_labeled")  # emitted once validated
CHAMPION_MODEL = Asset(name="champion_model", uri="mlsys://models/champion")
PREDICTIONS = Asset(name="predictions", uri="mlsys://datasets/predictions")

# Every mlsys DAG's default_args: an owner, retries that Airflow needs exceptions raised for, and an
# execution_timeout: a task that hangs (a stuck rank, an unanswered socket) fails after 2 h and is retried,
# instead of holding a worker slot forever. A task that needs longer sets its own; the distributed train
# stage's torchrun watchdog (JOB_TIMEOUT_S, JOB_SILENCE_S in mlsys.training.stage) fires well before.
DEFAULT_ARGS = {"owner": "mlsys", "retries": 2, "retry_delay": timedelta(seconds=settings().retry_delay_s),
                "execution_timeout": timedelta(hours=2)}

XCOM_RUN_URL = "mlflow_run_url"  # read by plugins/mlflow_link.py


_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def form(spec_cls: type, *names: str) -> dict[str, Any]:
    """Trigger-form Params generated from a spec's knobs (``mlsys.spec.knob``): default, type, bounds, enum, help.

    ``names`` picks and orders knobs (default: all). A text knob whose default is "" is optional in the form
    (``null`` allowed, default ``None``); the task then passes nothing and the spec keeps its default.
    """
    import typing

    from airflow.sdk import Param

    from mlsys.spec import knobs

    fields = knobs(spec_cls)
    hints = typing.get_type_hints(spec_cls)
    out: dict[str, Any] = {}
    for name in names or fields:
        f = fields[name]
        kind = _JSON_TYPES[hints[name]]
        default: Any = f.default
        if kind == "string" and default == "":
            kind, default = ["null", "string"], None
        out[name] = Param(default, type=kind, description=f.metadata["help"], **f.metadata["schema"])
    return out


def run_in_task(stage: str, params: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Run one stage inside an Airflow task, in a nested MLflow run under the DAG run's run.

    ``params`` are the DAG's trigger params; ``overrides`` (e.g. versions from
    upstream XCom) win over them. Returns a small JSON-safe dict for XCom.
    """
    from airflow.sdk import get_current_context

    from mlsys import stages
    from mlsys.tracking import RunContext, run_url, stage_run

    ctx = get_current_context()
    ti = ctx["ti"]
    run_ctx = RunContext(
        pipeline=ti.dag_id,
        stage=stage,
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        try_number=ti.try_number,
        map_index=ti.map_index,
    )
    with stage_run(run_ctx) as run:
        ti.xcom_push(key=XCOM_RUN_URL, value=run_url(run.info.run_id, run.info.experiment_id))
        result = stages.run_stage(stage, {**dict(params), **overrides})
    return {**result.to_json(), "mlflow_run_id": run.info.run_id}


def _video_segments() -> Asset:
    """Video segments of the stream $MLSYS_STREAM (default "camera"), watched by the triggerer, not a worker."""
    from airflow.sdk import AssetWatcher

    from mlsys.streaming.trigger import SegmentTrigger

    s = settings()
    trigger = SegmentTrigger(stream=s.stream, storage_uri=s.storage_uri, poll_interval=s.stream_poll_s)
    return Asset(name="video_segments", uri="mlsys://streams/segments",
                 watchers=[AssetWatcher(name="video_segments_watcher", trigger=trigger)])


VIDEO_SEGMENTS = _video_segments()  # an event per new segment past the watermark -> mlsys_video_stream
VIDEO_PREDICTIONS = Asset(name="video_predictions", uri="mlsys://datasets/video_predictions")


def streams_to_process(events: Any, param: str | None = None) -> list[str]:
    """The streams one ``mlsys_video_stream`` run processes, in order, each once.

    First the stream named by each triggering event's payload (the ``SegmentTrigger`` yields
    ``{"stream": ..., ...}``; Airflow keeps it as the asset event's ``extra["payload"]``); a run with
    no such event (a manual trigger) processes the run's ``stream`` param, else ``MLSYS_STREAM``.
    ``events``: the task context's ``triggering_asset_events`` (asset -> events), or a list of events
    or of their ``extra`` dicts.
    """
    if isinstance(events, Mapping):  # asset -> its events, as in the task context
        events = [e for asset in events for e in events[asset]]
    named: list[str] = []
    for event in events or ():
        extra = event if isinstance(event, dict) else (getattr(event, "extra", None) or {})
        payload = extra.get("payload") if isinstance(extra.get("payload"), dict) else extra
        stream = payload.get("stream")
        if isinstance(stream, str) and stream and stream not in named:
            named.append(stream)
    return named or [param or settings().stream]


def run_streams(params: dict[str, Any], events: Any) -> dict[str, Any]:
    """The stream task: run the stream stage once per stream of ``streams_to_process``; results by stream."""
    params = dict(params or {})
    return {s: run_in_task("stream", params, stream=s) for s in streams_to_process(events, params.get("stream"))}
