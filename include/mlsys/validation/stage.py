"""The validate stage: check a dataset version against its schema with Great Expectations.

A failing version is not deleted or overwritten: it stays stored and is
recorded under ``quarantine/<dataset>/<version>.json`` with the failed
expectations, and the stage raises so that the chain stops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mlsys.errors import ValidationFailed
from mlsys.spec import require
from mlsys.storage import DatasetRef, DatasetStore
from mlsys.validation.schema import Schema


@dataclass(frozen=True)
class ValidateSpec:
    dataset: str = "comments_labeled"
    version: str = "latest"
    schema: str = ""  # YAML path or a shipped schema name; default: the dataset's name
    storage_uri: str = ""

    def __post_init__(self):
        require(bool(self.dataset), "ValidateSpec", "dataset", self.dataset, "name the dataset to validate")


@dataclass(frozen=True)
class ValidateResult:
    dataset: DatasetRef
    success: bool
    evaluated: int
    failed: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset.to_json(), "success": self.success, "evaluated": self.evaluated, "failed": self.failed}


def check(df, schema: Schema) -> tuple[bool, int, list[dict[str, Any]], dict[str, Any]]:
    """Run the schema's GX suite on a DataFrame: (success, #expectations, failures, full result)."""
    import logging

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (
        context.data_sources.add_pandas("mlsys")
        .add_dataframe_asset(schema.dataset)
        .add_batch_definition_whole_dataframe("whole")
    )
    suite = context.suites.add(schema.to_suite())
    vd = context.validation_definitions.add(gx.ValidationDefinition(name=f"{schema.dataset}_check", data=batch_def, suite=suite))
    strings = [c for c in df.columns if str(df[c].dtype) in ("str", "string")]
    df = df.astype({c: object for c in strings})  # see TYPE_NAMES in schema.py
    result = vd.run(batch_parameters={"dataframe": df}, result_format="SUMMARY")
    failed = []
    for r in result.results:
        if not r.success:
            cfg = r.expectation_config
            failed.append(
                {
                    "expectation": cfg.type,
                    "column": cfg.kwargs.get("column"),
                    "kwargs": {k: v for k, v in cfg.kwargs.items() if k not in ("column", "batch_id")},
                    "observed": (r.result or {}).get("observed_value"),
                    "unexpected_count": (r.result or {}).get("unexpected_count"),
                    "partial_unexpected_list": (r.result or {}).get("partial_unexpected_list", [])[:10],
                }
            )
    return bool(result.success), len(result.results), failed, result.to_json_dict()


def run(spec: ValidateSpec) -> ValidateResult:
    import mlflow

    from mlsys.tracking import tracker

    store = DatasetStore(spec.storage_uri or None)
    ref = store.ref(spec.dataset, spec.version)
    schema = Schema.load(spec.schema or spec.dataset)
    df = store.read(spec.dataset, ref.version)
    success, evaluated, failed, full = check(df, schema)

    if mlflow.active_run() is not None:
        tracker.log_input(ref, "validation")
        mlflow.log_metrics({"expectations": evaluated, "expectations_failed": len(failed), "success": float(success)})
        mlflow.log_dict(full, "validation/gx_result.json")
        mlflow.log_dict({"dataset": schema.dataset, "min_rows": schema.min_rows, "columns": schema.columns}, "validation/schema.json")
    if not success:
        record = {"dataset": ref.to_json(), "failed": failed, "mlflow_run_id": tracker.active_run_id()}
        key = f"quarantine/{ref.name}/{ref.version}.json"
        store.put_bytes(key, json.dumps(record, indent=2, default=str).encode())
        lines = "; ".join(f"{f['expectation']}({f['column']}) observed={f['observed']}" for f in failed[:8])
        raise ValidationFailed(
            f"{ref.label} failed {len(failed)} of {evaluated} expectations of schema {schema.dataset!r}: {lines}. "
            f"The version is kept and quarantined at {store.backend.uri(key)}; fix the data or the schema and re-run."
        )
    store.tag(ref.name, ref.version, "validated")
    return ValidateResult(dataset=ref, success=success, evaluated=evaluated, failed=failed)
