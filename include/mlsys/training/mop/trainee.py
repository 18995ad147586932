"""One configuration's model as it hops: train a sub-epoch on a partition, pack its state, unpack it elsewhere.

A configuration is a ``Model``: a builder (``"package.module:function"`` called with ``config``) that
returns a ``Recipe`` (seeded layers, optimizer factory, loss, memory budget), and its epochs, batch
size and seed. Two trainees behind one interface:

    Resident   the layers as one module on the device; its state is the module's and the optimizer's
               state dicts and the RNG state
    Spilled    Hydra's spiller (``mlsys.training.spill``): a model larger than ``budget_bytes`` trains
               shard by shard; its state is every layer's record (weights, buffers, optimizer state)

A packed state is ``torch.save`` bytes in a uint8 tensor (what crosses the wire), read back with
``weights_only=True``: a peer's bytes never run code. The RNG state travels with the model, so dropout
draws the same masks wherever a unit runs: MOP training equals sequential training in the same visit order.

The batch order of a unit depends on (seed, epoch, partition) alone (``batch_order``).
"""

from __future__ import annotations

import importlib
import io
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from mlsys.spec import require
from mlsys.training.parallel.checkpoint import rng_state, set_rng_state
from mlsys.training.parallel.partitioner import Chain, layers_of

Partition = dict  # {"inputs": [tensor (n, ...)], "targets": [tensor (n, ...)]}: rows along dim 0
RNG_OFFSET = 7919  # the training RNG stream of a model seeded s starts at s + RNG_OFFSET (init uses s)


@dataclass(frozen=True)
class Recipe:
    """What a builder returns: how to build and train one configuration."""

    layers: Callable[[], Iterable[nn.Module]]  # fresh layers, seeded by the builder
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    loss_fn: Callable[..., torch.Tensor]  # loss_fn(output, *targets) -> scalar mean over the batch
    budget_bytes: int = 0  # device memory for the model; 0 = resident; > 0 = spilled into shards that fit


@dataclass(frozen=True)
class Model:
    """One configuration of a MOP job."""

    name: str
    builder: str  # "package.module:function" -> Recipe
    config: dict = field(default_factory=dict)  # JSON-safe, passed to the builder
    epochs: int = 1
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self):
        require(bool(self.name) and all(c.isalnum() or c in "-_." for c in self.name), "Model", "name", self.name,
                "use letters, digits, '-', '_' and '.' only")
        require(":" in self.builder, "Model", "builder", self.builder, "give 'package.module:function'")
        require(self.epochs >= 1, "Model", "epochs", self.epochs, f"use at least 1 (configuration {self.name!r})")
        require(self.batch_size >= 1, "Model", "batch_size", self.batch_size,
                f"use at least 1 (configuration {self.name!r})")

    def recipe(self) -> Recipe:
        module, func = self.builder.split(":")
        return getattr(importlib.import_module(module), func)(self.config)

    def to_json(self) -> dict:
        return asdict(self)


def rows(part: Partition) -> int:
    return int(part["inputs"][0].shape[0])


def batch_order(seed: int, epoch: int, partition: int, n: int) -> torch.Tensor:
    """The row order of a unit: a permutation seeded by (seed, epoch, partition) alone."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch * 1009 + partition))


def batches(part: Partition, model: Model, epoch: int, partition: int,
            device: torch.device) -> Iterator[tuple[tuple, tuple, int]]:
    """(inputs, targets, rows) of each mini-batch of a unit, on ``device``; the last may be short."""
    order = batch_order(model.seed, epoch, partition, rows(part))
    for i in range(0, len(order), model.batch_size):
        idx = order[i : i + model.batch_size]
        yield (tuple(x[idx].to(device, non_blocking=True) for x in part["inputs"]),
               tuple(y[idx].to(device, non_blocking=True) for y in part["targets"]), len(idx))


def pack(state: dict[str, Any]) -> torch.Tensor:
    """A state (tensors and plain data) as bytes in a uint8 tensor, ready to send."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return torch.frombuffer(bytearray(buf.getbuffer()), dtype=torch.uint8)


def unpack(data: torch.Tensor) -> dict[str, Any]:
    """The state in ``pack``'s bytes, on the CPU; weights_only: bytes from a peer never run code."""
    return torch.load(io.BytesIO(data.numpy().tobytes()), map_location="cpu", weights_only=True)


