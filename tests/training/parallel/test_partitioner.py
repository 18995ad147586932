"""Splitting models into pipeline stages: layers, balance checks, the optimal split, balance by time and size."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from mlsys.model.cnn import build_cnn
from mlsys.model.featurizer import HashingFeaturizer
from mlsys.model.text_classifier import TextClassifier, TextClassifierConfig
from mlsys.training.parallel import partitioner


def test_text_classifier_layers_compute_the_model():
    model = TextClassifier(TextClassifierConfig(num_buckets=128, dim=8, depth=3, dropout=0.0))
    feat = HashingFeaturizer(num_buckets=128)
    texts = ["check out my channel", "", "love it", "a b c d e f g"]
    layers = partitioner.layers_of(model)
    assert len(layers) == 5
    stages = partitioner.split(model, [2, 1, 2])
    x = feat.encode_padded(texts)
    for stage in stages:
        x = (stage(*x),)
    assert torch.allclose(x[0], model(*feat.encode(texts)), atol=1e-6)
    # the stages share the model's parameters: training them trains the model
    assert stages[0].layers[0].embed.weight is model.embed.weight and stages[2].layers[1] is model.head


@pytest.mark.parametrize("name", ["small", "resnet18"])
def test_zoo_cnns_split_into_layers(name):
    model = build_cnn(name, width=0.125, num_classes=3)
    x = torch.randn(2, 3, 32, 32)
    layers = partitioner.layers_of(model)
    half = len(layers) // 2
    a, b = partitioner.split(model, [half, len(layers) - half])
    assert torch.allclose(b(a(x)), model(x), atol=1e-5)


def test_sequential_and_lists_split():
    seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert [len(s.layers) for s in partitioner.split(seq, [1, 2])] == [1, 2]
    assert len(partitioner.layers_of([nn.Linear(2, 2), nn.Tanh()])) == 2


def test_a_model_that_cannot_be_split():
    class Opaque(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match=r"model Opaque cannot be split into pipeline stages: give an nn.Sequential"):
        partitioner.layers_of(Opaque())
    with pytest.raises(ValueError, match="has no layers"):
        partitioner.layers_of(nn.Sequential())


@pytest.mark.parametrize("balance, stages, message", [
    ([3, 4], None, r"balance=\[3, 4\] sums to 7, but the model has 8 layers: make the counts sum to 8"),
    ([4, 4], 3, r"balance=\[4, 4\] has 2 stages, expected 3"),
    ([8, 0], None, r"every stage needs at least 1 layer"),
])
def test_bad_balance(balance, stages, message):
    with pytest.raises(ValueError, match=message):
        partitioner.check_balance(balance, 8, stages)


def test_solve_minimises_the_slowest_stage():
    assert partitioner.solve([1, 1, 1, 1], 2) == [2, 2]
    assert partitioner.solve([4, 1, 1, 1, 1], 2) == [1, 4]
    assert partitioner.solve([1, 2, 3, 4, 5, 6], 3) == [3, 2, 1]  # 1+2+3 | 4+5 | 6: the slowest stage costs 9
    assert partitioner.solve([5, 5, 5], 3) == [1, 1, 1]
    with pytest.raises(ValueError, match=r"stages=4 is more than the model's 3 layers"):
        partitioner.solve([1, 1, 1], 4)


class Slow(nn.Module):
    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        time.sleep(self.seconds)
        return self.lin(x)


def test_balance_by_time_puts_the_slow_layer_alone():
    model = nn.Sequential(Slow(0.03), Slow(0.0), Slow(0.0), Slow(0.0))
    balance, stats = partitioner.balance_by_time(model, (torch.randn(4, 8),), 2, repeat=1)
    assert balance == [1, 3]
    assert stats[0]["time_s"] >= 0.03 > stats[1]["time_s"]


def test_balance_by_size_follows_parameter_bytes():
    model = nn.Sequential(nn.Linear(4, 256), nn.Linear(256, 256), nn.Linear(256, 4), nn.Linear(4, 4))
    balance, stats = partitioner.balance_by_size(model, (torch.randn(2, 4),), 2)
    assert stats[1]["param_bytes"] == 4 * (256 * 256 + 256) * 4  # weights, grads, two Adam moments
    assert balance == [1, 3]  # the big layer goes with the small ones after it, not with the first
