"""The distributed training job that torchrun runs on every rank (torch only).

    torchrun --nproc-per-node 2 -m mlsys.training.parallel.job WORKDIR

WORKDIR holds ``job.json`` (a ``JobConfig``) and ``data.pt`` (padded ids, bag
weights, soft labels, row weights). Rank 0 prints ``MLSYS_EVENT`` lines (metrics,
the partition, the schedule timeline) and writes ``result.pt`` (the trained
weights, per layer of ``TextClassifier.pipeline_layers()``) and ``result.json``.

Resumable: every ``checkpoint_every`` steps each rank stores its model part,
optimizer, RNG state and the data position; a restarted job continues from the
last committed checkpoint and ends with the weights an uninterrupted run gets.
The data order of epoch e is a permutation seeded by (seed, e) alone, so the
position is just the global step.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from mlsys.faults import failpoint
from mlsys.model.loss import pack_target
from mlsys.model.text_classifier import TextClassifier, TextClassifierConfig
from mlsys.spec import require
from mlsys.training.parallel import partitioner, plan
from mlsys.training.parallel.affinity import pin_cpus
from mlsys.training.parallel.checkpoint import Checkpointer, rng_state, set_rng_state
from mlsys.training.parallel.launcher import emit, exit_with_parent, rank_errors


@dataclass(frozen=True)
class JobConfig:
    model: dict = field(default_factory=dict)  # TextClassifierConfig fields
    strategy: str = "ddp"
    nproc: int = 2
    epochs: int = 1
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    log_every: int = 10
    microbatches: int = 4
    schedule: str = "gpipe"
    balance: tuple[int, ...] = ()  # () = balance_by_time
    replicas: int = 1  # pipeline: data-parallel copies of the pipeline; stages = nproc / replicas
    rematerialize: bool = False
    device: str = "cpu"
    threads: int = 1  # intra-op threads per process
    checkpoint_uri: str = ""
    checkpoint_every: int = 0  # optimizer steps; 0 = no checkpoints

    def __post_init__(self):
        validate(self)

    def to_json(self) -> dict:
        return {**asdict(self), "balance": list(self.balance)}

    @classmethod
    def from_json(cls, data: dict) -> "JobConfig":
        return cls(**{**data, "balance": tuple(data.get("balance", ()))})

    @property
    def stages(self) -> int:
        return self.nproc // self.replicas if self.strategy == "pipeline" else 1

    @property
    def num_layers(self) -> int:
        return TextClassifierConfig(**self.model).depth + 2


def validate(cfg: JobConfig) -> None:
    """Every error a job could hit at start, raised before any process is spawned (the rules in ``plan``)."""
    plan.check_job("JobConfig", strategy=cfg.strategy, strategies=plan.DISTRIBUTED, device=cfg.device,
                   nproc=cfg.nproc, batch_size=cfg.batch_size, checkpoint_every=cfg.checkpoint_every)
    require(not cfg.checkpoint_every or bool(cfg.checkpoint_uri), "JobConfig", "checkpoint_uri", cfg.checkpoint_uri,
            "give a folder or s3:// URI when checkpoint_every > 0")
    model = TextClassifierConfig(**cfg.model)
    if cfg.strategy == "pipeline":
        plan.check_pipeline("JobConfig", nproc=cfg.nproc, replicas=cfg.replicas, depth=model.depth,
                            batch_size=cfg.batch_size, microbatches=cfg.microbatches, schedule=cfg.schedule,
                            balance=cfg.balance)
    plan.check_devices("JobConfig", cfg.device, cfg.nproc)


def _batches(cfg: JobConfig, rows: int, steps_per_epoch: int):
    """(global step, epoch, row indices padded with -1 to batch_size) from step 0 on."""
    for epoch in range(cfg.epochs):
        order = torch.randperm(rows, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        for i in range(steps_per_epoch):
            yield epoch * steps_per_epoch + i, epoch, order[i * cfg.batch_size : (i + 1) * cfg.batch_size]


def _take(data: dict, idx: torch.Tensor, batch: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, int]:
    """The batch's rows, padded with zero-weight rows to a fixed size (fixed P2P shapes; exact: weight 0 adds nothing)."""
    real = len(idx)
    ids, bag = data["ids"][idx], data["bag"][idx]  # (b, L), (b, L)
    proba, weight = data["proba"][idx], data["weight"][idx]  # (b, C), (b,)
    if real < batch:
        pad = batch - real
        ids = torch.cat([ids, ids.new_zeros(pad, ids.shape[1])])
        bag = torch.cat([bag, bag.new_zeros(pad, bag.shape[1])])
        proba = torch.cat([proba, proba.new_zeros(pad, proba.shape[1])])
        weight = torch.cat([weight, weight.new_zeros(pad)])
    return (ids, bag), pack_target(proba, weight, weight.sum()), real


