"""Parse and check a /predict body before it can reach the model.

Accepted bodies: one record ``{"text": "...", "id": ...}`` or a list of them.
Every refusal is a ``BadRequest`` with an HTTP status and a message that
names the field: ``body`` (size, JSON syntax or nesting, shape), ``records``
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

    def to_json(self) -> dict[str, str]:
        return {"error": str(self), "field": self.field}


@dataclass(frozen=True)
class Records:
    texts: list[str]
    ids: list[Any]
    single: bool


def parse(body: bytes, max_bytes: int, max_records: int, max_text_chars: int) -> Records:
    if len(body) > max_bytes:
        raise BadRequest(413, "body", f"{len(body)} bytes is over the limit of {max_bytes} bytes; send fewer records per request")
    if not body:
        raise BadRequest(400, "body", 'empty; send a JSON record {"text": "..."} or a list of them')
    try:
        data = json.loads(body)
    except RecursionError:  # a nesting bomb, [[[[...]]]]: the parser gives up before the stack does
        raise BadRequest(400, "body", "JSON nested too deeply to parse; send a JSON record or a list of records") from None
    except ValueError as exc:  # bad syntax or UTF-8, an integer past Python's 4300 digits, ...
        raise BadRequest(400, "body", f"malformed JSON ({exc}); send a JSON record or a list of records") from None
    if isinstance(data, dict):
        records, single = [data], True
    elif isinstance(data, list):
        records, single = data, False
        if not records:
            raise BadRequest(422, "records", "the list is empty; send at least one record")
        if len(records) > max_records:
            raise BadRequest(413, "records", f"{len(records)} records is over the limit of {max_records}; split the request")
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
        if not isinstance(text, str):
            raise BadRequest(422, f"{where}text", f"expected a string, got {type(text).__name__}")
        if len(text) > max_text_chars:
            raise BadRequest(413, f"{where}text", f"{len(text)} characters is over the limit of {max_text_chars}")
        if not text.isascii() and not _encodable(text):
            raise BadRequest(422, f"{where}text", "holds a lone surrogate escape (\\ud800-\\udfff); send valid Unicode")
        rid = record.get("id")
        if isinstance(rid, (dict, list)) and _depth(rid) > MAX_ID_DEPTH:
            raise BadRequest(422, f"{where}id", f"nested deeper than {MAX_ID_DEPTH} levels; use a string or a number")
        texts.append(text)
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