class Resident:
    """A configuration that fits its device: one module and one optimizer."""

    spilled = False

    def __init__(self, model: Model, recipe: Recipe, device: torch.device):
        self.model, self.recipe, self.device = model, recipe, device
        self.net = Chain(list(layers_of(recipe.layers()))).to(device)
        self.opt = recipe.optimizer(list(self.net.parameters()))
        torch.manual_seed(model.seed + RNG_OFFSET)
        self.rng = rng_state(device)

    def train(self, part: Partition, epoch: int, partition: int) -> tuple[float, int]:
        """One sub-epoch over ``part``: (mean loss over its rows, rows)."""
        set_rng_state(self.rng, self.device)
        total, seen = torch.zeros((), dtype=torch.float64, device=self.device), 0
        for inputs, targets, n in batches(part, self.model, epoch, partition, self.device):
            loss = self.recipe.loss_fn(self.net(*inputs), *targets)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.detach() * n
            seen += n
        self.rng = rng_state(self.device)
        return float(total) / max(seen, 1), seen

    def state(self) -> dict[str, Any]:
        return {"kind": "resident", "model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                "rng": self.rng}

    def load(self, state: dict[str, Any]) -> None:
        _expect(state, "resident", self.model)
        self.net.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.rng = state["rng"]

    def layers(self) -> list[dict[str, torch.Tensor]]:
        """Each layer's state dict, on the CPU (the trained model)."""
        return [{k: v.detach().cpu() for k, v in layer.state_dict().items()} for layer in self.net.layers]

    @property
    def shards(self) -> list[list[int]]:
        return [list(range(len(self.net.layers)))]


class Spilled:
    """A configuration trained shard by shard within ``budget_bytes`` (Hydra); its records hop."""

    spilled = True

    def __init__(self, model: Model, recipe: Recipe, device: torch.device, sample: tuple):
        from mlsys.training.spill.spiller import Spiller

        self.model, self.recipe, self.device = model, recipe, device
        # host tier: the records are host tensors, packed and sent as they are
        self.sp = Spiller.build(recipe.layers(), sample, recipe.optimizer, recipe.budget_bytes, tier="host",
                                device=device, prefetch=device.type == "cuda")
        torch.manual_seed(model.seed + RNG_OFFSET)
        self.rng = rng_state(device)

    def train(self, part: Partition, epoch: int, partition: int) -> tuple[float, int]:
        set_rng_state(self.rng, self.device)
        total, seen = 0.0, 0
        for inputs, targets, n in batches(part, self.model, epoch, partition, self.device):
            total += self.sp.train_step(inputs, targets, self.recipe.loss_fn) * n
            seen += n
        self.sp.synchronize()  # every record's write-back has landed: the records are the state
        self.rng = rng_state(self.device)
        return total / max(seen, 1), seen

    def state(self) -> dict[str, Any]:
        return {"kind": "spilled", "records": [buf for _, buf in self.sp.store.records()], "rng": self.rng}

    def load(self, state: dict[str, Any]) -> None:
        _expect(state, "spilled", self.model)
        records = state["records"]
        mine = [buf for _, buf in self.sp.store.records()]
        sizes = ([r.numel() for r in records], [m.numel() for m in mine])
        require(sizes[0] == sizes[1], "Spilled", f"{self.model.name}.records", sizes[0],
                f"the sender cut the model into records of other sizes than {sizes[1]}: build every rank's "
                "copy from the same builder, config and budget")
        for dst, src in zip(mine, records):
            dst.copy_(src)
        self.rng = state["rng"]

    def layers(self) -> list[dict[str, torch.Tensor]]:
        return [{k: v.detach().cpu() for k, v in layer.state_dict().items()} for layer in self.sp.export()]

    @property
    def shards(self) -> list[list[int]]:
        return [list(s) for s in self.sp.shards]


Trainee = Resident | Spilled


def _expect(state: dict, kind: str, model: Model) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"configuration {model.name!r}: received a {state.get('kind')!r} state, expected {kind!r}; "
                         "every rank must build the configuration with the same budget")


def warm(models: Sequence[Model], part: Partition, device: torch.device | str = "cpu") -> None:
    """Build every configuration once and train it on one batch of ``part``, thrown away: imports and torch's lazy
    first-call work are paid before a clock starts (workers start with the code loaded)."""
    for m in models:
        batch = {k: [t[: m.batch_size] for t in part[k]] for k in ("inputs", "targets")}
        build(m, device, batch).train(batch, 0, 0)


def build(model: Model, device: torch.device | str, part: Partition) -> Trainee:
    """A fresh trainee: Resident, or Spilled when the recipe sets a budget (shapes from ``part``'s first rows)."""
    device = torch.device(device)
    recipe = model.recipe()
    if recipe.budget_bytes > 0:
        # a copy with its own storage: the pilot counts a saved tensor's whole storage
        sample = tuple(x[: model.batch_size].clone().to(device) for x in part["inputs"])
        return Spilled(model, recipe, device, sample)
    return Resident(model, recipe, device)


def train_sequential(model: Model, parts: Sequence[Partition], visits: Sequence[tuple[int, int]],
                     device: torch.device | str = "cpu") -> tuple[Trainee, list[float]]:
    """The reference: one process trains ``model`` over ``parts`` in the order ``visits`` [(epoch, partition)]
    names; returns the trainee and each unit's mean loss. A MOP run with that visit order gives the same."""
    trainee = build(model, device, parts[visits[0][1]] if visits else parts[0])
    return trainee, [trainee.train(parts[p], e, p)[0] for e, p in visits]
