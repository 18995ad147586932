"""Request parsing: accepted shapes, and refusals that name the field."""

from __future__ import annotations

import json

import pytest

from mlsys.serving.online.request import BadRequest, parse


def _parse(body):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse(raw, max_bytes=1000, max_records=3, max_text_chars=50)


def test_single_record_and_list():
    one = _parse({"text": "hi", "id": 7})
    assert one.single and one.texts == ["hi"] and one.ids == [7]
    many = _parse([{"text": "a"}, {"text": "b", "id": "x"}])
    assert not many.single and many.texts == ["a", "b"] and many.ids == [None, "x"]


@pytest.mark.parametrize("body,status,field", [
    (b"{", 400, "body"), (b"\xff\xfe", 400, "body"), (b"x" * 1001, 413, "body"), (b"", 400, "body"),
    ({"text": 3}, 422, "text"), ({"id": 1}, 422, "text"), ([{"text": "a"}, {"t": "b"}], 422, "[1].text"),
    ([1], 422, "[0]"), ([{"text": "a"}] * 4, 413, "records"), ([], 422, "records"), (5, 422, "body"),
    ({"text": "x" * 51}, 413, "text"),
])
def test_refusals_name_the_field(body, status, field):
    with pytest.raises(BadRequest) as err:
        _parse(body)
    assert (err.value.status, err.value.field) == (status, field)
    assert str(err.value).startswith(f"{field}: ") and err.value.to_json()["field"] == field


@pytest.mark.parametrize("body,status,field,says", [
    (b"[" * 100_000, 400, "body", "nested too deeply"),  # RecursionError inside the JSON parser
    (b'{"a": ' * 50_000, 400, "body", "nested too deeply"),
    (b'{"text": "x", "id": ' + b"9" * 5000 + b"}", 400, "body", "malformed JSON"),  # ValueError, not JSONDecodeError
    (b'[{"text": "ok"}, {"text": "\\udfff"}]', 422, "[1].text", "lone surrogate"),
    (b'{"text": "x", "id": ' + b"[" * 17 + b"]" * 17 + b"}", 422, "id", "nested deeper than 16"),
])
def test_every_parse_failure_is_a_bad_request(body, status, field, says):
    with pytest.raises(BadRequest) as err:
        parse(body, max_bytes=1 << 20, max_records=3, max_text_chars=50)
    assert (err.value.status, err.value.field) == (status, field) and says in err.value.message


def test_plain_non_ascii_text_and_shallow_ids_pass():
    records = parse('[{"text": "très bien 👍", "id": {"a": [1, 2]}}]'.encode(), 1000, 3, 50)
    assert records.texts == ["très bien 👍"] and records.ids == [{"a": [1, 2]}]
