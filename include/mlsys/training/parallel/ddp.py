"""The `ddp` strategy: data parallelism with torch.nn.parallel.DistributedDataParallel (torch only).

Every rank holds the whole model and sees the same mini-batch; rank r trains on
rows tensor_split(B, world)[r]. DDP averages gradients over ranks, so each rank's
loss is its rows' share of the batch loss (``loss.loss_share``) times the world
size: the average then equals the gradient of the whole batch on one process.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mlsys.model.loss import loss_share
from mlsys.training.parallel import partitioner


class DDPStrategy:
    def __init__(
        self,
        model: nn.Module | Sequence[nn.Module],
        device: torch.device | str = "cpu",
        group: dist.ProcessGroup | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = loss_share,
    ):
        self.device = torch.device(device)
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        # Models with pipeline_layers() (padded input) or lists run as a Chain; plain modules as they are.
        if hasattr(model, "pipeline_layers") or isinstance(model, (list, tuple)):
            model = partitioner.Chain(partitioner.layers_of(model))
        self.module = model.to(self.device)
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(self.module, device_ids=ids, process_group=group)
        self.group = group
        self.loss_fn = loss_fn

    def parameters(self):
        return self.module.parameters()

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        return torch.tensor_split(tensor, self.world, dim=0)[self.rank]

    def step(self, inputs: Sequence[torch.Tensor], target: torch.Tensor) -> float:
        """Forward and backward on this rank's rows; returns the whole batch's loss (summed over ranks)."""
        args = tuple(self.shard(x).to(self.device) for x in inputs)
        share = self.loss_fn(self.ddp(*args), self.shard(target).to(self.device))
        (share * self.world).backward()
        total = share.detach().clone()
        dist.all_reduce(total, group=self.group)
        return float(total)
