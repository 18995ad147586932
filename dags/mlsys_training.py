"""
### mlsys training: train → evaluate and register

Runs when validated labels arrive (the `comments_labeled` Asset), or on demand.

1. **train** fits the PyTorch text classifier on the validated labels with a
   noise-aware loss (soft `label_proba` targets, per-row `weight`), and logs
   the model to MLflow with a signature and an input example. `strategy`
   picks `single` (in the task), `ddp` or `pipeline` (GPipe / 1F1B): those
   launch `nproc` processes with **torchrun**, stream their log into the task
   log, checkpoint every `checkpoint_every` steps, and an Airflow retry of the
   same DAG run resumes from the last checkpoint. With
   `MLSYS_TRAIN_QUEUE=gpu` in the environment (the scale-out deployment on a
   host with GPUs) the task runs on the `gpu` queue and pool; empty, on the
   default queue. A train task that waits on a queue no worker serves fails
   after Airflow's `[scheduler] task_queued_timeout` (and two requeues), and
   its failure callback logs the queue and the fix.
2. **evaluate_register** scores it on the held-out test split, registers it as
   `challenger`, and moves `champion` to it only if it beats the current
   champion on `gate_metric` (or there is none). Emits `champion_model`,
   which triggers **mlsys_batch_inference**.
"""

from __future__ import annotations

import logging

import pendulum
from airflow.sdk import dag, task

from mlsys.orchestration import CHAMPION_MODEL, DEFAULT_ARGS, LABELED, form, run_in_task
from mlsys.registry.gate import PROMOTION_POOL
from mlsys.registry.stage import EvaluateSpec
from mlsys.settings import settings
from mlsys.training.stage import TrainSpec

# Scale-out deployment: MLSYS_TRAIN_QUEUE=gpu sends train to the GPU Celery worker (and its pool).
TRAIN_QUEUE = settings().train_queue


def no_worker_hint(context) -> str | None:
    """on_failure_callback of train: a try that never started most likely waited on a queue no worker serves."""
    ti = context.get("ti")
    if not TRAIN_QUEUE or getattr(ti, "start_date", None) is not None:
        return None
    msg = (f"train never started: it waited on the Celery queue {TRAIN_QUEUE!r} longer than [scheduler] "
           f"task_queued_timeout, and no worker took it. Start a worker for that queue (docker compose up -d "
           f"airflow-worker-gpu), or on a host without GPUs set MLSYS_TRAIN_QUEUE empty so train runs on the "
           f"default queue (docs/deployment.md).")
    logging.getLogger("mlsys.training").error(msg)
    return msg


TRAIN_PLACEMENT = ({"queue": TRAIN_QUEUE, "pool": TRAIN_QUEUE, "on_failure_callback": no_worker_hint}
                   if TRAIN_QUEUE else {})


@dag(
    dag_id="mlsys_training",
    schedule=[LABELED],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mlsys", "train", "registry"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    params={
        **form(TrainSpec, "dataset_version", "epochs", "batch_size", "lr", "dim", "depth", "seed", "char_ngrams",
               "strategy", "nproc", "replicas", "microbatches", "schedule", "balance", "rematerialize", "device",
               "checkpoint_every", "uncovered", "rebalance", "operating_point", "precision_target"),
        **form(EvaluateSpec, "gate_metric"),
    },
)
def mlsys_training():
    @task(**TRAIN_PLACEMENT)
    def train(params=None, dag_run=None) -> dict:
        key = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{dag_run.dag_id}-{dag_run.run_id}")
        return run_in_task("train", params, checkpoint_key=key)  # retries of this run resume its checkpoints

    @task(pool=PROMOTION_POOL, outlets=[CHAMPION_MODEL])  # one promotion at a time, across DAGs
    def evaluate_register(trained: dict, params=None) -> dict:
        return run_in_task("evaluate", params, model_uri=trained["model_uri"])

    evaluate_register(train())


dag = mlsys_training()
