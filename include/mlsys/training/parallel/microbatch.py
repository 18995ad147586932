"""Micro-batches: a mini-batch of B rows cut into M chunks along dim 0, and the arithmetic of the bubble.

With K stages and M micro-batches a fill-drain pipeline takes M + K - 1 clock
ticks to run M x K units of work, so each stage idles for the bubble fraction
(K - 1) / (M + K - 1), and the best speedup over one device is K·M / (M + K - 1).
"""

from __future__ import annotations

from typing import Sequence

import torch


def check(microbatches: int, batch: int) -> None:
    """ValueError unless 1 <= M <= batch and M divides the batch (equal chunks keep P2P shapes fixed)."""
    if microbatches < 1:
        raise ValueError(f"microbatches={microbatches} is invalid: use at least 1")
    if microbatches > batch:
        raise ValueError(f"microbatches={microbatches} is larger than the batch of {batch} rows: use at most {batch}")
    if batch % microbatches:
        raise ValueError(
            f"batch={batch} does not split into microbatches={microbatches} equal chunks: "
            f"use a batch that is a multiple of {microbatches}"
        )


def scatter(tensors: Sequence[torch.Tensor], microbatches: int) -> list[tuple[torch.Tensor, ...]]:
    """[(t0[chunk], t1[chunk], ...) for each of the M chunks]."""
    check(microbatches, tensors[0].shape[0])
    chunks = [torch.tensor_split(t, microbatches, dim=0) for t in tensors]
    return [tuple(c[i] for c in chunks) for i in range(microbatches)]


def bubble_theory(stages: int, microbatches: int) -> float:
    return (stages - 1) / (microbatches + stages - 1)


def ideal_speedup(stages: int, microbatches: int) -> float:
    return stages * microbatches / (microbatches + stages - 1)


def bound_time(sequential_s: float, stages: int, microbatches: int) -> float:
    """The bound's time: the M micro-batches run one after another on one device, ideally pipelined."""
    return sequential_s * (microbatches + stages - 1) / (stages * microbatches)
