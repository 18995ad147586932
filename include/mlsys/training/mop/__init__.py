"""MOP: Cerebro's model hopper parallelism, on torch.distributed (torch only; import modules by name).

Many configurations, data partitioned over the workers: each worker holds one partition; each
configuration trains a sub-epoch on a worker's partition, then its weights and optimizer state hop
to the next worker. Data never moves; models move once per sub-epoch.

    scheduler    the randomized greedy scheduler, its invariants, a virtual-clock simulation
    trainee      one configuration: train a sub-epoch, pack / unpack its state (resident or spilled)
    partition    the data shuffled once and cut into one partition per worker, in storage
    courier      control messages through a TCPStore; states sent point to point by a courier thread
    coordinator  rank 0's thread: the scheduler driven by the workers' events, the visit logs
    job          the torchrun entry point (``python -m mlsys.training.mop.job WORKDIR``)
    hopper       train_mop: launch a job from a parent process and read its report
    gantt        the schedule plot (which configuration on which worker, when)
"""
