"""The pilot partitioner: measured layer costs, shards within the budget, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlsys.training.spill.partitioner import measure, partition

ADAM = lambda ps: torch.optim.Adam(ps, lr=1e-3)  # noqa: E731


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/training/conftest.py


def _costs(layers, x, opt=ADAM):
    out, costs = (x,), []
    for i, layer in enumerate(layers):
        cost, y = measure(i, layer, out, opt)
        costs.append(cost)
        out = (y,)
    return costs


def test_measure_counts_params_grads_state_and_activations():
    layer = nn.Linear(100, 50)  # 5050 params
    before = layer.weight.detach().clone()
    cost, out = measure(0, layer, (torch.randn(8, 100),), ADAM)
    assert torch.equal(layer.weight, before), "the pilot runs a copy by default"
    assert cost.param_bytes == 5050 * 4 and cost.grad_bytes == 5050 * 4
    assert cost.state_bytes >= 2 * 5050 * 4  # exp_avg + exp_avg_sq (+ step scalars)
    assert cost.state[0]["exp_avg"] == ((50, 100), "torch.float32")
    assert cost.output_bytes == 8 * 50 * 4 and cost.activation_bytes >= cost.output_bytes
    assert out.shape == (8, 50) and not out.requires_grad
    sgd = measure(0, layer, (torch.randn(8, 100),), lambda ps: torch.optim.SGD(ps, lr=0.1))[0]
    assert sgd.state_bytes == 0 and sgd.state == {}


def test_shards_fit_the_budget_with_and_without_prefetch():
    layers = [nn.Linear(64, 64) for _ in range(8)]
    costs = _costs(layers, torch.randn(4, 64))
    whole = sum(c.train_bytes for c in costs)
    assert partition(costs, 10 * whole) == [range(0, 8)], "a model that fits is one shard (unspilled)"
    budget = whole // 3
    for prefetch in (False, True):
        shards = partition(costs, budget, prefetch=prefetch)
        assert len(shards) >= 3 and [i for s in shards for i in s] == list(range(8))
        train = [sum(costs[i].train_bytes for i in s) for s in shards]
        load = [sum(costs[i].load_bytes for i in s) for s in shards]
        assert max(train) <= budget
        if prefetch:
            for a, b in zip(range(len(shards)), range(1, len(shards))):
                assert train[a] + load[b] <= budget and train[b] + load[a] <= budget


def test_budget_below_the_largest_layer_names_the_layer():
    layers = [nn.Linear(16, 16), nn.Linear(16, 512), nn.Linear(512, 16)]
    costs = _costs(layers, torch.randn(4, 16))
    with pytest.raises(ValueError, match=r"layer 1 \(Linear\) needs 0\.\d\d MiB.*budget of 0\.05 MiB.*raise the budget"):
        partition(costs, 50 * 2**10)
    with pytest.raises(ValueError, match=r"budget_bytes=0"):
        partition(costs, 0)
