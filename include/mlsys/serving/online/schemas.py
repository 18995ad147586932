"""The OpenAPI document's bodies: every request and answer of ``mlsys serve`` as a pydantic model, shown by /docs.

The server never validates a request through these models (request.py and
protocol.py read the bytes, with their own limits and 4xx messages that name the
field); they describe what those accept and what the server answers, and a test
runs schemathesis against the document to hold the two together.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

Text = str  # the field's limits are the server's flags (--max-text-chars): they vary, so the document states none


class Record(BaseModel):
    text: Text = Field(description="the text to classify (UTF-8)")
    id: Any = Field(None, description="anything JSON, echoed in the answer")


class TextRow(BaseModel):
    """A DataFrame row: its "text" column is read, other columns are ignored."""

    model_config = ConfigDict(extra="allow")
    text: Text


class TextColumn(BaseModel):
    """A DataFrame by column: its "text" column (a list, or one text) is read, other columns are ignored."""

    model_config = ConfigDict(extra="allow")
    text: Union[Annotated[list[Text], Field(min_length=1)], Text]


class DataframeRecords(BaseModel):
    dataframe_records: list[TextRow] = Field(description='records holding a "text" column', min_length=1)
    params: dict[str, Any] | None = None


class Split(BaseModel):
    columns: list[str] = Field(description='column names; one is "text"',
                               json_schema_extra={"contains": {"const": "text"}})
    data: list[list[Any]] = Field(min_length=1)
    index: list[Any] | None = None


class DataframeSplit(BaseModel):
    dataframe_split: Split
    params: dict[str, Any] | None = None


Texts = Annotated[list[Text], Field(min_length=1)]
Tensor = Union[Texts, Annotated[list[TextRow], Field(min_length=1)], TextColumn]


class Instances(BaseModel):
    instances: Tensor = Field(description='texts, records {"text": ...}, or {"text": [...]}')
    params: dict[str, Any] | None = None


class Inputs(BaseModel):
    inputs: Tensor = Field(description='texts, records {"text": ...}, or {"text": [...]}')
    params: dict[str, Any] | None = None


PredictRequest = Union[Record, list[Record], DataframeRecords, DataframeSplit, Instances, Inputs]
MlflowRequest = Union[DataframeRecords, DataframeSplit, Instances, Inputs]


class Prediction(BaseModel):
    prediction: int = Field(description="the predicted class")
    probabilities: list[float] = Field(description="one per class")
    id: Any = Field(None, description="the record's id, when it had one")


class SingleAnswer(Prediction):
    model_version: str = Field(description='"name/version" of the model that answered')


class ListAnswer(BaseModel):
    predictions: list[Prediction]
    model_version: str


class MlflowRow(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": {"type": "number"}})
    prediction: int
    proba_0: float
    proba_1: float


class MlflowAnswer(BaseModel):
    """What ``mlflow models serve`` answers for the logged pyfunc: one row per text, proba_<class> per class."""

    predictions: list[MlflowRow]


PredictAnswer = Union[SingleAnswer, ListAnswer, MlflowAnswer]


class Error(BaseModel):
    error: str = Field(description="what was wrong, naming the field, and the fix")
    field: str | None = Field(None, description='the offending field, e.g. "[3].text" or "Authorization"')


class MlflowError(Error):
    error_code: str = Field(description="MLflow's error code, e.g. BAD_REQUEST")
    message: str


class InputTensor(BaseModel):
    name: Literal["text"]
    shape: list[int] = Field(description="[N] or [N, 1] for N texts", min_length=1, max_length=2)
    datatype: Literal["BYTES"]
    data: Union[Texts, Annotated[list[Annotated[list[Text], Field(min_length=1, max_length=1)]], Field(min_length=1)]]
    parameters: dict[str, Any] | None = None


class RequestedOutput(BaseModel):
    name: Literal["prediction", "probabilities"]
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """Open Inference Protocol (KServe v2) request."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InputTensor] = Field(min_length=1, max_length=1)
    outputs: list[RequestedOutput] | None = None


class OutputTensor(BaseModel):
    name: Literal["prediction", "probabilities"]
    shape: list[int]
    datatype: Literal["INT64", "FP32"]
    data: list[float]


class InferAnswer(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OutputTensor]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class Status(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool
    model_version: str | None


class Live(BaseModel):
    live: bool


class ReloadAnswer(BaseModel):
    model_version: str | None = Field(description="the version serving after the check")
    changed: bool
    error: str | None = Field(description="why the alias's version failed to load (the old one keeps serving)")


def json_body(model: Any, description: str = "") -> dict:
    """An OpenAPI media-type object for ``model`` (a model or a Union), its definitions put in ``COMPONENTS``."""
    schema = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
    COMPONENTS.update(schema.pop("$defs", {}))
    if isinstance(model, type) and issubclass(model, BaseModel):  # a named model: a component, as FastAPI does
        COMPONENTS[model.__name__] = schema
        schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    out = {"content": {"application/json": {"schema": schema}}}
    return {**out, "description": description} if description else out


COMPONENTS: dict[str, dict] = {}


def responses(ok: Any, ok_text: str, errors: dict[int, str], error_model: Any = Error) -> dict:
    """FastAPI's ``responses=``: the 200 body and each refusal's, all described."""
    out = {200: {"model": ok, "description": ok_text}} if ok is not None else {}
    out.update({code: {"model": error_model, "description": text} for code, text in errors.items()})
    return out


def request_body(model: Any, description: str) -> dict:
    """FastAPI's ``openapi_extra=`` declaring a JSON request body the route reads itself."""
    return {"requestBody": {"required": True, **json_body(model, description)}}


def bearer(required: bool) -> dict:
    """``openapi_extra=`` part: the route takes ``Authorization: Bearer`` (``required``: it needs it)."""
    return {"security": [{BEARER: []}] if required else [{BEARER: []}, {}]}


BEARER = "bearer"


def install(app) -> None:
    """Make ``app.openapi()`` carry the definitions the request bodies refer to, and the bearer scheme."""
    make = app.openapi

    def openapi():
        if app.openapi_schema is None:
            schema = make()
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(COMPONENTS)
            components["securitySchemes"] = {BEARER: {"type": "http", "scheme": "bearer", "description":
                                                      "the server's $MLSYS_SERVE_TOKEN"}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
