"""Multi-device training on torch.distributed (torch only; import modules by name, they load torch.distributed).

    partitioner  split a model into stages, balanced by profiled time or size
    microbatch   split a batch into micro-batches and back
    pipeline     GPipe (fill-drain) and 1F1B pipeline strategies, pipeline x DDP
    ddp          the DistributedDataParallel strategy
    checkpoint   checkpoints of model, optimizer and RNG state, local or S3
    launcher     torchrun as a child process: its log streamed, rank errors raised
    job          the torchrun entry point (``python -m mlsys.training.parallel.job``)
    affinity     one CPU core per rank
    report       the job's events and schedule plot, logged to MLflow
"""
