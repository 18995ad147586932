"""
### mlsys training: train → evaluate and register

Runs when validated labels arrive (the `comments_labeled` Asset), or on demand.

1. **train** fits the PyTorch text classifier on the validated labels with a
   noise-aware loss (soft `label_proba` targets, per-row `weight`), and logs
   the model to MLflow with a signature and an input example.
2. **evaluate_register** scores it on the held-out test split, registers it as
   `challenger`, and moves `champion` to it only if it beats the current
   champion on `gate_metric` (or there is none). Emits `champion_model`,
   which triggers **mlsys_batch_inference**.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from mlsys.orchestration import CHAMPION_MODEL, LABELED, run_in_task


@dag(
    dag_id="mlsys_training",
    schedule=[LABELED],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mlsys", "train", "registry"],
    doc_md=__doc__,
    default_args={"owner": "mlsys", "retries": 2, "retry_delay": pendulum.duration(seconds=30)},
    params={
        "dataset_version": Param("validated", type="string", description="comments_labeled version: 'validated' (last to pass validation) or a version id."),
        "epochs": Param(8, type="integer", minimum=1, description="Training epochs."),
        "batch_size": Param(64, type="integer", minimum=1, description="Rows per optimizer step."),
        "lr": Param(0.003, type="number", exclusiveMinimum=0, description="AdamW learning rate."),
        "dim": Param(64, type="integer", minimum=2, description="Embedding and block width."),
        "depth": Param(2, type="integer", minimum=0, description="Number of residual blocks."),
        "seed": Param(0, type="integer", description="Seed for initialisation and shuffling."),
        "gate_metric": Param("f1", enum=["f1", "accuracy", "precision", "recall"], description="Metric the challenger must beat the champion on."),
    },
)
def mlsys_training():
    @task
    def train(params=None) -> dict:
        return run_in_task("train", params)

    @task(outlets=[CHAMPION_MODEL])
    def evaluate_register(trained: dict, params=None) -> dict:
        return run_in_task("evaluate", params, model_uri=trained["model_uri"])

    evaluate_register(train())


dag = mlsys_training()
