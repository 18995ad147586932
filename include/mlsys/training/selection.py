"""Model selection: train a grid (or a list) of text-classifier configurations at once, keep the best.

    grid '{"lr": [0.003, 0.01], "dim": [32, 64]}'          -> 4 candidates (the cross product)
    grid '[{"lr": 0.003, "depth": 1}, {"lr": 0.01}]'       -> 2 candidates (a list, as given)

Every key and value is checked before anything trains (an error names the key). How the candidates
train is the ``mode`` (one table, ``TRAINERS``):

    sharp   together with SHARP (``mlsys.training.sharp.runner``) on ``workers`` devices of this node,
            each on all the rows; a candidate larger than ``budget_mb`` is spilled
    mapped  the same, run by the DAG once per candidate (one Airflow task each, ``workers=1``)
    mop     Cerebro's model hopper parallelism (``mlsys.training.select_mop``): ``workers`` torchrun ranks,
            each holding one partition of the rows; candidates hop between them, spilled ones too

A held-out validation split of the expert *gold* rows (never trained on) scores each one; the best on
``metric`` is logged as the model of this run, for the evaluate stage to register as ``challenger`` and
gate against ``champion``. With MLflow active, each candidate is a nested run with its loss curve and
validation metrics, and a comparison plot (metric per candidate, and parallel coordinates of the
hyper-parameters) is logged.
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
MODES = ("sharp", "mapped", "mop")


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
    mode: str = knob("sharp", "sharp: all candidates in one task with SHARP on this node's devices; mapped: one "
                     "Airflow task per candidate; mop: Cerebro's model hopper parallelism over `workers` torchrun "
                     "ranks, each holding one partition of the rows.", enum=list(MODES))
    workers: int = knob(2, "Worker processes (devices): SHARP's in sharp mode, torchrun ranks (one data partition "
                        "each) in mop mode.", minimum=1, maximum=64)
    device: str = knob("cpu", "Device type of the workers (cuda: cuda:0 .. cuda:workers-1).", enum=list(plan.DEVICES))
    budget_mb: float = knob(0.0, "Device memory per candidate in MiB; a bigger candidate is spilled. 0 = no limit.",
                            minimum=0)
    storage_uri: str = ""
    checkpoint_key: str = ""  # mop: same key = resume (an Airflow retry); "" = a fresh key per run

    def __post_init__(self):
        check_knobs(self)
        expand(self.grid)  # every key and value checked before anything trains
        require(all(c.isalnum() or c in "-_." for c in self.checkpoint_key), "SelectionSpec", "checkpoint_key",
                self.checkpoint_key, "use letters, digits, '-', '_' and '.' only")
        if self.mode == "mop":  # one torchrun rank per device, each holding one partition
            devices = plan.available_devices(self.device)
            require(self.workers <= devices, "SelectionSpec", "workers", self.workers,
                    f"mop runs one rank per device and this node has {devices} {self.device} device(s): use "
                    f"workers <= {devices}, or several nodes (MLSYS_TORCHRUN_ARGS)")

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

    from mlsys.training.select_mop import optimizer_factory

    budget = int(config["budget_mb"] * 2**20) if config["budget_mb"] > 0 else 2**50
    return Recipe(layers, optimizer_factory(c["optimizer"], c["lr"]), noise_aware_loss, batch_of, budget)


def _model_config(config: dict):
    from mlsys.model.text_classifier import TextClassifierConfig

    c = config["candidate"]
    return TextClassifierConfig(num_buckets=config["num_buckets"], dim=c["dim"], depth=c["depth"], dropout=c["dropout"])


def steps_of(config: dict, rows: int) -> int:
    return config["epochs"] * math.ceil(rows / config["batch_size"])


# -- the stage ----------------------------------------------------------------------------------------------


def _train_sharp(spec: SelectionSpec, names: list[str], candidates: list[dict], rows: dict, root_uri: str,
                 dataset: str) -> dict[str, Any]:
    """All candidates at once with SHARP on this node's ``workers`` devices, each on all the rows."""
    import tempfile
    from pathlib import Path

    import torch

    from mlsys.training.sharp.runner import Job, train_many

    n = int(rows["ids"].shape[0])
    with tempfile.TemporaryDirectory(prefix="mlsys-select-") as tmp:
        data = Path(tmp) / "rows.pt"
        torch.save(rows, data)
        jobs = [Job(name, "mlsys.training.selection:candidate_recipe",
                    {"data": str(data), "candidate": c, "seed": spec.seed, "num_buckets": spec.num_buckets,
                     "budget_mb": spec.budget_mb}, steps=steps_of(c, n), seed=spec.seed)
                for name, c in zip(names, candidates)]
        devices = [f"cuda:{d}" for d in range(spec.workers)] if spec.device == "cuda" else ["cpu"] * spec.workers
        report = train_many(jobs, devices, threads=1, root=None, export=True)
    out = {"seconds": report.seconds, "idle_fraction": report.idle_fraction, "candidates": {}}
    for name, c in zip(names, candidates):
        res, per_epoch = report.results[name], math.ceil(n / c["batch_size"])
        out["candidates"][name] = {
            "layers": [layer.state_dict() for layer in res.model], "losses": res.losses, "spilled": res.spilled,
            "shards": len(res.shards),
            "curve": [sum(res.losses[e * per_epoch:(e + 1) * per_epoch]) / per_epoch for e in range(c["epochs"])]}
    return out


