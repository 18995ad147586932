"""The train stage: labeled dataset -> PyTorch text classifier -> MLflow model.

Only rows the label stage trusts (weight > 0) train; the loss is noise-aware,
using ``label_proba`` as soft targets and ``weight`` per row.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlsys.errors import DataError
from mlsys.labeling.stage import LABELED
from mlsys.spec import require
from mlsys.storage import DatasetRef, DatasetStore

MODEL_NAME_IN_RUN = "model"


@dataclass(frozen=True)
class TrainSpec:
    dataset_version: str = "validated"  # only data that passed validation trains, unless a version is named
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    dim: int = 64
    depth: int = 2
    num_buckets: int = 1 << 15
    seed: int = 0
    storage_uri: str = ""

    def __post_init__(self):
        require(self.epochs >= 1, "TrainSpec", "epochs", self.epochs, "use at least 1 epoch")
        require(self.batch_size >= 1, "TrainSpec", "batch_size", self.batch_size, "use a batch size of at least 1")
        require(self.lr > 0, "TrainSpec", "lr", self.lr, "use a positive learning rate")
        require(self.dim >= 2, "TrainSpec", "dim", self.dim, "use a width of at least 2")
        require(self.depth >= 0, "TrainSpec", "depth", self.depth, "use 0 or more blocks")


@dataclass(frozen=True)
class TrainResult:
    dataset: DatasetRef
    model_uri: str
    run_id: str | None
    train_rows: int
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset.to_json(), "model_uri": self.model_uri, "run_id": self.run_id,
                "train_rows": self.train_rows, "metrics": self.metrics}


def run(spec: TrainSpec) -> TrainResult:
    import mlflow
    import numpy as np
    import torch

    from mlsys.tracking import tracker
    from mlsys.training import HashingFeaturizer, TextClassifier, TextClassifierConfig, TrainConfig, train

    store = DatasetStore(spec.storage_uri or None)
    ref = store.ref(LABELED, spec.dataset_version)
    df = store.read(LABELED, ref.version)
    missing = {"text", "label_proba", "weight", "label_source"} - set(df.columns)
    if missing:
        raise DataError(f"{ref.label}: missing column(s) {sorted(missing)}; it must come from the label stage")
    df = df[(df["weight"] > 0) & (df["label_source"] != "unlabeled")].reset_index(drop=True)
    if df.empty:
        raise DataError(f"{ref.label}: no row has weight > 0; the label stage produced no usable labels")

    featurizer = HashingFeaturizer(num_buckets=spec.num_buckets)
    mcfg = TextClassifierConfig(num_buckets=spec.num_buckets, dim=spec.dim, depth=spec.depth)
    tcfg = TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed)
    torch.manual_seed(spec.seed)
    model = TextClassifier(mcfg)
    proba = torch.tensor(np.stack(df["label_proba"].to_numpy()), dtype=torch.float32)
    weight = torch.tensor(df["weight"].to_numpy(), dtype=torch.float32)

    tracking = mlflow.active_run() is not None
    if tracking:
        tracker.log_input(ref, "training")
        mlflow.log_params({**mcfg.to_json(), **{k: getattr(tcfg, k) for k in ("epochs", "batch_size", "lr", "seed")},
                           "strategy": "single", "train_rows": len(df)})

    def on_metrics(metrics: dict, step: int) -> None:
        if tracking:
            mlflow.log_metrics(metrics, step=step)

    summary = train(model, featurizer, df["text"].tolist(), proba, weight, tcfg, on_metrics)
    metrics = {"final_train_loss": summary["final_loss"], "steps": float(summary["steps"])}
    model_uri = ""
    if tracking:
        mlflow.log_metrics(metrics)
        _log_curve(summary["history"])
        model_uri = log_model(model, featurizer, mcfg, df["text"].head(5).tolist())
    return TrainResult(dataset=ref, model_uri=model_uri, run_id=tracker.active_run_id(), train_rows=len(df), metrics=metrics)


def log_model(model, featurizer, mcfg, example_texts: list[str]) -> str:
    """Log the model as an MLflow pyfunc with a signature and an input example; return its URI."""
    import dataclasses

    import mlflow
    import pandas as pd
    import torch
    from mlflow.models import infer_signature

    from mlsys.inference.pyfunc_model import CONFIG, WEIGHTS, TextClassifierPyfunc
    from mlsys.training.trainer import predict_proba

    example = pd.DataFrame({"text": example_texts})
    proba = predict_proba(model, featurizer, example_texts).numpy()
    output = pd.DataFrame({"prediction": proba.argmax(1).astype("int64"), "proba_0": proba[:, 0], "proba_1": proba[:, 1]})
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.pt"
        config = Path(tmp) / "config.json"
        torch.save(model.state_dict(), weights)
        config.write_text(json.dumps({"featurizer": dataclasses.asdict(featurizer), "model": mcfg.to_json()}))
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=TextClassifierPyfunc(),
            artifacts={WEIGHTS: str(weights), CONFIG: str(config)},
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "pandas"],
            code_paths=[str(Path(__file__).resolve().parents[1])],
        )
    return info.model_uri


def _log_curve(history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["epoch"] for h in history], [h["train_loss"] for h in history], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("noise-aware train loss")
    ax.set_title("Training curve")
    fig.tight_layout()
    mlflow.log_figure(fig, "training_curve.png")
    plt.close(fig)