def _build(cfg: JobConfig, model: TextClassifier, data: dict, device: torch.device, rank: int,
           resumed_balance: list[int] | None = None):
    if cfg.strategy == "ddp":
        from mlsys.training.parallel.ddp import DDPStrategy

        return DDPStrategy(model, device=device), None
    from mlsys.training.parallel.pipeline import PipelineDDPStrategy, PipelineStrategy

    balance, stats = list(resumed_balance or cfg.balance), None
    if not balance:
        box = [None]
        if rank == 0:  # profile once, on a micro-batch of real rows
            rows = cfg.batch_size // cfg.replicas // cfg.microbatches
            sample = (data["ids"][:rows].to(device), data["bag"][:rows].to(device))
            box = [partitioner.balance_by_time(model.to(device), sample, cfg.stages)]
        dist.broadcast_object_list(box, src=0)
        balance, stats = box[0]
    kind = PipelineDDPStrategy if cfg.replicas > 1 else PipelineStrategy
    return kind(model, balance, cfg.microbatches, cfg.schedule, device=device, rematerialize=cfg.rematerialize), stats


@rank_errors
def main(workdir: str) -> None:
    exit_with_parent()  # a killed task takes its ranks with it: no orphan writes a checkpoint
    work = Path(workdir)
    cfg = JobConfig.from_json(json.loads((work / "job.json").read_text()))
    backend = "nccl" if cfg.device == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cfg.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    torch.set_num_threads(cfg.threads)
    if device.type == "cpu":
        pin_cpus(local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", 1)), cfg.threads)
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        _train(cfg, work, device, rank, world)
    finally:
        dist.destroy_process_group()


def _train(cfg: JobConfig, work: Path, device: torch.device, rank: int, world: int) -> None:
    data = torch.load(work / "data.pt", weights_only=True)
    rows = len(data["weight"])
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = TextClassifier(TextClassifierConfig(**cfg.model))
    ckpt = Checkpointer(cfg.checkpoint_uri, rank) if cfg.checkpoint_every else None
    last = ckpt.latest() if ckpt else None
    state = ckpt.load(last) if last is not None else None
    # a resumed pipeline keeps the partition its checkpoint was cut by: profiling again may balance differently
    strategy, stats = _build(cfg, model, data, device, rank, (state or {}).get("balance"))
    pipelined = cfg.strategy == "pipeline"
    if rank == 0 and pipelined:
        emit("partition", balance=list(strategy.balance), layer_stats=stats)
    opt = torch.optim.AdamW(strategy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    torch.manual_seed(cfg.seed + 1 + rank)  # dropout: one stream per rank

    steps_per_epoch = math.ceil(rows / cfg.batch_size)
    start, acc, history = 0, {"total": 0.0, "seen": 0, "wall": 0.0}, []
    if state is not None:
        strategy.module.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], device)
        start, acc, history = state["step"], state["epoch_acc"], state["history"]
        if rank == 0:
            emit("resumed", step=start)

    src = world - 1 if pipelined else 0  # the rank that knows the whole batch's loss (a last stage)
    timeline, step_times = None, []
    for step, epoch, idx in _batches(cfg, rows, steps_per_epoch):
        if step < start:
            continue
        inputs, target, real = _take(data, idx, cfg.batch_size)
        opt.zero_grad(set_to_none=True)
        dist.barrier()
        t0 = time.perf_counter()
        loss = strategy.step(inputs, target)
        opt.step()
        t1 = time.perf_counter()
        box = torch.tensor([loss if loss is not None else 0.0], dtype=torch.float64, device=device)  # NCCL: on the GPU
        dist.broadcast(box, src=src)
        loss = float(box)
        acc["total"] += loss * real
        acc["seen"] += real
        acc["wall"] += t1 - t0
        step_times.append(t1 - t0)
        done = step + 1
        if done % cfg.log_every == 0 or done % steps_per_epoch == 0:
            metrics = {"train_loss_step": loss, "step_time_s": t1 - t0, "step_samples_per_s": real / (t1 - t0)}
            if pipelined:
                from mlsys.training.parallel.pipeline import (
                    bubble_fraction,
                    gather_timeline,
                )

                timeline = gather_timeline(strategy, t0, t1)
                if rank == 0:
                    metrics["bubble_fraction"] = bubble_fraction(timeline)
            if rank == 0 and done % cfg.log_every == 0:
                emit("metrics", step=done, metrics=metrics)
        if done % steps_per_epoch == 0:
            record = {"train_loss": acc["total"] / acc["seen"], "epoch": epoch,
                      "samples_per_s": acc["seen"] / max(acc["wall"], 1e-9)}
            history.append(record)
            if rank == 0:
                emit("metrics", step=done, metrics=record)
            acc = {"total": 0.0, "seen": 0, "wall": 0.0}
        if ckpt and done % cfg.checkpoint_every == 0:
            ckpt.save(done, {"model": strategy.module.state_dict(), "optimizer": opt.state_dict(),
                             "rng": rng_state(device), "step": done, "epoch_acc": dict(acc),
                             "history": list(history),
                             "balance": list(strategy.balance) if pipelined else None})
            dist.barrier()  # every rank's file is stored before the checkpoint counts
            if rank == 0:
                ckpt.commit(done)
                emit("checkpoint", step=done, uri=cfg.checkpoint_uri)
                failpoint("train.ddp_step")  # fault suite: rank 0 killed past a committed checkpoint

    _finish(cfg, work, model, strategy, rank, world, history, timeline, step_times, cfg.epochs * steps_per_epoch)


