"""One stream setting: a mlsys_video_stream run processes the stream its triggering event names, then its
``stream`` param, then ``MLSYS_STREAM`` (mlsys.orchestration.streams_to_process)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlsys import orchestration
from mlsys.orchestration import streams_to_process
from mlsys.storage import DatasetStore
from mlsys.streaming import watermark
from mlsys.streaming.predictions import read_predictions
from mlsys.streaming.stage import StreamSpec, run
from mlsys.streaming.trigger import SegmentTrigger

SMALL = {"model": "small", "width": 0.25, "size": 64, "error_every": 0}


def _event(payload: dict) -> SimpleNamespace:
    """An asset event as the task context holds it: the AssetWatcher keeps the trigger's payload in extra."""
    return SimpleNamespace(extra={"from_trigger": True, "payload": payload})


def test_the_event_payload_wins_then_the_param_then_mlsys_stream(monkeypatch):
    monkeypatch.setenv("MLSYS_STREAM", "lobby")
    assert streams_to_process({}, None) == ["lobby"]  # a manual run without a stream: the setting
    assert streams_to_process([], "dock") == ["dock"]  # a manual run with one: the param
    events = [_event({"stream": "garage", "watermark": 0, "newest_segment": 1})]
    assert streams_to_process(events, "dock") == ["garage"]  # a triggered run: the stream of its event
    keyed = {"video_segments": [_event({"stream": s}) for s in ("garage", "lobby", "garage")]}
    assert streams_to_process(keyed, None) == ["garage", "lobby"]  # each once, in order
    assert streams_to_process([_event({})], None) == ["lobby"]  # an event without a stream names none


def test_the_dag_form_leaves_the_stream_to_the_event_or_the_setting():
    import runpy

    from airflow.sdk import DAG

    ns = runpy.run_path(str(Path(__file__).resolve().parents[2] / "dags" / "mlsys_video_stream.py"))
    (dag,) = [o for o in ns.values() if isinstance(o, DAG)]
    assert dag.params["stream"] is None  # a "camera" default here would hide MLSYS_STREAM


def test_two_streams_each_event_is_processed_for_its_own_stream_only(mlsys_home, segment_files, monkeypatch):
    """Segments land in two streams; the trigger of each names its stream, and the task run for each event
    processes that stream alone (the other stream's segments stay pending)."""
    monkeypatch.setenv("MLSYS_STREAM", "camera")  # the default stream, which neither event names
    store = DatasetStore()
    seg = segment_files["segments"]
    store.backend.put_file(watermark.segment_key("north", 1), Path(seg[0]))
    store.backend.put_file(watermark.segment_key("south", 1), Path(seg[1]))
    store.backend.put_file(watermark.segment_key("south", 2), Path(seg[2]))

    async def first_event(stream: str) -> dict:
        events = SegmentTrigger(stream=stream, storage_uri=store.root_uri, poll_interval=0.05).run()
        try:
            return (await asyncio.wait_for(anext(events), 5)).payload
        finally:
            await events.aclose()

    ran: list[str] = []

    def fake_run_in_task(stage: str, params: dict, **overrides) -> dict:  # the stage itself, without Airflow
        assert stage == "stream"
        spec = StreamSpec(**{**params, **overrides})
        ran.append(spec.stream)
        return run(spec).to_json()

    monkeypatch.setattr(orchestration, "run_in_task", fake_run_in_task)

    north = orchestration.run_streams({"stream": None, **SMALL}, [_event(asyncio.run(first_event("north")))])
    assert ran == ["north"] and north["north"]["segments"] == [1]
    assert watermark.read(store, "north").segment == 1
    assert watermark.read(store, "south").segment == 0  # untouched: not this event's stream
    assert watermark.read(store, "camera").segment == 0

    south = orchestration.run_streams({"stream": None, **SMALL}, {"video_segments": [
        _event(asyncio.run(first_event("south")))]})
    assert ran == ["north", "south"] and south["south"]["segments"] == [1, 2]
    assert read_predictions(store, "north")["stream"].unique().tolist() == ["north"]
    assert read_predictions(store, "south")["stream"].unique().tolist() == ["south"]
    assert read_predictions(store, "north")["frame"].tolist() == list(range(8))
    assert read_predictions(store, "south")["frame"].tolist() == list(range(16))


@pytest.mark.parametrize("param", [None, "dock"])
def test_a_manual_run_processes_the_param_or_the_setting(monkeypatch, param):
    monkeypatch.setenv("MLSYS_STREAM", "lobby")
    ran = []
    monkeypatch.setattr(orchestration, "run_in_task", lambda stage, params, **o: ran.append(o["stream"]) or {})
    orchestration.run_streams({"stream": param}, {})
    assert ran == [param or "lobby"]
