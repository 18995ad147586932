"""Online serving (``mlsys serve``): request (validation), cache (LRU), batcher (AIMD adaptive batching),
metrics (Prometheus text), model_holder (alias polling, atomic swap), server (FastAPI + uvicorn),
reload_hook (what a promotion calls), guard (bearer token, /reload throttle), commands (the CLI)."""
