"""
### mlsys batch inference: score a dataset with the champion

Runs when the registry's champion may have changed (the `champion_model` Asset),
or on demand. It streams the chosen dataset version in record batches through
the model holding the `champion` alias (or a version from the form) and writes
`predictions` as a new versioned dataset: id, prediction, class probabilities
and the model version. Row count, class shares and throughput go to MLflow.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from mlsys.orchestration import CHAMPION_MODEL, PREDICTIONS, run_in_task


@dag(
    dag_id="mlsys_batch_inference",
    schedule=[CHAMPION_MODEL],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mlsys", "serve", "batch"],
    doc_md=__doc__,
    default_args={"owner": "mlsys", "retries": 2, "retry_delay": pendulum.duration(seconds=30)},
    params={
        "dataset": Param("comments_unlabeled", type="string", description="Dataset to score (needs 'id' and 'text' columns)."),
        "version": Param("latest", type="string", description="Dataset version: 'latest' or a version id."),
        "model_version": Param("champion", type="string", description="Registered model alias or version number."),
        "batch_rows": Param(65536, type="integer", minimum=1, description="Rows per record batch."),
    },
)
def mlsys_batch_inference():
    @task(outlets=[PREDICTIONS])
    def score(params=None) -> dict:
        return run_in_task("batch", params)

    score()


dag = mlsys_batch_inference()
