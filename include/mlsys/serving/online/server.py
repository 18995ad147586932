"""``mlsys serve``: the online server (FastAPI on uvicorn) for the registered champion.

    POST /predict                 mlsys's body {"text": ...} or [{"text": ...}, ...], or MLflow's scoring protocol
    POST /invocations             the same (the path `mlflow models serve` clients call)
    POST /v2/models/{name}/infer  the Open Inference Protocol (KServe v2); GET /v2/models/{name}[/ready], /v2/health/*
    GET  /health                  alive (200 while the process runs)
    GET  /ready, /ping            200 once a model is loaded, else 503
    GET  /metrics                 Prometheus text: latency, batch sizes, queue, batch limit, cache, GC pauses, model
    POST /reload                  check the alias now (the promotion task's hook); 500 if the new version fails to load
    GET  /docs, /openapi.json     every request and answer body (schemas.py)

POST /reload needs ``Authorization: Bearer $MLSYS_SERVE_TOKEN`` (401; 403 when the
server has no token) and runs at most once per ``--reload-interval-s`` (429 +
Retry-After); the prediction routes need the token too under ``--predict-auth``. See guard.py.

A request: parse and check in its protocol (4xx naming the field, never reaching the
model; protocol.py) -> LRU cache -> adaptive batcher (503 + Retry-After when it would
miss the SLO) -> the model scores the batch on the event loop's thread -> the answer in
the request's protocol.

Nothing else blocks the event loop: registry polls and loads run on the poller thread,
/reload's on an executor thread. Start-up objects (mlflow, torch, FastAPI: ~400k) are
frozen out of the garbage collector once the model is loaded; a full collection walked
them all, a 250-650 ms pause of the whole process every few seconds under load (the tail
an independent client saw), and cached answers are tuples of numbers, which the collector
stops tracking. ``mlsys_gc_pause_seconds`` shows the pauses.

Every error is a JSON body ``{"error": ...}`` (MLflow's requests also get its
``error_code`` and ``message``) with a true status, and ``mlsys_requests_total`` counts
prediction requests under that status: a body the JSON parser cannot read 400; a refused
field 413 or 422; no model loaded 503 + Retry-After; an unexpected failure 500, logged
with its traceback; unknown paths (and another model's v2 name) 404, wrong methods 405.
"""


import asyncio  # no "from __future__ import annotations": FastAPI reads the handlers' annotations at runtime
import gc
import logging
import time
from dataclasses import dataclass

from mlsys.datasets import CHAMPION
from mlsys.serving.online import protocol
from mlsys.serving.online.asgi import PredictFastPath, dumps, internal, json_errors, json_response
from mlsys.serving.online.batcher import AdaptiveBatcher, BatcherConfig, Overloaded
from mlsys.serving.online.cache import LRUCache
from mlsys.serving.online.guard import BearerAuth, Denied, ReloadThrottle, predict_auth_from_env
from mlsys.serving.online.metrics import ServerMetrics, watch_gc
from mlsys.serving.online.model_holder import ModelHolder
from mlsys.serving.online.request import BadRequest
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
    torch_threads: int = 1  # torch's intra-op threads: batches are small, more threads mostly spin

    def __post_init__(self):
        require(0 < self.port < 65536, "ServeConfig", "port", self.port, "use a TCP port in 1..65535")
        require(self.poll_s > 0, "ServeConfig", "poll_s", self.poll_s, "use a positive number of seconds")
        require(bool(self.alias), "ServeConfig", "alias", self.alias, "name an alias (champion) or a version number")
        for name in ("max_body_bytes", "max_records", "max_text_chars", "torch_threads"):
            require(getattr(self, name) >= 1, "ServeConfig", name, getattr(self, name), "use at least 1")
        require(self.reload_interval_s >= 0, "ServeConfig", "reload_interval_s", self.reload_interval_s,
                "use 0 (reloads only one at a time) or more seconds")
        require(self.cache_size >= 0, "ServeConfig", "cache_size", self.cache_size, "use 0 (off) or more entries")
        self.batcher()  # validates slo_ms, max_batch, max_queue

    def batcher(self) -> BatcherConfig:
        return BatcherConfig(slo_ms=self.slo_ms, max_batch=self.max_batch, max_queue=self.max_queue,
                             initial_batch=min(32, self.max_batch))


