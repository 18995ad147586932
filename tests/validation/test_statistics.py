"""Column statistics on the real taxi data agree with pandas/numpy; bad files give clear DataErrors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlsys.errors import DataError
from mlsys.storage.table_file import read_table
from mlsys.validation import statistics
from mlsys.validation.statistics import QUANTILES, DatasetStatistics


def test_statistics_match_pandas_on_real_data(taxi):
    stats, df = taxi.stats, taxi.full
    assert stats.rows == len(df) == 15002 and list(stats.columns) == list(df.columns)
    for name in df.columns:
        col, s = stats.columns[name], df[name]
        assert col.missing == s.isna().sum() and col.count == s.notna().sum(), name
        assert col.distinct == s.nunique(), name
    fare = stats.columns["fare"]
    assert fare.type == "float"
    assert fare.mean == pytest.approx(df.fare.mean()) and fare.std == pytest.approx(df.fare.std(ddof=0))
    assert (fare.min, fare.max) == (df.fare.min(), df.fare.max())
    assert list(fare.quantiles.values()) == pytest.approx(list(np.quantile(df.fare, QUANTILES)))
    assert sum(fare.histogram["counts"]) == len(df) and len(fare.histogram["edges"]) == 11
    assert stats.columns["trip_start_hour"].type == "int"
    assert stats.columns["pickup_community_area"].type == "int"  # int with missing values, read by Arrow
    pay = stats.columns["payment_type"]
    assert pay.type == "string" and pay.top[0] == ["Cash", 9909] and pay.distinct == 7
    lengths = df.company.dropna().str.len()
    company = stats.columns["company"]
    assert (company.min_length, company.max_length) == (lengths.min(), lengths.max())
    assert company.mean_length == pytest.approx(lengths.mean())
    assert company.missing_fraction == pytest.approx(df.company.isna().mean())


def test_high_cardinality_numbers_take_the_exact_path():
    x = np.random.default_rng(0).normal(size=5000)
    col = statistics.compute(pd.DataFrame({"x": x})).columns["x"]
    assert col.distinct == 5000
    assert list(col.quantiles.values()) == pytest.approx(list(np.quantile(x, QUANTILES)))
    assert col.integral is False


def test_float_column_of_whole_numbers_is_integral_and_nan_is_missing():
    col = statistics.compute(pd.DataFrame({"x": [1.0, np.nan, 3.0]})).columns["x"]
    assert col.type == "float" and col.integral and col.missing == 1 and col.count == 2


def test_json_round_trip(taxi):
    again = DatasetStatistics.from_json(json.loads(json.dumps(taxi.stats.to_json())))
    assert again == taxi.stats
    assert set(taxi.stats.table().columns) >= {"column", "type", "missing_fraction", "distinct", "p50"}


def test_mixed_string_column_is_flagged():
    col = statistics.compute(pd.DataFrame({"x": ["1", "2", "3", "abc"]})).columns["x"]
    assert col.type == "string" and col.numeric_values == 3 and col.mixed


def test_mixed_python_types_are_a_data_error():
    with pytest.raises(DataError, match=r"column 'x' mixes value types \['int', 'str'\]"):
        statistics.compute(pd.DataFrame({"x": [1, "a", 2]}, dtype=object))


def test_unreadable_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty \(0 bytes\)"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="has a header but no rows"):
        read_table(tmp_path / "header.csv")
    (tmp_path / "bad.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match="could not be read as parquet"):
        read_table(tmp_path / "bad.parquet")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(DataError, match="could not be read as csv"):
        read_table(tmp_path / "ragged.csv")
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown format"):
        read_table(tmp_path / "data.xlsx")
