"""Model selection: train a grid (or a list) of text-classifier configurations at once, keep the best.

    grid '{"lr": [0.003, 0.01], "dim": [32, 64]}'          -> 4 candidates (the cross product)
    grid '[{"lr": 0.003, "depth": 1}, {"lr": 0.01}]'       -> 2 candidates (a list, as given)

Every key and value is checked before anything trains (an error names the key). The candidates
train together with SHARP (``mlsys.training.sharp.runner``) on ``workers`` devices of this node,
each on the same rows; a candidate larger than ``budget_mb`` is spilled. A held-out validation
split of the expert *gold* rows (never trained on) scores each one; the best on ``metric`` is
logged as the model of this run, for the evaluate stage to register as ``challenger`` and gate
against ``champion``. With MLflow active, each candidate is a nested run with its loss curve and
validation metrics, and a comparison plot (metric per candidate, and parallel coordinates of the
hyper-parameters) is logged.

``candidates`` (one config in, its result out) is the unit the DAG maps over Airflow workers
when one node is not enough.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any

from mlsys.errors import SpecError
from mlsys.spec import check_knobs, knob, require
from mlsys.training.parallel import plan
from mlsys.training.stage import TrainSpec

# key -> (type, check, what a good value is)
KEYS: dict[str, tuple[type, Any, str]] = {
    "lr": (float, lambda v: v > 0, "use a positive learning rate"),
    "dim": (int, lambda v: v >= 2, "use an integer width >= 2"),
    "depth": (int, lambda v: 0 <= v <= 64, "use an integer number of blocks in [0, 64]"),
    "dropout": (float, lambda v: 0 <= v < 1, "use a dropout rate in [0, 1)"),
    "batch_size": (int, lambda v: v >= 1, "use an integer batch size >= 1"),
    "epochs": (int, lambda v: 1 <= v <= 1000, "use an integer number of epochs in [1, 1000]"),
    "optimizer": (str, lambda v: v in ("adam", "sgd"), "use 'adam' or 'sgd'"),
}
METRICS = ("f1", "accuracy", "precision", "recall")


def defaults() -> dict[str, Any]:
    """A candidate's defaults: the train stage's (TrainSpec) and the model's (TextClassifierConfig), not copies."""
    from mlsys.model.text_classifier import TextClassifierConfig

    return {"lr": TrainSpec.lr, "dim": TrainSpec.dim, "depth": TrainSpec.depth, "dropout": TextClassifierConfig.dropout,
            "batch_size": TrainSpec.batch_size, "epochs": TrainSpec.epochs, "optimizer": "adam"}


