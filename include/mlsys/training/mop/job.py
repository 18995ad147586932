"""The MOP job that torchrun runs on every rank (torch only).

    torchrun --nproc-per-node P -m mlsys.training.mop.job WORKDIR

WORKDIR holds ``job.json`` (a ``MopConfig``). Rank r reads partition r of ``data_uri`` and nothing
else. Rank 0 also runs the coordinator thread and serves the TCPStore its messages go through. Every
rank runs a courier thread (``courier``) and a loop: take a unit, get the configuration's state (from
its own courier, from the rank that holds it, fresh, or from its checkpoint), train one sub-epoch on the
local partition, park the packed state, report. The rank that ends an epoch of a configuration
checkpoints it (``<checkpoint_uri>/<name>/``, the ``parallel.checkpoint`` layout; ``weights_only``
loading): a killed job, started again with the same WORKDIR, resumes each configuration at its last
finished epoch.

Rank 0 writes ``result.pt`` ({name: [state dict per layer]}) and ``result.json`` (visit logs, unit
losses, the timeline, seconds, bytes held and sent), and prints ``MLSYS_EVENT`` lines.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from mlsys.faults import failpoint
from mlsys.spec import require
from mlsys.training.mop import partition
from mlsys.training.mop.coordinator import CHECKPOINT, FRESH, Coordinator, Resume
from mlsys.training.mop.courier import EVENTS, Courier, Post, receive, work_queue
from mlsys.training.mop.trainee import Model, build, pack, unpack, warm
from mlsys.training.parallel.affinity import pin_cpus
from mlsys.training.parallel.checkpoint import Checkpointer
from mlsys.training.parallel.launcher import emit, exit_with_parent, rank_errors

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class MopConfig:
    models: tuple[Model, ...]
    data_uri: str  # the partitions (``partition.write``): one per rank
    checkpoint_uri: str  # per configuration, after each of its epochs
    device: str = "cpu"
    threads: int = 1  # intra-op threads per rank
    seed: int = 0  # the scheduler's random choices

    def __post_init__(self):
        require(bool(self.models), "MopConfig", "models", self.models, "give at least one configuration")
        names = [m.name for m in self.models]
        require(len(set(names)) == len(names), "MopConfig", "models", names, "give every configuration its own name")
        require(self.device in DEVICES, "MopConfig", "device", self.device, "use 'cpu' (gloo) or 'cuda' (NCCL)")
        require(self.threads >= 1, "MopConfig", "threads", self.threads, "use at least 1 thread per rank")
        require(bool(self.data_uri), "MopConfig", "data_uri", self.data_uri, "give the partitions' folder or s3:// URI")
        require(bool(self.checkpoint_uri), "MopConfig", "checkpoint_uri", self.checkpoint_uri,
                "give a folder or s3:// URI for the per-epoch checkpoints")

    def to_json(self) -> dict:
        return {"models": [m.to_json() for m in self.models], "data_uri": self.data_uri,
                "checkpoint_uri": self.checkpoint_uri, "device": self.device, "threads": self.threads,
                "seed": self.seed}

    @classmethod
    def from_json(cls, data: dict) -> "MopConfig":
        return cls(**{**data, "models": tuple(Model(**m) for m in data["models"])})


def checkpointer(cfg: MopConfig, name: str) -> Checkpointer:
    return Checkpointer(f"{cfg.checkpoint_uri.rstrip('/')}/{name}", rank=0)


def resume_points(cfg: MopConfig) -> dict[str, Resume]:
    """Each configuration's last finished epoch, with its visit log and losses (none: a fresh start)."""
    out = {}
    for m in cfg.models:
        ck = checkpointer(cfg, m.name)
        step = ck.latest()
        if step is not None:
            state = ck.load(step)
            out[m.name] = Resume(step, state["visits"], state["losses"])
    return out


def message_store(rank: int) -> dist.Store:
    """A TCPStore served by rank 0 on a free port (told to the others by a broadcast) for MOP's messages."""
    host = os.environ.get("MASTER_ADDR", "127.0.0.1")
    timeout = timedelta(days=7)  # a worker waits as long as the longest unit; the launcher's watchdog bounds hangs
    store = dist.TCPStore(host, 0, is_master=True, wait_for_workers=False, timeout=timeout) if rank == 0 else None
    box = [store.port if store is not None else None]
    dist.broadcast_object_list(box, src=0)
    return store if store is not None else dist.TCPStore(host, box[0], is_master=False, timeout=timeout)


