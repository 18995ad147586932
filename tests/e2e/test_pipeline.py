"""The whole nightly pipeline through a real Airflow (`airflow dags test`, in Asset order),
on the embedded defaults: SQLite for Airflow and MLflow, a local folder for storage.

Run twice on the same input: the second run adds MLflow runs and a model
version, but not a single new dataset version.
"""

import os
from pathlib import Path

import pytest

from mlsys.local import PIPELINE, airflow_env, run_pipeline

pytestmark = pytest.mark.e2e

DATASETS = ("comments_unlabeled", "comments_gold", "comments_test", "comments_labeled", "predictions")


def _versions(storage: Path) -> dict[str, list[str]]:
    return {name: sorted(p.name for p in (storage / "datasets" / name).iterdir() if p.is_dir()) for name in DATASETS}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    home = tmp_path_factory.mktemp("mlsys_home")
    with pytest.MonkeyPatch.context() as mp:
        for var in list(os.environ):
            if var.startswith(("AIRFLOW", "MLSYS_", "MLFLOW_TRACKING", "MLFLOW_S3")):
                mp.delenv(var)
        mp.setenv("MLSYS_HOME", str(home))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        run_pipeline(airflow_env())
        first = _versions(home / "storage")
        run_pipeline(airflow_env())
        second = _versions(home / "storage")
        yield home, first, second


def _client(home: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    return mlflow.MlflowClient()


def test_every_stage_wrote_its_dataset(pipeline):
    home, first, _ = pipeline
    for name in DATASETS:
        assert len(first[name]) == 1, f"{name}: {first[name]}"
        assert (home / "storage" / "datasets" / name / first[name][0] / "_metadata.json").is_file()


def test_second_run_creates_no_duplicate_versions(pipeline):
    _, first, second = pipeline
    assert second == first


def test_mlflow_has_a_parent_run_per_dag_run_and_nested_task_runs(pipeline):
    home, _, _ = pipeline
    client = _client(home)
    tasks = {"mlsys_data": {"ingest", "label", "validate"}, "mlsys_training": {"train", "evaluate_register"},
             "mlsys_batch_inference": {"score"}}
    for dag_id in PIPELINE:
        exp = client.get_experiment_by_name(dag_id)
        assert exp is not None, f"no experiment for {dag_id}"
        assert exp.artifact_location.startswith(str(home / "mlartifacts"))
        runs = client.search_runs([exp.experiment_id])
        parents = [r for r in runs if r.data.tags.get("mlsys.role") == "dag_run"]
        assert len(parents) == 2, "one parent run per DAG run, two DAG runs"
        assert all(p.info.status == "FINISHED" for p in parents)
        for parent in parents:
            children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
            assert {c.data.tags["airflow.task_id"] for c in children} == tasks[dag_id]
            for child in children:
                tags = child.data.tags
                assert tags["airflow.dag_id"] == dag_id
                assert tags["airflow.run_id"] == parent.data.tags["airflow.run_id"]
                assert tags["airflow.try_number"] == "1"
                assert child.info.status == "FINISHED"


def test_inputs_are_logged_as_mlflow_datasets_with_their_versions(pipeline):
    home, first, _ = pipeline
    client = _client(home)
    exp = client.get_experiment_by_name("mlsys_training")
    train = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("airflow.task_id") == "train")
    inputs = {d.dataset.name: d.dataset.digest for d in train.inputs.dataset_inputs}
    assert inputs == {"comments_labeled": first["comments_labeled"][0]}
    assert train.data.tags["mlsys.input.comments_labeled"] == first["comments_labeled"][0]


def test_a_champion_is_registered_and_scored_the_predictions(pipeline):
    home, first, _ = pipeline
    import json

    client = _client(home)
    champion = client.get_model_version_by_alias("youtube-spam-classifier", "champion")
    challenger = client.get_model_version_by_alias("youtube-spam-classifier", "challenger")
    assert str(champion.version) == "1", "the identical second model does not beat the first"
    assert str(challenger.version) == "2"
    assert float(champion.tags["test_f1"]) > 0.6
    meta = json.loads((home / "storage" / "datasets" / "predictions" / first["predictions"][0] / "_metadata.json").read_text())
    assert meta["extra"]["model_version"] == str(champion.version)
    assert meta["rows"] == json.loads(
        (home / "storage" / "datasets" / "comments_unlabeled" / first["comments_unlabeled"][0] / "_metadata.json").read_text()
    )["rows"]
