"""Every corruption of the real taxi data is caught with the right anomaly type; the clean data passes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlsys.validation import anomalies as anom
from mlsys.validation import statistics
from mlsys.validation.gx import check


def _detect(df, schema, environment="training", reference=None):
    stats = statistics.compute(df)
    _, _, failed, _ = check(df, schema, environment)
    return anom.detect(df, stats, schema, failed, environment, reference)


def _type_flip(df):
    df["trip_start_hour"] = df["trip_start_hour"].astype(str)
    df.loc[df.index[::50], "trip_start_hour"] = "noon"
    return df


def _null_spike(df):
    df.loc[df.sample(frac=0.4, random_state=1).index, "fare"] = np.nan
    return df


def _out_of_range(df):
    df.loc[df.index[:30], "trip_start_hour"] = 99
    return df


def _new_category(df):
    df.loc[df.sample(frac=0.3, random_state=1).index, "payment_type"] = "Crypto"
    return df


def _dropped_column(df):
    return df.drop(columns=["company"])


def _shifted_fare(df):
    df["fare"] = df["fare"] * 1.3 + 4.0
    return df


def _no_label(df):
    return df.drop(columns=["tips"])


CORRUPTIONS = {
    "type_flip": (_type_flip, anom.TYPE_MISMATCH, "trip_start_hour"),
    "null_spike": (_null_spike, anom.TOO_MANY_MISSING, "fare"),
    "out_of_range": (_out_of_range, anom.OUT_OF_RANGE, "trip_start_hour"),
    "new_category_30pct": (_new_category, anom.UNEXPECTED_VALUES, "payment_type"),
    "dropped_column": (_dropped_column, anom.MISSING_COLUMN, "company"),
    "shifted_fare": (_shifted_fare, anom.DRIFT, "fare"),
    "training_data_without_label": (_no_label, anom.MISSING_COLUMN, "tips"),
}


def test_clean_span_passes_with_no_anomaly(taxi):
    assert _detect(taxi.current, taxi.schema, reference=taxi.previous) == []


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corruption_is_caught_as_an_error_of_the_right_type(taxi, case):
    corrupt, kind, column = CORRUPTIONS[case]
    found = _detect(corrupt(taxi.current.copy()), taxi.schema, reference=taxi.previous)
    errors = anom.errors(found)
    assert (kind, column) in {(a.type, a.column) for a in errors}, [str(a) for a in found]
    # only the corrupted column is flagged (a 30% new category also shows as drift of that column)
    assert {a.column for a in errors} == {column}, [str(a) for a in found]
    json.dumps([a.to_json() for a in found])  # the report and XCom carry them


def test_details_of_the_new_category_and_the_type_flip(taxi):
    found = {a.type: a for a in _detect(_new_category(taxi.current.copy()), taxi.schema)}
    bad = found[anom.UNEXPECTED_VALUES]
    assert bad.observed == ["Crypto"] and bad.details["values"][0]["share"] == pytest.approx(0.3, abs=0.001)
    assert bad.rows == round(0.3 * len(taxi.current)) and bad.row_level and not bad.details["benign"]
    (flip,) = _detect(_type_flip(taxi.current.copy()), taxi.schema)
    assert flip.observed == "string" and flip.expected == "int" and "mixes types" in flip.description
    assert "'noon'" in flip.description


def test_serving_data_without_the_label_passes_and_with_it_warns(taxi):
    serving = _no_label(taxi.current.copy())
    assert _detect(serving, taxi.schema, "serving") == []
    (warn,) = _detect(taxi.current, taxi.schema, "serving")
    assert (warn.type, warn.column, warn.severity) == (anom.LABEL_IN_SERVING, "tips", anom.WARNING)


def test_training_serving_skew(taxi):
    serving = _shifted_fare(_no_label(taxi.current.copy()))
    found = _detect(serving, taxi.schema, "serving", reference=taxi.full)
    (skew,) = [a for a in found if a.type == anom.SKEW]
    assert skew.column == "fare" and skew.severity == anom.ERROR and skew.observed > 0.1
    assert skew.details["measure"] == "Jensen-Shannon divergence"


def test_too_few_rows_and_new_column(taxi):
    small = taxi.current.head(100).copy()
    small["surge"] = 1.0
    found = {(a.type, a.column): a for a in _detect(small, taxi.schema)}
    assert found[(anom.TOO_FEW_ROWS, None)].severity == anom.ERROR
    assert found[(anom.TOO_FEW_ROWS, None)].observed == 100
    assert found[(anom.NEW_COLUMN, "surge")].severity == anom.WARNING


def test_benign_changes_are_warnings(taxi):
    df = taxi.current.copy()
    df.loc[df.index[:5], "payment_type"] = "Mobile"  # a rare new value
    df.loc[df.index[5], "fare"] = 720.0  # a slightly wider range (700.07 before)
    found = {a.type: a for a in _detect(df, taxi.schema)}
    assert found[anom.UNEXPECTED_VALUES].severity == anom.WARNING and found[anom.UNEXPECTED_VALUES].details["benign"]
    assert found[anom.OUT_OF_RANGE].severity == anom.WARNING and found[anom.OUT_OF_RANGE].observed[1] == 720.0
