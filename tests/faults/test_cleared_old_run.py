"""Fault injection on the real stack: an old run cleared and re-run after a newer one.

Run A is the suite's uninterrupted run (``clean_run``: gold_size 200). On the same home, run B triggers
``mlsys_data`` with ``{"gold_size": 150}``: new gold, unlabeled and labeled versions (the test group, and so
``comments_test``, is the same), and the Assets run training and batch inference after it. Then run A's
``mlsys_data`` tasks are cleared through the REST API (``clearTaskInstances``, downstream included, the DAG run
reset) and run again; run A's ``validate`` emits the ``comments_labeled`` Asset again, so ``mlsys_training``
and ``mlsys_batch_inference`` run once more too.

The re-run re-writes A's content, so it must move nothing back: every dataset version and pointer (datasets
and snapshots) is what it was after B, ``champion`` did not move to a worse model, no dataset version or MLflow
run was lost or written twice, and nothing is left RUNNING. The one new thing allowed is what a new training
run makes: the Asset-triggered ``mlsys_training`` run registers its model as one more version (the
``challenger``), one per training DAG run.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from tests.faults.stack_state import (
    mlflow_runs_per_try,
    retries,
    running_stack,
    stack_env,
    state,
    task_instances,
    tracked_tasks,
)

pytestmark = pytest.mark.e2e

SCENARIO = "old-run-cleared-after-newer"
NEWER_CONF = {"gold_size": 150}
RUN_TIMEOUT_S = 300
SPLITS = ("comments_unlabeled", "comments_gold", "comments_test")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _wait_for_chain(stack, after: str) -> list[dict]:
    """Wait for the Asset-triggered runs of training and batch inference queued after ``after``."""
    out = []
    for dag_id in ("mlsys_training", "mlsys_batch_inference"):
        out.append(stack.client.wait_for_run(dag_id, after=after, timeout=RUN_TIMEOUT_S, alive=stack.alive))
    return out


def _wait_for_rerun(stack, dag_id: str, run_id: str, min_try: int, timeout: float = RUN_TIMEOUT_S) -> dict:
    """Wait until every task instance of the cleared run reached ``min_try`` and the run finished again."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        stack.alive()
        run = stack.client.run(dag_id, run_id)
        tis = stack.client.task_instances(dag_id, run_id)
        if run["state"] in ("success", "failed") and all(ti["try_number"] >= min_try for ti in tis):
            if run["state"] != "success":
                raise AssertionError(f"the re-run of {dag_id} {run_id} failed: "
                                     f"{[(ti['task_id'], ti['state']) for ti in tis]}")
            return run
        time.sleep(1)
    raise TimeoutError(f"the re-run of {dag_id} {run_id} did not finish within {timeout:.0f} s")


def _refs(home) -> dict[str, str]:
    """The pointers that matter, read through the store (what every stage resolves)."""
    from mlsys.storage import DatasetStore

    store = DatasetStore(str(home / "storage"))
    refs = {f"{name}@latest": store.ref(name, "latest").version for name in (*SPLITS, "comments_labeled")}
    refs["comments_labeled@validated"] = store.ref("comments_labeled", "validated").version
    refs["comments@latest"] = store.snapshot("comments@latest").id
    return refs


def _champion(st: dict, model: str | None = None) -> tuple[str, str]:
    [(name, version)] = [(n, v) for n, a, v in st["aliases"] if a == "champion" and model in (None, n)]
    return name, str(version)


@pytest.fixture(scope="module")
def scenario(clean_run) -> dict:
    home = clean_run["home"]
    a_runs = {ti["run_id"] for ti in clean_run["task_instances"] if ti["dag_id"] == "mlsys_data"}
    assert len(a_runs) == 1, a_runs
    run_a = a_runs.pop()
    started = time.monotonic()
    with stack_env(home), running_stack(home, 720, f"scenario {SCENARIO}") as stack:
        from mlsys.local import ensure_promotion_pool

        ensure_promotion_pool(stack)
        stack.client.wait_for_dags(["mlsys_data", "mlsys_training", "mlsys_batch_inference"], alive=stack.alive)
        # Run B: newer, other data.
        t_b = _now()
        run_b = stack.client.trigger("mlsys_data", conf=NEWER_CONF)
        stack.client.wait_for_run("mlsys_data", run_b, timeout=RUN_TIMEOUT_S, alive=stack.alive)
        b_chain = _wait_for_chain(stack, t_b)
        after_b = {"state": state(home), "refs": _refs(home), "task_instances": task_instances(stack.client)}
        b_seconds = time.monotonic() - started
        # The fault: clear the old run A and let it run again, with whatever its Assets trigger.
        t_clear = _now()
        cleared = stack.client.api("POST", "/api/v2/dags/mlsys_data/clearTaskInstances", {
            "dag_run_id": run_a, "task_ids": ["ingest"], "include_downstream": True, "only_failed": False,
            "reset_dag_runs": True, "dry_run": False})
        _wait_for_rerun(stack, "mlsys_data", run_a, min_try=2)
        rerun_chain = _wait_for_chain(stack, t_clear)
        tis = task_instances(stack.client)
        active = [(ti["dag_id"], ti["run_id"], ti["run_state"]) for ti in tis
                  if ti["run_state"] not in ("success", "failed")]
    return {"run_a": run_a, "run_b": run_b, "b_chain": b_chain, "after_b": after_b, "rerun_chain": rerun_chain,
            "cleared": sorted(ti["task_id"] for ti in cleared.get("task_instances", [])),
            "state": state(home), "refs": _refs(home), "task_instances": tis, "active": active,
            "seconds": time.monotonic() - started, "b_seconds": b_seconds}


