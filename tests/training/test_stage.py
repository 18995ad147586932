"""The train stage: real labeled comments -> a tracked MLflow pyfunc model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mlsys.datasets import LABELED
from mlsys.errors import DataError, SpecError, StorageError
from mlsys.model.pyfunc import MODEL_NAME_IN_RUN
from mlsys.storage import DatasetStore
from mlsys.tracking import RunContext, stage_run
from mlsys.training.stage import TrainSpec, run

EPOCHS = 2


@pytest.fixture(scope="module")
def trained(prepared_home):
    """ingest -> label -> validate -> train, each in its own MLflow run: once for the module."""
    import mlflow

    with prepared_home("train-home", validate=True, tracked=True) as env:
        with stage_run(RunContext.cli("train")) as active:
            result = run(TrainSpec(epochs=EPOCHS))
        labeled = env.labeled.labeled
        client = mlflow.MlflowClient(f"sqlite:///{env.home / 'mlflow.db'}")
        yield SimpleNamespace(
            home=env.home, result=result, labeled=labeled, store=env.store, client=client,
            run=client.get_run(active.info.run_id), df=env.store.read(LABELED, labeled.version),
        )


@pytest.fixture
def module_env(trained, monkeypatch, point_home):
    point_home(monkeypatch, trained.home)
    return trained


def test_result_names_the_validated_dataset_and_the_run(trained):
    result = trained.result
    assert result.dataset.version == trained.labeled.version == trained.store.ref(LABELED, "validated").version
    assert result.run_id == trained.run.info.run_id
    assert result.model_uri.startswith("models:/")
    data = json.loads(json.dumps(result.to_json()))
    assert data["model_uri"] == result.model_uri and data["train_rows"] == result.train_rows


def test_training_rows_are_the_labeled_and_uncovered_rows_but_the_dev_gold(trained):
    df = trained.df
    uncovered = int((df["label_source"] == "unlabeled").sum())
    assert uncovered > 0 and (df.loc[df["label_source"] == "unlabeled", "weight"] == 0).all()
    notes = trained.client.download_artifacts(trained.run.info.run_id, "training_examples.json")
    notes = json.loads(open(notes).read())
    gold = int((df["label_source"] == "gold").sum())
    assert notes["dev_gold_rows"] == gold // 2 and notes["uncovered_rows"] == uncovered
    weighted = int(((df["weight"] > 0) & (df["label_source"] != "unlabeled")).sum())
    assert trained.result.train_rows == weighted - notes["dev_gold_rows"] + uncovered  # uncovered="prior"
    assert trained.run.data.params["train_rows"] == str(trained.result.train_rows)
    assert trained.run.data.params["uncovered"] == "prior" and trained.run.data.params["rebalance"] == "True"
    assert len(notes["rebalance_factors"]) == 2


def test_the_operating_point_is_chosen_on_dev_gold_and_stored_with_the_model(trained):
    from mlsys.serving.champion import load_uri

    metrics = trained.run.data.metrics
    assert 0.0 < metrics["threshold"] < 1.0 and metrics["dev_f1"] > 0.8
    scorer = load_uri(trained.result.model_uri)
    assert scorer.threshold == pytest.approx(metrics["threshold"])
    scores = scorer.score_texts(trained.df["text"].head(64).tolist())
    assert (scores.prediction == (scores.proba[:, 1] >= scorer.threshold)).all()
    artifacts = {a.path for a in trained.client.list_artifacts(trained.run.info.run_id)}
    assert {"operating_point.png", "training_examples.json"} <= artifacts


def test_run_has_params_metrics_and_the_curve(trained):
    data = trained.run.data
    assert data.params["epochs"] == str(EPOCHS) and data.params["strategy"] == "single"
    for key in ("num_buckets", "dim", "depth", "num_classes", "dropout", "batch_size", "lr", "seed", "char_ngrams"):
        assert key in data.params
    assert data.tags["mlsys.stage"] == "train"
    assert data.tags[f"mlsys.input.{LABELED}"] == trained.labeled.version

    steps_per_epoch = -(-trained.result.train_rows // 64)
    history = trained.client.get_metric_history(trained.run.info.run_id, "train_loss")
    assert [m.step for m in history] == [steps_per_epoch * (e + 1) for e in range(EPOCHS)]
    assert history[-1].value == pytest.approx(trained.result.metrics["final_train_loss"])
    epochs = trained.client.get_metric_history(trained.run.info.run_id, "epoch")
    assert [m.value for m in epochs] == list(range(EPOCHS))
    assert data.metrics["steps"] == EPOCHS * steps_per_epoch
    assert "train_loss_step" in data.metrics

    artifacts = {a.path for a in trained.client.list_artifacts(trained.run.info.run_id)}
    assert "training_curve.png" in artifacts
    (inp,) = trained.run.inputs.dataset_inputs
    assert inp.dataset.name == LABELED and inp.dataset.digest == trained.labeled.version


def test_logged_model_predicts_from_text(module_env):
    import mlflow

    model = mlflow.pyfunc.load_model(module_env.result.model_uri)
    texts = ["check out my channel http://spam.example", "I love this song", "", "subscribe please!!!"]
    pred = model.predict(pd.DataFrame({"text": texts}))
    assert list(pred.columns) == ["prediction", "proba_0", "proba_1"]
    assert len(pred) == len(texts)
    assert set(pred["prediction"]) <= {0, 1}
    assert np.allclose(pred["proba_0"] + pred["proba_1"], 1.0, atol=1e-6)
    assert (pred["prediction"] == (pred["proba_1"] > pred["proba_0"]).astype(int)).all()

    # the default spec's featurizer, character n-grams included, travels with the model
    assert model.unwrap_python_model().featurizer.char_ngrams == TrainSpec().char_ngram_sizes == (2, 3)

    logged = mlflow.get_logged_model(module_env.result.model_uri.removeprefix("models:/"))
    assert logged.source_run_id == module_env.run.info.run_id and logged.name == MODEL_NAME_IN_RUN
    signature = model.metadata.get_input_schema()
    assert signature.input_names() == ["text"]


def test_without_a_run_nothing_is_logged(module_env):
    result = run(TrainSpec(epochs=1, num_buckets=1 << 12, dim=16, dataset_version=module_env.labeled.version))
    assert result.model_uri == "" and result.run_id is None
    assert result.train_rows == module_env.result.train_rows


def test_training_is_deterministic(module_env):
    spec = TrainSpec(epochs=1, seed=3, num_buckets=1 << 12, dim=16, dataset_version=module_env.labeled.version)
    a, b = run(spec), run(spec)
    assert a.metrics == b.metrics


def test_train_needs_a_validated_version(module_env, mlsys_home):
    """A fresh root holding the same labeled data, never validated: the default refuses it."""
    store = DatasetStore()
    ref = store.write(LABELED, module_env.df, extra=module_env.labeled.extra)  # with the label stage's priors
    with pytest.raises(StorageError, match=r"no version tagged 'validated'.*validate"):
        run(TrainSpec(epochs=1))
    # naming the version explicitly is the way around it
    explicit = run(TrainSpec(epochs=1, num_buckets=1 << 12, dim=16, dataset_version=ref.version))
    assert explicit.train_rows == module_env.result.train_rows


def test_nothing_labeled_at_all(mlsys_home):
    with pytest.raises(StorageError, match=LABELED):
        run(TrainSpec(epochs=1))


def test_labeled_data_without_usable_rows(module_env, mlsys_home):
    store = DatasetStore()
    df = module_env.df.copy()
    df["weight"] = 0.0
    ref = store.write(LABELED, df)
    with pytest.raises(DataError, match="no row has weight > 0"):
        run(TrainSpec(epochs=1, dataset_version=ref.version))
    ref = store.write(LABELED, module_env.df.drop(columns=["label_proba"]))
    with pytest.raises(DataError, match=r"missing column\(s\) \['label_proba'\]"):
        run(TrainSpec(epochs=1, dataset_version=ref.version))


def test_character_ngram_sizes_parse():
    assert TrainSpec(char_ngrams=" 2, 4").char_ngram_sizes == (2, 4)
    assert TrainSpec(char_ngrams="").char_ngram_sizes == ()


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", 0), ("lr", 0.0), ("dim", 1), ("depth", -1),
                                          ("char_ngrams", "3,2"), ("char_ngrams", "0"), ("char_ngrams", "2,x")])
def test_bad_spec_names_the_field_and_value(field, value):
    with pytest.raises(SpecError, match=rf"TrainSpec\.{field}={value!r} is invalid"):
        TrainSpec(**{field: value})


def test_the_checkpoint_key_follows_the_resolved_dataset_version(mlsys_home):
    """A retry after `validated` moved must not resume a checkpoint cut on the old data; the same data resumes."""
    from mlsys.storage import DatasetRef
    from mlsys.training.stage import checkpoint_uri

    store = DatasetStore()
    spec = TrainSpec(strategy="ddp", checkpoint_key="mlsys_training.train.run-1")  # dataset_version="validated"
    old, new = (DatasetRef(name=LABELED, version=v * 64, uri="", rows=10) for v in "ab")
    first = checkpoint_uri(spec, store, old)
    assert first.startswith(f"{store.root_uri.rstrip('/')}/checkpoints/train/mlsys_training.train.run-1-")
    assert checkpoint_uri(spec, store, old) == first, "a retry on the same version resumes"
    assert checkpoint_uri(spec, store, new) != first, "a retry on another version starts afresh"
    # what counts is the version resolved, not how it was named
    pinned = TrainSpec(strategy="ddp", checkpoint_key=spec.checkpoint_key, dataset_version=old.version)
    assert checkpoint_uri(pinned, store, old) == first
