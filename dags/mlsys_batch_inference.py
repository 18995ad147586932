"""
### mlsys batch inference: score a dataset with the champion, sharded across workers

Runs when the registry's champion may have changed (the `champion_model` Asset),
or on demand. `plan` pins the dataset version and the model version (the
`champion` alias, or a version from the form) once, and cuts the rows into
`num_shards` shards. `score` is mapped: one task instance per shard, each
streaming its rows in record batches (the next one prefetched) through the
model, on all cores. `merge` concatenates the shards into `predictions`, a new
versioned dataset: id, prediction, class probabilities and the model version.
Row count, class shares and throughput go to MLflow.

A failed shard is retried alone; datasets are content-addressed, so its re-run
writes the same version, and the merged result is byte-identical to one
unsharded run. With one shard (the default) `score` writes `predictions` itself.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from mlsys.orchestration import CHAMPION_MODEL, DEFAULT_ARGS, PREDICTIONS, form, run_in_task
from mlsys.serving.batch.stage import BatchSpec


@dag(
    dag_id="mlsys_batch_inference",
    schedule=[CHAMPION_MODEL],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mlsys", "serve", "batch"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    params={
        **form(BatchSpec, "dataset", "version", "model_version", "batch_rows"),
        "num_shards": Param(1, type="integer", minimum=1, maximum=256,
                            description="Shards mapped across workers; 1 scores in one task."),
        **form(BatchSpec, "workers"),
    },
)
def mlsys_batch_inference():
    @task
    def plan(params=None) -> list[dict]:
        from mlsys.serving.batch.stage import BatchSpec, plan
        from mlsys.spec import from_params

        return plan(from_params(BatchSpec, params), params["num_shards"])

    @task
    def score(shard: dict, params=None) -> dict:
        return run_in_task("batch" if shard["num_shards"] == 1 else "batch_shard", params, **shard)

    @task(outlets=[PREDICTIONS])
    def merge(shards: list[dict], params=None) -> dict:
        shards = list(shards)
        if len(shards) == 1:
            return shards[0]
        return run_in_task("batch_merge", params, shards=",".join(s["predictions"]["version"] for s in shards))

    merge(score.expand(shard=plan()))


dag = mlsys_batch_inference()
