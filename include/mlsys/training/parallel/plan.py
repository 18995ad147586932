"""The rules a distributed training job must meet, checked once for every owner (TrainSpec, JobConfig).

Imports no torch (``available_devices`` loads it only to count GPUs), so a
spec can check its pipeline layout before anything heavy loads or any process
starts. Every message names the owner's field, the bad value and the fix.

    strategy   single (one process) | ddp | pipeline        devices   cpu (gloo) | cuda (NCCL)
    pipeline   nproc = stages x replicas; stages <= depth + 2 layers; batch_size / replicas rows per copy,
               split into `microbatches` equal micro-batches; 1F1B needs microbatches >= stages
"""

from __future__ import annotations

from typing import Any, Sequence

from mlsys.settings import settings
from mlsys.spec import require

DISTRIBUTED = ("ddp", "pipeline")  # what a torchrun job runs
STRATEGIES = ("single", *DISTRIBUTED)  # what the train stage offers
SCHEDULES = ("gpipe", "1f1b")
DEVICES = ("cpu", "cuda")


def available_devices(device: str) -> int:
    """GPUs on this node for cuda; for cpu, MLSYS_CPU_DEVICES or the core count (one process per core)."""
    if device == "cuda":
        import torch

        return torch.cuda.device_count()
    return settings().cpu_devices


def check_job(owner: str, *, strategy: str, strategies: Sequence[str], device: str, nproc: int, batch_size: int,
              checkpoint_every: int) -> None:
    """The rules every strategy shares: a known strategy and device, processes, checkpoints, DDP's rows."""
    require(strategy in strategies, owner, "strategy", strategy, f"use one of {list(strategies)}")
    require(device in DEVICES, owner, "device", device, "use 'cpu' (gloo) or 'cuda' (NCCL)")
    require(nproc >= 1, owner, "nproc", nproc, "use at least 1 process")
    require(checkpoint_every >= 0, owner, "checkpoint_every", checkpoint_every,
            "use 0 (no checkpoints) or a positive number of steps")
    if strategy == "ddp":
        require(batch_size >= nproc, owner, "batch_size", batch_size,
                f"DDP needs at least one row per process: use a batch of at least nproc={nproc}")


def check_pipeline(owner: str, *, nproc: int, replicas: int, depth: int, batch_size: int, microbatches: int,
                   schedule: str, balance: Sequence[int], balance_value: Any = None) -> None:
    """The pipeline's layout: stages x replicas, layers per stage, equal micro-batches, the schedule.

    ``balance_value`` is the owner's field as the user gave it (e.g. the text "2,1"), shown in messages.
    """
    shown = balance if balance_value is None else balance_value
    layers = depth + 2  # embedding, blocks, head
    require(replicas >= 1 and nproc % replicas == 0, owner, "replicas", replicas,
            f"use a divisor of nproc={nproc}: nproc = stages x replicas")
    stages = nproc // replicas
    require(stages >= 2, owner, "nproc", nproc, f"a pipeline needs at least 2 stages: nproc / replicas = {stages}")
    require(stages <= layers, owner, "nproc", nproc,
            f"the model has {layers} layers (depth + 2) and cannot be split into {stages} stages: "
            f"use at most {layers} stages or a larger depth")
    require(batch_size % replicas == 0, owner, "batch_size", batch_size, f"use a multiple of replicas={replicas}")
    require(schedule in SCHEDULES, owner, "schedule", schedule, "use 'gpipe' or '1f1b'")
    rows = batch_size // replicas  # per copy of the pipeline
    require(1 <= microbatches <= rows, owner, "microbatches", microbatches,
            f"use between 1 and {rows} micro-batches (batch_size={batch_size} / replicas={replicas})")
    require(rows % microbatches == 0, owner, "batch_size", batch_size,
            f"use a multiple of microbatches x replicas={microbatches * replicas} (equal micro-batches)")
    if schedule == "1f1b":
        require(microbatches >= stages, owner, "microbatches", microbatches,
                f"1F1B needs at least as many micro-batches as stages ({stages})")
    if balance:
        require(all(b >= 1 for b in balance), owner, "balance", shown, "give every stage at least 1 layer")
        require(len(balance) == stages, owner, "balance", shown, f"give one count per stage ({stages} stages)")
        require(sum(balance) == layers, owner, "balance", shown,
                f"the counts sum to {sum(balance)} but the model has {layers} layers (depth + 2): make them sum to {layers}")


def check_devices(owner: str, device: str, nproc: int) -> None:
    devices = available_devices(device)
    require(nproc <= devices, owner, "nproc", nproc, f"only {devices} {device} device(s) here: use nproc <= {devices}")
