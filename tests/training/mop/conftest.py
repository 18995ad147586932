"""Fixtures of the MOP tests: small text rows cut into partitions, SGD and Adam configurations, and ``plain``:
sequential training written out with plain torch (the reference MOP must equal)."""

from __future__ import annotations

import pytest
import torch

from mlsys.model.featurizer import HashingFeaturizer
from mlsys.training.mop import partition
from mlsys.training.mop.trainee import RNG_OFFSET, Model, batch_order, rows
from mlsys.training.parallel.partitioner import Chain
from mlsys.training.select_mop import models

TEXTS = [f"comment {i} {'check out my channel' if i % 3 == 0 else 'love this song'} {i % 7}" for i in range(160)]


def partitions(parts: int = 2) -> list[dict]:
    ids, bag = HashingFeaturizer(num_buckets=256).encode_padded(TEXTS)
    gen = torch.Generator().manual_seed(1)
    proba = torch.softmax(torch.randn(len(TEXTS), 2, generator=gen), 1)
    return partition.split([ids, bag], [proba, torch.rand(len(TEXTS), generator=gen)], parts, seed=0)


def configs(epochs: int = 2, budget_mb: float = 0.0, **overrides) -> list[Model]:
    """SGD and Adam (AdamW), both with dropout; ``budget_mb`` > 0: spilled where a model is larger."""
    base = {"lr": 0.01, "dim": 32, "depth": 1, "dropout": 0.1, "epochs": epochs, "batch_size": 16, **overrides}
    cands = [{**base, "optimizer": "sgd"}, {**base, "optimizer": "adam"}]
    return models(["sgd", "adam"], cands, 256, 0, budget_mb)


def plain(model: Model, parts: list[dict], visits) -> list[dict]:
    """Sequential training over the partitions in ``visits`` order, written out with plain torch (the reference)."""
    recipe = model.recipe()
    net = Chain(list(recipe.layers()))
    opt = recipe.optimizer(list(net.parameters()))
    torch.manual_seed(model.seed + RNG_OFFSET)
    for epoch, p in visits:
        part = parts[p]
        order = batch_order(model.seed, epoch, p, rows(part))
        for i in range(0, len(order), model.batch_size):
            idx = order[i : i + model.batch_size]
            loss = recipe.loss_fn(net(*(x[idx] for x in part["inputs"])), *(y[idx] for y in part["targets"]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return [layer.state_dict() for layer in net.layers]


def max_diff(a: list[dict], b: list[dict]) -> float:
    assert len(a) == len(b) and all(x.keys() == y.keys() for x, y in zip(a, b))
    return max(float((x[k] - y[k]).abs().max()) for x, y in zip(a, b) for k in x)


@pytest.fixture
def parts() -> list[dict]:
    return partitions(2)


@pytest.fixture(name="configs")
def configs_fixture():
    return configs


@pytest.fixture(name="plain")
def plain_fixture():
    return plain


@pytest.fixture(name="max_diff")
def max_diff_fixture():
    return max_diff