def _finish(cfg, work, model, strategy, rank, world, history, timeline, step_times, total_steps) -> None:
    layers = partitioner.layers_of(model)
    lo, hi = strategy.layer_range if cfg.strategy == "pipeline" else (0, len(layers))
    mine = {i: {k: v.detach().cpu() for k, v in layers[i].state_dict().items()} for i in range(lo, hi)}
    parts: list = [mine]
    if cfg.strategy == "pipeline":  # each rank holds its stage; DDP replicas are identical, rank 0 has it all
        parts = [None] * world
        dist.gather_object(mine, parts if rank == 0 else None, dst=0)
    if rank != 0:
        return
    merged = {i: sd for part in parts for i, sd in part.items()}
    torch.save(merged, work / "result.pt")
    steps = len(step_times)
    summary = {
        "steps": total_steps, "steps_this_run": steps, "history": history, "final_loss": history[-1]["train_loss"] if history else None,
        "samples_per_s": cfg.batch_size * steps / max(sum(step_times), 1e-9) if steps else 0.0,
        "balance": list(getattr(strategy, "balance", [])), "timeline": timeline, "world_size": world,
    }
    (work / "result.json").write_text(json.dumps(summary))
    emit("done", steps=steps)


if __name__ == "__main__":
    main(sys.argv[1])
