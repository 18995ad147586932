"""The peers of ``mlsys bench mop``, run by torchrun on every rank (torch only).

    python -m mlsys.bench.mop.peers ROLE WORKDIR        ROLE: task | ddp

``task``: task parallelism: every rank holds all the rows and trains whole configurations from a shared queue,
over the partitions in the order MOP visited them. ``ddp``: one configuration at a time over every rank
(DistributedDataParallel), rank r on partition r, gradients all-reduced every step, their bytes counted by a
comm hook. Rank 0 writes ``result.json``: seconds (between barriers), losses, bytes sent, bytes held.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from mlsys.training.mop import partition
from mlsys.training.mop.trainee import RNG_OFFSET, Model, batch_order, rows, train_sequential, warm

ROLES = ("task", "ddp")



def main(role: str, workdir: str) -> None:
    from mlsys.training.parallel.affinity import pin_cpus
    from mlsys.training.parallel.launcher import rank_errors

    work = Path(workdir)
    job = json.loads((work / "job.json").read_text())
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank, world = dist.get_rank(), dist.get_world_size()
    pin_cpus(rank, world, 1)
    try:
        models = [Model(**m) for m in job["models"]]
        warm(models, partition.read(job["data_uri"], rank))  # the code loaded before the clock starts, as in MOP
        out = rank_errors({"task": _task, "ddp": _ddp}[role])(job, models, rank, world)
        gathered = [None] * world
        dist.gather_object(out, gathered if rank == 0 else None, dst=0)
        if rank == 0:
            merged = {"seconds": max(g["seconds"] for g in gathered), "losses": {}, "bytes_sent": 0,
                      "data_bytes": [g["data_bytes"] for g in gathered]}
            for g in gathered:
                merged["losses"].update(g["losses"])
                merged["bytes_sent"] += g["bytes_sent"]
            (work / "result.json").write_text(json.dumps(merged))
    finally:
        dist.destroy_process_group()


def _task(job: dict, models: list[Model], rank: int, world: int) -> dict:
    """Task parallelism: the whole data on every worker; an idle worker takes the next whole configuration."""
    from mlsys.training.mop.job import message_store

    parts = [partition.read(job["data_uri"], i) for i in range(world)]  # every partition: all the rows
    store = message_store(rank)
    losses = {}
    dist.barrier()
    start = time.time()
    while (i := store.add("next", 1) - 1) < len(models):
        m = models[i]
        visits = [tuple(v) for v in job["visits"][m.name]]
        _, unit = train_sequential(m, parts, visits)
        last = [loss for (e, _), loss in zip(visits, unit) if e == m.epochs - 1]
        losses[m.name] = sum(last) / len(last)
    seconds = time.time() - start
    dist.barrier()
    return {"seconds": seconds, "losses": losses, "bytes_sent": 0, "data_bytes": sum(map(partition.nbytes, parts))}


def _ddp(job: dict, models: list[Model], rank: int, world: int) -> dict:
    """DDP per configuration: one after another, each over every rank; rank r's rows come from partition r."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel

    from mlsys.training.parallel.partitioner import Chain

    part = partition.read(job["data_uri"], rank)
    n = rows(part)
    payload, losses = [0], {}

    def counting_hook(state, bucket):
        payload[0] += bucket.buffer().numel() * bucket.buffer().element_size()
        return allreduce_hook(None, bucket)

    dist.barrier()
    start = time.time()
    for m in models:
        recipe = m.recipe()
        ddp = DistributedDataParallel(Chain(list(recipe.layers())))
        ddp.register_comm_hook(None, counting_hook)
        opt = recipe.optimizer(list(ddp.parameters()))
        torch.manual_seed(m.seed + RNG_OFFSET + rank)
        local = max(1, m.batch_size // world)
        for epoch in range(m.epochs):
            order = batch_order(m.seed, epoch, rank, n)
            total = torch.zeros(2, dtype=torch.float64)
            for i in range(0, n, local):
                idx = order[i : i + local]
                loss = recipe.loss_fn(ddp(*(x[idx] for x in part["inputs"])), *(y[idx] for y in part["targets"]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += torch.tensor([float(loss) * len(idx), len(idx)], dtype=torch.float64)
            dist.all_reduce(total)
        losses[m.name] = float(total[0] / total[1])
    seconds = time.time() - start
    dist.barrier()
    sent = int(payload[0] * 2 * (world - 1) / world)  # a ring all-reduce: each rank sends 2 (p - 1) / p of the buffer
    return {"seconds": seconds, "losses": losses if rank == 0 else {}, "bytes_sent": sent,
            "data_bytes": partition.nbytes(part)}



if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ROLES:
        sys.exit(f"usage: python -m mlsys.bench.mop.peers {{{'|'.join(ROLES)}}} WORKDIR")
    main(sys.argv[1], sys.argv[2])