class NoModel(RuntimeError):
    """No model is loaded (yet): the request may be retried."""


NO_MODEL = {"error": "no model loaded yet; retry"}


def freeze_heap() -> None:
    """Move every object alive now out of the collector's sight (see the module doc); called before serving."""
    gc.collect()
    gc.freeze()


def create_app(config: ServeConfig, holder: ModelHolder | None = None, auth: BearerAuth | None = None):
    """The FastAPI app; ``holder`` defaults to one that polls ``config.alias`` in the MLflow registry, ``auth`` to
    the token in ``$MLSYS_SERVE_TOKEN`` (or its ``_FILE``). A ValueError (SpecError) if the two do not fit."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request

    from mlsys.serving.online import schemas
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
    metrics = ServerMetrics()
    cache = LRUCache(config.cache_size)

    def score(texts: list[str]):
        scorer = holder.scorer  # one snapshot per batch: a swap never splits a batch
        if scorer is None:
            raise NoModel("no model loaded")
        scores = scorer.score_texts(texts)
        # tuples of numbers: the collector stops tracking them, so a full cache costs a collection nothing
        return scorer.label, list(zip(scores.prediction.tolist(), map(tuple, scores.proba.tolist())))

    def on_batch(records: int, compute_s: float, latencies: list[float]) -> None:
        metrics.batch_size.observe(records)
        metrics.batch_seconds.observe(compute_s)

    batcher = AdaptiveBatcher(score, config.batcher(), on_batch=on_batch)

    @asynccontextmanager
    async def lifespan(app):
        import torch

        torch.set_num_threads(config.torch_threads)
        watch_gc(metrics.gc_pauses)
        batcher.start()
        if holder.scorer is None:
            await asyncio.get_running_loop().run_in_executor(None, holder.refresh)
        freeze_heap()
        if holder.scorer is None:  # the first model will load on the poller thread: freeze what it brings then
            holder.on_first_load = freeze_heap
        holder.start_polling()
        yield
        holder.stop()
        await batcher.stop()

    app = FastAPI(title="mlsys serve", lifespan=lifespan, description=__doc__.split("\n\n")[0])
    app.state.holder, app.state.batcher, app.state.cache, app.state.metrics = holder, batcher, cache, metrics
    json_errors(app)
    schemas.install(app)

    def predict_denied(authorization: bytes | str | None) -> tuple[int, dict[str, str], bytes] | None:
        """None when a prediction may go on; else the refusal (status, headers, JSON bytes), counted by status."""
        denied = auth.check(authorization) if predict_auth else None
        if denied is None:
            return None
        metrics.requests.inc(code=str(denied.status))
        return denied.status, denied.headers, dumps(denied.body)

    async def predict_body(content_length: str | None, body: bytes, route: str = "mlsys",
                           model_name: str = "") -> tuple[int, dict[str, str], bytes]:
        """A whole prediction request: (status, headers, JSON bytes). ``route``: the path's protocol (asgi.route_of).
        Shared by the FastAPI routes and the fast path."""
        started = time.perf_counter()
        status, headers, style = 200, {}, route
        try:
            if route == "v2" and model_name != holder.name:
                status = 404
                return status, headers, dumps({"error": f"model {model_name!r} is not served here; this server serves "
                                                        f"{holder.name!r}: POST /v2/models/{holder.name}/infer"})
            if content_length is not None and content_length.isdigit() and int(content_length) > config.max_body_bytes:
                raise BadRequest(413, "body", f"{content_length} bytes is over the limit of {config.max_body_bytes} "
                                              "bytes; send fewer records per request")
            records = protocol.decode(body, config.max_body_bytes, config.max_records, config.max_text_chars,
                                      v2=route == "v2")
            style = _style(route, records.protocol)
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
            return status, {"X-Model-Version": label}, dumps(protocol.answer(records, label, results))
        except BadRequest as exc:
            status = exc.status
            return status, headers, dumps(protocol.error(_style(route, exc.protocol), status, exc.to_json()))
        except Overloaded as exc:
            status, headers = 503, {"Retry-After": str(exc.retry_after)}
            return status, headers, dumps(protocol.error(style, status, {"error": str(exc)}))
        except NoModel:
            status, headers = 503, {"Retry-After": "1"}
            return status, headers, dumps(protocol.error(style, status, NO_MODEL))
        except asyncio.CancelledError:
            status = 499  # the request was abandoned (shutdown); nothing was answered
            raise
        except Exception as exc:  # noqa: BLE001 - a model or server bug: a JSON 500, logged, counted as a 500
            status = 500
            return status, headers, dumps(protocol.error(style, status, internal(exc, "/predict")))
        finally:
            metrics.requests.inc(code=str(status))
            if status == 200:
                metrics.latency.observe(time.perf_counter() - started)

    app.state.predict_body, app.state.predict_denied = predict_body, predict_denied

    async def predict_route(request: Request, route: str, model_name: str = ""):
        from starlette.responses import Response

        refused = predict_denied(request.headers.get("authorization"))
        status, headers, body = refused or await predict_body(request.headers.get("content-length"),
                                                              await request.body(), route, model_name)
        return Response(body, status_code=status, headers=headers, media_type="application/json")

    refusals = {400: "malformed JSON", 401: "no or the wrong bearer token (under --predict-auth)",
                413: "over --max-body-bytes, --max-records or --max-text-chars", 422: "a field is wrong: it is named",
                503: "no model loaded yet, or the request would miss the SLO (Retry-After)"}

    def declared_body(model, text: str) -> dict:
        return {**schemas.request_body(model, text), **schemas.bearer(required=predict_auth)}

    ok = "ours, or MLflow's to its protocol"

    @app.post("/predict", responses=schemas.responses(schemas.PredictAnswer, ok, refusals),
              openapi_extra=declared_body(schemas.PredictRequest, "a record, a list of them, or MLflow's protocol"))
    async def predict(request: Request):
        """Classify texts: mlsys's records, or MLflow's scoring protocol (answered as `mlflow models serve` does)."""
        return await predict_route(request, "mlsys")

    @app.post("/invocations", responses=schemas.responses(schemas.MlflowAnswer, "as `mlflow models serve` answers",
                                                          refusals, schemas.MlflowError),
              openapi_extra=declared_body(schemas.MlflowRequest, "MLflow's scoring protocol"))
    async def invocations(request: Request):
        """MLflow's scoring endpoint: a client of `mlflow models serve` works unchanged."""
        return await predict_route(request, "mlflow")

    @app.post("/v2/models/{model_name}/infer", responses=schemas.responses(
              schemas.InferAnswer, "the Open Inference Protocol's answer", {**refusals, 404: "another model's name"}),
              openapi_extra=declared_body(schemas.InferRequest, "an Open Inference Protocol (KServe v2) request"))
    async def infer(model_name: str, request: Request):
        """Open Inference Protocol (KServe v2) inference on the served model."""
        return await predict_route(request, "v2", model_name)

    _status_routes(app, holder)

    @app.post("/reload", responses=schemas.responses(schemas.ReloadAnswer, "the alias was checked", {
              401: "no or the wrong bearer token", 403: "the server has no token: /reload is closed",
              429: "checked less than --reload-interval-s ago (Retry-After)",
              500: "the alias's version failed to load; the old one keeps serving"}),
              openapi_extra=schemas.bearer(True))
    async def reload(request: Request):
        """Check the alias now: the token first (401/403), then the throttle (429), then the registry."""
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
            return json_response(denied.body, denied.status, denied.headers)

        def check():
            try:
                return holder.refresh()
            finally:
                throttle.done()  # in the thread that ran the check: a request cancelled meanwhile keeps the slot

        result = await asyncio.get_running_loop().run_in_executor(None, check)
        body = {"model_version": result.version, "changed": result.changed, "error": result.error}
        metrics.reload_requests.inc(code="500" if result.error else "200")
        return json_response(body, 500 if result.error else 200)

    @app.get("/metrics", responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                          "description": "Prometheus text exposition format 0.0.4"}})
    async def prometheus():
        """The server's metrics, for Prometheus."""
        from starlette.responses import Response

        metrics.queue_depth.set(batcher.queued_records)
        metrics.batch_limit.set(batcher.limit)
        metrics.cache_hits.set(cache.hits)
        metrics.cache_misses.set(cache.misses)
        metrics.cache_hit_rate.set(cache.hit_rate)
        metrics.gc_frozen.set(gc.get_freeze_count())
        metrics.model.reset()
        if holder.label:
            metrics.model.set(1, version=holder.label)
        for result, n in holder.reloads.items():
            metrics.reloads.set(n, result=result)
        return Response(metrics.registry.render(), media_type="text/plain; version=0.0.4")

    return app


