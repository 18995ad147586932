"""
### mlsys data: ingest → label → validate

The nightly start of the pipeline, on the YouTube spam comments (or your own CSVs).

1. **ingest** reads the CSVs and writes three versioned datasets: the held-out
   *test* group (evaluation only), a small expert *gold* set, and the *unlabeled* pool.
2. **label** applies the labeling functions (`lfs`), fits Snorkel's `LabelModel`
   and a majority vote, picks the better on gold, and writes `comments_labeled`
   with `label`, `label_proba`, `label_source` and `weight` per row.
3. **validate** computes statistics of `comments_labeled`, checks it against the current
   version of its schema with Great Expectations (Data Docs in MLflow), and looks for drift
   against the last validated version. Error anomalies stop the chain (the task fails and
   says why); rows that break row-level rules go to `comments_labeled_quarantine` with a
   reason each, and `release_clean` releases the clean remainder instead. Warnings pass and
   are logged; benign changes write a proposed schema update (a diff in MLflow), which
   `accept_schema_update` accepts on the next run. Success emits the `comments_labeled`
   Asset, which triggers **mlsys_training**.

Every task logs a nested MLflow run; "View in MLflow" on a task opens it.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from mlsys.orchestration import COMMENTS, DEFAULT_ARGS, LABELED, run_in_task


@dag(
    dag_id="mlsys_data",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mlsys", "label", "validate"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    params={
        "source": Param("", type="string", description="Folder of CSVs (or one CSV). Empty: $MLSYS_DATA_DIR/youtube-spam."),
        "test_group": Param("Youtube05-Shakira", type="string", description="File (video) held out as the test split."),
        "gold_size": Param(200, type="integer", minimum=10, description="Rows drawn as the expert gold set."),
        "lfs": Param("mlsys.labeling.youtube_lfs", type="string", description="Importable module with a module-level LFS list."),
        "epochs": Param(500, type="integer", minimum=1, description="LabelModel training epochs."),
        "seed": Param(0, type="integer", description="Seed for sampling and the label model."),
        "release_clean": Param(False, type="boolean", description="When the only errors are bad rows: quarantine "
                               "them and release the clean remainder as a new validated version."),
        "accept_schema_update": Param(False, type="boolean", description="Accept the pending proposed schema "
                                      "update (see the validate run's proposed_schema.diff) before validating."),
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
        return run_in_task("validate", {k: params[k] for k in ("release_clean", "accept_schema_update")},
                           dataset="comments_labeled", version=labeled["labeled"]["version"])

    validate(label(ingest()))


dag = mlsys_data()
