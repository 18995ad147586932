"""Hydra-style model spilling: train a model larger than one device, one shard resident at a time (torch only).

    partitioner  cut a model into shards that fit a memory budget
    store        the host-side spill store (pinned, shared-memory views)
    spiller      the shard-by-shard forward/backward schedule, equal to resident training
"""
