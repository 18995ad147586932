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
from airflow.sdk import dag, task

from mlsys.ingest.stage import IngestSpec
from mlsys.labeling.stage import LabelSpec
from mlsys.orchestration import COMMENTS, DEFAULT_ARGS, LABELED, form, run_in_task
from mlsys.validation.stage import ValidateSpec


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
        **form(IngestSpec, "source", "test_group", "gold_size"),
        **form(LabelSpec, "lfs", "epochs"),
        **form(IngestSpec, "seed"),
        **form(LabelSpec, "fault_tolerant", "applier"),
        **form(ValidateSpec, "release_clean", "accept_schema_update"),
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