def _check(key: str, value: Any, where: str) -> Any:
    require(key in KEYS, "SelectionSpec", f"{where}.{key}", value, f"a configuration may set {sorted(KEYS)}")
    kind, ok, good = KEYS[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    require(isinstance(value, kind) and not isinstance(value, bool) and ok(value), "SelectionSpec", f"{where}.{key}",
            value, good)
    return value


def expand(grid: str | dict | list) -> list[dict[str, Any]]:
    """The candidates of a grid (dict of lists: the cross product) or a list of configs, validated, with defaults."""
    if isinstance(grid, str):
        try:
            grid = json.loads(grid)
        except json.JSONDecodeError as exc:
            raise SpecError(f"SelectionSpec.grid={grid!r} is invalid: it is not valid JSON ({exc}); give a dict of "
                            "lists or a list of dicts") from exc
    if isinstance(grid, dict):
        require(bool(grid), "SelectionSpec", "grid", grid, 'give at least one key, e.g. {"lr": [0.003, 0.01]}')
        for key, values in grid.items():
            require(isinstance(values, list) and bool(values), "SelectionSpec", f"grid.{key}", values,
                    "give a non-empty list of values")
        keys = list(grid)
        configs = [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
    else:
        require(isinstance(grid, list) and bool(grid) and all(isinstance(c, dict) for c in grid), "SelectionSpec",
                "grid", grid, "give a dict of lists (a grid) or a non-empty list of dicts (configurations)")
        configs = grid
    base = defaults()
    return [{**base, **{k: _check(k, v, f"grid[{i}]") for k, v in config.items()}} for i, config in enumerate(configs)]


def candidate_name(i: int, config: dict) -> str:
    short = {"lr": "lr", "dim": "d", "depth": "L", "dropout": "p", "batch_size": "b", "epochs": "e", "optimizer": ""}
    return f"c{i:02d}-" + "-".join(f"{short[k]}{config[k]}" for k in KEYS if k in config)


@dataclass(frozen=True)
class SelectionSpec:
    grid: str = knob('{"lr": [0.003, 0.01], "dim": [32, 64]}', "A grid (dict of lists: all combinations) or a list of "
                     f"configurations, as JSON. Keys: {', '.join(KEYS)}.")
    dataset_version: str = knob(TrainSpec.dataset_version, "comments_labeled version: 'validated' (last to pass "
                                "validation) or a version id.")
    metric: str = knob("f1", "Validation metric the best candidate is chosen on.", enum=list(METRICS))
    val_fraction: float = knob(0.3, "Share of gold rows held out for validation.", exclusiveMinimum=0,
                               exclusiveMaximum=1)
    num_buckets: int = knob(TrainSpec.num_buckets, "Hash buckets of every candidate's featurizer.", minimum=2)
    seed: int = knob(0, "Seed for initialisation, shuffling and the validation split.")
    workers: int = knob(2, "SHARP worker processes (devices) in sharp mode.", minimum=1, maximum=64)
    device: str = knob("cpu", "Device type of the workers (cuda: cuda:0 .. cuda:workers-1).", enum=list(plan.DEVICES))
    budget_mb: float = knob(0.0, "Device memory per candidate in MiB; a bigger candidate is spilled. 0 = no limit.",
                            minimum=0)
    storage_uri: str = ""

    def __post_init__(self):
        check_knobs(self)
        expand(self.grid)  # every key and value checked before anything trains

    @property
    def candidates(self) -> list[dict[str, Any]]:
        return expand(self.grid)


@dataclass(frozen=True)
class SelectionResult:
    model_uri: str
    best: str
    metric: str
    candidates: list[dict[str, Any]] = field(default_factory=list)  # name, config, val metrics, run id
    seconds: float = 0.0
    idle_fraction: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"model_uri": self.model_uri, "best": self.best, "metric": self.metric, "candidates": self.candidates,
                "seconds": self.seconds, "idle_fraction": self.idle_fraction}


# -- the engine side: a SHARP job per candidate (torch only) ------------------------------------------------


def candidate_recipe(config: dict):
    """Builder of one candidate's SHARP job: its layers, optimizer, loss and batches over the saved rows."""
    import torch

    from mlsys.model.loss import noise_aware_loss
    from mlsys.model.text_classifier import TextClassifier
    from mlsys.training.sharp.runner import Recipe

    data = torch.load(config["data"], weights_only=True)
    c = config["candidate"]
    n, batch = data["ids"].shape[0], c["batch_size"]
    per_epoch = math.ceil(n / batch)

    def layers():
        torch.manual_seed(config["seed"])
        return TextClassifier(_model_config(config)).pipeline_layers()

    def batch_of(step: int):
        epoch, i = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(config["seed"] * 1000 + epoch))
        idx = order[i * batch : (i + 1) * batch]
        return (data["ids"][idx], data["bag"][idx]), (data["proba"][idx], data["weight"][idx])

    if c["optimizer"] == "sgd":
        optimizer = lambda ps: torch.optim.SGD(ps, lr=c["lr"], momentum=0.9)  # noqa: E731
    else:
        optimizer = lambda ps: torch.optim.AdamW(ps, lr=c["lr"], weight_decay=1e-4)  # noqa: E731
    budget = int(config["budget_mb"] * 2**20) if config["budget_mb"] > 0 else 2**50
    return Recipe(layers, optimizer, noise_aware_loss, batch_of, budget)


