"""Hydra's model spilling: train a model larger than the device, one shard at a time (torch only).

The model (an ``nn.Sequential`` or any iterable of layers: a generator builds a model larger than
RAM one layer at a time) is measured by the pilot partitioner and cut into k shards. Every layer's
weights, buffers and optimizer state live in a ``SpillStore`` (host RAM, pinned on GPU hosts, or
memory-mapped files); only the shard being trained (and the prefetched next one) is on the device.

One training step is 2k - 1 *units*; each loads one shard, runs it, and releases it:

    unit    0     1    ...  k-2   |  k-1              k       ...   2k-2
    shard   0     1    ...  k-2   |  k-1              k-2     ...   0
    work    forward without grad; |  forward + loss   reload, recompute forward from the saved
            keep only the output  |  + backward       input, backward, step the shard's
            (boundary activation) |  + step           optimizer at once, write back, release

    device  [fetch 0]
                     [fwd 0][fetch 1]             with prefetch, the fetch of the next unit's shard
                            [fwd 1][fetch 2] ...  overlaps this unit's compute: on CUDA a side stream
                                                  with non-blocking copies from pinned memory, on CPU's
                                                  disk tier a thread that faults the next files in

Because each shard's gradient is final when its backward unit ends, stepping it at once is the same
arithmetic as one optimizer over the whole model (element-wise optimizers: SGD, Adam, AdamW ...; not
a global gradient-norm clip). The RNG state each shard saw in forward is replayed in its recompute
(dropout draws the same masks) and buffers mutated in forward (BatchNorm running statistics) are
restored after it, so spilled training equals unspilled training.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from mlsys.training.parallel.checkpoint import rng_state, set_rng_state
from mlsys.training.parallel.partitioner import layers_of
from mlsys.training.spill.partitioner import (
    LayerCost,
    OptimizerFactory,
    make_optimizer,
    measure,
    partition,
)
from mlsys.training.spill.store import SpillStore, return_freed_memory, views

LossFn = Callable[..., torch.Tensor]  # loss_fn(output, *targets) -> scalar
PAGE = 4096


@dataclass
class _Fetched:
    layer: int
    host: torch.Tensor  # the whole record on the host (RAM tensor or file mapping)
    dev: torch.Tensor  # the record (or its weights prefix) on the device; the same tensor on CPU
    ready: Any  # CUDA event: the copy has landed
    state_ready: bool
    scalars: dict[str, torch.Tensor]  # 0-dim optimizer state (Adam's step), kept on the CPU as torch expects


class Spiller:
    """Trains a spilled model. Build it with ``Spiller.build``; it takes ownership of the layers' weights."""

    def __init__(self, layers: list[nn.Module], shards: list[range], store: SpillStore, optimizer: OptimizerFactory,
                 device: torch.device | str = "cpu", prefetch: bool = True, costs: Sequence[LayerCost] = ()):
        self.layers, self.shards, self.store = layers, shards, store
        self.device = torch.device(device)
        self.prefetch, self.costs = prefetch, list(costs)
        self.optims = [make_optimizer(optimizer, [p for i in shard for p in layers[i].parameters()]) for shard in shards]
        self._cuda = self.device.type == "cuda"
        self._copy = torch.cuda.Stream(self.device) if self._cuda else None
        self._evict = torch.cuda.Stream(self.device) if self._cuda else None
        self._evicted: dict[int, Any] = {}
        threaded = prefetch and not self._cuda and store.tier == "disk"
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="spill-prefetch") if threaded else None

    @classmethod
    def build(cls, model: nn.Module | Iterable[nn.Module], sample: tuple, optimizer: OptimizerFactory,
              budget_bytes: int, tier: str = "host", root: str | Path | None = None,
              device: torch.device | str = "cpu", prefetch: bool = True, bound_rss: bool = False) -> "Spiller":
        """Measure each layer on ``sample`` (a batch of the first layer's inputs), store it, and partition.

        Layers are consumed one at a time: with a generator and the disk tier, at most one layer's
        weights are in memory during the build. ``bound_rss`` (for a RAM budget on the CPU): make
        glibc return freed tensors to the OS at once (``spill_store.return_freed_memory``); it costs
        page faults on every large allocation, so it is off unless the RSS must stay bounded.
        """
        device = torch.device(device)
        if bound_rss:
            return_freed_memory()
        store = SpillStore(tier, root, pin=device.type == "cuda" and tier == "host")
        layers, costs, xs = [], [], tuple(sample)
        for i, layer in enumerate(layers_of(model)):
            store.add(layer)  # the initial weights, before the pilot steps the layer in place
            rng = rng_state(device)  # the pilot's dropout must not shift a generator's next layer's init
            cost, out = measure(i, layer, xs, optimizer, device, in_place=True)
            set_rng_state(rng, device)
            store.set_state(i, cost.state)
            release(layer, device)
            layers.append(layer)
            costs.append(cost)
            xs = (out,)
            del out
        input_bytes = sum(x.numel() * x.element_size() for x in sample if isinstance(x, torch.Tensor))
        shards = partition(costs, budget_bytes, prefetch, input_bytes, evict_overlap=device.type == "cuda")
        return cls(layers, shards, store, optimizer, device, prefetch, costs)

    @property
    def units(self) -> int:
        return 2 * len(self.shards) - 1

    def is_backward(self, unit: int) -> bool:
        return unit >= len(self.shards) - 1

    def unit_shard(self, unit: int) -> int:
        k = len(self.shards)
        return unit if unit < k else 2 * k - 2 - unit

    # -- one step ------------------------------------------------------------------------------------------

    def new_step(self, inputs: tuple, targets: tuple) -> dict:
        """The state a step's units pass along: inputs on the device, the RNG state, saved boundaries."""
        to = lambda xs: tuple(x.to(self.device) if isinstance(x, torch.Tensor) else x for x in xs)  # noqa: E731
        return {"x": to(inputs), "targets": to(targets), "rng": rng_state(self.device), "saved": {}, "grad": None,
                "loss": None}

    def train_step(self, inputs: tuple, targets: tuple, loss_fn: LossFn) -> float:
        """One optimizer step on one batch; returns the loss."""
        state = self.new_step(inputs, targets)
        pending = self._start_fetch(0, self.units == 1)
        for unit in range(self.units):
            fetched = self._finish_fetch(pending)
            nxt = unit + 1
            pending = self._start_fetch(self.unit_shard(nxt), self.is_backward(nxt)) if nxt < self.units and self.prefetch else None
            self.run_unit(state, unit, loss_fn, fetched)
            if pending is None and nxt < self.units:
                pending = self._start_fetch(self.unit_shard(nxt), self.is_backward(nxt))
        set_rng_state(state["rng"], self.device)
        return float(state["loss"])

    def run_unit(self, state: dict, unit: int, loss_fn: LossFn, fetched: list[_Fetched] | None = None) -> None:
        """Run unit ``unit`` of a step (see the module docstring), fetching its shard unless given."""
        k = len(self.shards)
        s = self.unit_shard(unit)
        backward = self.is_backward(unit)
        fetched = fetched if fetched is not None else self._finish_fetch(self._start_fetch(s, backward))
        self._bind(s, fetched)
        try:
            if not backward:
                state["saved"][s] = (state["x"], state["rng"])
                set_rng_state(state["rng"], self.device)
                with torch.no_grad():
                    state["x"] = (self._forward(s, state["x"]),)
                state["rng"] = rng_state(self.device)
                return
            if s == k - 1:
                xs, rng = state["x"], state["rng"]
            else:
                xs, rng = state["saved"].pop(s)
            xs = _detach(xs, grad=s > 0)
            set_rng_state(rng, self.device)
            snapshot = [b.clone() for i in self.shards[s] for b in self.layers[i].buffers()] if s < k - 1 else []
            out = self._forward(s, xs)
            if s == k - 1:
                loss = loss_fn(out, *state["targets"])
                loss.backward()
                state["loss"] = loss.detach()
                state["rng"] = rng_state(self.device)
            else:
                out.backward(state["grad"])
                with torch.no_grad():  # the recompute must not count a batch twice in running statistics
                    for b, saved in zip((b for i in self.shards[s] for b in self.layers[i].buffers()), snapshot):
                        b.copy_(saved)
                set_rng_state(state["rng"], self.device)
            state["grad"] = xs[0].grad if s > 0 else None
            del out, xs
            if self.optims[s] is not None:
                self.optims[s].step()
        finally:
            self._unbind(s, fetched, write_back=backward)

    def _forward(self, s: int, xs: tuple) -> torch.Tensor:
        first, *rest = self.shards[s]
        out = self.layers[first](*xs)
        for i in rest:
            out = self.layers[i](out)
        return out

    @torch.no_grad()
    def predict(self, inputs: tuple) -> torch.Tensor:
        """Forward in eval mode (no dropout, running statistics), one shard at a time."""
        for layer in self.layers:
            layer.eval()
        try:
            xs = tuple(x.to(self.device) if isinstance(x, torch.Tensor) else x for x in inputs)
            for s in range(len(self.shards)):
                fetched = self._finish_fetch(self._start_fetch(s, False))
                self._bind(s, fetched)
                try:
                    xs = (self._forward(s, xs),)
                finally:
                    self._unbind(s, fetched, write_back=False)
            return xs[0]
        finally:
            for layer in self.layers:
                layer.train()

    def export(self) -> nn.Sequential:
        """The trained layers with their weights, on the CPU (the model must fit in RAM)."""
        self.synchronize()
        out = []
        for i, layer in enumerate(self.layers):
            layout = self.store.layouts[i]
            for name, p in layer.named_parameters():
                p.data = torch.empty(next(s.shape for s in layout.slots if s.name == name and s.kind == "param"),
                                     dtype=p.dtype)
            for name, b in layer.named_buffers():
                b.data = torch.empty(next(s.shape for s in layout.slots if s.name == name and s.kind == "buffer"),
                                     dtype=b.dtype)
            self.store.load_into(i, layer)
            out.append(layer)
        return nn.Sequential(*out)

    def synchronize(self) -> None:
        if self._cuda:
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    # -- moving shards ---------------------------------------------------------------------------------------

    def _start_fetch(self, s: int, with_state: bool):
        if self._pool is not None:
            return self._pool.submit(self._fetch, s, with_state)
        return self._fetch(s, with_state)

    @staticmethod
    def _finish_fetch(pending) -> list[_Fetched]:
        return pending.result() if isinstance(pending, concurrent.futures.Future) else pending

    def _fetch(self, s: int, with_state: bool) -> list[_Fetched]:
        """Bring shard ``s``'s records to the device: all of them for backward, weights only for forward."""
        out = []
        for i in self.shards[s]:
            if i in self._evicted:  # this record's last write-back must land before it is read again
                self._evicted.pop(i).synchronize()
            host = self.store.acquire(i)
            layout = self.store.layouts[i]
            ready = with_state and bool(host[0])  # before the first step there is no state to load
            size = layout.nbytes if ready else layout.weights_nbytes
            scalars: dict[str, torch.Tensor] = {}
            if not self._cuda:
                if self._pool is not None:
                    host[:size:PAGE].max()  # fault the mapping's pages in now, in this thread
                out.append(_Fetched(i, host, host, None, ready, scalars))
                continue
            if ready:
                hv = views(layout, host)
                scalars = {s.name: hv[("state", s.name)].clone() for s in layout.slots if s.kind == "state" and not s.shape}
            with torch.cuda.stream(self._copy):
                dev = torch.empty(size, dtype=torch.uint8, device=self.device)
                dev.copy_(host[:size], non_blocking=True)
                event = torch.cuda.Event()
                event.record(self._copy)
            out.append(_Fetched(i, host, dev, event, ready, scalars))
        return out

    def _bind(self, s: int, fetched: list[_Fetched]) -> None:
        opt = self.optims[s]
        state = opt.state if opt is not None else {}
        for f in fetched:
            if f.ready is not None:
                stream = torch.cuda.current_stream(self.device)
                stream.wait_event(f.ready)
                f.dev.record_stream(stream)
            layer, layout = self.layers[f.layer], self.store.layouts[f.layer]
            v = views(layout, f.dev)
            for name, p in layer.named_parameters():
                p.data = v[("param", name)]
            for name, b in layer.named_buffers():
                b.data = v[("buffer", name)]
            if not f.state_ready:
                continue
            for i, p in enumerate(layer.parameters()):
                prefix = f"{i}."
                state[p] = {name[len(prefix):]: f.scalars.get(name, v.get(("state", name)))
                                for (kind, name) in v if kind == "state" and name.startswith(prefix)}

    def _unbind(self, s: int, fetched: list[_Fetched], write_back: bool) -> None:
        state = self.optims[s].state if self.optims[s] is not None else {}
        for f in fetched:
            layer, layout = self.layers[f.layer], self.store.layouts[f.layer]
            v = views(layout, f.dev)
            if write_back:
                wrote = False
                for i, p in enumerate(layer.parameters()):
                    st = state.get(p, {})
                    for key in list(st):
                        value = st.pop(key)  # fresh state (the first step) is freed as soon as it is copied
                        target = v.get(("state", f"{i}.{key}"))
                        if target is None and f.dev is not f.host:  # first step on CUDA: only weights came over
                            target = views(layout, f.host).get(("state", f"{i}.{key}"))
                        if target is None or target.shape != value.shape:
                            raise RuntimeError(f"optimizer state {key!r} of parameter {i} of layer {f.layer} "
                                               "does not match what the pilot measured: use the same optimizer "
                                               "for the pilot and for training")
                        if target.data_ptr() != value.data_ptr():
                            target.copy_(value)
                        del value
                        wrote = True
                if wrote and not f.state_ready:
                    f.dev[0] = 1
            if f.dev is not f.host and (write_back or any(True for _ in layer.buffers())):
                current = torch.cuda.current_stream(self.device)
                with torch.cuda.stream(self._evict):
                    self._evict.wait_stream(current)
                    f.host[: f.dev.numel()].copy_(f.dev, non_blocking=True)
                    f.dev.record_stream(self._evict)
                    event = torch.cuda.Event()
                    event.record(self._evict)
                self._evicted[f.layer] = event
            for p in layer.parameters():
                state.pop(p, None)
            release(layer, self.device)
        fetched.clear()  # the last references to the device copies and file mappings