def _train_mop(spec: SelectionSpec, *args) -> dict[str, Any]:
    from mlsys.training import select_mop

    return select_mop.train(spec, *args)


TRAINERS = {"sharp": _train_sharp, "mapped": _train_sharp, "mop": _train_mop}  # mapped: the DAG maps the tasks


def run(spec: SelectionSpec) -> SelectionResult:
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

    candidates = spec.candidates
    names = [candidate_name(i, c) for i, c in enumerate(candidates)]
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
    ids, bag = featurizer.encode_padded(train["text"].tolist())
    rows = {"ids": ids, "bag": bag, "weight": torch.tensor(train["weight"].to_numpy(), dtype=torch.float32),
            "proba": torch.tensor(np.stack(train["label_proba"].to_numpy()), dtype=torch.float32)}
    trained = TRAINERS[spec.mode](spec, names, candidates, rows, store.root_uri, f"{ref.name}@{ref.version}")

    results = []
    for name, c in zip(names, candidates):
        got = trained["candidates"][name]
        mcfg = _model_config({"candidate": c, "num_buckets": spec.num_buckets})
        model = TextClassifier(mcfg)
        for dst, src in zip(model.pipeline_layers(), got["layers"]):
            dst.load_state_dict(src)
        pred = predict_proba(model, featurizer, val["text"].tolist()).argmax(1).numpy()
        metrics = classification_metrics(val["label"].to_numpy(), pred)
        results.append({"name": name, "config": c, "val": metrics, "curve": got["curve"], "spilled": got["spilled"],
                        "shards": got["shards"], "model": model, "losses": got["losses"], "model_config": mcfg,
                        "loss_metric": "train_loss_unit" if spec.mode == "mop" else "train_loss_step"})
    best = max(results, key=lambda r: (r["val"][spec.metric], -results.index(r)))

    model_uri = ""
    if tracking:
        tracker.log_input(ref, "training")
        mlflow.log_params({"grid": spec.grid[:500], "candidates": len(results), "metric": spec.metric,
                           "mode": spec.mode, "workers": spec.workers, "device": spec.device,
                           "budget_mb": spec.budget_mb, "val_rows": len(val), "train_rows": len(train),
                           "best": best["name"]})
        if spec.mode == "mop":
            from mlsys.training import select_mop

            extra = select_mop.log(trained)  # the visit orders and the schedule plot
        else:
            extra = {f"sharp_{k}": trained[k] for k in ("seconds", "idle_fraction")}
        mlflow.log_metrics({f"best_val_{k}": v for k, v in best["val"].items()} | extra)
        for r in results:
            r["run_id"] = _log_candidate(r)
        _log_comparison(results, spec.metric)
        mlflow.log_dict([{k: r[k] for k in ("name", "config", "val", "curve", "spilled", "shards", "run_id")}
                         for r in results], "model_selection.json")
        model_uri = log_model(best["model"], featurizer, best["model_config"], train["text"].head(5).tolist())
    summary = [{k: r.get(k) for k in ("name", "config", "val", "spilled", "shards", "run_id")} for r in results]
    return SelectionResult(model_uri=model_uri, best=best["name"], metric=spec.metric, candidates=summary,
                           seconds=trained["seconds"], idle_fraction=trained.get("idle_fraction", 0.0))


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
    for step, loss in enumerate(row["losses"]):  # per optimizer step (sharp) or per sub-epoch unit (mop)
        client.log_metric(rid, row["loss_metric"], loss, step=step)
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
