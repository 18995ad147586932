"""The evaluate-and-register stage: the champion/challenger gate.

    new model --register--> version N, alias "challenger"
    score challenger and current champion on the same held-out test split
    challenger beats champion on the gate metric (or no champion yet)
        --> alias "champion" moves to version N
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlsys.ingest.stage import TEST
from mlsys.settings import settings
from mlsys.spec import require
from mlsys.storage import DatasetRef, DatasetStore

CHAMPION, CHALLENGER = "champion", "challenger"
METRICS = ("accuracy", "precision", "recall", "f1")


@dataclass(frozen=True)
class EvaluateSpec:
    model_uri: str = ""  # the trained model (runs:/... or models:/...)
    model_name: str = ""  # registered model name; default $MLSYS_MODEL_NAME
    test_version: str = "latest"
    gate_metric: str = "f1"
    storage_uri: str = ""

    def __post_init__(self):
        require(bool(self.model_uri), "EvaluateSpec", "model_uri", self.model_uri, "pass the train stage's model_uri")
        require(self.gate_metric in METRICS, "EvaluateSpec", "gate_metric", self.gate_metric, f"use one of {METRICS}")

    @property
    def name(self) -> str:
        return self.model_name or settings().model_name


@dataclass(frozen=True)
class EvaluateResult:
    model_name: str
    version: str
    promoted: bool
    champion_version: str
    test: DatasetRef
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "version": self.version, "promoted": self.promoted,
                "champion_version": self.champion_version, "test": self.test.to_json(),
                "challenger_metrics": self.challenger_metrics, "champion_metrics": self.champion_metrics}


def classification_metrics(y_true, y_pred) -> dict[str, float]:
    """Binary metrics with 1 (spam) as the positive class."""
    import numpy as np

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    tp = float(((y_pred == 1) & (y_true == 1)).sum())
    fp = float(((y_pred == 1) & (y_true == 0)).sum())
    fn = float(((y_pred == 0) & (y_true == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": float((y_true == y_pred).mean()), "precision": precision, "recall": recall, "f1": f1}


def _score(model_uri: str, test) -> dict[str, float]:
    import mlflow

    pred = mlflow.pyfunc.load_model(model_uri).predict(test[["text"]])
    return classification_metrics(test["label_true"].to_numpy(), pred["prediction"].to_numpy())


def run(spec: EvaluateSpec) -> EvaluateResult:
    import mlflow
    from mlflow.exceptions import MlflowException

    from mlsys.tracking import tracker

    tracker.configure()
    client = mlflow.MlflowClient()
    store = DatasetStore(spec.storage_uri or None)
    test_ref = store.ref(TEST, spec.test_version)
    test = store.read(TEST, test_ref.version)

    challenger = _score(spec.model_uri, test)
    try:
        current = client.get_model_version_by_alias(spec.name, CHAMPION)
    except MlflowException:
        current = None
    champion = _score(f"models:/{spec.name}@{CHAMPION}", test) if current else {}

    mv = mlflow.register_model(spec.model_uri, spec.name)
    client.set_registered_model_alias(spec.name, CHALLENGER, mv.version)
    for k, v in challenger.items():
        client.set_model_version_tag(spec.name, mv.version, f"test_{k}", f"{v:.4f}")
    client.set_model_version_tag(spec.name, mv.version, "test_dataset", test_ref.label)

    gate = spec.gate_metric
    promoted = current is None or challenger[gate] > champion[gate]
    if promoted:
        client.set_registered_model_alias(spec.name, CHAMPION, mv.version)
    champion_version = mv.version if promoted else current.version

    if mlflow.active_run() is not None:
        tracker.log_input(test_ref, "test")
        mlflow.log_metrics({f"challenger_{k}": v for k, v in challenger.items()})
        mlflow.log_metrics({f"champion_{k}": v for k, v in champion.items()})
        mlflow.log_params({"model_name": spec.name, "model_version": mv.version, "gate_metric": gate})
        mlflow.set_tags({"mlsys.promoted": str(promoted), "mlsys.champion_version": str(champion_version)})
    return EvaluateResult(
        model_name=spec.name, version=str(mv.version), promoted=promoted, champion_version=str(champion_version),
        test=test_ref, challenger_metrics=challenger, champion_metrics=champion,
    )
