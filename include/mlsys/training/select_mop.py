"""The select stage's ``mop`` mode: the candidates trained with Cerebro's model hopper parallelism.

The training rows are shuffled once and cut into one partition per worker, written to storage
(``<storage>/mop/partitions/<digest>``, reused by a re-run on the same rows); each torchrun rank reads
its own. Every candidate hops between the ranks once per sub-epoch (``mlsys.training.mop``); a candidate
larger than ``budget_mb`` hops as its spilled records. Checkpoints after each candidate's epochs go to
``<storage>/checkpoints/select/<key>-<digest>``: a retry with the same ``checkpoint_key`` (the DAG run)
resumes each candidate at its last finished epoch.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from mlsys.training.mop.trainee import Model, Recipe

JOB_SILENCE_S = 15 * 60  # a rank prints a line per unit; none for this long is a hang


def recipe(config: dict) -> Recipe:
    """A candidate as a MOP configuration: the text classifier, its optimizer and the noise-aware loss."""
    import torch

    from mlsys.model.loss import noise_aware_loss
    from mlsys.model.text_classifier import TextClassifier, TextClassifierConfig

    mcfg = TextClassifierConfig(num_buckets=config["num_buckets"], dim=config["dim"], depth=config["depth"],
                                dropout=config["dropout"])

    def layers():
        torch.manual_seed(config["seed"])
        return TextClassifier(mcfg).pipeline_layers()

    budget = int(config.get("budget_mb", 0.0) * 2**20)
    return Recipe(layers, optimizer_factory(config["optimizer"], config["lr"]), noise_aware_loss, budget)


def optimizer_factory(name: str, lr: float):
    """A candidate's optimizer over given parameters: SGD with momentum 0.9, or AdamW (weight decay 1e-4)."""
    import torch

    if name == "sgd":
        return lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9)
    return lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=1e-4)


def models(names: list[str], candidates: list[dict], num_buckets: int, seed: int, budget_mb: float) -> list[Model]:
    return [Model(name, "mlsys.training.select_mop:recipe",
                  {**{k: c[k] for k in ("lr", "dim", "depth", "dropout", "optimizer")}, "num_buckets": num_buckets,
                   "seed": seed, "budget_mb": budget_mb}, epochs=c["epochs"], batch_size=c["batch_size"], seed=seed)
            for name, c in zip(names, candidates)]


def _digest(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train(spec, names: list[str], candidates: list[dict], rows: dict, root_uri: str, dataset: str) -> dict[str, Any]:
    """Train the candidates with MOP on ``spec.workers`` ranks; ``rows``: ids, bag, proba, weight tensors of the
    training rows. Returns per candidate its layers, unit losses, epoch curve and shards, and the run's figures."""
    from mlsys.training.mop import partition
    from mlsys.training.mop.hopper import train_mop

    root = root_uri.rstrip("/")
    data_uri = f"{root}/mop/partitions/" + _digest({"dataset": dataset, "rows": int(rows["ids"].shape[0]),
                                                   "num_buckets": spec.num_buckets, "seed": spec.seed,
                                                   "val_fraction": spec.val_fraction, "workers": spec.workers})
    if partition.index(data_uri) is None:  # same rows, same cut: written once
        partition.write(partition.split([rows["ids"], rows["bag"]], [rows["proba"], rows["weight"]], spec.workers,
                                        seed=spec.seed), data_uri)
    key = spec.checkpoint_key or uuid.uuid4().hex[:12]
    fields = {**spec.__dict__, "checkpoint_key": "", "storage_uri": "", "dataset": dataset}
    checkpoint_uri = f"{root}/checkpoints/select/{key}-{_digest(fields)[:8]}"
    configs = models(names, candidates, spec.num_buckets, spec.seed, spec.budget_mb)
    report = train_mop(configs, data_uri, checkpoint_uri, workers=spec.workers, device=spec.device,
                       seed=spec.seed, silence_s=JOB_SILENCE_S, on_line=lambda line: print(line, end="", flush=True))
    out = {"seconds": report.seconds, "report": report, "data_uri": data_uri, "checkpoint_uri": checkpoint_uri,
           "candidates": {}}
    for name in names:
        out["candidates"][name] = {"layers": report.weights[name], "losses": report.losses[name],
                                   "curve": report.epoch_losses(name), "spilled": len(report.shards[name]) > 1,
                                   "shards": len(report.shards[name])}
    return out


def log(out: dict) -> dict[str, float]:
    """The MOP run's artifacts (visit order per candidate, the schedule plot) in the active MLflow run; its metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    from mlsys.training.mop import gantt

    report = out["report"]
    mlflow.log_dict({"visits": report.visits, "unit_losses": report.losses, "data_uri": out["data_uri"],
                     "checkpoint_uri": out["checkpoint_uri"],
                     "timeline": [[v.config, v.epoch, v.worker, v.start, v.end] for v in report.timeline]},
                    "mop_visits.json")
    fig = gantt.figure(report.timeline, title="MOP: which candidate trained on which worker's partition, when")
    mlflow.log_figure(fig, "mop_schedule.png")
    plt.close(fig)
    return {"mop_seconds": report.seconds, "mop_bytes_sent": float(report.bytes_sent), "mop_hops": float(report.hops),
            "mop_hop_wait_s": report.hop_wait_s, "mop_data_bytes_per_worker": float(max(report.data_bytes))}
