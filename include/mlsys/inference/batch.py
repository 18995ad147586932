"""Batch scoring: a dataset version in, a predictions dataset version out.

The input is streamed as Parquet record batches, so memory stays flat with
the dataset's size, and the output is written batch by batch too.
Each row keeps its id; the model name and version are a column and metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlsys.errors import DataError
from mlsys.ingest.stage import UNLABELED
from mlsys.registry.stage import CHAMPION
from mlsys.settings import settings
from mlsys.spec import require
from mlsys.storage import DatasetRef, DatasetStore

PREDICTIONS = "predictions"


@dataclass(frozen=True)
class BatchSpec:
    dataset: str = UNLABELED
    version: str = "latest"
    model_name: str = ""  # default $MLSYS_MODEL_NAME
    model_version: str = CHAMPION  # an alias or a version number
    batch_rows: int = 65536
    storage_uri: str = ""

    def __post_init__(self):
        require(self.batch_rows >= 1, "BatchSpec", "batch_rows", self.batch_rows, "use at least 1 row per batch")
        require(bool(self.dataset), "BatchSpec", "dataset", self.dataset, "name the dataset to score")


@dataclass(frozen=True)
class BatchResult:
    predictions: DatasetRef
    model: str
    rows: int
    class_shares: dict[str, float]
    rows_per_s: float

    def to_json(self) -> dict[str, Any]:
        return {"predictions": self.predictions.to_json(), "model": self.model, "rows": self.rows,
                "class_shares": self.class_shares, "rows_per_s": self.rows_per_s}


def run(spec: BatchSpec) -> BatchResult:
    import time

    import mlflow
    import pyarrow as pa

    from mlsys.tracking import tracker

    tracker.configure()
    name = spec.model_name or settings().model_name
    client = mlflow.MlflowClient()
    if spec.model_version.isdigit():
        mv = client.get_model_version(name, spec.model_version)
    else:
        mv = client.get_model_version_by_alias(name, spec.model_version)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}")
    model_label = f"{name}/{mv.version}"

    store = DatasetStore(spec.storage_uri or None)
    ref = store.ref(spec.dataset, spec.version)
    cols = [c["name"] for c in ref.columns]
    if "id" not in cols or "text" not in cols:
        raise DataError(f"{ref.label}: batch scoring needs columns 'id' and 'text'; it has {cols}")

    counts: dict[int, int] = {}
    started = time.perf_counter()

    def scored():
        for batch in store.iter_batches(ref, spec.batch_rows, columns=["id", "text"]):
            frame = batch.to_pandas()
            pred = model.predict(frame[["text"]])
            pred.insert(0, "id", frame["id"].to_numpy())
            pred["model_version"] = model_label
            for k, v in pred["prediction"].value_counts().items():
                counts[int(k)] = counts.get(int(k), 0) + int(v)
            yield pa.RecordBatch.from_pandas(pred, preserve_index=False)

    out = store.write(
        PREDICTIONS, scored(),
        sources={ref.name: ref.version, "model": model_label},
        created_by={"mlflow_run_id": tracker.active_run_id()},
        extra={"model_name": name, "model_version": str(mv.version)},
        schema=pa.schema([("id", pa.large_string()), ("prediction", pa.int64()), ("proba_0", pa.float64()),
                          ("proba_1", pa.float64()), ("model_version", pa.large_string())]),
    )
    elapsed = time.perf_counter() - started
    rows = sum(counts.values())
    shares = {str(k): v / rows for k, v in sorted(counts.items())} if rows else {}
    if mlflow.active_run() is not None:
        tracker.log_input(ref, "scoring")
        tracker.log_output(out)
        mlflow.log_params({"model": model_label, "batch_rows": spec.batch_rows})
        mlflow.log_metrics({"rows": rows, "rows_per_s": rows / elapsed, **{f"share_class_{k}": v for k, v in shares.items()}})
    return BatchResult(predictions=out, model=model_label, rows=rows, class_shares=shares, rows_per_s=rows / elapsed)
