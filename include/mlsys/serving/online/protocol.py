"""The request and answer shapes the server speaks, read into ``Records`` and written back from scores.

    mlsys   POST /predict
            request  {"text", "id"?} or [{"text", "id"?}, ...]
            answer   {"prediction", "probabilities", "id"?, "model_version"}, or {"predictions": [...], "model_version"}
    mlflow  POST /predict, /invocations
            request  {"dataframe_records" | "dataframe_split" | "instances" | "inputs": ..., "params"?}
            answer   {"predictions": [{"prediction", "proba_0", "proba_1", ...}, ...]}
    v2      POST /v2/models/{name}/infer (the Open Inference Protocol)
            request  {"id"?, "inputs": [{"name": "text", "shape": [N], "datatype": "BYTES", "data": [...]}], "outputs"?}
            answer   {"model_name", "model_version", "id"?, "outputs": [prediction INT64 [N],
                                                                    probabilities FP32 [N, C]]}

A body is MLflow's when it is a JSON object holding one of MLflow's four keys; its answer
is what ``mlflow models serve`` answers for the logged pyfunc (model/pyfunc.py's columns),
so a client of ``mlflow models serve`` works unchanged. MLflow's ``instances`` and ``inputs``
take the forms its server takes for a one-column model: records, strings, or ``{"text": [...]}``.
Texts must be strings (MLflow would cast a number to text; a 422 here, as on /predict).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from mlsys.serving.online.request import BadRequest, Records, check_count, check_text, load_json, records_of

MLFLOW_KEYS = frozenset({"dataframe_records", "dataframe_split", "instances", "inputs"})
COLUMN = "text"  # the logged model's one input column (its MLflow signature), and the v2 input's name
V2_OUTPUTS = ("prediction", "probabilities")
_MLFLOW_ERROR_CODES = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "ENDPOINT_NOT_FOUND",
                       413: "INVALID_PARAMETER_VALUE", 422: "INVALID_PARAMETER_VALUE", 503: "TEMPORARILY_UNAVAILABLE"}


def decode(body: bytes, max_bytes: int, max_records: int, max_text_chars: int, v2: bool = False) -> Records:
    """The texts of a request in any protocol, checked; a BadRequest naming the field otherwise."""
    data = load_json(body, max_bytes)
    if v2:
        return _v2(data, max_records, max_text_chars)
    if isinstance(data, dict) and not MLFLOW_KEYS.isdisjoint(data):
        try:
            return _mlflow(data, max_records, max_text_chars)
        except BadRequest as exc:
            exc.protocol = "mlflow"
            raise
    return records_of(data, max_records, max_text_chars)


def _mlflow(data: dict, max_records: int, max_text_chars: int) -> Records:
    keys = sorted(MLFLOW_KEYS.intersection(data))
    if len(keys) != 1:
        raise BadRequest(422, "body", f"holds {keys}: send exactly one of {sorted(MLFLOW_KEYS)}")
    key = keys[0]
    if data.get("params") is not None and not isinstance(data["params"], dict):
        raise BadRequest(422, "params", f"expected an object, got {type(data['params']).__name__}")  # ignored otherwise
    values, fields = _MLFLOW[key](data[key], key)
    check_count(len(values), key, max_records)
    texts = [check_text(v, f, max_text_chars) for v, f in zip(values, fields)]
    return Records(texts=texts, ids=[None] * len(texts), single=False, protocol="mlflow")


def _records(value: Any, key: str) -> tuple[list, Sequence[str]]:
    """[{"text": ...}, ...] -> the texts and their field names."""
    if not isinstance(value, list):
        raise BadRequest(422, key, f'expected a list of records {{"{COLUMN}": ...}}, got {type(value).__name__}')
    for i, row in enumerate(value):
        if not isinstance(row, dict):
            raise BadRequest(422, f"{key}[{i}]", f'expected a record {{"{COLUMN}": ...}}, got {type(row).__name__}')
        if COLUMN not in row:
            raise BadRequest(422, f"{key}[{i}].{COLUMN}", f"missing; the model's input is the column '{COLUMN}' "
                                                          f"(fields given: {sorted(row)})")
    return [row[COLUMN] for row in value], _Fields(f"{key}[{{}}].{COLUMN}", len(value))


def _split(value: Any, key: str) -> tuple[list, Sequence[str]]:
    """{"columns": [...], "data": [[...], ...], "index"?} -> the 'text' column."""
    if not (isinstance(value, dict) and isinstance(value.get("columns"), list) and isinstance(value.get("data"), list)):
        raise BadRequest(422, key, 'expected {"columns": [...], "data": [[...], ...]}')
    columns = value["columns"]
    if COLUMN not in columns:
        raise BadRequest(422, f"{key}.columns", f"has no '{COLUMN}' column (given: {columns[:10]})")
    at = columns.index(COLUMN)
    for i, row in enumerate(value["data"]):
        if not isinstance(row, list) or len(row) != len(columns):
            raise BadRequest(422, f"{key}.data[{i}]", f"expected a list of {len(columns)} values, one per column")
    return [row[at] for row in value["data"]], _Fields(f"{key}.data[{{}}][{at}]", len(value["data"]))


def _tensor(value: Any, key: str) -> tuple[list, Sequence[str]]:
    """MLflow's tensor forms for one column: records, bare strings, or {"text": [...] or "..."}."""
    if isinstance(value, dict):
        if COLUMN not in value:
            raise BadRequest(422, f"{key}.{COLUMN}",
                             f"missing; the model's input is '{COLUMN}' (given: {sorted(value)[:10]})")
        column = value[COLUMN]
        if isinstance(column, list):
            return column, _Fields(f"{key}.{COLUMN}[{{}}]", len(column))
        return [column], [f"{key}.{COLUMN}"]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return _records(value, key)
    if isinstance(value, list):
        return value, _Fields(f"{key}[{{}}]", len(value))
    raise BadRequest(422, key, f'expected records, a list of texts or {{"{COLUMN}": [...]}}, '
                               f'got {type(value).__name__}')


