"""The prediction routes' fast path, in front of FastAPI, and the JSON helpers every route answers with.

    POST /predict, /invocations, /v2/models/{name}/infer --> PredictFastPath --> app.state.predict_body
    anything else ------------------------------------------------------------> FastAPI (routes, /docs, errors)

Same validation, cache, batching and metrics as the FastAPI routes (which call the
same ``predict_body``); it skips only the framework's per-request routing and
dependency machinery, which costs more than the model on small requests.
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger("mlsys.serve")

V2_PREFIX, V2_SUFFIX = "/v2/models/", "/infer"


def route_of(path: str) -> tuple[str, str] | None:
    """(protocol, model name) of a prediction path; None for any other path."""
    if path == "/predict":
        return "mlsys", ""
    if path == "/invocations":
        return "mlflow", ""
    if path.startswith(V2_PREFIX) and path.endswith(V2_SUFFIX):
        name = path[len(V2_PREFIX):-len(V2_SUFFIX)]
        if name and "/" not in name:
            return "v2", name
    return None


def dumps(data) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def json_response(data, status: int = 200, headers: dict | None = None):
    from starlette.responses import Response

    return Response(dumps(data), status_code=status, headers=headers, media_type="application/json")


def internal(exc: BaseException, where: str) -> dict:
    log.error("%s failed", where, exc_info=exc)
    return {"error": f"internal error in {where}: {type(exc).__name__}: {exc}"[:500]}


class PredictFastPath:
    """ASGI: a POST to a prediction path goes straight to ``app.state.predict_body``, the rest to ``app``."""

    def __init__(self, app, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope, receive, send):
        route = route_of(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            return await self.app(scope, receive, send)
        length = authorization = None
        for k, v in scope["headers"]:
            if k == b"content-length":
                length = v.decode("latin-1")
            elif k == b"authorization":
                authorization = v
        state = self.app.state
        denied = state.predict_denied(authorization)  # before reading a byte of the body
        if denied is not None:
            return await self._send(send, *denied)
        chunks, size, more = [], 0, True
        while more and size <= self.max_body_bytes:
            message = await receive()
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
        try:
            status, headers, body = await state.predict_body(length, b"".join(chunks), *route)
        except Exception as exc:  # noqa: BLE001 - predict_body answers every error itself; this is the last guard
            status, headers, body = 500, {}, dumps(internal(exc, scope["path"]))
        await self._send(send, status, headers, body)

    @staticmethod
    async def _send(send, status: int, headers: dict[str, str], body: bytes) -> None:
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


def json_errors(app) -> None:
    """The other routes' errors as JSON too: 404, 405 and an unexpected exception (500)."""
    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return json_response({"error": f"{request.method} {request.url.path}: {exc.detail}"}, exc.status_code, exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        return json_response(internal(exc, request.url.path), 500)