def test_run_b_moved_the_pointers_and_the_clear_re_ran_run_a(clean_run, scenario):
    a_pointers, b_pointers = clean_run["state"]["pointers"], scenario["after_b"]["state"]["pointers"]
    for name in ("comments_unlabeled", "comments_gold", "comments_labeled"):
        assert b_pointers[f"{name}/_latest.json"] != a_pointers[f"{name}/_latest.json"], f"run B left {name} as A's"
    assert b_pointers["comments_labeled/_validated.json"] != a_pointers["comments_labeled/_validated.json"]
    assert scenario["cleared"] == ["ingest", "label", "validate"]
    rerun = {ti["task_id"]: ti for ti in scenario["task_instances"]
             if ti["dag_id"] == "mlsys_data" and ti["run_id"] == scenario["run_a"]}
    assert {t: (ti["state"], ti["try_number"]) for t, ti in rerun.items()} == {
        t: ("success", 2) for t in ("ingest", "label", "validate")}
    assert scenario["active"] == [], "a DAG run is still queued or running"


def test_no_pointer_moved_back(scenario):
    before, after = scenario["after_b"], scenario
    assert after["refs"] == before["refs"], "the re-run of the old run moved a pointer back"
    assert after["state"]["pointers"] == before["state"]["pointers"]
    assert after["state"]["snapshot_pointers"] == before["state"]["snapshot_pointers"]


def test_champion_did_not_move_to_a_worse_model(scenario):
    before, after = scenario["after_b"]["state"], scenario["state"]
    name, was = _champion(before)
    _, now = _champion(after, name)
    if now != was:  # it may move only to a strictly better model on the same test split
        tags = after["model_version_tags"]
        gate = "test_f1"
        assert tags[f"{name}/{now}"]["test_dataset"] == tags[f"{name}/{was}"]["test_dataset"]
        assert float(tags[f"{name}/{now}"][gate]) > float(tags[f"{name}/{was}"][gate]), (was, now)


def test_nothing_lost_duplicated_or_left_running(clean_run, scenario):
    before, after = scenario["after_b"]["state"], scenario["state"]
    tis = scenario["task_instances"]
    per_try = mlflow_runs_per_try(after, tis, tracked_tasks(clean_run["state"]))
    lost = sum(len(set(v) - set(after["datasets"].get(k, []))) for k, v in before["datasets"].items())
    duplicated = sum(len(set(v) - set(before["datasets"].get(k, []))) for k, v in after["datasets"].items())
    lost += len(per_try["lost"])
    duplicated += len(per_try["duplicated"])
    # One model version per training DAG run (a retry finds the version its attempt registered).
    training_runs = len({ti["run_id"] for ti in tis if ti["dag_id"] == "mlsys_training"})
    versions = sum(after["model_versions"].values())
    lost += max(training_runs - versions, 0)
    duplicated += max(versions - training_runs, 0)
    faults = 1  # one clear of an old run
    print(f"\nscenario {SCENARIO}: faults={faults} retries={retries(tis) - retries(scenario['after_b']['task_instances'])} "
          f"lost={lost} duplicated={duplicated} (run B {scenario['b_seconds']:.0f} s, "
          f"{scenario['seconds']:.0f} s in all)")
    assert after["datasets"] == before["datasets"], "the re-run lost or added a dataset version"
    assert per_try == {"duplicated": [], "lost": [], "orphans": [], "running": []}
    assert after["running"] == 0
    assert after["model_versions"] == {name: training_runs for name in after["model_versions"]}
    assert (lost, duplicated) == (0, 0)
