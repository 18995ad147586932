"""The three protocols: every accepted form reads the same texts; refusals name the field; answers have each shape."""

from __future__ import annotations

import json

import pytest

from mlsys.serving.online.protocol import answer, decode, error
from mlsys.serving.online.request import BadRequest

TEXTS = ["free iphone", "great song"]


def _decode(body, v2: bool = False):
    return decode(json.dumps(body).encode(), max_bytes=10_000, max_records=3, max_text_chars=50, v2=v2)


@pytest.mark.parametrize("body", [
    {"dataframe_records": [{"text": "free iphone"}, {"text": "great song", "other": 1}]},
    {"dataframe_split": {"columns": ["id", "text"], "data": [[1, "free iphone"], [2, "great song"]], "index": [0, 1]}},
    {"instances": ["free iphone", "great song"]},
    {"instances": [{"text": "free iphone"}, {"text": "great song"}]},
    {"instances": {"text": ["free iphone", "great song"]}},
    {"inputs": {"text": ["free iphone", "great song"]}},
    {"inputs": [{"text": "free iphone"}, {"text": "great song"}], "params": {"ignored": True}},
    {"inputs": ["free iphone", "great song"]},
])
def test_every_mlflow_form_reads_the_texts(body):
    records = _decode(body)
    assert records.texts == TEXTS and records.protocol == "mlflow" and not records.single


def test_one_text_under_inputs_and_our_own_bodies_stay_ours():
    assert _decode({"inputs": {"text": "free iphone"}}).texts == ["free iphone"]
    ours = _decode({"text": "free iphone", "id": 7})
    assert (ours.protocol, ours.single, ours.ids) == ("mlsys", True, [7])
    assert _decode([{"text": t} for t in TEXTS]).protocol == "mlsys"


@pytest.mark.parametrize("body,status,field", [
    ({"dataframe_records": []}, 422, "dataframe_records"),
    ({"dataframe_records": [{"txt": "a"}]}, 422, "dataframe_records[0].text"),
    ({"dataframe_records": [{"text": 5}]}, 422, "dataframe_records[0].text"),
    ({"dataframe_records": [{"text": "x" * 51}]}, 413, "dataframe_records[0].text"),
    ({"dataframe_records": [{"text": "a"}] * 4}, 413, "dataframe_records"),
    ({"dataframe_records": 3}, 422, "dataframe_records"),
    ({"dataframe_split": {"columns": ["a"], "data": [["x"]]}}, 422, "dataframe_split.columns"),
    ({"dataframe_split": {"columns": ["text"], "data": [["x", "y"]]}}, 422, "dataframe_split.data[0]"),
    ({"dataframe_split": {"columns": ["text"], "data": [[None]]}}, 422, "dataframe_split.data[0][0]"),
    ({"inputs": {"txt": ["a"]}}, 422, "inputs.text"),
    ({"inputs": ["a", 3]}, 422, "inputs[1]"),
    ({"inputs": 5}, 422, "inputs"),
    ({"inputs": ["a"], "instances": ["b"]}, 422, "body"),
    ({"inputs": ["a"], "params": 3}, 422, "params"),
])
def test_mlflow_refusals_name_the_field_and_take_mlflows_error_shape(body, status, field):
    with pytest.raises(BadRequest) as err:
        _decode(body)
    assert (err.value.status, err.value.field, err.value.protocol) == (status, field, "mlflow")
    shaped = error(err.value.protocol, err.value.status, err.value.to_json())
    assert shaped["error_code"] and shaped["message"] == shaped["error"] and shaped["field"] == field


def _v2(**changes):
    tensor = {"name": "text", "shape": [2], "datatype": "BYTES", "data": TEXTS}
    return {"id": "r1", "inputs": [{**tensor, **changes}]}


def test_v2_reads_flat_and_row_major_data_and_keeps_the_id():
    records = _decode(_v2(), v2=True)
    assert (records.texts, records.request_id, records.protocol) == (TEXTS, "r1", "v2")
    assert _decode(_v2(shape=[2, 1], data=[[t] for t in TEXTS]), v2=True).texts == TEXTS


@pytest.mark.parametrize("body,field", [
    (_v2(shape=[3]), "inputs[0].shape"),
    (_v2(datatype="FP32"), "inputs[0].datatype"),
    (_v2(name="other"), "inputs"),
    (_v2(data=["a", 5]), "inputs[0].data[1]"),
    ({"inputs": "text"}, "inputs"),
    ({**_v2(), "outputs": [{"name": "logits"}]}, "outputs"),
    ({**_v2(), "id": 5}, "id"),
])
def test_v2_refusals_name_the_field(body, field):
    with pytest.raises(BadRequest) as err:
        _decode(body, v2=True)
    assert (err.value.status, err.value.field) == (422, field)


RESULTS = [(1, (0.25, 0.75)), (0, (0.5, 0.5))]


def test_answers_take_each_protocols_shape():
    ours = answer(_decode([{"text": TEXTS[0], "id": "a"}, {"text": TEXTS[1]}]), "m/3", RESULTS)
    assert ours == {"predictions": [{"prediction": 1, "probabilities": (0.25, 0.75), "id": "a"},
                                    {"prediction": 0, "probabilities": (0.5, 0.5)}], "model_version": "m/3"}
    single = answer(_decode({"text": TEXTS[0]}), "m/3", RESULTS[:1])
    assert single == {"prediction": 1, "probabilities": (0.25, 0.75), "model_version": "m/3"}
    mlflow = answer(_decode({"inputs": TEXTS}), "m/3", RESULTS)
    assert mlflow == {"predictions": [{"prediction": 1, "proba_0": 0.25, "proba_1": 0.75},
                                      {"prediction": 0, "proba_0": 0.5, "proba_1": 0.5}]}
    v2 = answer(_decode(_v2(), v2=True), "m/3", RESULTS)
    assert v2 == {"model_name": "m", "model_version": "3", "id": "r1", "outputs": [
        {"name": "prediction", "shape": [2], "datatype": "INT64", "data": [1, 0]},
        {"name": "probabilities", "shape": [2, 2], "datatype": "FP32", "data": [0.25, 0.75, 0.5, 0.5]}]}
    only = answer(_decode({**_v2(), "outputs": [{"name": "probabilities"}]}, v2=True), "m/3", RESULTS)
    assert [o["name"] for o in only["outputs"]] == ["probabilities"]
