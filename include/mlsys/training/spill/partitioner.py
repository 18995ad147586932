"""Hydra's pilot partitioner: measure each layer, then cut the model into shards that fit a memory budget (torch only).

The pilot runs every layer once, on a copy and on a sample batch, on the compute device: forward,
backward and one optimizer step. It records what the layer really needs there:

    params + buffers    the layer's record, loaded with it
    grads               created by backward
    optimizer state     created by the first step (its shapes are kept: the spill store lays them out)
    activations         on CUDA: the peak of torch.cuda.max_memory_allocated over the layer's
                        forward, backward and step, minus the rest; on CPU (no allocator peak to
                        read): twice the bytes autograd saved for backward (saved-tensor hooks),
                        plus the output and the optimizer step's temporaries

and the forward and backward times, which SHARP uses as the cost of a shard.

A shard is a run of consecutive layers. Its *train* bytes (everything above) must fit the budget,
with the boundary activations every shard keeps for backward. With prefetch on, the next shard's
record is loaded while a shard trains, so for each pair of neighbours a, b:

    train(a) + load(b) <= budget   and   train(b) + load(a) <= budget
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
MB = 2**20


@dataclass(frozen=True)
class LayerCost:
    index: int
    kind: str  # the layer's class name
    param_bytes: int  # parameters + buffers
    grad_bytes: int
    state_bytes: int
    activation_bytes: int
    output_bytes: int
    forward_s: float
    backward_s: float  # forward with autograd + backward + step
    state: dict[int, dict[str, tuple[tuple[int, ...], str]]] = field(default_factory=dict)

    @property
    def load_bytes(self) -> int:
        """What moves to the device with the layer: its record."""
        return self.param_bytes + self.state_bytes

    @property
    def train_bytes(self) -> int:
        return self.param_bytes + self.grad_bytes + self.state_bytes + self.activation_bytes

    def describe(self) -> str:
        return (f"layer {self.index} ({self.kind}) needs {self.train_bytes / MB:.2f} MiB on the device "
                f"(params {self.param_bytes / MB:.2f}, grads {self.grad_bytes / MB:.2f}, optimizer state "
                f"{self.state_bytes / MB:.2f}, activations {self.activation_bytes / MB:.2f} MiB)")


def make_optimizer(factory: OptimizerFactory, params: list[nn.Parameter]) -> torch.optim.Optimizer | None:
    """The factory's optimizer over ``params``; None for a layer or shard without parameters (ReLU, Dropout)."""
    return factory(params) if params else None


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _to(xs: tuple, device: torch.device) -> tuple:
    return tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in xs)