class _Fields(Sequence[str]):
    """Field names made only when one is needed: "key[{}].text".format(i)."""

    def __init__(self, pattern: str, n: int):
        self.pattern, self.n = pattern, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return self.pattern.format(i)

    def __iter__(self):
        return (self.pattern.format(i) for i in range(self.n))


_MLFLOW: dict[str, Callable[[Any, str], tuple[list, Sequence[str]]]] = {
    "dataframe_records": _records, "dataframe_split": _split, "instances": _tensor, "inputs": _tensor}


def _v2(data: Any, max_records: int, max_text_chars: int) -> Records:
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), list):
        raise BadRequest(422, "inputs", f'expected {{"inputs": [{{"name": "{COLUMN}", "shape": [N], '
                                        f'"datatype": "BYTES", "data": [...]}}]}}')
    tensors = data["inputs"]
    if len(tensors) != 1 or not isinstance(tensors[0], dict) or tensors[0].get("name") != COLUMN:
        raise BadRequest(422, "inputs", f"expected one input tensor named '{COLUMN}', the model's only input")
    tensor = tensors[0]
    if tensor.get("datatype") != "BYTES":
        raise BadRequest(422, "inputs[0].datatype", f"{tensor.get('datatype')!r}: send \"BYTES\" (UTF-8 strings)")
    values = tensor.get("data")
    if not isinstance(values, list):
        raise BadRequest(422, "inputs[0].data", "expected a list of strings")
    if values and all(isinstance(v, list) and len(v) == 1 for v in values):
        values = [v[0] for v in values]  # row-major [N, 1]
    shape = tensor.get("shape")
    if shape not in ([len(values)], [len(values), 1]):
        raise BadRequest(422, "inputs[0].shape",
                         f"{shape!r} does not match {len(values)} strings; send [{len(values)}]")
    check_count(len(values), "inputs[0].data", max_records)
    texts = [check_text(v, f"inputs[0].data[{i}]", max_text_chars) for i, v in enumerate(values)]
    wanted = data.get("outputs") or []
    if not isinstance(wanted, list) or not all(isinstance(o, dict) and o.get("name") in V2_OUTPUTS for o in wanted):
        raise BadRequest(422, "outputs", f"ask for outputs by name, among {list(V2_OUTPUTS)}")
    rid = data.get("id")
    if rid is not None and not isinstance(rid, str):
        raise BadRequest(422, "id", f"expected a string, got {type(rid).__name__}")
    return Records(texts=texts, ids=[None] * len(texts), single=False, protocol="v2", request_id=rid,
                   outputs=tuple(o["name"] for o in wanted))


Result = tuple[int, Sequence[float]]  # (predicted class, probabilities)


def answer(records: Records, label: str, results: list[Result]) -> dict:
    """The 200 body for ``records``, in their protocol; ``label`` is the model's "name/version"."""
    return _ANSWERS[records.protocol](records, label, results)


def _mlsys_answer(records: Records, label: str, results: list[Result]) -> dict:
    answers = [{"prediction": p, "probabilities": proba} for p, proba in results]
    for one, rid in zip(answers, records.ids):
        if rid is not None:
            one["id"] = rid
    if records.single:
        return {**answers[0], "model_version": label}
    return {"predictions": answers, "model_version": label}


def _mlflow_answer(records: Records, label: str, results: list[Result]) -> dict:
    """As ``mlflow models serve`` writes the pyfunc's DataFrame: its records, under "predictions"."""
    return {"predictions": [{"prediction": p, **{f"proba_{c}": v for c, v in enumerate(proba)}}
                            for p, proba in results]}


def _v2_answer(records: Records, label: str, results: list[Result]) -> dict:
    name, _, version = label.rpartition("/")
    outputs = {
        "prediction": {"name": "prediction", "shape": [len(results)], "datatype": "INT64",
                       "data": [p for p, _ in results]},
        "probabilities": {"name": "probabilities", "shape": [len(results), len(results[0][1])], "datatype": "FP32",
                          "data": [v for _, proba in results for v in proba]},
    }
    out = {"model_name": name, "model_version": version,
           "outputs": [outputs[n] for n in (records.outputs or V2_OUTPUTS)]}
    if records.request_id is not None:
        out["id"] = records.request_id
    return out


_ANSWERS: dict[str, Callable[[Records, str, list[Result]], dict]] = {
    "mlsys": _mlsys_answer, "mlflow": _mlflow_answer, "v2": _v2_answer}


def error(protocol: str, status: int, body: dict) -> dict:
    """An error body in ``protocol``'s shape: ours ``{"error", "field"?}``; MLflow's adds error_code and message."""
    if protocol != "mlflow":
        return body
    return {"error_code": _MLFLOW_ERROR_CODES.get(status, "INTERNAL_ERROR"), "message": body.get("error", ""), **body}
