"""Dataset schemas: YAML in, SpecError on mistakes, a GX ExpectationSuite out."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from mlsys.errors import SpecError
from mlsys.validation.schema import KEYS, SCHEMA_DIR, TYPES, Schema
from mlsys.validation.stage import check


def _write(tmp_path, text: str):
    path = tmp_path / "schema.yaml"
    path.write_text(text)
    return path


def test_shipped_schema_loads_by_name_and_by_path():
    by_name = Schema.load("comments_labeled")
    by_path = Schema.load(SCHEMA_DIR / "comments_labeled.yaml")
    assert by_name == by_path
    assert by_name.dataset == "comments_labeled" and by_name.min_rows == 100
    assert list(by_name.columns) == ["id", "group", "text", "label", "label_proba", "label_source", "weight"]
    assert by_name.columns["label"]["domain"] == [-1, 0, 1]


def test_min_rows_defaults_to_one(tmp_path):
    schema = Schema.load(_write(tmp_path, "dataset: tiny\ncolumns:\n  x: {type: int}\n"))
    assert schema.min_rows == 1 and schema.columns == {"x": {"type": "int"}}


def test_unknown_key_is_a_spec_error(tmp_path):
    path = _write(tmp_path, "dataset: d\ncolumns:\n  x: {type: int, maximum: 3}\n")
    with pytest.raises(SpecError, match=r"column 'x' has unknown keys \['maximum'\]") as info:
        Schema.load(path)
    for key in KEYS:
        assert key in str(info.value)  # the message lists the allowed keys


def test_unknown_type_is_a_spec_error(tmp_path):
    path = _write(tmp_path, "dataset: d\ncolumns:\n  x: {type: integer}\n")
    with pytest.raises(SpecError, match=r"column 'x' type 'integer' is not one of") as info:
        Schema.load(path)
    for kind in TYPES:
        assert kind in str(info.value)


def test_missing_file_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match=r"schema file .*nope\.yaml not found.*comments_labeled"):
        Schema.load(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="no_such_schema"):
        Schema.load("no_such_schema")


@pytest.mark.parametrize("text", ["columns:\n  x: {type: int}\n", ""])
def test_schema_without_dataset_is_a_spec_error(tmp_path, text):
    with pytest.raises(SpecError, match="dataset"):
        Schema.load(_write(tmp_path, text))


def _suite(schema: Schema):
    import great_expectations as gx

    gx.get_context(mode="ephemeral")  # see test_to_suite_needs_no_data_context: to_suite needs one today
    return schema.to_suite()


def test_to_suite_has_the_expected_expectations():
    suite = _suite(Schema.load("comments_labeled"))
    assert suite.name == "comments_labeled_schema"
    kinds = Counter(e.expectation_type for e in suite.expectations)
    assert kinds == {
        "expect_table_row_count_to_be_between": 1,
        "expect_column_to_exist": 7,
        "expect_column_values_to_be_in_type_list": 6,  # every column but the list-typed label_proba
        "expect_column_values_to_not_be_null": 7,
        "expect_column_values_to_be_unique": 1,  # id
        "expect_column_values_to_be_in_set": 2,  # label, label_source
        "expect_column_values_to_be_between": 1,  # weight
        "expect_column_value_lengths_to_be_between": 1,  # text
    }
    by_kind = {(e.expectation_type, getattr(e, "column", None)): e for e in suite.expectations}
    assert by_kind[("expect_table_row_count_to_be_between", None)].min_value == 100
    weight = by_kind[("expect_column_values_to_be_between", "weight")]
    assert (weight.min_value, weight.max_value) == (0.0, 1.0)
    assert set(by_kind[("expect_column_values_to_be_in_set", "label")].value_set) == {-1, 0, 1}
    assert by_kind[("expect_column_value_lengths_to_be_between", "text")].min_value == 1


def test_required_false_drops_the_not_null_expectation():
    schema = Schema(dataset="d", columns={"x": {"required": False}, "y": {}})
    kinds = [(e.expectation_type, e.column) for e in _suite(schema).expectations if hasattr(e, "column")]
    assert ("expect_column_values_to_not_be_null", "x") not in kinds
    assert ("expect_column_values_to_not_be_null", "y") in kinds


def test_only_max_gives_an_open_lower_bound():
    schema = Schema(dataset="d", columns={"x": {"type": "float", "max": 2.0}})
    ok, _, failed, _ = check(pd.DataFrame({"x": [-100.0, 2.0]}), schema)
    assert ok, failed
    ok, _, failed, _ = check(pd.DataFrame({"x": [2.5]}), schema)
    assert not ok and failed[0]["expectation"] == "expect_column_values_to_be_between"


def test_to_suite_needs_no_data_context():
    import subprocess
    import sys

    code = (
        "from mlsys.validation.schema import Schema\n"
        "suite = Schema.load('comments_labeled').to_suite()\n"
        "print(len(suite.expectations))\n"
    )
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "DataContextRequiredError" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stdout.strip() == "26"


def test_declared_type_is_enforced():
    schema = Schema(dataset="d", columns={"id": {"type": "string"}, "n": {"type": "int"}}, min_rows=1)
    ok, _, failed, _ = check(pd.DataFrame({"id": [1, 2, 3], "n": [0.5, 1.5, 2.5]}), schema)
    assert not ok
    assert {f["column"] for f in failed} == {"id", "n"}


def test_format_and_version_mismatches_are_spec_errors(tmp_path):
    with pytest.raises(SpecError, match="has format 2, but this mlsys reads format 1"):
        Schema.load(_write(tmp_path, "format: 2\ndataset: d\ncolumns: {}\n"))
    with pytest.raises(SpecError, match=r"version 0 must be a whole number >= 1"):
        Schema.load(_write(tmp_path, "dataset: d\nversion: 0\ncolumns: {}\n"))
    with pytest.raises(SpecError, match=r"version 'two' must be"):
        Schema.load(_write(tmp_path, "dataset: d\nversion: two\ncolumns: {}\n"))
    with pytest.raises(SpecError, match="not valid YAML"):
        Schema.load(_write(tmp_path, "dataset: d\ncolumns: {x: [\n"))
    with pytest.raises(SpecError, match=r"unknown top-level keys \['colums'\]"):
        Schema.load(_write(tmp_path, "dataset: d\ncolums: {}\n"))
    with pytest.raises(SpecError, match=r"label 'y' is not one of its columns"):
        Schema.load(_write(tmp_path, "dataset: d\nlabel: y\ncolumns: {x: {type: int}}\n"))
    with pytest.raises(SpecError, match=r"drift=2 must be a number between 0 and 1"):
        Schema.load(_write(tmp_path, "dataset: d\ncolumns: {x: {type: int, drift: 2}}\n"))


def test_serving_suite_leaves_out_the_label_and_presence_uses_mostly():
    schema = Schema(dataset="d", label="y", columns={"x": {"type": "float", "required": False, "min_presence": 0.8},
                                                      "y": {"type": "int"}})
    train = [(e.expectation_type, getattr(e, "column", None)) for e in _suite(schema).expectations]
    serve = [(e.expectation_type, getattr(e, "column", None)) for e in schema.to_suite("serving").expectations]
    assert ("expect_column_to_exist", "y") in train and not [c for _, c in serve if c == "y"]
    (nn,) = [e for e in schema.to_suite("serving").expectations if e.expectation_type == "expect_column_values_to_not_be_null"]
    assert nn.mostly == 0.8
    with pytest.raises(SpecError, match="environment 'prod' is not one of"):
        schema.to_suite("prod")


def test_int_column_with_missing_values_passes_the_type_rule():
    schema = Schema(dataset="d", columns={"x": {"type": "int", "required": False}})
    ok, _, failed, _ = check(pd.DataFrame({"x": [1.0, None, 3.0]}), schema)
    assert ok, failed
    ok, _, failed, _ = check(pd.DataFrame({"x": [1.5, None, 3.0]}), schema)
    assert not ok and failed[0]["expectation"] == "expect_column_values_to_be_in_type_list"