def measure(index: int, layer: nn.Module, inputs: tuple, optimizer: OptimizerFactory,
            device: torch.device | str = "cpu", in_place: bool = False) -> tuple[LayerCost, torch.Tensor]:
    """Run one layer forward, backward and one step; return its cost and its output (from the weights before the step).

    By default a copy runs and ``layer`` is untouched; ``in_place=True`` runs ``layer`` itself (moved to
    ``device`` and stepped), so that only one copy of a large layer is ever in memory: the spiller saves
    the weights first.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    inputs = tuple(x.detach().requires_grad_(x.is_floating_point()) if isinstance(x, torch.Tensor) else x
                   for x in _to(inputs, device))
    if cuda:
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    probe = layer.to(device) if in_place else copy.deepcopy(layer).to(device)
    param_bytes = sum(_nbytes(p) for p in probe.parameters()) + sum(_nbytes(b) for b in probe.buffers())

    t0 = time.perf_counter()
    with torch.no_grad():
        probe(*inputs)
    if cuda:
        torch.cuda.synchronize(device)
    forward_s = time.perf_counter() - t0

    saved: dict[int, int] = {}

    weights = {p.untyped_storage().data_ptr() for p in probe.parameters()}

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if t.device.type != "meta" and ptr not in weights:  # a Linear saves its weight: counted already
            saved.setdefault(ptr, t.untyped_storage().nbytes())
        return t

    opt = make_optimizer(optimizer, list(probe.parameters()))
    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = probe(*inputs)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"layer {index} ({type(layer).__name__}) returned {type(out).__name__}: spilled layers "
                        "must return one tensor (the next layer's input)")
    if out.requires_grad:
        out.backward(torch.ones_like(out))
    if opt is not None:
        opt.step()
    if cuda:
        torch.cuda.synchronize(device)
    backward_s = time.perf_counter() - t0

    grad_bytes = sum(_nbytes(p.grad) for p in probe.parameters() if p.grad is not None)
    state, state_bytes = {}, 0
    for i, p in enumerate(probe.parameters()):
        for key, value in (opt.state.get(p, {}) if opt is not None else {}).items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"optimizer state {key!r} of layer {index} is a {type(value).__name__}: only "
                                "optimizers whose state is tensors (SGD, Adam, AdamW, ...) can be spilled")
            state.setdefault(i, {})[key] = (tuple(value.shape), str(value.dtype))
            state_bytes += _nbytes(value)
    output_bytes = _nbytes(out)
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) - base
        activation_bytes = max(peak - param_bytes - grad_bytes - state_bytes, output_bytes)
    else:
        # no allocator peak to read on CPU: what autograd saved, as much again for the gradients backward
        # creates from it, the output, and the optimizer's temporaries (Adam: two of its largest parameter)
        largest = max((_nbytes(p) for p in probe.parameters()), default=0)
        activation_bytes = 2 * sum(saved.values()) + output_bytes + (2 * largest if state_bytes else largest)
    cost = LayerCost(index, type(layer).__name__, param_bytes, grad_bytes, state_bytes, activation_bytes,
                     output_bytes, forward_s, backward_s, state)
    result = out.detach()
    del probe, opt, out, inputs
    return cost, result


def _fits(a: Sequence[LayerCost], b: Sequence[LayerCost] | None, budget: int, prefetch: int, cap: int) -> bool:
    train_a = sum(c.train_bytes for c in a)
    if train_a > min(budget, cap):
        return False
    if not prefetch or not b:
        return True
    load = lambda s: prefetch * sum(c.load_bytes for c in s)  # noqa: E731
    train_b = sum(c.train_bytes for c in b)
    return train_a + load(b) <= budget and train_b + load(a) <= budget


class _NoFit(Exception):
    def __init__(self, cost: LayerCost):
        self.cost = cost


def _greedy(costs: Sequence[LayerCost], budget: int, prefetch: int, cap: int) -> list[list[LayerCost]]:
    shards: list[list[LayerCost]] = []
    current: list[LayerCost] = []
    for cost in costs:
        prev = shards[-1] if shards else None
        if _fits(current + [cost], prev, budget, prefetch, cap):
            current.append(cost)
            continue
        if not current:
            raise _NoFit(cost)
        shards.append(current)
        current = [cost]
        if not _fits(current, shards[-1], budget, prefetch, cap):
            raise _NoFit(cost)
    shards.append(current)
    return shards


def _prefetch_greedy(costs: Sequence[LayerCost], budget: int, prefetch: int) -> list[list[LayerCost]]:
    """Greedy packing; with prefetch, shards are capped smaller and smaller until every neighbour pair fits."""
    cap, floor = budget, max(c.train_bytes for c in costs)
    while True:
        try:
            return _greedy(costs, budget, prefetch, cap)
        except _NoFit:
            if not prefetch or cap <= floor:
                raise
            cap = max(floor, int(cap * 0.9))


def partition(costs: Sequence[LayerCost], budget_bytes: int, prefetch: bool = True, input_bytes: int = 0,
              evict_overlap: bool = False) -> list[range]:
    """Consecutive layer ranges, one per shard, each fitting ``budget_bytes`` (see the module docstring).

    ``evict_overlap`` (CUDA): the previous shard's write-back copy may still hold its device buffer
    while the next shard is prefetched, so each neighbour's record counts twice.

    Raises ValueError naming the layer when one layer alone does not fit.
    """
    if budget_bytes <= 0:
        raise ValueError(f"budget_bytes={budget_bytes} is invalid: give the device memory budget in bytes (> 0)")
    if not costs:
        raise ValueError("the model has no layers to partition")
    for cost in costs:
        if cost.train_bytes + input_bytes > budget_bytes:
            raise ValueError(f"{cost.describe()}, more than the budget of {budget_bytes / MB:.2f} MiB: raise the budget "
                             f"to at least {(cost.train_bytes + input_bytes) / MB:.2f} MiB, or split that layer")
    reserve = input_bytes
    for _ in range(8):  # the boundary activations every shard keeps depend on where the cuts fall
        try:
            shards = _prefetch_greedy(costs, budget_bytes - reserve, (2 if evict_overlap else 1) if prefetch else 0)
        except _NoFit as exc:
            beside = "beside the prefetched neighbouring shard's record and " if prefetch else ""
            raise ValueError(f"{exc.cost.describe()}: it must fit {beside}beside the boundary activations kept for "
                             f"backward ({reserve / MB:.2f} MiB) in the budget of {budget_bytes / MB:.2f} MiB: raise "
                             f"the budget{', turn prefetch off' if prefetch else ''} or use a smaller batch") from None
        needed = input_bytes + sum(s[-1].output_bytes for s in shards[:-1])
        if needed <= reserve:
            break
        reserve = needed
    else:
        raise ValueError(f"no partition fits {budget_bytes / MB:.2f} MiB with the boundary activations "
                         f"({reserve / MB:.2f} MiB): raise the budget or use a smaller batch")
    ranges, start = [], 0
    for shard in shards:
        ranges.append(range(start, start + len(shard)))
        start += len(shard)
    return ranges