@rank_errors
def main(workdir: str) -> None:
    exit_with_parent()  # a killed task takes its ranks with it
    work = Path(workdir)
    cfg = MopConfig.from_json(json.loads((work / "job.json").read_text()))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cfg.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    torch.set_num_threads(cfg.threads)
    if device.type == "cpu":
        pin_cpus(local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", 1)), cfg.threads)
    try:
        hops = dist.new_group(backend="gloo")  # host memory; see courier on why not NCCL
        _run(cfg, work, device, dist.get_rank(), dist.get_world_size(), hops)
    finally:
        dist.destroy_process_group()


def _run(cfg: MopConfig, work: Path, device: torch.device, rank: int, world: int, hops) -> None:
    index = partition.index(cfg.data_uri)
    if index is None or index["partitions"] != world:
        raise ValueError(f"MopConfig.data_uri={cfg.data_uri!r} holds {index and index['partitions']} partitions "
                         f"for {world} ranks: write one partition per worker (partition.write) or launch "
                         f"{index and index['partitions']} ranks")
    part = partition.read(cfg.data_uri, rank)  # this rank's partition, never the whole set
    models = {m.name: m for m in cfg.models}
    post = Post(message_store(rank))
    coordinator = None
    if rank == 0:
        resumed = resume_points(cfg)
        if resumed:
            emit("resumed", epochs={c: r.done for c, r in resumed.items()})
        shown = ("config", "epoch", "worker", "loss", "units_done")
        coordinator = Coordinator(post.clone(), {m.name: m.epochs for m in cfg.models}, world, cfg.seed, resumed,
                                  on_unit=lambda e: emit("unit", **{k: e[k] for k in shown}))
    courier = Courier(post.clone(), hops, rank)
    courier.start()
    warm(cfg.models, part, device)
    dist.barrier()  # every rank has its data, its courier and the models' code: the clock starts
    start = time.time()
    if coordinator is not None:
        coordinator.start()
    trainees: dict = {}
    received = 0
    while True:
        msg = post.get(work_queue(rank))
        if msg.get("stop"):
            break
        t0 = time.time()
        name, src = msg["config"], msg["src"]
        model = models[name]
        if src == FRESH or name not in trainees:
            trainees[name] = build(model, device, part)
        trainee = trainees[name]
        if src == CHECKPOINT:
            ck = checkpointer(cfg, name)
            trainee.load(unpack(ck.load(ck.latest())["state"]))
        elif src == rank:
            trainee.load(unpack(courier.take(name)))
        elif src != FRESH:
            data = receive(msg["size"], src, msg["tag"], hops)
            received += data.numel()
            trainee.load(unpack(data))
        t1 = time.time()
        loss, _ = trainee.train(part, msg["epoch"], rank)
        t2 = time.time()
        data = pack(trainee.state())
        if msg["checkpoint"] is not None:  # this unit ended an epoch of the configuration
            ck = checkpointer(cfg, name)
            ck.save(msg["epoch"] + 1, {"state": data, "visits": msg["checkpoint"]["visits"] + [[msg["epoch"], rank]],
                                       "losses": msg["checkpoint"]["losses"] + [loss]})
            ck.commit(msg["epoch"] + 1)
            failpoint("mop.epoch_checkpointed")  # the fault test kills a rank here, past a committed epoch
        courier.park(name, data)
        post.put(EVENTS, {"kind": "unit", "worker": rank, "config": name, "epoch": msg["epoch"], "loss": loss,
                          "size": int(data.numel()), "t0": t0, "t1": t1, "t2": t2})
    courier.join()
    dist.barrier()
    seconds = time.time() - start
    if coordinator is not None:
        coordinator.join()
        if coordinator.error is not None:
            raise coordinator.error
    stats = {"bytes_sent": courier.bytes_sent, "bytes_received": received, "hops": courier.hops,
             "data_bytes": partition.nbytes(part), "rows": int(part["inputs"][0].shape[0])}
    gathered = [None] * world
    dist.gather_object(stats, gathered if rank == 0 else None, dst=0)
    if rank == 0:
        _finish(cfg, work, device, part, coordinator, gathered, seconds)


def _finish(cfg: MopConfig, work: Path, device, part, coordinator: Coordinator, stats: list, seconds: float) -> None:
    """Rank 0: every configuration's final checkpoint, exported as layers; the report."""
    weights, shards = {}, {}
    for m in cfg.models:
        ck = checkpointer(cfg, m.name)
        trainee = build(m, device, part)
        trainee.load(unpack(ck.load(ck.latest())["state"]))
        weights[m.name], shards[m.name] = trainee.layers(), trainee.shards
    torch.save(weights, work / "result.pt")
    summary = {
        "seconds": seconds, "workers": len(stats), "visits": coordinator.visits, "losses": coordinator.losses,
        "shards": shards, "timeline": [[v.config, v.epoch, v.partition, v.worker, v.start, v.end]
                                       for v in coordinator.timeline],
        "hop_wait_s": sum(coordinator.waits), "bytes_sent": sum(s["bytes_sent"] for s in stats),
        "hops": sum(s["hops"] for s in stats), "data_bytes": [s["data_bytes"] for s in stats],
        "rows": [s["rows"] for s in stats],
    }
    (work / "result.json").write_text(json.dumps(summary))
    emit("done", seconds=seconds, units=len(coordinator.timeline))


if __name__ == "__main__":
    main(sys.argv[1])
