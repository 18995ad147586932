"""The `pipeline` strategy: GPipe-style pipeline parallelism on torch.distributed.pipelining (torch only).

Each of K processes (ranks) owns one stage: a contiguous run of the model's
layers (see ``partitioner``). A mini-batch is cut into M micro-batches that flow
through the stages; activations go forward and gradients backward over P2P
(gloo on CPU, NCCL on GPUs). Two schedules, K=3 stages and M=4 micro-batches,
one column per clock tick (F = forward, B = backward of micro-batch i):

    GPipe (fill, then drain): every stage holds all M micro-batches' activations
        stage 0: F0 F1 F2 F3 .  .  .  .  B0 B1 B2 B3
        stage 1: .  F0 F1 F2 F3 .  .  B0 B1 B2 B3 .
        stage 2: .  .  F0 F1 F2 F3 B0 B1 B2 B3 .  .        (backward mirrored as in the paper)

    1F1B (one forward, one backward): a stage holds at most K - rank micro-batches
        stage 0: F0 F1 F2 .  .  B0 F3 B1 .  B2 .  B3
        stage 1: .  F0 F1 .  B0 F2 B1 F3 B2 .  B3 .
        stage 2: .  .  F0 B0 F1 B1 F2 B2 F3 B3 .  .

Both have the same bubble, (K - 1) / (M + K - 1) of each stage's time; 1F1B
needs min(M, K) instead of M micro-batches of activations in memory.

Gradients are summed over micro-batches (``scale_grads=False``) and the loss is
each micro-batch's share of the batch loss (``loss.loss_share``), so one step
equals single-process training on the whole batch.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
from torch.utils.checkpoint import checkpoint

from mlsys.model.loss import loss_share
from mlsys.training.parallel import microbatch, partitioner

SCHEDULES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}


class Rematerialized(nn.Module):
    """A stage that keeps only its input for backward and recomputes its activations (GPipe's re-materialisation)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return checkpoint(self.inner, *inputs, use_reentrant=False)


class TimedStage(PipelineStage):
    """A PipelineStage that records when it computes: events (kind "F"/"B", micro-batch, start, end).

    Clock: time.perf_counter(), which is the same monotonic clock in every process on one host.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.events: list[tuple[str, int, float, float]] = []
        self.max_in_flight = 0  # micro-batches whose activations are held for backward at once
        self._sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

    def forward_one_chunk(self, fwd_chunk_id, args, kwargs=None, save_forward_output=True):
        t0 = time.perf_counter()
        out = super().forward_one_chunk(fwd_chunk_id, args, kwargs, save_forward_output)
        self._sync()
        self.events.append(("F", fwd_chunk_id, t0, time.perf_counter()))
        self.max_in_flight = max(self.max_in_flight, len(self.fwd_cache))
        return out

    def backward_one_chunk(self, bwd_chunk_id, loss=None, full_backward=True, last_backward=False):
        t0 = time.perf_counter()
        out = super().backward_one_chunk(bwd_chunk_id, loss=loss, full_backward=full_backward, last_backward=last_backward)
        self._sync()
        self.events.append(("B", bwd_chunk_id, t0, time.perf_counter()))
        return out


class PipelineStrategy:
    """This rank's stage of the model and the schedule that drives it.

    Every rank calls ``step`` with the same arguments; the first stage reads the
    inputs and the last the target. Returns the batch loss on the last stage, None elsewhere.
    """

    def __init__(
        self,
        model: nn.Module | Sequence[nn.Module],
        balance: Sequence[int],
        microbatches: int,
        schedule: str = "gpipe",
        device: torch.device | str = "cpu",
        group: dist.ProcessGroup | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = loss_share,
        rematerialize: bool = False,
    ):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule={schedule!r} is unknown: use one of {sorted(SCHEDULES)}")
        self.group = group
        self.rank = dist.get_rank(group)  # the stage index: rank within the pipeline's group
        self.stages = dist.get_world_size(group)
        self.balance = partitioner.check_balance(balance, len(partitioner.layers_of(model)), self.stages)
        self.microbatches = microbatches
        self.device = torch.device(device)
        self.module = partitioner.split(model, self.balance)[self.rank].to(self.device)
        self.layer_range = partitioner.boundaries(self.balance)[self.rank]
        self.stage = TimedStage(Rematerialized(self.module) if rematerialize else self.module,
                                self.rank, self.stages, self.device, group=group)
        self.schedule = SCHEDULES[schedule](self.stage, microbatches, loss_fn=loss_fn, scale_grads=False)
        self.is_first, self.is_last = self.rank == 0, self.rank == self.stages - 1

    def parameters(self):
        return self.module.parameters()

    def step(self, inputs: Sequence[torch.Tensor], target: torch.Tensor) -> float | None:
        """inputs: the model's inputs for the whole batch (B, ...); target: (B, ...) for loss_fn."""
        microbatch.check(self.microbatches, inputs[0].shape[0])
        self.stage.events.clear()
        self.stage.max_in_flight = 0
        args = tuple(x.to(self.device) for x in inputs) if self.is_first else ()
        kwargs = {}
        losses: list[torch.Tensor] = []
        if self.is_last:
            kwargs = {"target": target.to(self.device), "losses": losses}
        self.schedule.step(*args, **kwargs)
        return float(sum(loss.detach() for loss in losses)) if self.is_last else None

    def busy_seconds(self) -> float:
        return sum(t1 - t0 for _, _, t0, t1 in self.stage.events)


def gather_timeline(strategy: PipelineStrategy, start: float, end: float) -> list[dict] | None:
    """All stages' events of the last step, relative to the earliest start, on rank 0 (None elsewhere)."""
    mine = {"stage": strategy.rank, "start": start, "end": end, "events": list(strategy.stage.events),
            "max_in_flight": strategy.stage.max_in_flight, "layers": list(strategy.layer_range)}
    everyone: list = [None] * strategy.stages
    dist.all_gather_object(everyone, mine, group=strategy.group)
    if strategy.rank != 0:
        return None
    origin = min(s["start"] for s in everyone)
    for s in everyone:
        s["events"] = [(k, i, t0 - origin, t1 - origin) for k, i, t0, t1 in s["events"]]
        s["start"], s["end"] = s["start"] - origin, s["end"] - origin
    return everyone


def bubble_fraction(timeline: list[dict]) -> float:
    """Mean over stages of the share of the step's wall time a stage was not computing."""
    span = max(s["end"] for s in timeline) - min(s["start"] for s in timeline)
    busy = [sum(t1 - t0 for _, _, t0, t1 in s["events"]) for s in timeline]
    return 1.0 - sum(busy) / (len(busy) * span) if span > 0 else 0.0


def mesh(stages: int) -> tuple[dist.ProcessGroup, dist.ProcessGroup, int, int]:
    """Groups for pipeline x data parallelism: world = stages x replicas, rank = replica * stages + stage.

    Returns (this rank's pipeline group, its data-parallel group, stage, replica). Every rank creates every group.
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    if world % stages:
        raise ValueError(f"stages={stages} does not divide the {world} processes: use nproc = stages x replicas")
    replicas = world // stages
    pipes = [dist.new_group([r * stages + s for s in range(stages)]) for r in range(replicas)]
    copies = [dist.new_group([r * stages + s for r in range(replicas)]) for s in range(stages)]
    return pipes[rank // stages], copies[rank % stages], rank % stages, rank // stages


class PipelineDDPStrategy:
    """Pipeline x DDP: R copies of a K-stage pipeline; copy r trains on rows tensor_split(B, R)[r].

    After the pipeline's backward, each stage's gradients are summed over the copies of that stage
    in one flat all-reduce (losses are shares of the whole batch, so the sum is the full gradient).

        replica 0:  rank 0 (stage 0) -> rank 1 (stage 1)
        replica 1:  rank 2 (stage 0) -> rank 3 (stage 1)
        all-reduce: {0, 2} and {1, 3}
    """

    def __init__(self, model, balance: Sequence[int], microbatches: int, schedule: str = "gpipe",
                 device: torch.device | str = "cpu", loss_fn=loss_share, rematerialize: bool = False):
        pipe_group, self.dp_group, _, self.replica = mesh(len(balance))
        self.replicas = dist.get_world_size(self.dp_group)
        self.pipe = PipelineStrategy(model, balance, microbatches, schedule, device, pipe_group, loss_fn, rematerialize)
        self.module, self.balance, self.layer_range = self.pipe.module, self.pipe.balance, self.pipe.layer_range
        self.stage, self.group, self.rank, self.stages = self.pipe.stage, pipe_group, self.pipe.rank, self.pipe.stages

    def parameters(self):
        return self.pipe.parameters()

    def step(self, inputs: Sequence[torch.Tensor], target: torch.Tensor) -> float | None:
        """Returns the whole batch's loss on the last stages, None elsewhere."""
        rows = lambda t: torch.tensor_split(t, self.replicas, dim=0)[self.replica]  # noqa: E731
        loss = self.pipe.step(tuple(rows(x) for x in inputs), rows(target))
        grads = [p.grad for p in self.pipe.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=self.dp_group)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        if self.pipe.is_last:
            total = torch.tensor([loss], dtype=torch.float64, device=self.pipe.device)
            dist.all_reduce(total, group=self.dp_group)
            return float(total)
        return None

    def busy_seconds(self) -> float:
        return self.pipe.busy_seconds()
