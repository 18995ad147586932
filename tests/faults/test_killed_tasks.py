"""Fault injection on the real stack: every stage's task is SIGKILLed once mid-run, Airflow retries, and the end
state equals an uninterrupted run's: the same dataset versions and pointers, one model version and the champion
alias, every task's MLflow run FINISHED once, each killed attempt's run marked FAILED, nothing left RUNNING.

The kills are real (``mlsys.faults.failpoint``: the task process sends itself SIGKILL at a named point after it
has written part of its work); the scheduler, the LocalExecutor, the retries and the Assets are Airflow's own.
"""

from __future__ import annotations

import pytest
from tests.faults.stack_state import pipeline as _pipeline

pytestmark = pytest.mark.e2e

# One kill per stage, each after the stage has written (part of) its output.
FAILPOINTS = ("ingest.committed", "label.written", "validate.tagged", "train.logged", "evaluate.registered",
              "batch.scored")


@pytest.fixture(scope="module")
def runs(clean_run, tmp_path_factory) -> dict:
    clean = clean_run  # the suite's one uninterrupted run (conftest.py)
    faulted = _pipeline(tmp_path_factory.mktemp("faulted-home"), FAILPOINTS)
    return {"clean": clean, "faulted": faulted}


def test_every_failpoint_killed_its_task_once_and_airflow_retried_it(runs):
    faulted = runs["faulted"]
    assert faulted["fired"] == {p: 1 for p in FAILPOINTS}
    retried = {task for task, tries in faulted["tries"].items() if tries > 1}
    assert len(retried) >= len(FAILPOINTS), faulted["tries"]
    print(f"\nscenario sigkill-each-task: faults={len(FAILPOINTS)} retries={sum(t - 1 for t in faulted['tries'].values())}")


def test_nothing_lost_or_duplicated(runs):
    clean, faulted = runs["clean"]["state"], runs["faulted"]["state"]
    assert faulted["datasets"] == clean["datasets"], "a killed task lost or duplicated a dataset version"
    assert faulted["pointers"] == clean["pointers"], "a pointer differs from the uninterrupted run's"
    assert faulted["model_versions"] == clean["model_versions"], "a killed evaluate registered a second version"
    assert faulted["aliases"] == clean["aliases"]
    assert faulted["finished_per_task"] == clean["finished_per_task"], "a task has a missing or second finished run"
    lost = sum(len(v) for v in clean["datasets"].values()) - sum(len(v) for v in faulted["datasets"].values())
    print(f"\nscenario sigkill-each-task: lost={max(lost, 0)} duplicated={max(-lost, 0)}")


def test_no_mlflow_run_is_left_running_and_each_killed_attempt_is_failed(runs):
    faulted = runs["faulted"]["state"]
    assert faulted["running"] == 0
    assert faulted["failed_task_runs"] == len(FAILPOINTS)
