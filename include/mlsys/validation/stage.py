"""The validate stage: statistics, GX validation against a versioned schema, anomalies, the gate.

Input: a stored dataset version (``dataset``/``version``) or a CSV/Parquet file (``data``).

1. statistics of every column (stored as ``statistics/<dataset>/<version>.json``);
2. the current schema (from its registry, see ``evolution``), compiled to a GX
   suite for the ``environment`` and run by GX (Data Docs logged to MLflow);
3. anomalies: GX failures, new columns, and drift (training) or skew (serving)
   against ``baseline``: by default the last validated version of the dataset;
4. benign warnings produce a proposed schema update (a diff), never a silent change;
5. the gate: rows that break row-level error rules go to ``<dataset>_quarantine``
   with a reason per row; error anomalies raise ValidationFailed, unless they are
   all row-level and ``release_clean`` is set: then the clean remainder is written
   as a new version and validated. Warnings pass and are logged.

Every validated version records the schema version that validated it
(``validations/<dataset>/<version>.json``). A failing version is never deleted:
it stays stored and is recorded under ``quarantine/<dataset>/<version>.json``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlsys.errors import ValidationFailed
from mlsys.faults import failpoint
from mlsys.spec import check_knobs, knob, require
from mlsys.storage import DatasetRef, DatasetStore
from mlsys.storage.table_file import read_table
from mlsys.validation import anomalies as anom
from mlsys.validation import quarantine, statistics
from mlsys.validation.evolution import SchemaRegistry, propose_update
from mlsys.validation.gx import check
from mlsys.validation.schema import ENVIRONMENTS, Schema

__all__ = ["ValidateResult", "ValidateSpec", "check", "run"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidateSpec:
    dataset: str = "comments_labeled"
    version: str = "latest"
    schema: str = ""  # YAML path or a schema name; default: the dataset's name
    storage_uri: str = ""
    data: str = ""  # a CSV or Parquet file to validate instead of a stored dataset version
    baseline: str = ""  # drift (training) / skew (serving) reference: a file, "none"; default: last validated version
    environment: str = "training"  # training: the label is required; serving: it is absent
    report: str = ""  # write the JSON report (every anomaly) to this file
    release_clean: bool = knob(
        False, 'When the only errors are bad rows: quarantine them and release the clean remainder as a new validated version.')
    accept_schema_update: bool = knob(
        False, "Accept the pending proposed schema update (see the validate run's proposed_schema.diff) before validating.")

    def __post_init__(self):
        check_knobs(self)
        require(bool(self.dataset), "ValidateSpec", "dataset", self.dataset, "name the dataset to validate")
        require(self.environment in ENVIRONMENTS, "ValidateSpec", "environment", self.environment,
                f"use one of {list(ENVIRONMENTS)}")
        require(not self.data or Path(self.data).suffix.lower() in (".csv", ".parquet", ".pq", ".txt", ".gz"),
                "ValidateSpec", "data", self.data, "give a .csv or .parquet file")
        require(not self.data or bool(self.schema), "ValidateSpec", "schema", self.schema,
                "a data file needs its schema: pass --schema SCHEMA.yaml (mlsys schema infer writes a first one)")


@dataclass(frozen=True)
class ValidateResult:
    dataset: DatasetRef
    success: bool
    evaluated: int
    failed: list[dict[str, Any]] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    schema_version: int = 0
    quarantine: dict[str, Any] | None = None  # the quarantined rows' dataset
    released: dict[str, Any] | None = None  # the clean remainder, when released
    proposal: dict[str, Any] | None = None  # a proposed schema update

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset.to_json(), "success": self.success, "evaluated": self.evaluated,
                "failed": self.failed, "anomalies": self.anomalies, "schema_version": self.schema_version,
                "quarantine": self.quarantine, "released": self.released, "proposal": self.proposal}


def _file_ref(path: Path, name: str, rows: int) -> DatasetRef:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return DatasetRef(name=name, version=digest.hexdigest()[:16], uri=str(path.resolve()), rows=rows,
                      sha256=digest.hexdigest(), size_bytes=path.stat().st_size)


def _baseline(spec: ValidateSpec, store: DatasetStore, ref: DatasetRef, schema: Schema):
    """(reference frame or None, a label for it)."""
    from mlsys.errors import StorageError

    kind = "skew" if spec.environment == "serving" else "drift"
    if spec.baseline == "none" or not any(rule.get(kind) is not None for rule in schema.columns.values()):
        return None, None  # nothing to compare
    if spec.baseline:
        return read_table(spec.baseline).to_pandas(), spec.baseline
    if spec.data:
        return None, None
    try:
        prev = store.ref(ref.name, "validated")
    except StorageError:
        return None, None  # the first span: nothing to compare with
    if prev.version == ref.version:
        return None, None
    return store.read(prev.name, prev.version), prev.label


def _evaluate(df, table, schema: Schema, spec: ValidateSpec, reference, docs_dir=None):
    stats = statistics.compute(table)
    success, evaluated, failed, full = check(df, schema, spec.environment, docs_dir)
    found = anom.detect(df, stats, schema, failed, spec.environment, reference)
    return stats, evaluated, failed, full, found


def run(spec: ValidateSpec) -> ValidateResult:
    import mlflow

    from mlsys.tracking import tracker

    store = DatasetStore(spec.storage_uri or None)
    registry = SchemaRegistry.open(spec.schema or spec.dataset, store)
    accepted = registry.accept() if spec.accept_schema_update and registry.pending() else None
    schema = registry.current()
    if spec.data:
        table = read_table(spec.data)
        name = schema.dataset
        ref = _file_ref(Path(spec.data), name, table.num_rows)
    else:
        ref = store.ref(spec.dataset, spec.version)
        name = ref.name
        table = store.read_table(name, ref.version)
    df = table.to_pandas()
    reference, baseline_label = _baseline(spec, store, ref, schema)

    with tempfile.TemporaryDirectory(prefix="mlsys-docs-") as docs:
        stats, evaluated, failed, full, found = _evaluate(df, table, schema, spec, reference, docs)
        errors = anom.errors(found)
        # -- schema evolution: benign warnings become a proposal, never a silent change
        update = propose_update(schema, found, stats)
        proposal = registry.propose(*update) if update else None
        # -- quarantine and release
        reasons = quarantine.reasons(df, schema, found)
        clean, bad = quarantine.split(df, reasons)
        quarantined = released = None
        if len(bad):
            q = store.write(f"{name}_quarantine", bad, sources={name: ref.version},
                            extra={"schema_version": schema.version, "reasons": bad[quarantine.REASON].value_counts().head(20).to_dict()})
            quarantined = {**q.to_json(), "rows": len(bad)}
        dataset_errors = [a for a in errors if not a.row_level]
        if errors and not dataset_errors and spec.release_clean and len(clean):
            import pyarrow as pa

            clean_table = pa.Table.from_pandas(clean, preserve_index=False)
            _, _, _, _, clean_found = _evaluate(clean, clean_table, schema, spec, reference)
            if not anom.errors(clean_found):
                out = store.write(name, clean, sources={name: ref.version},
                                  extra={"released_from": ref.version, "quarantined_rows": len(bad)})
                store.tag(name, out.version, "validated")
                released = out.to_json()
        success = not errors or released is not None
        for a in found:
            if a.severity == anom.WARNING:
                log.warning("%s: %s", ref.label, a)  # warnings pass; the task log and the report show them

        record = {
            "dataset": ref.to_json(), "schema": {"name": schema.dataset, "version": schema.version, "uri": registry.uri},
            "accepted_schema_update": accepted.version if accepted else None, "environment": spec.environment,
            "baseline": baseline_label, "success": success, "evaluated": evaluated,
            "anomalies": [a.to_json() for a in found], "quarantine": quarantined, "released": released,
            "proposal": proposal.to_json() if proposal else None, "mlflow_run_id": tracker.active_run_id(),
        }
        store.put_bytes(f"statistics/{name}/{ref.version}.json", json.dumps(stats.to_json(), default=str).encode())
        store.put_bytes(f"validations/{name}/{ref.version}.json", json.dumps(record, indent=2, default=str).encode())
        if released is not None:  # the released remainder records the schema version that validated it, too
            store.put_bytes(f"validations/{name}/{released['version']}.json", json.dumps(
                {**record, "dataset": released, "released_from": ref.version, "anomalies": []}, indent=2, default=str).encode())
        if spec.report:
            Path(spec.report).parent.mkdir(parents=True, exist_ok=True)
            Path(spec.report).write_text(json.dumps(record, indent=2, default=str))
        if mlflow.active_run() is not None:
            _log(ref, spec, schema, stats, found, evaluated, failed, full, record, docs, store, tracker)

    if not success:
        key = f"quarantine/{ref.name}/{ref.version}.json"
        store.put_bytes(key, json.dumps({**record, "failed": failed}, indent=2, default=str).encode())
        gx_lines = "; ".join(f"{f['expectation']}({f['column']}) observed={f['observed']}" for f in failed[:8])
        lines = "\n  ".join(str(a) for a in errors[:12])
        rows = f" {len(bad)} rows went to {quarantined['name']}@{quarantined['version']} with a reason each." if quarantined else ""
        raise ValidationFailed(
            f"{ref.label} has {len(errors)} error anomalies against schema {schema.dataset!r} v{schema.version}:\n  {lines}\n"
            f"GX: {len(failed)} of {evaluated} expectations failed: {gx_lines}.{rows} "
            f"The version is kept and quarantined at {store.backend.uri(key)}; fix the data or the schema"
            + (", or release the clean remainder (release_clean)" if errors and not dataset_errors else "")
            + " and re-run."
        )
    if not spec.data and released is None:
        store.tag(ref.name, ref.version, "validated")
        failpoint("validate.tagged")  # the fault suite kills the task here: the retry must move nothing back
    return ValidateResult(dataset=ref, success=success, evaluated=evaluated, failed=failed,
                          anomalies=[a.to_json() for a in found], schema_version=schema.version,
                          quarantine=quarantined, released=released, proposal=record["proposal"])


def _log(ref, spec, schema, stats, found, evaluated, failed, full, record, docs, store, tracker) -> None:
    import mlflow

    if not spec.data:
        tracker.log_input(ref, "validation")
    n_err = len(anom.errors(found))
    mlflow.log_metrics({
        "expectations": evaluated, "expectations_failed": len(failed), "success": float(record["success"]),
        "anomalies_error": n_err, "anomalies_warning": len(found) - n_err,
        "rows_quarantined": (record["quarantine"] or {}).get("rows", 0),
    })
    mlflow.set_tags({"mlsys.schema": schema.dataset, "mlsys.schema_version": str(schema.version),
                     "mlsys.environment": spec.environment})
    mlflow.log_dict(full, "validation/gx_result.json")
    mlflow.log_dict(schema.to_dict(), "validation/schema.json")
    mlflow.log_dict(record, "validation/report.json")
    mlflow.log_dict(stats.to_json(), "validation/statistics.json")
    mlflow.log_table(stats.table().astype({"top": str}), "validation/statistics_table.json")
    if record["proposal"]:
        mlflow.log_text(record["proposal"]["diff"], "validation/proposed_schema.diff")
    from mlsys.validation.plots import statistics_figure

    fig = statistics_figure(stats)
    mlflow.log_figure(fig, "validation/statistics.png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    if any(Path(docs).iterdir()):
        mlflow.log_artifacts(docs, "validation/data_docs")
