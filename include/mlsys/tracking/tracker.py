"""MLflow tracking for stages: one parent run per DAG run, one nested run per task.

    experiment  <pipeline>                       (one per DAG, artifact root under MLSYS_ARTIFACT_URI)
      run       dag_run <run_id>                 tags airflow.dag_id, airflow.run_id; mlsys.role=dag_run
        run     <task_id>                        tags + airflow.task_id, airflow.try_number, input versions

The parent is found by its tags, or created by the first task of the DAG run,
so tasks in separate processes (or on separate Celery workers) share it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from mlsys.settings import settings
from mlsys.tracking.context import RunContext

if TYPE_CHECKING:
    from mlsys.storage import DatasetRef

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# MLflow 3's UI opens an experiment by its kind: a model-training experiment on its runs (not the GenAI overview).
EXPERIMENT_KIND, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


def configure() -> str:
    """Point MLflow at the configured tracking URI and return it."""
    import mlflow

    s = settings()
    if s.tracking_uri.startswith("sqlite:///"):
        Path(s.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(s.tracking_uri)
    mlflow.set_registry_uri(s.tracking_uri)
    return s.tracking_uri


def experiment_id(name: str) -> str:
    """Get or create the experiment ``name`` with its artifacts under MLSYS_ARTIFACT_URI."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND) is None:  # made before the kind was set: open it on its runs too
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, TRAINING_KIND)
        return exp.experiment_id
    root = settings().artifact_uri.rstrip("/")
    try:
        return client.create_experiment(name, artifact_location=f"{root}/{name}", tags={EXPERIMENT_KIND: TRAINING_KIND})
    except MlflowException:
        # Another task created it between our lookup and create: use theirs.
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _parent_run_id(exp_id: str, ctx: RunContext) -> str:
    import mlflow

    client = mlflow.MlflowClient()
    found = client.search_runs(
        [exp_id],
        filter_string=(
            f"tags.`mlsys.role` = 'dag_run' and tags.`airflow.dag_id` = '{ctx.dag_id}' "
            f"and tags.`airflow.run_id` = '{ctx.run_id}'"
        ),
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    if found:
        return found[0].info.run_id
    url = airflow_run_url(ctx.dag_id, ctx.run_id)
    run = client.create_run(
        exp_id,
        run_name=f"{ctx.dag_id} {ctx.run_id}",
        tags={"mlsys.role": "dag_run", "airflow.dag_id": ctx.dag_id, "airflow.run_id": ctx.run_id,
              "airflow.run_url": url, "mlflow.note.content": f"Airflow DAG run [{ctx.dag_id} {ctx.run_id}]({url})"},
    )
    return run.info.run_id


def airflow_run_url(dag_id: str, run_id: str) -> str:
    """The DAG run's page in the Airflow UI."""
    from urllib.parse import quote

    return f"{settings().airflow_ui_url}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def run_url(run_id: str, exp_id: str) -> str:
    return f"{settings().mlflow_ui_url}/#/experiments/{exp_id}/runs/{run_id}"


@contextlib.contextmanager
def stage_run(ctx: RunContext) -> Iterator[Any]:
    """Open the MLflow run for one stage execution; nested under the DAG run's parent in Airflow."""
    import mlflow
    from mlflow.entities import RunStatus

    configure()
    exp_id = experiment_id(ctx.pipeline)
    parent = _parent_run_id(exp_id, ctx) if ctx.in_airflow else None
    name = ctx.task_id or ctx.stage
    client = mlflow.MlflowClient()
    with mlflow.start_run(experiment_id=exp_id, run_name=name, parent_run_id=parent, tags=ctx.tags()) as run:
        try:
            yield run
        except BaseException:
            if parent:
                client.set_terminated(parent, RunStatus.to_string(RunStatus.FAILED))
            raise
    if parent:
        client.set_terminated(parent, "FINISHED")


def log_input(ref: "DatasetRef", context: str) -> None:
    """Log a stored dataset version as an MLflow input of the active run, and tag its version."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    source = resolve_dataset_source(ref.uri)
    mlflow.log_input(MetaDataset(source, name=ref.name, digest=ref.version), context=context)
    mlflow.set_tag(f"mlsys.input.{ref.name}", ref.version)


def log_output(ref: "DatasetRef") -> None:
    import mlflow

    mlflow.set_tag(f"mlsys.output.{ref.name}", ref.version)
    mlflow.log_dict(ref.to_json(), f"datasets/{ref.name}.json")


def active_run_id() -> str | None:
    import mlflow

    run = mlflow.active_run()
    return run.info.run_id if run else None
