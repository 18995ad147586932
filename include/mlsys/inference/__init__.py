"""serve: batch scoring with the registered champion, and the online server.

Engines (numpy + torch only): vector_featurizer (HashingFeaturizer's ids, vectorised), scorer.
Batch: reader (prefetching chunk reader), pipeline (chunks scored on all cores), batch (the stage:
run / plan / run_shard / run_merge), batch_benchmark (`mlsys bench batch`).
Online: request (validation), cache (LRU), batcher (AIMD adaptive batching), metrics (Prometheus text),
model_holder (alias polling, atomic swap), server (`mlsys serve`), reload_hook, loadgen, serve_benchmark
(`mlsys bench serve`). champion resolves and loads a registered version; pyfunc_model is the MLflow wrapper.
Modules are imported where used: importing this package costs nothing.
"""
