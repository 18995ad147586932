"""Fault injection on the real stack: SIGKILL of the ddp train job and of the stream task (issue 15).

One ``airflow standalone`` on a fresh home serves both scenarios, each through the REST API and the scheduler:

- **train-ddp**: ``mlsys_data`` runs first (only it unpaused), then ``mlsys_training`` is triggered with
  ``strategy=ddp, nproc=2, checkpoint_every=4``. Rank 0 SIGKILLs itself right after committing its first
  checkpoint (``train.ddp_step``); torchrun tears the job down, the task fails, Airflow retries it, and the retry
  resumes from that checkpoint. One FINISHED MLflow run for the good try, the killed try's run FAILED, one model
  version.
- **stream**: two small segments are put with ``mlsys stream-put``; ``mlsys_video_stream`` is triggered by hand
  (the watcher watches another stream here, so no Asset run races it). The task SIGKILLs itself after the first
  segment's predictions are written but before the watermark moves (``stream.segment_written``); the retry
  re-writes the same predictions, and every frame is there exactly once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.faults.stack_state import running_stack, stack_env, state, task_instances

pytestmark = pytest.mark.e2e

DDP_POINT, STREAM_POINT = "train.ddp_step", "stream.segment_written"
DDP_CONF = {"strategy": "ddp", "nproc": 2, "checkpoint_every": 4, "epochs": 2}
STREAM = "camera"
STREAM_CONF = {"stream": STREAM, "model": "small", "width": 0.25, "size": 64}
RUN_TIMEOUT_S = 300
TOTAL_TIMEOUT_S = 660


def _task_runs(st: dict, dag_id: str, task_id: str) -> dict[str, list[str]]:
    """{try_number: [MLflow run status, ...]} of one task's runs."""
    out: dict[str, list[str]] = {}
    for r in st["mlflow_runs"]:
        if r["dag_id"] == dag_id and r["task_id"] == task_id and r["role"] != "dag_run":
            out.setdefault(r["try_number"], []).append(r["status"])
    return out


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, segment_files) -> dict:
    from mlsys.faults import fired
    from mlsys.storage import DatasetStore
    from mlsys.streaming import predictions, watermark

    home = tmp_path_factory.mktemp("ddp-stream-home")
    started = time.monotonic()
    # the segment watcher watches a stream with no segments: the stream DAG runs only when triggered here
    extra = {"MLSYS_CPU_DEVICES": "2", "MLSYS_STREAM": "unwatched"}
    out: dict = {"home": home}
    with stack_env(home, (DDP_POINT, STREAM_POINT), extra):  # fired() reads this home's counters
        out.update(_run(home, segment_files, started))
        out["fired"] = {p: fired(p) for p in (DDP_POINT, STREAM_POINT)}
    store = DatasetStore(str(home / "storage"))
    out["watermark"] = watermark.read(store, STREAM)
    out["predictions"] = predictions.read_predictions(store, STREAM)
    out["state"] = state(home)
    out["seconds"] = time.monotonic() - started
    print(f"\nscenarios train-ddp and stream: data {out['data_seconds']:.0f} s, train {out['train_seconds']:.0f} s, "
          f"stream {out['stream_seconds']:.0f} s, all {out['seconds']:.0f} s ({datetime.now(UTC):%H:%M:%S})")
    return out


