"""Batch scoring with the champion: a dataset version in, a predictions version out."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mlsys.datasets import PREDICTIONS, TEST, UNLABELED
from mlsys.errors import DataError, SpecError
from mlsys.registry.stage import EvaluateSpec
from mlsys.registry.stage import run as evaluate
from mlsys.serving.batch.stage import BatchSpec, run
from mlsys.tracking import RunContext, stage_run
from mlsys.training.stage import TrainSpec
from mlsys.training.stage import run as train

MODEL = "spam-batch-test"
COLUMNS = ["id", "prediction", "proba_0", "proba_1", "model_version"]


@pytest.fixture(scope="module")
def pipeline(prepared_home):
    """ingest -> label -> validate -> train -> evaluate (champion v1), then one batch run: once per module."""
    with prepared_home("batch-home", validate=True, model_name=MODEL) as env:
        with stage_run(RunContext.cli("train")):
            trained = train(TrainSpec(epochs=2, num_buckets=1 << 12, dim=32))
        evaluated = evaluate(EvaluateSpec(model_uri=trained.model_uri))
        with stage_run(RunContext.cli("batch")) as active:
            scored = run(BatchSpec())
        yield SimpleNamespace(home=env.home, ingested=env.ingested, trained=trained, evaluated=evaluated,
                              scored=scored, run_id=active.info.run_id, store=env.store)


@pytest.fixture
def env(pipeline, monkeypatch, point_home):
    point_home(monkeypatch, pipeline.home, model_name=MODEL)
    return pipeline


def test_one_prediction_per_input_row(pipeline):
    store = pipeline.store
    inputs = store.read(UNLABELED, pipeline.ingested.unlabeled.version)
    pred = store.read(PREDICTIONS, pipeline.scored.predictions.version)
    assert list(pred.columns) == COLUMNS
    assert len(pred) == len(inputs) == pipeline.scored.rows == pipeline.scored.predictions.rows
    assert pred["id"].tolist() == inputs["id"].tolist()  # same rows, same order
    assert set(pred["prediction"]) <= {0, 1}
    assert np.allclose(pred["proba_0"] + pred["proba_1"], 1.0, atol=1e-6)
    from mlsys.serving.champion import load, resolve

    threshold = load(resolve(MODEL, "1")).threshold  # the model's operating point (training/operating_point.py)
    assert threshold is not None and 0.0 < threshold < 1.0
    assert (pred["prediction"] == (pred["proba_1"] >= threshold).astype(int)).all()
    assert set(pred["model_version"]) == {f"{MODEL}/1"}


def test_predictions_match_the_registered_model(env):
    import mlflow

    inputs = env.store.read(UNLABELED, env.ingested.unlabeled.version)
    pred = env.store.read(PREDICTIONS, env.scored.predictions.version)
    direct = mlflow.pyfunc.load_model(env.trained.model_uri).predict(inputs[["text"]])
    assert np.allclose(pred["proba_1"], direct["proba_1"], atol=1e-6)
    assert pred["prediction"].tolist() == direct["prediction"].tolist()


def test_metadata_records_the_model_and_the_input(pipeline):
    ref = pipeline.scored.predictions
    assert ref.extra == {"model_name": MODEL, "model_version": "1"}
    assert ref.sources == {UNLABELED: pipeline.ingested.unlabeled.version, "model": f"{MODEL}/1"}
    assert ref.created_by["mlflow_run_id"] == pipeline.run_id
    assert pipeline.scored.model == f"{MODEL}/1"
    shares = pipeline.scored.class_shares
    assert set(shares) <= {"0", "1"} and sum(shares.values()) == pytest.approx(1.0)
    data = json.loads(json.dumps(pipeline.scored.to_json()))
    assert data["predictions"]["version"] == ref.version


def test_mlflow_run_records_input_output_and_rate(pipeline):
    import mlflow

    data = mlflow.MlflowClient(f"sqlite:///{pipeline.home / 'mlflow.db'}").get_run(pipeline.run_id)
    assert data.data.params["model"] == f"{MODEL}/1"
    assert data.data.metrics["rows"] == pipeline.scored.rows and data.data.metrics["rows_per_s"] > 0
    assert data.data.tags[f"mlsys.output.{PREDICTIONS}"] == pipeline.scored.predictions.version
    (inp,) = data.inputs.dataset_inputs
    assert inp.dataset.name == UNLABELED and inp.dataset.digest == pipeline.ingested.unlabeled.version


def test_rerun_gives_the_same_version(env):
    before = [r.version for r in env.store.versions(PREDICTIONS)]
    again = run(BatchSpec())
    assert again.predictions.version == env.scored.predictions.version
    assert [r.version for r in env.store.versions(PREDICTIONS)] == before


def test_small_batches_give_the_same_predictions(env):
    small = run(BatchSpec(batch_rows=100))
    a = env.store.read(PREDICTIONS, small.predictions.version)
    b = env.store.read(PREDICTIONS, env.scored.predictions.version)
    pd.testing.assert_frame_equal(a, b)
    assert small.rows == env.scored.rows and small.class_shares == env.scored.class_shares


def test_scoring_by_version_number_and_another_dataset(env):
    scored = run(BatchSpec(dataset=TEST, model_version="1"))
    pred = env.store.read(PREDICTIONS, scored.predictions.version)
    test = env.store.read(TEST)
    assert pred["id"].tolist() == test["id"].tolist()
    assert scored.predictions.sources[TEST] == env.ingested.test.version


def test_dataset_without_a_text_column_is_a_data_error(env):
    inputs = env.store.read(UNLABELED, env.ingested.unlabeled.version)
    env.store.write("no_text", inputs.drop(columns=["text"]))
    before = [r.version for r in env.store.versions(PREDICTIONS)]
    with pytest.raises(DataError, match=r"no_text@.*needs columns 'id' and 'text'"):
        run(BatchSpec(dataset="no_text"))
    assert [r.version for r in env.store.versions(PREDICTIONS)] == before


def test_unknown_alias_is_an_error(env):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        run(BatchSpec(model_version="no-such-alias"))


def test_bad_spec_names_the_field():
    with pytest.raises(SpecError, match=r"BatchSpec\.batch_rows=0"):
        BatchSpec(batch_rows=0)
    with pytest.raises(SpecError, match=r"BatchSpec\.dataset=''"):
        BatchSpec(dataset="")


def test_an_empty_input_gives_an_empty_predictions_version(env):
    inputs = env.store.read(UNLABELED, env.ingested.unlabeled.version)
    env.store.write("empty_input", inputs.head(0))
    scored = run(BatchSpec(dataset="empty_input"))
    assert scored.rows == 0
    assert list(env.store.read(PREDICTIONS, scored.predictions.version).columns) == COLUMNS


def test_shards_merge_into_the_same_version_as_one_run(env):
    from mlsys.datasets import PREDICTION_SHARDS
    from mlsys.serving.batch.stage import (
        MergeSpec,
        ShardSpec,
        plan,
        run_merge,
        run_shard,
    )

    whole = run(BatchSpec(batch_rows=100))
    shards = plan(BatchSpec(batch_rows=100), 3)
    assert [s["shard"] for s in shards] == [0, 1, 2]
    assert {s["model_version"] for s in shards} == {"1"}  # the alias is pinned once, for every shard
    assert {s["version"] for s in shards} == {env.ingested.unlabeled.version}
    parts = [run_shard(ShardSpec(batch_rows=100, **s)) for s in shards]
    assert sum(p.rows for p in parts) == whole.rows
    assert all(p.extra["start_row"] % 100 == 0 for p in parts)
    before = [r.version for r in env.store.versions(PREDICTION_SHARDS)]
    again = run_shard(ShardSpec(batch_rows=100, **shards[1]))  # a retried shard rewrites only itself, identically
    assert again.predictions.version == parts[1].predictions.version
    assert [r.version for r in env.store.versions(PREDICTION_SHARDS)] == before
    merged = run_merge(MergeSpec(shards=",".join(p.predictions.version for p in parts)))
    assert merged.predictions.version == whole.predictions.version  # byte-identical Parquet
    assert merged.rows == whole.rows and merged.class_shares == whole.class_shares
    assert merged.predictions.extra == {"model_name": MODEL, "model_version": "1"}


def test_merge_refuses_shards_out_of_order(env):
    from mlsys.serving.batch.stage import (
        MergeSpec,
        ShardSpec,
        plan,
        run_merge,
        run_shard,
    )

    parts = [run_shard(ShardSpec(batch_rows=500, **s)) for s in plan(BatchSpec(batch_rows=500), 2)]
    with pytest.raises(DataError, match=r"MergeSpec\.shards: predictions_shards@\w+ is \(shard, num_shards"):
        run_merge(MergeSpec(shards=",".join(p.predictions.version for p in reversed(parts))))
    with pytest.raises(SpecError, match=r"ShardSpec\.shard=2"):
        ShardSpec(num_shards=2, shard=2)


def test_null_texts_are_a_data_error_naming_the_column(env):
    inputs = env.store.read(UNLABELED, env.ingested.unlabeled.version).head(10)
    inputs.loc[3, "text"] = None
    env.store.write("null_text", inputs)
    with pytest.raises(DataError, match=r"column 'text' has 1 null values"):
        run(BatchSpec(dataset="null_text"))
