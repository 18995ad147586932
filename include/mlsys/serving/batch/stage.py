"""Batch scoring: a dataset version in, a predictions dataset version out.

    read chunk k+1 (Prefetcher)  |  score chunks k.. on all cores (VectorFeaturizer + inference_mode)  |  write Parquet

Memory stays flat with the dataset's size: at most a few chunks are alive.
Each row keeps its id; the model name and version are a column and metadata.

Scale-out: ``plan`` cuts the rows into N shards aligned to ``batch_rows``;
``run_shard`` scores one shard into a ``predictions_shards`` version; and
``run_merge`` concatenates the shards into ``predictions``. Chunks are cut
at the same rows either way, so the merged version is byte-identical to a
single ``run`` (datasets are content-addressed), and a re-run of a failed
shard rewrites only that shard, with the same version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from mlsys.datasets import CHAMPION, PREDICTION_SHARDS, PREDICTIONS, UNLABELED
from mlsys.errors import DataError
from mlsys.faults import failpoint
from mlsys.settings import settings
from mlsys.spec import check_knobs, knob, require
from mlsys.storage import DatasetRef, DatasetStore


@dataclass(frozen=True)
class BatchSpec:
    dataset: str = knob(UNLABELED, "Dataset to score (needs 'id' and 'text' columns).")
    version: str = knob("latest", "Dataset version: 'latest' or a version id.")
    model_name: str = ""  # default $MLSYS_MODEL_NAME
    model_version: str = knob(CHAMPION, 'Registered model alias or version number.')
    batch_rows: int = knob(65536, 'Rows per record batch (read, scored and written together).', minimum=1)
    storage_uri: str = ""
    workers: int = knob(0, 'Scoring threads per task; 0 = one per core.', minimum=0)

    def __post_init__(self):
        check_knobs(self)
        cls = type(self).__name__
        require(bool(self.dataset), cls, "dataset", self.dataset, "name the dataset to score")


@dataclass(frozen=True)
class ShardSpec(BatchSpec):
    num_shards: int = 1
    shard: int = 0

    def __post_init__(self):
        super().__post_init__()
        require(self.num_shards >= 1, "ShardSpec", "num_shards", self.num_shards, "use at least 1 shard")
        require(0 <= self.shard < self.num_shards, "ShardSpec", "shard", self.shard,
                f"use a shard index in [0, {self.num_shards})")


@dataclass(frozen=True)
class MergeSpec:
    shards: str = ""  # comma-separated predictions_shards versions, in shard order
    storage_uri: str = ""

    def __post_init__(self):
        require(bool(self.shards.strip()), "MergeSpec", "shards", self.shards,
                "give the predictions_shards versions, comma-separated, in shard order")


@dataclass(frozen=True)
class BatchResult:
    predictions: DatasetRef
    model: str
    rows: int
    class_shares: dict[str, float]
    rows_per_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"predictions": self.predictions.to_json(), "model": self.model, "rows": self.rows,
                "class_shares": self.class_shares, "rows_per_s": self.rows_per_s, **self.extra}


def shard_bounds(rows: int, num_shards: int, batch_rows: int, shard: int) -> tuple[int, int]:
    """Rows [start, stop) of one shard; boundaries fall on multiples of batch_rows."""
    chunks = -(-rows // batch_rows)
    per = -(-chunks // num_shards) * batch_rows
    return min(shard * per, rows), min((shard + 1) * per, rows)


def plan(spec: BatchSpec, num_shards: int) -> list[dict[str, Any]]:
    """Pin the dataset and model versions once, then one param dict per shard (for Airflow's expand)."""
    from mlsys.serving import champion
    from mlsys.tracking import tracker

    require(num_shards >= 1, "plan", "num_shards", num_shards, "use at least 1 shard")
    tracker.configure()
    ref = _input(DatasetStore(spec.storage_uri or None), spec)
    model = champion.resolve(spec.model_name or settings().model_name, spec.model_version)
    return [{"version": ref.version, "model_name": model.name, "model_version": model.version,
             "num_shards": num_shards, "shard": i} for i in range(num_shards)]


def _input(store: DatasetStore, spec: BatchSpec) -> DatasetRef:
    ref = store.ref(spec.dataset, spec.version)
    cols = [c["name"] for c in ref.columns]
    if "id" not in cols or "text" not in cols:
        raise DataError(f"{ref.label}: batch scoring needs columns 'id' and 'text'; it has {cols}")
    return ref


class _Tally:
    def __init__(self, batches: Iterator):
        self.batches, self.counts, self.rows = batches, {}, 0

    def __iter__(self):
        import numpy as np

        for batch in self.batches:
            pred = batch.column(1).to_numpy()
            for k, v in enumerate(np.bincount(pred)):
                if v:
                    self.counts[k] = self.counts.get(k, 0) + int(v)
            self.rows += batch.num_rows
            yield batch

    def shares(self) -> dict[str, float]:
        return {str(k): v / self.rows for k, v in sorted(self.counts.items())} if self.rows else {}


def _score(spec: BatchSpec, start_stop: tuple[int, int] | None, out_name: str, extra: dict[str, Any]):
    from mlsys.serving import champion
    from mlsys.serving.batch.chunks import OUTPUT_SCHEMA, default_workers, score_chunks
    from mlsys.serving.batch.reader import Prefetcher, row_range
    from mlsys.tracking import tracker

    tracker.configure()
    model = champion.resolve(spec.model_name or settings().model_name, spec.model_version)
    scorer = champion.load(model)
    store = DatasetStore(spec.storage_uri or None)
    ref = _input(store, spec)
    start, stop = start_stop or (0, ref.rows)

    import torch

    workers = spec.workers or default_workers()
    threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(1)  # parallel across chunks, not inside one: intra-op threads would contend
    started = time.perf_counter()
    reader = Prefetcher(row_range(store.path(ref), start, stop, spec.batch_rows, columns=["id", "text"]))
    scored = Prefetcher(score_chunks(scorer, reader, workers))
    tally = _Tally(iter(scored))
    try:
        out = store.write(
            out_name, tally,
            sources={ref.name: ref.version, "model": model.label},
            created_by={"mlflow_run_id": tracker.active_run_id()},
            extra={"model_name": model.name, "model_version": model.version, **extra},
            schema=OUTPUT_SCHEMA,
        )
    finally:
        scored.close()
        reader.close()
        torch.set_num_threads(threads)
    failpoint("batch.scored")  # the fault suite kills the task here: the retry must write the same version
    elapsed = time.perf_counter() - started
    result = BatchResult(predictions=out, model=model.label, rows=tally.rows, class_shares=tally.shares(),
                         rows_per_s=tally.rows / elapsed, extra=extra)
    _log(result, inputs=[ref], params={"model": model.label, "batch_rows": spec.batch_rows, **extra})
    return result


def _log(result: BatchResult, inputs: list[DatasetRef], params: dict[str, Any]) -> None:
    import mlflow

    from mlsys.tracking import tracker

    if mlflow.active_run() is None:
        return
    for ref in inputs:
        tracker.log_input(ref, "scoring")
    tracker.log_output(result.predictions)
    mlflow.log_params(params)
    mlflow.log_metrics({"rows": result.rows, "rows_per_s": result.rows_per_s,
                        **{f"share_class_{k}": v for k, v in result.class_shares.items()}})


def run(spec: BatchSpec) -> BatchResult:
    """Score the whole dataset version into a new ``predictions`` version."""
    return _score(spec, None, PREDICTIONS, {})


def run_shard(spec: ShardSpec) -> BatchResult:
    """Score one shard (a row range) into a ``predictions_shards`` version."""
    store = DatasetStore(spec.storage_uri or None)
    ref = _input(store, spec)
    bounds = shard_bounds(ref.rows, spec.num_shards, spec.batch_rows, spec.shard)
    extra = {"shard": spec.shard, "num_shards": spec.num_shards, "start_row": bounds[0], "stop_row": bounds[1],
             "batch_rows": spec.batch_rows}
    return _score(spec, bounds, PREDICTION_SHARDS, extra)


def run_merge(spec: MergeSpec) -> BatchResult:
    """Concatenate shard versions, in order, into one ``predictions`` version (same bytes as a single run)."""
    from mlsys.serving.batch.chunks import OUTPUT_SCHEMA
    from mlsys.serving.batch.reader import row_range
    from mlsys.tracking import tracker

    store = DatasetStore(spec.storage_uri or None)
    refs = [store.ref(PREDICTION_SHARDS, v.strip()) for v in spec.shards.split(",")]
    first = refs[0]
    for i, ref in enumerate(refs):
        got = (ref.extra.get("shard"), ref.extra.get("num_shards"), ref.sources, ref.extra.get("batch_rows"))
        want = (i, len(refs), first.sources, first.extra.get("batch_rows"))
        if got != want:
            raise DataError(f"MergeSpec.shards: {ref.label} is (shard, num_shards, sources, batch_rows)={got}, "
                            f"expected {want}; list every shard of one plan, in shard order")
    batch_rows = int(first.extra["batch_rows"])
    started = time.perf_counter()

    def batches():
        for ref in refs:
            for table in row_range(store.path(ref), 0, ref.rows, batch_rows):
                yield from table.to_batches()

    tally = _Tally(batches())
    out = store.write(
        PREDICTIONS, tally,
        sources=first.sources,
        created_by={"mlflow_run_id": tracker.active_run_id()},
        extra={"model_name": first.extra["model_name"], "model_version": first.extra["model_version"]},
        schema=OUTPUT_SCHEMA,
    )
    elapsed = time.perf_counter() - started
    result = BatchResult(predictions=out, model=first.sources["model"], rows=tally.rows,
                         class_shares=tally.shares(), rows_per_s=tally.rows / elapsed,
                         extra={"shards": [r.version for r in refs]})
    _log(result, inputs=refs, params={"model": result.model, "num_shards": len(refs)})
    return result
