"""Run a MOP job from a parent process: write its config, launch torchrun, read its report (torch only).

    report = train_mop(models, data_uri, checkpoint_uri, workers=2)
    report.weights["c00"]        the trained layers' state dicts
    report.visits["c00"]         [(epoch, partition), ...]: the order to replay it sequentially
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from mlsys.spec import require
from mlsys.training.mop import partition
from mlsys.training.mop.job import MopConfig
from mlsys.training.mop.scheduler import Visit
from mlsys.training.mop.trainee import Model
from mlsys.training.parallel.launcher import launch


@dataclass
class MopReport:
    weights: dict[str, list[dict[str, torch.Tensor]]]  # name -> each layer's state dict
    visits: dict[str, list[tuple[int, int]]]  # name -> (epoch, partition) per unit, in order
    losses: dict[str, list[float]]  # name -> each unit's mean loss, in the same order
    shards: dict[str, list[list[int]]]  # name -> layers per shard (one shard: not spilled)
    timeline: list[Visit]  # this run's units (a resumed run: only those it ran)
    seconds: float  # training time, every rank ready (no start-up, no export)
    hop_wait_s: float  # time units waited for their state to arrive, summed
    bytes_sent: int  # packed states sent between ranks, in all
    hops: int
    data_bytes: list[int]  # bytes of the partition each worker holds
    rows: list[int]

    def epoch_losses(self, name: str) -> list[float]:
        """Mean unit loss per epoch (units weighted alike: partitions are near-equal)."""
        by_epoch: dict[int, list[float]] = {}
        for (epoch, _), loss in zip(self.visits[name], self.losses[name]):
            by_epoch.setdefault(epoch, []).append(loss)
        return [sum(v) / len(v) for _, v in sorted(by_epoch.items())]


def train_mop(models: Sequence[Model], data_uri: str, checkpoint_uri: str, workers: int, device: str = "cpu",
              threads: int = 1, seed: int = 0, workdir: str | Path | None = None,
              on_line: Callable[[str], None] | None = None, env: dict[str, str] | None = None,
              timeout_s: float | None = None, silence_s: float | None = None) -> MopReport:
    """Train every configuration with MOP on ``workers`` ranks (one partition each); the same ``workdir`` and
    ``checkpoint_uri`` resume a killed run."""
    cfg = MopConfig(models=tuple(models), data_uri=data_uri, checkpoint_uri=checkpoint_uri, device=device,
                    threads=threads, seed=seed)
    index = partition.index(data_uri)  # before any process starts: one partition per worker
    require(index is not None, "train_mop", "data_uri", data_uri, "write the partitions there first (partition.write)")
    require(index["partitions"] == workers, "train_mop", "workers", workers,
            f"{data_uri} holds {index['partitions']} partitions: use one worker per partition")
    with tempfile.TemporaryDirectory(prefix="mlsys-mop-") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "job.json").write_text(json.dumps(cfg.to_json()))
        launch(["-m", "mlsys.training.mop.job", str(work)], nproc=workers, on_line=on_line or (lambda line: None),
               env=env, timeout_s=timeout_s, silence_s=silence_s)
        return read_report(work)


def read_report(work: Path) -> MopReport:
    summary = json.loads((work / "result.json").read_text())
    return MopReport(
        weights=torch.load(work / "result.pt", weights_only=True),
        visits={c: [tuple(v) for v in vs] for c, vs in summary["visits"].items()},
        losses=summary["losses"], shards=summary["shards"],
        timeline=[Visit(*row) for row in summary["timeline"]], seconds=summary["seconds"],
        hop_wait_s=summary["hop_wait_s"], bytes_sent=summary["bytes_sent"], hops=summary["hops"],
        data_bytes=summary["data_bytes"], rows=summary["rows"])
