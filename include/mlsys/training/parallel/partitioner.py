"""Split a model into K pipeline stages, balanced by profiled per-layer time or memory (torch only).

A model is splittable when it is an ``nn.Sequential``, a list / ``nn.ModuleList`` of
layers, has ``pipeline_layers()`` (the text classifier), or is a CNN of the zoo's
shape: ``features`` (or ``stem`` + ``layers``) Sequentials, then ``pool``, flatten, ``head``. A *balance* is the
number of consecutive layers each stage gets, e.g. ``[3, 5]`` for 8 layers on 2
stages.

``balance_by_time`` follows torchgpipe: run a sample batch forward and backward
through the layers one after another, time each layer, and choose the contiguous
split that minimises the slowest stage (the pipeline runs at its pace).
``balance_by_size`` does the same with bytes (parameters, their gradients and
optimizer state, plus the activations a micro-batch leaves for backward).
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn


class Chain(nn.Module):
    """Layers run one after another; the first may take several inputs, the rest take one tensor."""

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x = self.layers[0](*inputs)
        for layer in self.layers[1:]:
            x = layer(x)
        return x


def layers_of(model: nn.Module | Iterable[nn.Module]) -> list[nn.Module] | Iterator[nn.Module]:
    """The model's layers in order; a ValueError (before anything is spawned) if it cannot be split.

    Pipelines and spilling cut the same layers: an nn.Sequential or ModuleList, a list of layers, a module with
    ``pipeline_layers()``, or a zoo CNN. A generator of layers is passed through as it is, so a spilled model
    larger than RAM is built one layer at a time.
    """
    if hasattr(model, "pipeline_layers"):
        layers = list(model.pipeline_layers())
    elif isinstance(model, (nn.Sequential, nn.ModuleList, list, tuple)):
        layers = list(model)
    elif isinstance(model, nn.Module) and _cnn_body(model) is not None:
        layers = [*_cnn_body(model), model.pool, nn.Flatten(1), model.head]
    elif isinstance(model, Iterator):
        return model
    else:
        raise ValueError(
            f"model {type(model).__name__} cannot be split into pipeline stages: give an nn.Sequential, "
            "a list of layers, or a module with pipeline_layers()"
        )
    if not layers or not all(isinstance(layer, nn.Module) for layer in layers):
        raise ValueError(f"model {type(model).__name__} cannot be split: it has no layers, or a layer is not an nn.Module")
    return layers


def _cnn_body(model: nn.Module) -> list[nn.Module] | None:
    """The convolutional layers of a zoo CNN (forward = head(flatten(pool(body(x))))), else None."""
    if not (isinstance(getattr(model, "pool", None), nn.Module) and isinstance(getattr(model, "head", None), nn.Module)):
        return None
    if isinstance(getattr(model, "features", None), nn.Sequential):
        return list(model.features)
    if isinstance(getattr(model, "stem", None), nn.Sequential) and isinstance(getattr(model, "layers", None), nn.Sequential):
        return [*model.stem, *model.layers]
    return None


def check_balance(balance: Sequence[int], num_layers: int, stages: int | None = None) -> list[int]:
    balance = [int(b) for b in balance]
    if stages is not None and len(balance) != stages:
        raise ValueError(f"balance={balance} has {len(balance)} stages, expected {stages}: give one count per stage")
    if any(b < 1 for b in balance):
        raise ValueError(f"balance={balance} is invalid: every stage needs at least 1 layer")
    if sum(balance) != num_layers:
        raise ValueError(
            f"balance={balance} sums to {sum(balance)}, but the model has {num_layers} layers: "
            f"make the counts sum to {num_layers}"
        )
    return balance


def check_stages(stages: int, num_layers: int) -> None:
    if stages < 1:
        raise ValueError(f"stages={stages} is invalid: use at least 1 stage")
    if stages > num_layers:
        raise ValueError(f"stages={stages} is more than the model's {num_layers} layers: use at most {num_layers} stages")


def split(model: nn.Module | Sequence[nn.Module], balance: Sequence[int]) -> list[Chain]:
    """One Chain per stage, sharing the model's parameters."""
    layers = layers_of(model)
    balance = check_balance(balance, len(layers))
    out, start = [], 0
    for count in balance:
        out.append(Chain(layers[start : start + count]))
        start += count
    return out


def boundaries(balance: Sequence[int]) -> list[tuple[int, int]]:
    """[(first layer, end layer)) per stage."""
    out, start = [], 0
    for count in balance:
        out.append((start, start + count))
        start += count
    return out


def solve(costs: Sequence[float], stages: int) -> list[int]:
    """The contiguous split of ``costs`` into ``stages`` parts that minimises the largest part's sum.

    Exact dynamic programme, O(stages * n^2); n is a few dozen layers.
    """
    n = len(costs)
    check_stages(stages, n)
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    inf = float("inf")
    # best[k][i]: the smallest max-stage cost of the first i layers on k stages
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for k in range(1, stages + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                value = max(best[k - 1][j], prefix[i] - prefix[j])
                if value < best[k][i] - 1e-15:
                    best[k][i], cut[k][i] = value, j
    balance, i = [], n
    for k in range(stages, 0, -1):
        j = cut[k][i]
        balance.append(i - j)
        i = j
    return balance[::-1]


def _backward_inputs(x):
    return x.detach().requires_grad_(x.is_floating_point())


def profile(layers: Sequence[nn.Module], sample: tuple[torch.Tensor, ...], repeat: int = 3) -> list[dict]:
    """Per layer: seconds of forward + backward on ``sample`` (best of ``repeat``), and bytes.

    bytes = parameters x 4 (weights, gradients, two Adam moments) + the layer's output (kept for backward).
    """
    stats = [{"time_s": float("inf"), "param_bytes": 0, "activation_bytes": 0} for _ in layers]
    for layer, s in zip(layers, stats):
        s["param_bytes"] = 4 * sum(p.numel() * p.element_size() for p in layer.parameters())
    sync = torch.cuda.synchronize if sample[0].is_cuda else (lambda: None)
    for _ in range(repeat):
        inputs = sample
        for layer, s in zip(layers, stats):
            inputs = tuple(_backward_inputs(x) for x in inputs)
            sync()
            t0 = time.perf_counter()
            out = layer(*inputs)
            out.float().sum().backward()
            sync()
            s["time_s"] = min(s["time_s"], time.perf_counter() - t0)
            s["activation_bytes"] = out.numel() * out.element_size()
            inputs = (out.detach(),)
        for layer in layers:
            layer.zero_grad(set_to_none=True)
    return stats


def balance_by_time(model, sample: tuple[torch.Tensor, ...], stages: int, repeat: int = 3) -> tuple[list[int], list[dict]]:
    """torchgpipe's balance_by_time: the split that evens out profiled forward + backward time."""
    layers = layers_of(model)
    check_stages(stages, len(layers))
    stats = profile(layers, sample, repeat)
    return solve([s["time_s"] for s in stats], stages), stats


def balance_by_size(model, sample: tuple[torch.Tensor, ...], stages: int) -> tuple[list[int], list[dict]]:
    """The split that evens out parameter + activation memory per stage."""
    layers = layers_of(model)
    check_stages(stages, len(layers))
    stats = profile(layers, sample, repeat=1)
    return solve([s["param_bytes"] + s["activation_bytes"] for s in stats], stages), stats
