"""dags/mlsys_training.py: the strategy knobs are in the trigger form; train goes to the gpu queue only on request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "mlsys_training.py"
PROBE = r"""
import json, os, runpy, sys
from airflow.sdk import DAG
out = {}
for queue in ("", "gpu"):  # the file is run twice: without and with the scale-out setting
    os.environ["MLSYS_TRAIN_QUEUE"] = queue
    ns = runpy.run_path(sys.argv[1])
    dag = next(o for o in ns.values() if isinstance(o, DAG))
    out[queue or "default"] = {"tasks": {t.task_id: {"queue": t.queue, "pool": t.pool} for t in dag.tasks},
                               "params": {k: dag.params[k] for k in dag.params}}
print(json.dumps(out))
"""


def test_train_goes_to_the_gpu_queue_only_when_asked():
    env = dict(os.environ, AIRFLOW__CORE__LOAD_EXAMPLES="False", PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, "-c", PROBE, str(DAG_FILE)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    default, scaled = info["default"]["tasks"], info["gpu"]["tasks"]
    assert default["train"]["queue"] == default["evaluate_register"]["queue"] != "gpu"
    assert default["train"]["pool"] == "default_pool"
    assert default["evaluate_register"]["pool"] == "mlsys_promotion"  # one promotion at a time, across DAGs
    assert scaled["train"] == {"queue": "gpu", "pool": "gpu"}
    assert scaled["evaluate_register"] == default["evaluate_register"]  # only train needs the GPU
    params = info["default"]["params"]
    assert params["strategy"] == "single" and params["schedule"] == "gpipe" and params["nproc"] == 2
    assert {"microbatches", "balance", "rematerialize", "device", "checkpoint_every"} <= set(params)


def test_train_stuck_on_a_queue_without_worker_fails_naming_the_queue_and_the_fix(monkeypatch, caplog):
    """Airflow fails a task queued longer than [scheduler] task_queued_timeout (docker-compose.yaml sets it) and
    runs its on_failure_callback: train's names the queue it waited on and the two ways out."""
    import logging
    import runpy
    from types import SimpleNamespace

    from airflow.sdk import DAG

    monkeypatch.setenv("MLSYS_TRAIN_QUEUE", "gpu")
    ns = runpy.run_path(str(DAG_FILE))
    dag = next(o for o in ns.values() if isinstance(o, DAG))
    train = dag.get_task("train")
    callbacks = train.on_failure_callback
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    assert callbacks and callbacks[0] is not None, "train on the gpu queue has no failure callback"
    with caplog.at_level(logging.ERROR):
        msgs = [cb({"ti": SimpleNamespace(start_date=None)}) for cb in callbacks]
    text = " ".join(m for m in msgs if m) + caplog.text
    assert "'gpu'" in text and "task_queued_timeout" in text
    assert "airflow-worker-gpu" in text and "MLSYS_TRAIN_QUEUE" in text  # the fix, both ways
    assert all(cb({"ti": SimpleNamespace(start_date="2026-01-01")}) is None for cb in callbacks)  # it ran: no hint

    monkeypatch.setenv("MLSYS_TRAIN_QUEUE", "")
    ns = runpy.run_path(str(DAG_FILE))
    dag = next(o for o in ns.values() if isinstance(o, DAG))
    assert dag.get_task("train").queue == dag.get_task("evaluate_register").queue  # the default queue
