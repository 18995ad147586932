"""
### mlsys data: ingest → label → validate

The nightly start of the pipeline, on the YouTube spam comments (or your own CSVs).

1. **ingest** reads the CSVs and writes three versioned datasets: the held-out
   *test* group (evaluation only), a small expert *gold* set, and the *unlabeled* pool.
2. **label** applies the labeling functions (`lfs`), fits Snorkel's `LabelModel`
   and a majority vote, picks the better on gold, and writes `comments_labeled`
   with `label`, `label_proba`, `label_source` and `weight` per row.
3. **validate** checks `comments_labeled` against its schema with Great Expectations.
   A failure stops the chain and quarantines the version; success emits the
   `comments_labeled` Asset, which triggers **mlsys_training**.

Every task logs a nested MLflow run; "View in MLflow" on a task opens it.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from mlsys.orchestration import COMMENTS, LABELED, run_in_task


@dag(
    dag_id="mlsys_data",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mlsys", "label", "validate"],
    doc_md=__doc__,
    default_args={"owner": "mlsys", "retries": 2, "retry_delay": pendulum.duration(seconds=30)},
    params={
        "source": Param("", type="string", description="Folder of CSVs (or one CSV). Empty: $MLSYS_DATA_DIR/youtube-spam."),
        "test_group": Param("Youtube05-Shakira", type="string", description="File (video) held out as the test split."),
        "gold_size": Param(200, type="integer", minimum=10, description="Rows drawn as the expert gold set."),
        "lfs": Param("mlsys.labeling.youtube_lfs", type="string", description="Importable module with a module-level LFS list."),
        "epochs": Param(500, type="integer", minimum=1, description="LabelModel training epochs."),
        "seed": Param(0, type="integer", description="Seed for sampling and the label model."),
    },
)
def mlsys_data():
    @task(outlets=[COMMENTS])
    def ingest(params=None) -> dict:
        return run_in_task("ingest", params)

    @task
    def label(ingested: dict, params=None) -> dict:
        return run_in_task("label", params, unlabeled_version=ingested["unlabeled"]["version"],
                           gold_version=ingested["gold"]["version"])

    @task(outlets=[LABELED])
    def validate(labeled: dict, params=None) -> dict:
        return run_in_task("validate", {}, dataset="comments_labeled", version=labeled["labeled"]["version"])

    validate(label(ingest()))


dag = mlsys_data()
