"""``mlsys serve``: the online server (FastAPI on uvicorn) for the registered champion.

    POST /predict  {"text": ...} or [{"text": ...}, ...]  -> prediction(s), probabilities, model version
    GET  /health   alive (200 while the process runs)
    GET  /ready    200 once a model is loaded, else 503
    GET  /metrics  Prometheus text: latency histogram, batch sizes, queue depth, batch limit, cache, model version
    POST /reload   check the alias now (the promotion task's hook); 500 if the new version fails to load

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

from mlsys.serving.online.batcher import AdaptiveBatcher, BatcherConfig, Overloaded
from mlsys.serving.online.cache import LRUCache
from mlsys.serving.online.metrics import LATENCY_BUCKETS, SIZE_BUCKETS, Counter, Gauge, Histogram, Registry
from mlsys.serving.online.model_holder import ModelHolder
from mlsys.serving.online.request import BadRequest, parse
from mlsys.datasets import CHAMPION
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

    def __post_init__(self):
        require(0 < self.port < 65536, "ServeConfig", "port", self.port, "use a TCP port in 1..65535")
        require(self.poll_s > 0, "ServeConfig", "poll_s", self.poll_s, "use a positive number of seconds")
        require(bool(self.alias), "ServeConfig", "alias", self.alias, "name an alias (champion) or a version number")
        for name in ("max_body_bytes", "max_records", "max_text_chars"):
            require(getattr(self, name) >= 1, "ServeConfig", name, getattr(self, name), "use at least 1")
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
        length = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-length"), None)
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
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


def create_app(config: ServeConfig, holder: ModelHolder | None = None):
    """The FastAPI app; ``holder`` defaults to one that polls ``config.alias`` in the MLflow registry."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request

    from mlsys.settings import settings

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

        status, headers, body = await predict_body(request.headers.get("content-length"), await request.body())
        return Response(body, status_code=status, headers=headers, media_type="application/json")

    app.state.predict_body = predict_body

    @app.get("/health")
    async def health():
        return _json({"status": "ok"})

    @app.get("/ready")
    async def ready():
        label = holder.label
        return _json({"ready": label is not None, "model_version": label}, 200 if label else 503)

    @app.post("/reload")
    async def reload():
        import asyncio

        result = await asyncio.get_running_loop().run_in_executor(None, holder.refresh)
        body = {"model_version": result.version, "changed": result.changed, "error": result.error}
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


def serve(config: ServeConfig) -> int:
    import uvicorn

    from mlsys.tracking import tracker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tracker.configure()
    app = PredictFastPath(create_app(config), config.max_body_bytes)
    uvicorn.run(app, host=config.host, port=config.port, http="httptools", loop="uvloop",
                access_log=False, log_level="warning", timeout_keep_alive=30)
    return 0
