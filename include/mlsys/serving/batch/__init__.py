"""Batch scoring: reader (prefetching row-group reader), chunks (chunks scored on all cores), stage (BatchSpec, run,
plan / run_shard / run_merge for mapped shards)."""