def release(layer: nn.Module, device: torch.device) -> None:
    """Point every parameter and buffer at an empty tensor: the record keeps the values."""
    for p in layer.parameters():
        p.data = torch.empty(0, dtype=p.dtype, device=device)
        p.grad = None
    for b in layer.buffers():
        b.data = torch.empty(0, dtype=b.dtype, device=device)


def _detach(xs: tuple, grad: bool) -> tuple:
    return tuple(x.detach().requires_grad_(grad and x.is_floating_point()) if isinstance(x, torch.Tensor) else x
                 for x in xs)


def train_resident(model: nn.Module, batches: Iterable[tuple[tuple, tuple]], optimizer: OptimizerFactory,
                   loss_fn: LossFn, device: torch.device | str = "cpu") -> list[float]:
    """The unspilled reference: the whole model on the device, one optimizer; returns the losses."""
    device = torch.device(device)
    layers = list(layers_of(model))
    seq = nn.Sequential(*layers).to(device) if not isinstance(model, nn.Sequential) else model.to(device)
    opt = optimizer(list(seq.parameters()))
    losses = []
    for inputs, targets in batches:
        xs = tuple(x.to(device) for x in inputs)
        out = seq[0](*xs)
        for layer in seq[1:]:
            out = layer(out)
        loss = loss_fn(out, *(t.to(device) for t in targets))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
