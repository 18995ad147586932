"""MLflow tracking for stages: one parent run per DAG run, one nested run per task.

    experiment  <pipeline>                       (one per DAG, artifact root under MLSYS_ARTIFACT_URI)
      run       dag_run <run_id>                 tags airflow.dag_id, airflow.run_id; mlsys.role=dag_run
        run     <task_id>                        tags + airflow.task_id, airflow.try_number, input versions

The parent is found by its tags, or created by the first task of the DAG run,
so tasks in separate processes (or on separate Celery workers) share it.

A task's run is one per try. A SIGKILLed try leaves its run RUNNING (nothing
ends it); the next try marks it FAILED with ``mlsys.failure_cause`` and links
to it (``mlsys.previous_attempt_run_id``). A task process that starts again
within the same try (its run already exists) reopens that run instead of
opening a second one. Both need the task instance's map index in the context
(``RunContext.map_index``, -1 when not mapped): without it, mapped siblings
of one try would look like one task, so nothing is reopened or superseded.
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


# Tags that tie an MLflow run to its Airflow task instance try (RunContext.tags()).
FAILURE_CAUSE, PREVIOUS_ATTEMPT, REOPENED = "mlsys.failure_cause", "mlsys.previous_attempt_run_id", "mlsys.reopened"
_UNQUOTABLE = ("'", '"', "\\")


def tag_clause(key: str, value: str) -> str:
    """An MLflow filter clause for ``tags.`key` = value`` that survives any characters in ``value``.

    MLflow's filter syntax has no escape character: a value is cut out of its quotes as it stands. So a value
    with a single quote goes in double quotes, and one with both kinds of quote (or a backslash, which the
    tokenizer reads as an escape) becomes a LIKE pattern with ``_`` in their place. A LIKE clause can match
    more runs than the value (``_`` and ``%`` are wildcards): filter the results with ``tags_match``.
    """
    if not any(c in value for c in _UNQUOTABLE):
        return f"tags.`{key}` = '{value}'"
    if '"' not in value and "\\" not in value:
        return f'tags.`{key}` = "{value}"'
    pattern = "".join("_" if c in _UNQUOTABLE else c for c in value)
    return f"tags.`{key}` LIKE '{pattern}'"


def tags_match(run: Any, tags: dict[str, str]) -> bool:
    """Whether ``run`` carries exactly these tag values (a search by ``tag_clause`` may return a superset)."""
    return all(run.data.tags.get(k) == v for k, v in tags.items())


def search_tagged(client: Any, exp_id: str, tags: dict[str, str], order_by: list[str] | None = None) -> list:
    """The runs of ``exp_id`` with exactly these tag values, oldest first unless ``order_by`` says otherwise."""
    found = client.search_runs([exp_id], filter_string=" and ".join(tag_clause(k, v) for k, v in tags.items()),
                               order_by=order_by or ["attributes.start_time ASC"])
    return [r for r in found if tags_match(r, tags)]


def _parent_run_id(exp_id: str, ctx: RunContext) -> str:
    import mlflow

    client = mlflow.MlflowClient()
    found = search_tagged(client, exp_id, {"mlsys.role": "dag_run", "airflow.dag_id": ctx.dag_id,
                                           "airflow.run_id": ctx.run_id})
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


def _try_of(run: Any) -> int:
    try:
        return int(run.data.tags.get("airflow.try_number", "1"))
    except ValueError:
        return 1


def _task_runs(client: Any, exp_id: str, ctx: RunContext) -> list:
    """The runs of every try of this task instance (same DAG, DAG run, task and map index), oldest first."""
    tags = ctx.tags()
    keys = {k: tags[k] for k in ("airflow.dag_id", "airflow.run_id", "airflow.task_id")}
    mapped = tags.get("airflow.map_index")
    return [r for r in search_tagged(client, exp_id, keys) if r.data.tags.get("airflow.map_index") == mapped]


def _settle_earlier_tries(client: Any, exp_id: str, ctx: RunContext) -> tuple[str | None, dict[str, str]]:
    """Before a try opens its run: end what earlier tries left RUNNING, and find this try's own run.

    Returns (the run this try already has, or None; tags for the run: the link to the previous attempt's run).
    A run that an earlier try left RUNNING was killed (SIGKILL, OOM, a lost worker: nothing ended it): it is
    marked FAILED with the cause, so no run of a finished task stays RUNNING.
    """
    from mlflow.entities import RunStatus

    this_try = ctx.try_number or 1
    runs = _task_runs(client, exp_id, ctx)
    own = [r for r in runs if _try_of(r) == this_try]
    earlier = [r for r in runs if _try_of(r) < this_try]
    for r in earlier:
        if r.info.status == RunStatus.to_string(RunStatus.RUNNING):
            client.set_tag(r.info.run_id, FAILURE_CAUSE, f"killed: superseded by try {this_try}")
            client.set_terminated(r.info.run_id, RunStatus.to_string(RunStatus.FAILED))
    previous = max(earlier, key=lambda r: (_try_of(r), r.info.start_time or 0), default=None)
    link = {PREVIOUS_ATTEMPT: previous.info.run_id} if previous is not None else {}
    return (own[0].info.run_id if own else None), link


@contextlib.contextmanager
def stage_run(ctx: RunContext) -> Iterator[Any]:
    """Open the MLflow run for one stage execution; nested under the DAG run's parent in Airflow.

    In Airflow, with the map index known, one run per task try: earlier tries' runs left RUNNING are marked
    FAILED and linked from this one, and a process that restarts within a try reopens the try's run.
    """
    import mlflow
    from mlflow.entities import RunStatus

    configure()
    exp_id = experiment_id(ctx.pipeline)
    parent = _parent_run_id(exp_id, ctx) if ctx.in_airflow else None
    name = ctx.task_id or ctx.stage
    client = mlflow.MlflowClient()
    tags = ctx.tags()
    own = None
    if ctx.in_airflow and ctx.map_index is not None:
        own, link = _settle_earlier_tries(client, exp_id, ctx)
        tags |= link
    if own is not None:
        reopened = client.get_run(own).data.tags.get(REOPENED, "0")
        tags[REOPENED] = str(int(reopened) + 1 if reopened.isdigit() else 1)
        opened = mlflow.start_run(run_id=own, tags=tags)
    else:
        opened = mlflow.start_run(experiment_id=exp_id, run_name=name, parent_run_id=parent, tags=tags)
    with opened as run:
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
