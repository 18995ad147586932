"""The validate stage on the real labeled comments: pass, or stop, quarantine and keep the version."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from mlsys.datasets import LABELED
from mlsys.errors import SpecError, StorageError, ValidationFailed
from mlsys.storage import DatasetStore
from mlsys.validation.schema import Schema
from mlsys.validation.stage import ValidateSpec, check, run


@pytest.fixture(scope="module")
def labeled(prepared_home):
    """Ingest and label the real data once; each test gets a fresh storage root seeded with it."""
    with prepared_home("validate-home") as env:
        ref = env.labeled.labeled
        df = env.store.read(LABELED, ref.version)
    return SimpleNamespace(df=df, ref=ref)


@pytest.fixture
def store(labeled, mlsys_home) -> DatasetStore:
    """A fresh storage root holding the real labeled version, not yet validated."""
    store = DatasetStore()
    ref = store.write(LABELED, labeled.df, sources=labeled.ref.sources, extra=labeled.ref.extra)
    assert ref.version == labeled.ref.version  # same content, same version in any root
    return store


def test_labeled_data_passes_and_is_tagged_validated(store, labeled):
    with pytest.raises(StorageError, match="no version tagged 'validated'"):
        store.ref(LABELED, "validated")
    result = run(ValidateSpec())
    assert result.success and result.failed == []
    assert result.dataset.version == labeled.ref.version
    assert result.evaluated == len(Schema.load(LABELED).to_suite().expectations)
    assert store.ref(LABELED, "validated").version == labeled.ref.version
    assert store.backend.list("quarantine/") == []


def test_validating_an_explicit_version_and_schema_path(store, labeled):
    from mlsys.validation.schema import SCHEMA_DIR

    result = run(ValidateSpec(version=labeled.ref.version, schema=str(SCHEMA_DIR / "comments_labeled.yaml")))
    assert result.success
    assert json.loads(json.dumps(result.to_json()))["dataset"]["version"] == labeled.ref.version


def _label_7(df):
    df.loc[df.index[:3], "label"] = 7
    return df


def _weight_1_5(df):
    df.loc[df.index[5], "weight"] = 1.5
    return df


def _no_weight(df):
    return df.drop(columns=["weight"])


def _too_few_rows(df):
    return df.head(50)


def _bad_source(df):
    df.loc[df.index[-1], "label_source"] = "guess"
    return df


def _duplicate_id(df):
    df.loc[df.index[1], "id"] = df["id"].iloc[0]
    return df


def _empty_text(df):
    df.loc[df.index[2], "text"] = ""
    return df


BROKEN = {
    "label_7": (_label_7, "expect_column_values_to_be_in_set", "label"),
    "weight_1_5": (_weight_1_5, "expect_column_values_to_be_between", "weight"),
    "missing_column": (_no_weight, "expect_column_to_exist", "weight"),
    "too_few_rows": (_too_few_rows, "expect_table_row_count_to_be_between", None),
    "bad_label_source": (_bad_source, "expect_column_values_to_be_in_set", "label_source"),
    "duplicate_id": (_duplicate_id, "expect_column_values_to_be_unique", "id"),
    "empty_text": (_empty_text, "expect_column_value_lengths_to_be_between", "text"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_version_is_stopped_quarantined_and_kept(store, labeled, case):
    breaker, expectation, column = BROKEN[case]
    good = run(ValidateSpec())
    bad = store.write(LABELED, breaker(labeled.df.copy()))
    assert bad.version != good.dataset.version
    assert store.ref(LABELED).version == bad.version  # the broken version is now "latest"

    with pytest.raises(ValidationFailed) as info:
        run(ValidateSpec())
    message = str(info.value)
    assert expectation in message
    if column:
        assert f"{expectation}({column})" in message
    assert bad.label in message and "quarantine" in message

    record = json.loads(store.get_bytes(f"quarantine/{LABELED}/{bad.version}.json"))
    assert record["dataset"]["version"] == bad.version
    assert any(f["expectation"] == expectation and f["column"] == column for f in record["failed"])

    # kept and readable, but never tagged: "validated" still points at the earlier good version
    assert store.read(LABELED, bad.version).shape[0] == bad.rows
    assert store.ref(LABELED, "validated").version == good.dataset.version
    assert [r.version for r in store.versions(LABELED)] == [good.dataset.version, bad.version]


def test_quarantine_record_lists_the_offending_values(store, labeled):
    bad = store.write(LABELED, _label_7(labeled.df.copy()))
    with pytest.raises(ValidationFailed):
        run(ValidateSpec(version=bad.version))
    record = json.loads(store.get_bytes(f"quarantine/{LABELED}/{bad.version}.json"))
    (failure,) = record["failed"]
    assert failure["unexpected_count"] == 3 and failure["partial_unexpected_list"] == [7, 7, 7]
    assert failure["kwargs"]["value_set"] == [-1, 0, 1]


def test_validate_inside_an_mlflow_run_logs_the_result(store, labeled):
    import mlflow

    from mlsys.tracking import RunContext, stage_run

    with stage_run(RunContext.cli("validate")) as active:
        run(ValidateSpec())
    client = mlflow.MlflowClient()
    data = client.get_run(active.info.run_id)
    assert data.data.metrics["success"] == 1.0 and data.data.metrics["expectations_failed"] == 0
    paths = {a.path for a in client.list_artifacts(active.info.run_id, "validation")}
    assert {"validation/gx_result.json", "validation/schema.json", "validation/report.json", "validation/statistics.json",
            "validation/statistics_table.json", "validation/statistics.png", "validation/data_docs"} <= paths
    docs = client.list_artifacts(active.info.run_id, "validation/data_docs")
    assert "validation/data_docs/index.html" in {a.path for a in docs}
    assert data.data.tags["mlsys.schema_version"] == "1"
    (inp,) = data.inputs.dataset_inputs
    assert inp.dataset.name == LABELED and inp.dataset.digest == labeled.ref.version

    bad = store.write(LABELED, _weight_1_5(labeled.df.copy()))
    with pytest.raises(ValidationFailed):
        with stage_run(RunContext.cli("validate")) as failing:
            run(ValidateSpec())
    data = client.get_run(failing.info.run_id)
    assert data.info.status == "FAILED"
    assert data.data.metrics["success"] == 0.0 and data.data.metrics["expectations_failed"] == 1
    record = json.loads(store.get_bytes(f"quarantine/{LABELED}/{bad.version}.json"))
    assert record["mlflow_run_id"] == failing.info.run_id


def test_check_on_a_frame():
    schema = Schema(dataset="tiny", columns={"x": {"type": "int", "domain": [0, 1]}}, min_rows=2)
    import pandas as pd

    ok, n, failed, _ = check(pd.DataFrame({"x": [0, 1, 1]}), schema)
    assert ok and n == 5 and failed == []
    ok, n, failed, _ = check(pd.DataFrame({"x": [0, np.nan]}), schema)
    # NaN makes the column float, but its values are whole numbers: an int column with a missing value
    # (checked as pandas' nullable Int64), so only the not-null rule fails.
    assert not ok and [f["expectation"] for f in failed] == ["expect_column_values_to_not_be_null"]


def test_missing_dataset_and_bad_spec(mlsys_home):
    with pytest.raises(StorageError, match="has no committed version"):
        run(ValidateSpec())
    with pytest.raises(SpecError, match=r"ValidateSpec\.dataset=''"):
        ValidateSpec(dataset="")


def test_drift_against_the_last_validated_version_by_default(taxi, tmp_path, mlsys_home):
    store = DatasetStore()
    schema = str(taxi.schema.save(tmp_path / "taxi.yaml"))
    first = store.write("chicago_taxi", taxi.previous)
    assert run(ValidateSpec(dataset="chicago_taxi", schema=schema)).success  # the first span: nothing to compare
    assert store.ref("chicago_taxi", "validated").version == first.version
    store.write("chicago_taxi", taxi.current)
    assert run(ValidateSpec(dataset="chicago_taxi", schema=schema)).anomalies == []  # the next span, same process
    shifted = taxi.current.copy()
    shifted["fare"] = shifted["fare"] * 1.3 + 4.0
    bad = store.write("chicago_taxi", shifted)
    with pytest.raises(ValidationFailed, match=r"drift\(fare\): Jensen-Shannon divergence of 'fare' against the previous span"):
        run(ValidateSpec(dataset="chicago_taxi", schema=schema))
    record = json.loads(store.get_bytes(f"validations/chicago_taxi/{bad.version}.json"))
    assert record["baseline"].startswith("chicago_taxi@") and not record["success"]