def _style(route: str, detected: str) -> str:
    """The shape of an error: MLflow's on its path or for a body recognised as MLflow's, else the route's."""
    return "mlflow" if "mlflow" in (route, detected) else route


def _status_routes(app, holder: ModelHolder) -> None:
    """Liveness and readiness, ours and the Open Inference Protocol's, and the v2 model metadata."""
    from mlsys.serving.online import schemas

    def ready_answer():
        label = holder.label
        return json_response({"ready": label is not None, "model_version": label}, 200 if label else 503)

    not_ready = {503: {"model": schemas.Ready, "description": "no model loaded yet"}}

    @app.get("/health", responses=schemas.responses(schemas.Status, "the process runs", {}))
    async def health():
        """Liveness: 200 while the process runs."""
        return json_response({"status": "ok"})

    @app.get("/ready", responses={200: {"model": schemas.Ready, "description": "a model is loaded"}, **not_ready})
    async def ready():
        """Readiness: 200 once a model is loaded."""
        return ready_answer()

    @app.get("/ping", responses={200: {"model": schemas.Ready, "description": "a model is loaded"}, **not_ready})
    async def ping():
        """Readiness under the path `mlflow models serve` uses."""
        return ready_answer()

    @app.get("/v2/health/live", responses=schemas.responses(schemas.Live, "the process runs", {}))
    async def v2_live():
        return json_response({"live": True})

    @app.get("/v2/health/ready",
             responses={200: {"model": schemas.Ready, "description": "a model is loaded"}, **not_ready})
    async def v2_ready():
        return ready_answer()

    def known(model_name: str):
        if model_name != holder.name:
            return json_response({"error": f"model {model_name!r} is not served here; this server serves "
                                           f"{holder.name!r}"}, 404)
        return None

    @app.get("/v2/models/{model_name}/ready", responses={
        200: {"model": schemas.Ready, "description": "a model is loaded"}, **not_ready,
        404: {"model": schemas.Error, "description": "another model's name"}})
    async def v2_model_ready(model_name: str):
        return known(model_name) or ready_answer()

    @app.get("/v2/models/{model_name}", responses=schemas.responses(schemas.ModelMetadata, "the model's tensors", {
        404: "another model's name", 503: "no model loaded yet"}))
    async def v2_metadata(model_name: str):
        """The Open Inference Protocol's model metadata: one BYTES input, two outputs."""
        if (refused := known(model_name)) is not None:
            return refused
        scorer = holder.scorer
        if scorer is None:
            return json_response(NO_MODEL, 503, {"Retry-After": "1"})
        classes = scorer.num_classes
        return json_response({"name": holder.name, "versions": [scorer.label.rpartition("/")[2]], "platform": "pytorch",
                              "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
                              "outputs": [{"name": "prediction", "datatype": "INT64", "shape": [-1]},
                                          {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]}]})


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