def _model_config(config: dict):
    from mlsys.model.text_classifier import TextClassifierConfig

    c = config["candidate"]
    return TextClassifierConfig(num_buckets=config["num_buckets"], dim=c["dim"], depth=c["depth"], dropout=c["dropout"])


def steps_of(config: dict, rows: int) -> int:
    return config["epochs"] * math.ceil(rows / config["batch_size"])


# -- the stage ----------------------------------------------------------------------------------------------


def run(spec: SelectionSpec) -> SelectionResult:
    import tempfile
    from pathlib import Path

    import mlflow
    import numpy as np
    import torch

    from mlsys.datasets import LABELED, trainable
    from mlsys.errors import DataError
    from mlsys.model.featurizer import DEFAULT_CHAR_NGRAMS, HashingFeaturizer
    from mlsys.model.pyfunc import log_model
    from mlsys.model.text_classifier import TextClassifier, predict_proba
    from mlsys.registry.stage import classification_metrics
    from mlsys.storage import DatasetStore
    from mlsys.tracking import tracker
    from mlsys.training.sharp.runner import Job, train_many

    candidates = spec.candidates
    store = DatasetStore(spec.storage_uri or None)
    ref = store.ref(LABELED, spec.dataset_version)
    df = store.read(LABELED, ref.version)
    df = trainable(df)
    gold = np.flatnonzero((df["label_source"] == "gold").to_numpy())
    n_val = int(round(len(gold) * spec.val_fraction))
    if n_val < 2:
        raise DataError(f"{ref.label}: {len(gold)} gold rows give {n_val} validation rows: label more gold rows "
                        "or raise val_fraction")
    val_idx = np.random.default_rng(spec.seed).choice(gold, size=n_val, replace=False)
    val, train = df.iloc[np.sort(val_idx)], df.drop(index=val_idx).reset_index(drop=True)

    featurizer = HashingFeaturizer(num_buckets=spec.num_buckets, char_ngrams=DEFAULT_CHAR_NGRAMS)
    tracking = mlflow.active_run() is not None
    with tempfile.TemporaryDirectory(prefix="mlsys-select-") as tmp:
        ids, bag = featurizer.encode_padded(train["text"].tolist())
        data = Path(tmp) / "rows.pt"
        torch.save({"ids": ids, "bag": bag, "weight": torch.tensor(train["weight"].to_numpy(), dtype=torch.float32),
                    "proba": torch.tensor(np.stack(train["label_proba"].to_numpy()), dtype=torch.float32)}, data)
        jobs = []
        for i, c in enumerate(candidates):
            config = {"data": str(data), "candidate": c, "seed": spec.seed, "num_buckets": spec.num_buckets,
                      "budget_mb": spec.budget_mb}
            jobs.append(Job(candidate_name(i, c), "mlsys.training.selection:candidate_recipe", config,
                            steps=steps_of(c, len(train)), seed=spec.seed))
        devices = [f"cuda:{d}" for d in range(spec.workers)] if spec.device == "cuda" else ["cpu"] * spec.workers
        report = train_many(jobs, devices, threads=1, root=None, export=True)

    rows = []
    for job in jobs:
        res = report.results[job.name]
        model = TextClassifier(_model_config(job.config))
        for dst, src in zip(model.pipeline_layers(), res.model):
            dst.load_state_dict(src.state_dict())
        pred = predict_proba(model, featurizer, val["text"].tolist()).argmax(1).numpy()
        metrics = classification_metrics(val["label"].to_numpy(), pred)
        per_epoch = math.ceil(len(train) / job.config["candidate"]["batch_size"])
        curve = [float(np.mean(res.losses[e * per_epoch : (e + 1) * per_epoch])) for e in range(job.config["candidate"]["epochs"])]
        rows.append({"name": job.name, "config": job.config["candidate"], "val": metrics, "curve": curve,
                     "spilled": res.spilled, "shards": len(res.shards), "model": model, "losses": res.losses})
    best = max(rows, key=lambda r: (r["val"][spec.metric], -rows.index(r)))

    model_uri = ""
    if tracking:
        tracker.log_input(ref, "training")
        mlflow.log_params({"grid": spec.grid[:500], "candidates": len(rows), "metric": spec.metric,
                           "workers": spec.workers, "device": spec.device, "budget_mb": spec.budget_mb,
                           "val_rows": len(val), "train_rows": len(train), "best": best["name"]})
        mlflow.log_metrics({f"best_val_{k}": v for k, v in best["val"].items()}
                           | {"sharp_seconds": report.seconds, "sharp_idle_fraction": report.idle_fraction})
        for r in rows:
            r["run_id"] = _log_candidate(r)
        _log_comparison(rows, spec.metric)
        mlflow.log_dict([{k: r[k] for k in ("name", "config", "val", "curve", "spilled", "shards", "run_id")} for r in rows],
                        "model_selection.json")
        model_uri = log_model(best["model"], featurizer, _model_config(jobs[rows.index(best)].config),
                              train["text"].head(5).tolist())
    summary = [{k: r.get(k) for k in ("name", "config", "val", "spilled", "shards", "run_id")} for r in rows]
    return SelectionResult(model_uri=model_uri, best=best["name"], metric=spec.metric, candidates=summary,
                           seconds=report.seconds, idle_fraction=report.idle_fraction)


