"""Parse and check a /predict body before it can reach the model.

Accepted bodies here: one record ``{"text": "...", "id": ...}`` or a list of them
(MLflow's scoring protocol and the Open Inference Protocol: protocol.py, which
reuses the checks below). Every refusal is a ``BadRequest`` with an HTTP status
and a message that names the field: ``body`` (size, JSON syntax or nesting, shape), ``records``
(count) or ``[i].text`` / ``[i].id`` (one record). Any body the JSON parser
cannot read, a nesting bomb ``[[[[...]]]]`` included, is a 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class BadRequest(ValueError):
    def __init__(self, status: int, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message
        self.protocol = "mlsys"  # the request's protocol, where known: its errors take that protocol's shape

    def to_json(self) -> dict[str, str]:
        return {"error": str(self), "field": self.field}


@dataclass(frozen=True)
class Records:
    texts: list[str]
    ids: list[Any]  # one per text (None: no id), echoed in the mlsys answer
    single: bool  # a bare record, answered by a bare answer
    protocol: str = "mlsys"  # the shape to answer in: mlsys, mlflow or v2 (protocol.py)
    request_id: Any = None  # the v2 request's "id", echoed
    outputs: tuple[str, ...] = ()  # the v2 outputs asked for (none: all)


def parse(body: bytes, max_bytes: int, max_records: int, max_text_chars: int) -> Records:
    """The mlsys body: one record ``{"text", "id"?}`` or a list of them (protocol.py reads MLflow's and v2's)."""
    return records_of(load_json(body, max_bytes), max_records, max_text_chars)


def load_json(body: bytes, max_bytes: int) -> Any:
    """The parsed body, or a BadRequest: 413 over ``max_bytes``, 400 empty, malformed or nested too deeply."""
    if len(body) > max_bytes:
        raise BadRequest(413, "body", f"{len(body)} bytes is over the limit of {max_bytes} bytes; send fewer records per request")
    if not body:
        raise BadRequest(400, "body", 'empty; send a JSON record {"text": "..."} or a list of them')
    try:
        return json.loads(body)
    except RecursionError:  # a nesting bomb, [[[[...]]]]: the parser gives up before the stack does
        raise BadRequest(400, "body", "JSON nested too deeply to parse; send a JSON record or a list of records") from None
    except ValueError as exc:  # bad syntax or UTF-8, an integer past Python's 4300 digits, ...
        raise BadRequest(400, "body", f"malformed JSON ({exc}); send a JSON record or a list of records") from None


def check_count(n: int, field: str, max_records: int) -> None:
    if n == 0:
        raise BadRequest(422, field, "the list is empty; send at least one record")
    if n > max_records:
        raise BadRequest(413, field, f"{n} records is over the limit of {max_records}; split the request")


def check_text(text: Any, field: str, max_text_chars: int) -> str:
    """``text`` if it is a string the model may read; else a BadRequest naming ``field``."""
    if not isinstance(text, str):
        raise BadRequest(422, field, f"expected a string, got {type(text).__name__}")
    if len(text) > max_text_chars:
        raise BadRequest(413, field, f"{len(text)} characters is over the limit of {max_text_chars}")
    if not text.isascii() and not _encodable(text):
        raise BadRequest(422, field, "holds a lone surrogate escape (\\ud800-\\udfff); send valid Unicode")
    return text


def records_of(data: Any, max_records: int, max_text_chars: int) -> Records:
    if isinstance(data, dict):
        records, single = [data], True
    elif isinstance(data, list):
        records, single = data, False
        check_count(len(records), "records", max_records)
    else:
        raise BadRequest(422, "body", f'expected a JSON object {{"text": ...}} or a list of them, got {type(data).__name__}')
    texts, ids = [], []
    for i, record in enumerate(records):
        where = "" if single else f"[{i}]."
        if not isinstance(record, dict):
            raise BadRequest(422, f"[{i}]", f'expected an object {{"text": ...}}, got {type(record).__name__}')
        text = record.get("text")
        if text is None:
            raise BadRequest(422, f"{where}text", f"missing; every record needs a 'text' string (fields given: {sorted(record)})")
        texts.append(check_text(text, f"{where}text", max_text_chars))
        rid = record.get("id")
        if isinstance(rid, (dict, list)) and _depth(rid) > MAX_ID_DEPTH:
            raise BadRequest(422, f"{where}id", f"nested deeper than {MAX_ID_DEPTH} levels; use a string or a number")
        ids.append(rid)
    return Records(texts=texts, ids=ids, single=single)


MAX_ID_DEPTH = 16  # an id is echoed back: a deep one would only cost the encoder


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0), without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level <= MAX_ID_DEPTH:  # past the limit the answer is already known
                todo.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest
