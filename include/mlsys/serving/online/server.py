"""``mlsys serve``: the online server (FastAPI on uvicorn) for the registered champion.

    POST /predict  {"text": ...} or [{"text": ...}, ...]  -> prediction(s), probabilities, model version
    GET  /health   alive (200 while the process runs)
    GET  /ready    200 once a model is loaded, else 503
    GET  /metrics  Prometheus text: latency histogram, batch sizes, queue depth, batch limit, cache, model version
    POST /reload   check the alias now (the promotion task's hook); 500 if the new version fails to load

POST /reload needs ``Authorization: Bearer $MLSYS_SERVE_TOKEN`` (401; 403 when the
server has no token) and runs at most once per ``--reload-interval-s`` (429 +
Retry-After); /predict needs the token too under ``--predict-auth``. See guard.py.

A request: parse and check (4xx naming the field, never reaching the model) ->
LRU cache -> adaptive batcher (503 + Retry-After when it would miss the SLO) ->
one model thread scores the batch.

Every error is a JSON body ``{"error": ...}`` with a true status, and
``mlsys_requests_total`` counts /predict under that status: a body the JSON
parser cannot read (a nesting bomb too) 400; a refused field 413 or 422; no
model loaded 503 + Retry-After; an unexpected failure in the model or the
server 500, logged with its traceback; unknown paths 404, wrong methods 405.
"""


import asyncio
import json  # no "from __future__ import annotations": FastAPI reads the handlers' annotations at runtime
import logging
import time
from dataclasses import dataclass

from mlsys.datasets import CHAMPION
from mlsys.serving.online.batcher import AdaptiveBatcher, BatcherConfig, Overloaded
from mlsys.serving.online.cache import LRUCache
from mlsys.serving.online.guard import BearerAuth, Denied, ReloadThrottle, predict_auth_from_env
from mlsys.serving.online.metrics import LATENCY_BUCKETS, SIZE_BUCKETS, Counter, Gauge, Histogram, Registry
from mlsys.serving.online.model_holder import ModelHolder
from mlsys.serving.online.request import BadRequest, parse
from mlsys.spec import require

log = logging.getLogger("mlsys.serve")


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    model_name: str = ""  # default $MLSYS_MODEL_NAME
    alias: str = CHAMPION  # an alias, or a version number to pin one
    poll_s: float = 10.0
    slo_ms: float = 50.0
    max_batch: int = 512
    max_queue: int = 4096
    cache_size: int = 100_000
    max_body_bytes: int = 1 << 20
    max_records: int = 1000
    max_text_chars: int = 20_000
    predict_auth: bool | None = None  # /predict needs the bearer token too; default $MLSYS_SERVE_PREDICT_AUTH (false)
    reload_interval_s: float = 5.0  # at most one /reload registry check per interval (0: only one at a time)

    def __post_init__(self):
        require(0 < self.port < 65536, "ServeConfig", "port", self.port, "use a TCP port in 1..65535")
        require(self.poll_s > 0, "ServeConfig", "poll_s", self.poll_s, "use a positive number of seconds")
        require(bool(self.alias), "ServeConfig", "alias", self.alias, "name an alias (champion) or a version number")
        for name in ("max_body_bytes", "max_records", "max_text_chars"):
            require(getattr(self, name) >= 1, "ServeConfig", name, getattr(self, name), "use at least 1")
        require(self.reload_interval_s >= 0, "ServeConfig", "reload_interval_s", self.reload_interval_s,
                "use 0 (reloads only one at a time) or more seconds")
        require(self.cache_size >= 0, "ServeConfig", "cache_size", self.cache_size, "use 0 (off) or more entries")
        self.batcher()  # validates slo_ms, max_batch, max_queue

    def batcher(self) -> BatcherConfig:
        return BatcherConfig(slo_ms=self.slo_ms, max_batch=self.max_batch, max_queue=self.max_queue,
                             initial_batch=min(32, self.max_batch))


class Metrics:
    def __init__(self):
        self.registry = r = Registry()
        self.latency = r.add(Histogram("mlsys_request_latency_seconds", "End-to-end /predict latency.", LATENCY_BUCKETS))
        self.batch_size = r.add(Histogram("mlsys_batch_size_records", "Records per model batch.", SIZE_BUCKETS))
        self.batch_seconds = r.add(Histogram("mlsys_batch_compute_seconds", "Model time per batch.", LATENCY_BUCKETS))
        self.requests = r.add(Counter("mlsys_requests_total", "/predict requests by HTTP status."))
        self.queue_depth = r.add(Gauge("mlsys_queue_depth_records", "Records waiting for the model."))
        self.batch_limit = r.add(Gauge("mlsys_batch_limit_records", "The AIMD batch size limit now."))
        self.cache_hits = r.add(Gauge("mlsys_cache_hits_total", "Prediction cache hits."))
        self.cache_misses = r.add(Gauge("mlsys_cache_misses_total", "Prediction cache misses."))
        self.cache_hit_rate = r.add(Gauge("mlsys_cache_hit_rate", "Prediction cache hits / lookups."))
        self.model = r.add(Gauge("mlsys_model_info", "The model version serving now (value 1)."))
        self.reloads = r.add(Gauge("mlsys_model_reloads_total", "Model loads by result."))
        self.reload_requests = r.add(Counter("mlsys_reload_requests_total", "POST /reload by HTTP status."))


class NoModel(RuntimeError):
    """No model is loaded (yet): the request may be retried."""


NO_MODEL = {"error": "no model loaded yet; retry"}


def _internal(exc: BaseException, where: str) -> dict:
    log.error("%s failed", where, exc_info=exc)
    return {"error": f"internal error in {where}: {type(exc).__name__}: {exc}"[:500]}


def _dumps(data) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _json(data, status: int = 200, headers: dict | None = None):
    from starlette.responses import Response

    return Response(_dumps(data), status_code=status, headers=headers, media_type="application/json")


class PredictFastPath:
    """ASGI in front of the FastAPI app: POST /predict goes straight to ``predict_body``, the rest to FastAPI.

    Same validation, cache, batching and metrics as the FastAPI route; it skips only the framework's
    per-request routing and dependency machinery, which costs more than the model on small requests.
    """

    def __init__(self, app, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        length = authorization = None
        for k, v in scope["headers"]:
            if k == b"content-length":
                length = v.decode("latin-1")
            elif k == b"authorization":
                authorization = v
        denied = self.app.state.predict_denied(authorization)  # before reading a byte of the body
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
            status, headers, body = await self.app.state.predict_body(length, b"".join(chunks))
        except Exception as exc:  # noqa: BLE001 - predict_body answers every error itself; this is the last guard
            status, headers, body = 500, {}, _dumps(_internal(exc, "/predict"))
        await self._send(send, status, headers, body)

    @staticmethod
    async def _send(send, status: int, headers: dict[str, str], body: bytes) -> None:
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


def create_app(config: ServeConfig, holder: ModelHolder | None = None, auth: BearerAuth | None = None):
    """The FastAPI app; ``holder`` defaults to one that polls ``config.alias`` in the MLflow registry, ``auth`` to
    the token in ``$MLSYS_SERVE_TOKEN`` (or its ``_FILE``). A ValueError (SpecError) if the two do not fit."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request

    from mlsys.settings import settings

    auth = auth or BearerAuth.from_env()
    predict_auth = predict_auth_from_env() if config.predict_auth is None else config.predict_auth
    require(auth.configured or not predict_auth, "ServeConfig", "predict_auth", predict_auth,
            "/predict cannot need a token the server does not have: set MLSYS_SERVE_TOKEN (or MLSYS_SERVE_TOKEN_FILE), "
            "or pass --no-predict-auth")
    if not auth.configured:
        log.warning("no MLSYS_SERVE_TOKEN (or MLSYS_SERVE_TOKEN_FILE): POST /reload is closed (403) until the server "
                    "is restarted with one; the alias is still polled every %s s", config.poll_s)
    throttle = ReloadThrottle(config.reload_interval_s)
    holder = holder or ModelHolder(config.model_name or settings().model_name, config.alias, config.poll_s)
    metrics = Metrics()
    cache = LRUCache(config.cache_size)

    def score(texts: list[str]):
        scorer = holder.scorer  # one snapshot per batch: a swap never splits a batch
        if scorer is None:
            raise NoModel("no model loaded")
        scores = scorer.score_texts(texts)
        proba = scores.proba.tolist()
        return scorer.label, [(int(p), row) for p, row in zip(scores.prediction.tolist(), proba)]

    def on_batch(records: int, compute_s: float, latencies: list[float]) -> None:
        metrics.batch_size.observe(records)
        metrics.batch_seconds.observe(compute_s)

    batcher = AdaptiveBatcher(score, config.batcher(), on_batch=on_batch)

    @asynccontextmanager
    async def lifespan(app):
        import asyncio

        import torch

        torch.set_num_threads(1)  # batches are small: intra-op threads only add spin and contention
        batcher.start()
        if holder.scorer is None:
            await asyncio.get_running_loop().run_in_executor(None, holder.refresh)
        holder.start_polling()
        yield
        holder.stop()
        await batcher.stop()

    app = FastAPI(title="mlsys serve", lifespan=lifespan)
    app.state.holder, app.state.batcher, app.state.cache, app.state.metrics = holder, batcher, cache, metrics
    _json_errors(app)

    def predict_denied(authorization: bytes | str | None) -> tuple[int, dict[str, str], bytes] | None:
        """None when /predict may go on; else the refusal (status, headers, JSON bytes), counted under its status."""
        denied = auth.check(authorization) if predict_auth else None
        if denied is None:
            return None
        metrics.requests.inc(code=str(denied.status))
        return denied.status, denied.headers, _dumps(denied.body)

    async def predict_body(content_length: str | None, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """The whole /predict: (status, headers, JSON bytes). Shared by the FastAPI route and the fast path."""
        started = time.perf_counter()
        status, headers, out = 200, {}, None
        try:
            if content_length is not None and content_length.isdigit() and int(content_length) > config.max_body_bytes:
                raise BadRequest(413, "body", f"{content_length} bytes is over the limit of {config.max_body_bytes} "
                                              "bytes; send fewer records per request")
            records = parse(body, config.max_body_bytes, config.max_records, config.max_text_chars)
            label = holder.label
            if label is None:
                raise NoModel("no model loaded")
            results: list = [cache.get((label, t)) for t in records.texts]
            missing = [i for i, r in enumerate(results) if r is None]
            if missing:
                label, scored = await batcher.submit([records.texts[i] for i in missing])
                for i, r in zip(missing, scored):
                    results[i] = r
                    cache.put((label, records.texts[i]), r)
            answers = [{"prediction": p, "probabilities": proba} for p, proba in results]
            for answer, rid in zip(answers, records.ids):
                if rid is not None:
                    answer["id"] = rid
            out = {**answers[0], "model_version": label} if records.single else {"predictions": answers, "model_version": label}
            return status, headers, _dumps(out)
        except BadRequest as exc:
            status = exc.status
            return status, headers, _dumps(exc.to_json())
        except Overloaded as exc:
            status, headers = 503, {"Retry-After": str(exc.retry_after)}
            return status, headers, _dumps({"error": str(exc)})
        except NoModel:
            status, headers = 503, {"Retry-After": "1"}
            return status, headers, _dumps(NO_MODEL)
        except asyncio.CancelledError:
            status = 499  # the request was abandoned (shutdown); nothing was answered
            raise
        except Exception as exc:  # noqa: BLE001 - a model or server bug: a JSON 500, logged, counted as a 500
            status = 500
            return status, headers, _dumps(_internal(exc, "/predict"))
        finally:
            metrics.requests.inc(code=str(status))
            if status == 200:
                metrics.latency.observe(time.perf_counter() - started)

    @app.post("/predict")
    async def predict(request: Request):
        from starlette.responses import Response

        refused = predict_denied(request.headers.get("authorization"))
        status, headers, body = refused or await predict_body(request.headers.get("content-length"), await request.body())
        return Response(body, status_code=status, headers=headers, media_type="application/json")

    app.state.predict_body, app.state.predict_denied = predict_body, predict_denied

    @app.get("/health")
    async def health():
        return _json({"status": "ok"})

    @app.get("/ready")
    async def ready():
        label = holder.label
        return _json({"ready": label is not None, "model_version": label}, 200 if label else 503)

    @app.post("/reload")
    async def reload(request: Request):
        """Token first (401/403 before anything else), then the throttle (429), then the registry."""
        denied = auth.check(request.headers.get("authorization"))
        if denied is None and (wait := throttle.admit()) is not None:
            denied = Denied(429, {"error": f"/reload: the alias was checked less than {config.reload_interval_s:g} s ago "
                                           f"or is being checked now (at most one check per --reload-interval-s); "
                                           f"retry in {wait} s, or rely on the poll every {config.poll_s:g} s"},
                            {"Retry-After": str(wait)})
        if denied is not None:
            metrics.reload_requests.inc(code=str(denied.status))
            if denied.status != 429:
                log.warning("POST /reload refused (%d) from %s", denied.status,
                            request.client.host if request.client else "?")
            return _json(denied.body, denied.status, denied.headers)

        def check():
            try:
                return holder.refresh()
            finally:
                throttle.done()  # in the thread that ran the check: a request cancelled meanwhile keeps the slot

        result = await asyncio.get_running_loop().run_in_executor(None, check)
        body = {"model_version": result.version, "changed": result.changed, "error": result.error}
        metrics.reload_requests.inc(code="500" if result.error else "200")
        return _json(body, 500 if result.error else 200)

    @app.get("/metrics")
    async def prometheus():
        from starlette.responses import Response

        metrics.queue_depth.set(batcher.queued_records)
        metrics.batch_limit.set(batcher.limit)
        metrics.cache_hits.set(cache.hits)
        metrics.cache_misses.set(cache.misses)
        metrics.cache_hit_rate.set(cache.hit_rate)
        metrics.model.reset()
        if holder.label:
            metrics.model.set(1, version=holder.label)
        for result, n in holder.reloads.items():
            metrics.reloads.set(n, result=result)
        return Response(metrics.registry.render(), media_type="text/plain; version=0.0.4")

    return app


def _json_errors(app) -> None:
    """The other routes' errors as JSON too: 404, 405 and an unexpected exception (500)."""
    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return _json({"error": f"{request.method} {request.url.path}: {exc.detail}"}, exc.status_code, exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        return _json(_internal(exc, request.url.path), 500)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(config: ServeConfig, app=None) -> int:
    """Run ``app`` (default ``create_app(config)``) on uvicorn until a signal stops it."""
    import uvicorn

    from mlsys.tracking import tracker

    configure_logging()
    app = PredictFastPath(app or create_app(config), config.max_body_bytes)
    tracker.configure()
    uvicorn.run(app, host=config.host, port=config.port, http="httptools", loop="uvloop",
                access_log=False, log_level="warning", timeout_keep_alive=30)
    return 0
