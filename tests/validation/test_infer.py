"""Schema inference on the real taxi data gives what a person would write."""

from __future__ import annotations

import pandas as pd
import pytest

from mlsys.errors import DataError
from mlsys.validation import statistics
from mlsys.validation.infer import DRIFT, infer
from mlsys.validation.schema import Schema


def test_inferred_taxi_schema_reads_like_a_hand_written_one(taxi):
    s = taxi.schema
    cols = s.columns
    assert s.dataset == "chicago_taxi" and s.version == 1 and s.label == "tips"
    assert {n: c["type"] for n, c in cols.items() if c["type"] != "float"} == {
        "pickup_community_area": "int", "trip_start_month": "int", "trip_start_hour": "int", "trip_start_day": "int",
        "trip_start_timestamp": "int", "pickup_census_tract": "int", "dropoff_census_tract": "int",
        "payment_type": "string", "company": "string", "trip_seconds": "int", "dropoff_community_area": "int"}
    assert cols["payment_type"]["domain"] == ["Cash", "Credit Card", "Dispute", "No Charge", "Pcard", "Prcard", "Unknown"]
    assert cols["payment_type"]["required"] is True
    assert len(cols["company"]["domain"]) == 61 and "Taxi Affiliation Services" in cols["company"]["domain"]
    assert cols["company"]["required"] is False and cols["company"]["min_presence"] == 0.6  # 65.7% present
    assert (cols["trip_start_hour"]["min"], cols["trip_start_hour"]["max"]) == (0, 23)
    assert (cols["trip_start_month"]["min"], cols["trip_start_month"]["max"]) == (1, 12)
    assert (cols["trip_start_day"]["min"], cols["trip_start_day"]["max"]) == (1, 7)
    assert (cols["fare"]["min"], cols["fare"]["max"]) == (0.0, 700.07)
    assert cols["fare"]["drift"] == cols["fare"]["skew"] == DRIFT
    assert "drift" not in cols["trip_start_timestamp"]  # identifier-like: most values distinct
    assert "min_presence" not in cols["pickup_census_tract"]  # almost always empty: no presence rule


def test_yaml_is_one_line_per_column_and_round_trips(taxi, tmp_path):
    text = taxi.schema.to_yaml()
    assert text.startswith("format: 1\ndataset: chicago_taxi\nversion: 1\n")
    assert "\n  fare: {type: float, required: true, min: 0.0, max: 700.07, drift: 0.1, skew: 0.1}\n" in text
    assert Schema.load(taxi.schema.save(tmp_path / "taxi.yaml")) == taxi.schema


def test_free_text_gets_a_length_range_and_ids_are_unique():
    df = pd.DataFrame({"id": [f"c{i}" for i in range(50)], "text": [f"comment number {i}" for i in range(50)]})
    s = infer(statistics.compute(df), "comments")
    assert s.columns["id"]["unique"] is True and "domain" not in s.columns["text"]
    assert s.columns["text"]["min_length"] == 1 and s.columns["text"]["max_length"] == 2 * 17


def test_mixed_type_column_cannot_be_inferred():
    df = pd.DataFrame({"fare": ["1.5", "2.0", "3.25", "n/a"]})
    with pytest.raises(DataError, match=r"column 'fare' mixes types: 3 of its 4 values are numbers.*'n/a'"):
        infer(statistics.compute(df), "d")


def test_unknown_label_is_a_data_error(taxi):
    with pytest.raises(DataError, match="label column 'big_tipper' is not in the data"):
        infer(taxi.stats, "d", label="big_tipper")


def test_other_column_kinds_infer_and_pass_their_own_schema():
    from mlsys.validation.gx import check

    df = pd.DataFrame({"flag": [True, False] * 50, "at": pd.date_range("2024-01-01", periods=100, freq="h"),
                       "tags": [[1, 2]] * 100, "kind": pd.Categorical(["x", "y"] * 50), "empty": [None] * 100})
    schema = infer(statistics.compute(df), "mixed")
    assert {n: c["type"] for n, c in schema.columns.items()} == {
        "flag": "bool", "at": "timestamp", "tags": "list", "kind": "string", "empty": "float"}
    assert schema.columns["flag"]["domain"] == [False, True] and schema.columns["kind"]["domain"] == ["x", "y"]
    ok, _, failed, _ = check(df, schema)
    assert ok, failed
