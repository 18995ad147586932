"""MLflow runs under Airflow retries: a killed try's run is failed and linked, a restarted try reopens its own.

A "killed try" here is a real process SIGKILLed inside ``stage_run``: nothing ends its MLflow run, exactly as
the OOM killer or a lost worker leaves it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from mlsys.tracking import RunContext, configure, experiment_id, stage_run, tracker

DAG, DAG_RUN = "youtube_spam_nightly", "manual__2026-01-01T00:00:00+00:00"

KILLED_TRY = textwrap.dedent("""
    import json, os, signal, sys

    import mlflow

    from mlsys.tracking import RunContext, stage_run

    with stage_run(RunContext(**json.loads(sys.argv[1]))) as run:
        mlflow.log_metric("step", 1)
        print(run.info.run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no finally, no atexit, no end_run
""")


def _ctx(task: str = "train", try_number: int = 1, run_id: str = DAG_RUN, map_index: int | None = -1) -> RunContext:
    """A task try's context as the Airflow adapter builds it: the map index is -1 for a task that is not mapped."""
    return RunContext(pipeline=DAG, stage=task, dag_id=DAG, run_id=run_id, task_id=task, try_number=try_number,
                      map_index=map_index)


def _client():
    import mlflow

    return mlflow.MlflowClient(configure())


def _killed(ctx: RunContext) -> str:
    """Run a try of ``ctx`` in a process that SIGKILLs itself inside its MLflow run; returns that run's id."""
    fields = {k: v for k, v in vars(ctx).items() if v is not None}
    done = subprocess.run([sys.executable, "-c", KILLED_TRY, json.dumps(fields)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == -9, f"the try was meant to die of SIGKILL:\n{done.stdout}\n{done.stderr[-3000:]}"
    run_id = done.stdout.strip().splitlines()[-1]
    assert _client().get_run(run_id).info.status == "RUNNING"  # what a kill leaves behind
    return run_id


def _task_runs(task: str = "train") -> list:
    return [r for r in _client().search_runs([experiment_id(DAG)], order_by=["attributes.start_time ASC"])
            if r.data.tags.get("airflow.task_id") == task]


def test_a_retry_fails_the_killed_tries_run_and_links_to_it(mlsys_home):
    killed = _killed(_ctx(try_number=1))
    with stage_run(_ctx(try_number=2)) as retry:
        pass

    client = _client()
    old, new = client.get_run(killed), client.get_run(retry.info.run_id)
    assert old.info.status == "FAILED" and old.info.end_time
    assert old.data.tags[tracker.FAILURE_CAUSE] == "killed: superseded by try 2"
    assert old.data.metrics == {"step": 1.0}  # what the killed try logged stays
    assert new.info.status == "FINISHED"
    assert new.data.tags[tracker.PREVIOUS_ATTEMPT] == killed
    assert new.data.tags["airflow.try_number"] == "2"
    assert [r.info.run_id for r in _task_runs()] == [killed, retry.info.run_id]
    (parent,) = [r for r in client.search_runs([experiment_id(DAG)]) if r.data.tags.get("mlsys.role") == "dag_run"]
    assert parent.info.status == "FINISHED"
    assert {old.data.tags["mlflow.parentRunId"], new.data.tags["mlflow.parentRunId"]} == {parent.info.run_id}


def test_a_restart_within_a_try_reopens_its_run(mlsys_home):
    import mlflow

    killed = _killed(_ctx(try_number=1))
    with stage_run(_ctx(try_number=1)) as again:
        mlflow.log_metric("step", 2)

    assert again.info.run_id == killed  # no second run for the same try
    (run,) = _task_runs()
    assert run.info.status == "FINISHED"
    assert run.data.tags[tracker.REOPENED] == "1"
    assert tracker.FAILURE_CAUSE not in run.data.tags and tracker.PREVIOUS_ATTEMPT not in run.data.tags
    assert [m.value for m in _client().get_metric_history(killed, "step")] == [1.0, 2.0]


def test_a_failed_try_is_linked_not_rewritten(mlsys_home):
    with pytest.raises(RuntimeError), stage_run(_ctx(try_number=1)) as failed:
        raise RuntimeError("boom")
    with stage_run(_ctx(try_number=2)) as retry:
        pass
    with stage_run(_ctx(try_number=3)) as third:
        pass

    client = _client()
    assert tracker.FAILURE_CAUSE not in client.get_run(failed.info.run_id).data.tags  # it ended itself
    assert client.get_run(retry.info.run_id).data.tags[tracker.PREVIOUS_ATTEMPT] == failed.info.run_id
    assert client.get_run(third.info.run_id).data.tags[tracker.PREVIOUS_ATTEMPT] == retry.info.run_id
    assert len(_task_runs()) == 3


def test_mapped_instances_keep_their_own_runs(mlsys_home):
    """Instances of a mapped task share dag, run, task and try: the map index tells their runs apart."""
    first_of_0 = _killed(_ctx("select_one", try_number=1, map_index=0))
    with stage_run(_ctx("select_one", try_number=1, map_index=1)) as first_of_1:
        pass
    with stage_run(_ctx("select_one", try_number=2, map_index=1)) as retry_of_1:
        pass

    client = _client()
    assert first_of_1.info.run_id != first_of_0  # not instance 0's run, reopened
    assert client.get_run(first_of_0).info.status == "RUNNING"  # another instance's try: not superseded
    assert client.get_run(first_of_0).data.tags["airflow.map_index"] == "0"
    assert client.get_run(retry_of_1.info.run_id).data.tags[tracker.PREVIOUS_ATTEMPT] == first_of_1.info.run_id
    assert len(_task_runs("select_one")) == 3


def test_without_a_map_index_runs_are_neither_reopened_nor_superseded(mlsys_home):
    """An adapter that does not say which mapped instance runs: the siblings of one try must not share a run."""
    sibling = _killed(_ctx("select_one", try_number=1, map_index=None))
    with stage_run(_ctx("select_one", try_number=1, map_index=None)) as other:
        pass
    with stage_run(_ctx("select_one", try_number=2, map_index=None)) as retry:
        pass
    assert len({sibling, other.info.run_id, retry.info.run_id}) == 3
    assert _client().get_run(sibling).info.status == "RUNNING"
    assert tracker.PREVIOUS_ATTEMPT not in _client().get_run(retry.info.run_id).data.tags


@pytest.mark.parametrize("run_id", ["manual__it's-mine", 'odd\'run"id\\x', "back\\slash"])
def test_dag_run_ids_with_quotes_are_found_exactly(mlsys_home, run_id):
    """MLflow's filter syntax has no escapes: a run id with quotes must not break (or widen) the parent search."""
    lookalike = "".join("_" if c in "'\"\\" else c for c in run_id)  # what a LIKE pattern would also match
    with stage_run(_ctx("ingest", run_id=lookalike)):
        pass
    with stage_run(_ctx("ingest", run_id=run_id)) as first:
        pass
    with stage_run(_ctx("label", run_id=run_id)) as second:
        pass
    with stage_run(_ctx("label", try_number=2, run_id=run_id)) as retry:
        pass

    client = _client()
    parents = {r.data.tags["airflow.run_id"]: r.info.run_id for r in client.search_runs([experiment_id(DAG)])
               if r.data.tags.get("mlsys.role") == "dag_run"}
    assert set(parents) == {run_id, lookalike}
    for active in (first, second, retry):
        assert client.get_run(active.info.run_id).data.tags["mlflow.parentRunId"] == parents[run_id]
    assert client.get_run(retry.info.run_id).data.tags[tracker.PREVIOUS_ATTEMPT] == second.info.run_id


def test_tag_clause_quotes_what_mlflow_can_read():
    assert tracker.tag_clause("k", "plain") == "tags.`k` = 'plain'"
    assert tracker.tag_clause("k", "it's") == 'tags.`k` = "it\'s"'
    assert tracker.tag_clause("k", "a'b\"c") == "tags.`k` LIKE 'a_b_c'"
    assert tracker.tag_clause("k", "a\\b") == "tags.`k` LIKE 'a_b'"