def _log_candidate(row: dict) -> str:
    """One nested run per candidate: its configuration, loss curve and validation metrics."""
    import mlflow

    parent = mlflow.active_run()
    client = mlflow.MlflowClient()
    tags = {k: v for k, v in parent.data.tags.items() if k.startswith(("airflow.", "mlsys.pipeline"))}
    run = client.create_run(parent.info.experiment_id, run_name=row["name"],
                            tags={**tags, "mlflow.parentRunId": parent.info.run_id, "mlsys.role": "candidate"})
    rid = run.info.run_id
    for k, v in row["config"].items():
        client.log_param(rid, k, v)
    client.log_param(rid, "spilled", row["spilled"])
    client.log_param(rid, "shards", row["shards"])
    for step, loss in enumerate(row["losses"]):
        client.log_metric(rid, "train_loss_step", loss, step=step)
    for epoch, loss in enumerate(row["curve"]):
        client.log_metric(rid, "train_loss", loss, step=epoch)
    for k, v in row["val"].items():
        client.log_metric(rid, f"val_{k}", v)
    client.set_terminated(rid, "FINISHED")
    return rid


def _log_comparison(rows: list[dict], metric: str) -> None:
    """Metric per candidate (bars) and parallel coordinates of the numeric hyper-parameters, coloured by metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    values = [r["val"][metric] for r in rows]
    ax1.barh([r["name"] for r in rows], values, color="tab:blue")
    ax1.set_xlabel(f"validation {metric}")
    ax1.set_title("Candidates")
    keys = [k for k in KEYS if k != "optimizer" and len({r["config"][k] for r in rows}) > 1] or ["lr"]
    cmap = plt.get_cmap("viridis")
    lo, hi = min(values), max(values)
    for r, v in zip(rows, values):
        ys = []
        for k in keys:
            col = [float(x["config"][k]) for x in rows]
            span = (max(col) - min(col)) or 1.0
            ys.append((float(r["config"][k]) - min(col)) / span)
        ys.append((v - lo) / ((hi - lo) or 1.0))
        ax2.plot(range(len(keys) + 1), ys, color=cmap((v - lo) / ((hi - lo) or 1.0)), marker="o")
    ax2.set_xticks(range(len(keys) + 1), keys + [metric])
    ax2.set_yticks([])
    ax2.set_title("Parallel coordinates (each axis scaled to its range)")
    fig.tight_layout()
    mlflow.log_figure(fig, "model_selection.png")
    plt.close(fig)
