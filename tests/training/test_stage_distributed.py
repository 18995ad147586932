"""The train stage with strategy=pipeline / ddp: torchrun job, rank-0 tracking in MLflow, the logged model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlsys.datasets import LABELED
from mlsys.errors import SpecError
from mlsys.storage import DatasetStore
from mlsys.tracking import RunContext, stage_run
from mlsys.training.stage import TrainSpec, run

SPAM = ["check out my channel", "subscribe for free money", "click here to win", "buy cheap followers now"]
HAM = ["i love this song", "what a beautiful voice", "this video is great", "the best song ever"]


def _labeled(store: DatasetStore) -> str:
    rng = np.random.default_rng(0)
    texts = [f"{t} {i}" for i in range(12) for t in SPAM + HAM]  # 96 rows
    spam = np.array([t.split(" ")[0] in {"check", "subscribe", "click", "buy"} for t in texts])
    df = pd.DataFrame({
        "text": texts,
        "label_proba": [[0.1, 0.9] if s else [0.8, 0.2] for s in spam],
        "weight": rng.uniform(0.2, 1.0, len(texts)),
        "label_source": np.where(rng.uniform(size=len(texts)) < 0.9, "weak", "unlabeled"),
    })
    return store.write(LABELED, df).version


SMALL = dict(epochs=2, batch_size=16, num_buckets=1 << 10, dim=16, depth=2)


def test_pipeline_training_is_tracked_from_rank_zero(mlsys_home):
    import mlflow

    version = _labeled(DatasetStore())
    spec = TrainSpec(dataset_version=version, strategy="pipeline", nproc=2, microbatches=4, checkpoint_every=3, **SMALL)
    with stage_run(RunContext.cli("train")) as active:
        result = run(spec)
    client = mlflow.MlflowClient()
    data = client.get_run(active.info.run_id).data
    assert data.params["strategy"] == "pipeline" and data.params["microbatches"] == "4"
    assert data.params["balance"] in {"1,3", "2,2", "3,1"}  # balance_by_time chose it; 4 layers on 2 stages
    steps_per_epoch = -(-result.train_rows // 16)
    assert data.metrics["steps"] == 2 * steps_per_epoch
    epochs = client.get_metric_history(active.info.run_id, "train_loss")
    assert [m.step for m in epochs] == [steps_per_epoch, 2 * steps_per_epoch]
    assert 0.0 <= data.metrics["bubble_fraction"] < 1.0
    assert data.metrics["throughput_samples_per_s"] > 0
    assert {"stage_0_busy_s", "stage_1_busy_s", "stage_0_profiled_time_s", "stage_1_max_in_flight"} <= set(data.metrics)
    assert data.metrics["stage_0_max_in_flight"] == 4  # GPipe holds every micro-batch
    artifacts = {a.path for a in client.list_artifacts(active.info.run_id)}
    assert {"pipeline_schedule.png", "pipeline_timeline.json", "partition.json", "training_curve.png"} <= artifacts
    timeline = json.loads(open(client.download_artifacts(active.info.run_id, "pipeline_timeline.json")).read())["stages"]
    assert [[e[0] for e in s["events"]].count("F") for s in timeline] == [4, 4]

    model = mlflow.pyfunc.load_model(result.model_uri)
    pred = model.predict(pd.DataFrame({"text": ["subscribe for free money now", "i love this song"]}))
    assert list(pred.columns) == ["prediction", "proba_0", "proba_1"]
    assert model.metadata.get_input_schema().input_names() == ["text"]
    ckpt = data.params["checkpoint_uri"]
    assert ckpt.startswith(str(mlsys_home)) and json.loads(open(f"{ckpt}/latest.json").read())["step"] == int(data.metrics["steps"]) // 3 * 3


@pytest.mark.parametrize("change, message", [
    (dict(strategy="pipeline", balance="2,1"), r"TrainSpec\.balance='2,1' is invalid: the counts sum to 3 but the model has 4"),
    (dict(strategy="pipeline", microbatches=32), r"TrainSpec\.microbatches=32 is invalid: use between 1 and 16 micro-batches"),
    (dict(strategy="pipeline", nproc=5), r"TrainSpec\.nproc=5 is invalid: the model has 4 layers \(depth \+ 2\) and cannot be split into 5 stages"),
    (dict(strategy="pipeline", microbatches=5), r"TrainSpec\.batch_size=16 is invalid: use a multiple of microbatches x replicas=5"),
    (dict(strategy="pipeline", schedule="1f1b", microbatches=1), r"TrainSpec\.microbatches=1 is invalid: 1F1B needs"),
    (dict(strategy="pipeline", nproc=4, replicas=3), r"TrainSpec\.replicas=3 is invalid: use a divisor of nproc=4"),
    (dict(strategy="pipeline", nproc=4, replicas=2, microbatches=16), r"TrainSpec\.microbatches=16 is invalid: use between 1 and 8"),
    (dict(strategy="zero"), r"TrainSpec\.strategy='zero' is invalid"),
    (dict(strategy="pipeline", balance="a,b"), r"TrainSpec\.balance='a,b' is invalid: give positive layer counts"),
])
def test_bad_input_fails_in_the_spec(change, message):
    with pytest.raises(SpecError, match=message):
        TrainSpec(**{**SMALL, **change})


def test_more_stages_than_devices_fails_before_spawning(mlsys_home, monkeypatch):
    monkeypatch.setenv("MLSYS_CPU_DEVICES", "1")
    version = _labeled(DatasetStore())
    spec = TrainSpec(dataset_version=version, strategy="pipeline", nproc=2, **SMALL)
    with pytest.raises(SpecError, match=r"TrainSpec\.nproc=2 is invalid: only 1 cpu device\(s\) here"):
        run(spec)


def test_a_retry_resumes_only_a_checkpoint_of_the_data_it_resolved(mlsys_home, capsys):
    """Same checkpoint_key, `validated` as the version: a retry resumes; once `validated` moved, it starts afresh."""
    store = DatasetStore()
    first = _labeled(store)
    store.tag(LABELED, first, "validated")
    spec = TrainSpec(strategy="ddp", nproc=2, checkpoint_every=3, checkpoint_key="nightly-train-1", **SMALL)
    run(spec)
    assert '"kind": "resumed"' not in capsys.readouterr().out
    run(spec)  # an Airflow retry of the same try: the last committed checkpoint is there
    assert '"kind": "resumed"' in capsys.readouterr().out

    df = store.read(LABELED, first)
    second = store.write(LABELED, df.assign(weight=df["weight"] * 0.5)).version  # other data, validated since
    store.tag(LABELED, second, "validated")
    result = run(spec)
    assert result.dataset.version == second
    assert '"kind": "resumed"' not in capsys.readouterr().out, "resumed a checkpoint cut on the old data"
    folders = list((Path(store.root_uri) / "checkpoints" / "train").glob("nightly-train-1-*"))
    assert len(folders) == 2, "one checkpoint folder per resolved version"


def test_the_stage_arms_the_launchers_watchdog(mlsys_home, monkeypatch):
    from mlsys.training import stage
    from mlsys.training.parallel import launcher

    seen = {}

    def fake_launch(target, nproc, **kwargs):
        seen.update(kwargs)
        raise launcher.LaunchError("stopped by the test")

    monkeypatch.setattr(launcher, "launch", fake_launch)
    with pytest.raises(launcher.LaunchError, match="stopped by the test"):
        run(TrainSpec(dataset_version=_labeled(DatasetStore()), strategy="ddp", nproc=2, **SMALL))
    assert seen["silence_s"] == stage.JOB_SILENCE_S == 900 and 0 < seen["timeout_s"] == stage.JOB_TIMEOUT_S < 2 * 3600