def _run(home: Path, segment_files: dict, started: float) -> dict:
    """Both scenarios on one stack (inside ``stack_env``); what Airflow and MLflow left after each."""
    from mlsys.local import ensure_promotion_pool

    out: dict = {}
    with running_stack(home, TOTAL_TIMEOUT_S, "scenarios train-ddp and stream") as stack:
        client = stack.client
        ensure_promotion_pool(stack)
        client.wait_for_dags(["mlsys_data", "mlsys_training", "mlsys_video_stream"], alive=stack.alive)
        # 1. data, with training (and everything else) paused: its Asset queues no training run
        pending = (client.dag("mlsys_data") or {}).get("next_dagrun_logical_date")
        data_run = client.trigger("mlsys_data", logical_date=pending)
        client.set_paused("mlsys_data", False)
        client.wait_for_run("mlsys_data", data_run, timeout=RUN_TIMEOUT_S, alive=stack.alive)
        out["data_seconds"] = time.monotonic() - started
        versions_before = sum(state(home)["model_versions"].values())

        # 2. train with ddp: rank 0 killed past its first committed checkpoint
        t0 = time.monotonic()
        client.set_paused("mlsys_training", False)
        train_run = client.trigger("mlsys_training", conf=DDP_CONF)
        out["train_run"] = client.wait_for_run("mlsys_training", train_run, timeout=RUN_TIMEOUT_S,
                                               alive=stack.alive)
        train_tis = {ti["task_id"]: ti for ti in client.task_instances("mlsys_training", train_run)}
        out["train_tis"] = train_tis
        out["train_logs"] = {n: client.task_log("mlsys_training", train_run, "train", try_number=n)
                             for n in range(1, train_tis["train"]["try_number"] + 1)}
        out["train_state"] = state(home)
        out["versions_before"] = versions_before
        out["train_seconds"] = time.monotonic() - t0

        # 3. stream: two segments put, the task killed between a segment's predictions and the watermark
        t0 = time.monotonic()
        mlsys = str(Path(sys.executable).with_name("mlsys"))
        out["puts"] = []
        for path in segment_files["segments"][:2]:
            done = subprocess.run([mlsys, "stream-put", "--stream", STREAM, "--video", str(path)],
                                  check=False, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            out["puts"].append(json.loads(done.stdout.strip().splitlines()[-1]))
        client.set_paused("mlsys_video_stream", False)
        stream_run = client.trigger("mlsys_video_stream", conf=STREAM_CONF)
        out["stream_run"] = client.wait_for_run("mlsys_video_stream", stream_run, timeout=RUN_TIMEOUT_S,
                                                alive=stack.alive)
        out["stream_tis"] = {ti["task_id"]: ti for ti in client.task_instances("mlsys_video_stream", stream_run)}
        out["stream_runs"] = [r["dag_run_id"] for r in client.runs("mlsys_video_stream")]
        out["stream_seconds"] = time.monotonic() - t0
        out["task_instances"] = task_instances(client, ("mlsys_data", "mlsys_training", "mlsys_video_stream"))
    return out


def test_ddp_rank_killed_past_a_checkpoint_and_the_retry_resumed_it(scenario):
    assert scenario["fired"][DDP_POINT] == 1
    assert scenario["train_run"]["state"] == "success"
    train = scenario["train_tis"]["train"]
    assert train["state"] == "success" and train["try_number"] == 2, train
    assert scenario["train_tis"]["evaluate_register"]["try_number"] == 1
    # try 1 committed a checkpoint and was killed; try 2 started from it, not from step 0
    first, second = (scenario["train_logs"][n].replace('\\"', '"') for n in (1, 2))  # escaped or not
    assert '"kind": "checkpoint", "step": 4' in first, first[-3000:]
    assert '"kind": "resumed", "step": 4' in second, second[-3000:]
    assert '"kind": "resumed"' not in first
    st = scenario["train_state"]
    assert _task_runs(st, "mlsys_training", "train") == {"1": ["FAILED"], "2": ["FINISHED"]}
    assert st["running"] == 0
    new_versions = sum(st["model_versions"].values()) - scenario["versions_before"]
    assert new_versions == 1, st["model_versions"]
    print(f"\nscenario sigkill-train-ddp: faults={scenario['fired'][DDP_POINT]} retries={train['try_number'] - 1} "
          f"lost=0 duplicated={new_versions - 1}")


def test_stream_killed_before_its_watermark_commit_lost_and_duplicated_no_frame(scenario):
    assert scenario["fired"][STREAM_POINT] == 1
    assert scenario["stream_runs"] == [scenario["stream_run"]["dag_run_id"]], "an Asset-triggered run raced ours"
    task = scenario["stream_tis"]["stream"]
    assert scenario["stream_run"]["state"] == "success"
    assert task["state"] == "success" and task["try_number"] == 2, task
    frames = sum(p["frames"] for p in scenario["puts"])
    mark = scenario["watermark"]
    assert (mark.segment, mark.frames) == (len(scenario["puts"]), frames), mark
    rows = scenario["predictions"]
    assert sorted(rows["frame"]) == list(range(frames)), "a frame is missing or written twice"
    per_segment = {int(seg): sorted(g["frame_in_segment"]) for seg, g in rows.groupby("segment")}
    assert per_segment == {p["segment"]: list(range(p["frames"])) for p in scenario["puts"]}
    st = scenario["state"]
    assert _task_runs(st, "mlsys_video_stream", "stream") == {"1": ["FAILED"], "2": ["FINISHED"]}
    assert st["running"] == 0
    lost = frames - rows["frame"].nunique()
    duplicated = len(rows) - rows["frame"].nunique()
    print(f"\nscenario sigkill-stream: faults={scenario['fired'][STREAM_POINT]} retries={task['try_number'] - 1} "
          f"lost={lost} duplicated={duplicated}")


def test_nothing_else_was_retried_or_left_running(scenario):
    others = [(ti["dag_id"], ti["task_id"], ti["try_number"]) for ti in scenario["task_instances"]
              if ti["try_number"] > 1 and ti["task_id"] not in ("train", "stream")]
    assert others == []
    assert scenario["state"]["running"] == 0
