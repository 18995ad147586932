"""Online serving (``mlsys serve``): request (our body's validation), protocol (MLflow's scoring protocol and the
Open Inference Protocol, and each answer's shape), schemas (the OpenAPI bodies), cache (LRU), batcher (AIMD adaptive
batching), metrics (Prometheus text), model_holder (alias polling, atomic swap), asgi (the prediction fast path, JSON
errors), server (FastAPI + uvicorn), reload_hook (what a promotion calls), guard (bearer token, /reload throttle),
commands (the CLI)."""
