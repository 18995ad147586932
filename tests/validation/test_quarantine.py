"""The gate: bad rows go to quarantine with a reason each; the clean remainder is released on request."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mlsys.errors import StorageError, ValidationFailed
from mlsys.storage import DatasetStore
from mlsys.validation import anomalies as anom
from mlsys.validation import quarantine
from mlsys.validation.schema import Schema
from mlsys.validation.stage import ValidateSpec, run


def test_reasons_name_every_broken_rule_per_row():
    schema = Schema(dataset="d", columns={"x": {"type": "int", "min": 0, "max": 9}, "c": {"domain": ["a", "b"]}})
    df = pd.DataFrame({"x": [1, 50, 60, 3], "c": ["a", "z", "b", "b"]})
    found = [anom.Anomaly(anom.OUT_OF_RANGE, "x", anom.ERROR, None, None, "", row_level=True),
             anom.Anomaly(anom.UNEXPECTED_VALUES, "c", anom.ERROR, None, None, "", row_level=True),
             anom.Anomaly(anom.UNEXPECTED_VALUES, "c", anom.WARNING, None, None, "", row_level=True)]
    reasons = quarantine.reasons(df, schema, found)
    assert reasons.tolist() == ["", "x outside [0, 9]; c not in its domain", "x outside [0, 9]", ""]
    clean, bad = quarantine.split(df, reasons)
    assert clean["x"].tolist() == [1, 3] and bad["_row"].tolist() == [1, 2]
    assert len(clean) + len(bad) == len(df)  # nothing dropped unseen


@pytest.fixture
def stored(taxi, tmp_path, mlsys_home):
    store = DatasetStore()
    path = taxi.schema.save(tmp_path / "taxi.yaml")
    bad = taxi.current.copy()
    bad.loc[bad.index[:30], "trip_start_hour"] = 99
    ref = store.write("chicago_taxi", bad)
    return store, str(path), ref


def test_row_errors_stop_the_chain_and_quarantine_the_rows(stored):
    store, schema, ref = stored
    with pytest.raises(ValidationFailed, match=r"(?s)out_of_range\(trip_start_hour\).*30 rows went to chicago_taxi_quarantine"
                                              r".*release the clean remainder") as info:
        run(ValidateSpec(dataset="chicago_taxi", schema=schema, baseline="none"))
    assert "error out_of_range(trip_start_hour): 30 values" in str(info.value)
    q = store.read("chicago_taxi_quarantine")
    assert len(q) == 30 and set(q["_quarantine_reason"]) == {"trip_start_hour outside [0, 23]"}
    assert q["_row"].tolist() == list(range(30))
    with pytest.raises(StorageError, match="no version tagged 'validated'"):
        store.ref("chicago_taxi", "validated")
    assert store.backend.exists(f"quarantine/chicago_taxi/{ref.version}.json")


def test_release_clean_publishes_the_remainder_as_validated(stored):
    store, schema, ref = stored
    result = run(ValidateSpec(dataset="chicago_taxi", schema=schema, baseline="none", release_clean=True))
    assert result.success and result.quarantine["rows"] == 30
    assert json.loads(json.dumps(result.to_json()))["released"] == result.released  # XCom carries it
    assert result.released["rows"] == ref.rows - 30 and result.released["extra"]["released_from"] == ref.version
    validated = store.ref("chicago_taxi", "validated")
    assert validated.version == result.released["version"] != ref.version
    assert store.read("chicago_taxi", validated.version)["trip_start_hour"].max() == 23
    record = json.loads(store.get_bytes(f"validations/chicago_taxi/{validated.version}.json"))
    assert record["schema"]["version"] == 1 and record["released_from"] == ref.version


def test_dataset_level_errors_are_never_released(stored, taxi):
    store, schema, _ = stored
    store.write("chicago_taxi", taxi.current.drop(columns=["company"]))
    with pytest.raises(ValidationFailed, match=r"missing_column\(company\)"):
        run(ValidateSpec(dataset="chicago_taxi", schema=schema, baseline="none", release_clean=True))
