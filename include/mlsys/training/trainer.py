"""A single-device training loop (the `single` strategy), torch only.

Metrics go to an optional callback ``on_metrics(metrics: dict, step: int)``,
so MLflow (or anything else) stays outside the engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from mlsys.model.featurizer import HashingFeaturizer
from mlsys.model.loss import noise_aware_loss
from mlsys.spec import require

MetricsCallback = Callable[[dict, int], None]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    log_every: int = 10  # steps between per-step metric callbacks

    def __post_init__(self):
        require(self.epochs >= 1, "TrainConfig", "epochs", self.epochs, "use at least 1 epoch")
        require(self.batch_size >= 1, "TrainConfig", "batch_size", self.batch_size, "use at least 1")
        require(self.log_every >= 1, "TrainConfig", "log_every", self.log_every, "use 1 or more steps")
        require(self.lr > 0, "TrainConfig", "lr", self.lr, "use a positive learning rate")


def train(
    model: nn.Module,
    featurizer: HashingFeaturizer,
    texts: Sequence[str],
    proba: torch.Tensor,  # (N, C) soft targets
    weight: torch.Tensor,  # (N,)
    config: TrainConfig,
    on_metrics: MetricsCallback | None = None,
) -> dict:
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(texts)
    step, history = 0, []
    start = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        total, seen = 0.0, 0
        for i in range(0, n, config.batch_size):
            idx = order[i : i + config.batch_size]
            ids, offsets = featurizer.encode([texts[j] for j in idx.tolist()])
            loss = noise_aware_loss(model(ids, offsets), proba[idx], weight[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            total += loss.item() * len(idx)
            seen += len(idx)
            if on_metrics and step % config.log_every == 0:
                on_metrics({"train_loss_step": loss.item()}, step)
        epoch_metrics = {"train_loss": total / seen, "epoch": epoch, "samples_per_s": seen / max(time.perf_counter() - start, 1e-9)}
        start = time.perf_counter()
        history.append(epoch_metrics)
        if on_metrics:
            on_metrics(epoch_metrics, step)
    return {"steps": step, "final_loss": history[-1]["train_loss"], "history": history}
