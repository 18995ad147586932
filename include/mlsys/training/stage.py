"""The train stage: labeled dataset -> PyTorch text classifier -> MLflow model.

Only rows the label stage trusts (weight > 0) train, and the rows no LF labeled as
``uncovered`` says; weights are rebalanced to the corpus class balance the label stage
measured on gold; half the gold rows are held out to choose the operating point
(training/examples.py, training/operating_point.py). The loss is noise-aware, using
``label_proba`` as soft targets and ``weight`` per row.

Strategies (``TrainSpec.strategy``): ``single`` trains in this process;
``ddp`` and ``pipeline`` launch ``mlsys.training.parallel.job`` on ``nproc`` processes
with torchrun (gloo on cpu, NCCL on cuda), stream its log, and log rank 0's
metrics, the partition, stage times, bubble and schedule plot to MLflow. They
checkpoint every ``checkpoint_every`` steps under ``<storage>/checkpoints/train/<key>``;
a rerun with the same ``checkpoint_key`` (an Airflow retry) on the same resolved
dataset version resumes there. A watchdog ends a job that hangs (``JOB_SILENCE_S``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlsys.datasets import LABELED
from mlsys.errors import DataError, SpecError
from mlsys.faults import failpoint
from mlsys.spec import check_knobs, knob, require
from mlsys.storage import DatasetRef, DatasetStore
from mlsys.training.parallel import plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSpec:
    dataset_version: str = knob("validated", "comments_labeled version: 'validated' (last to pass validation) or a "
                                "version id.")
    epochs: int = knob(8, "Training epochs.", minimum=1)
    batch_size: int = knob(64, "Rows per optimizer step.", minimum=1)
    lr: float = knob(3e-3, "AdamW learning rate.", exclusiveMinimum=0)
    dim: int = knob(64, "Embedding and block width.", minimum=2)
    depth: int = knob(2, "Number of residual blocks.", minimum=0)
    num_buckets: int = knob(1 << 15, "Hash buckets of the featurizer (words, bigrams, character n-grams).", minimum=2)
    char_ngrams: str = knob("2,3", "Character n-gram sizes hashed with the words and bigrams, e.g. '2,3'; empty = "
                            "words and bigrams only.")
    seed: int = knob(0, "Seed for initialisation and shuffling.")
    storage_uri: str = ""
    strategy: str = knob("single", "single: one process; ddp: DistributedDataParallel over nproc processes; "
                         "pipeline: GPipe-style pipeline over nproc stages.", enum=list(plan.STRATEGIES))
    nproc: int = knob(2, "Processes per node for ddp/pipeline (DDP replicas, or pipeline stages x replicas); at most "
                      "the devices available.", minimum=1)
    replicas: int = knob(1, "pipeline: data-parallel copies of the pipeline (pipeline x DDP); stages = nproc / "
                         "replicas.", minimum=1)
    microbatches: int = knob(4, "pipeline: micro-batches per batch (must divide batch_size).", minimum=1)
    schedule: str = knob("gpipe", "pipeline: GPipe (fill-drain) or 1F1B (less activation memory).",
                         enum=list(plan.SCHEDULES))
    balance: str = knob("", "pipeline: layers per stage, e.g. '2,2' (depth + 2 layers in all); empty = balance by "
                        "profiled time.")
    rematerialize: bool = knob(False, "pipeline: recompute activations in backward (activation checkpointing).")
    device: str = knob("cpu", "cpu (gloo) or cuda (NCCL) for ddp/pipeline.", enum=list(plan.DEVICES))
    checkpoint_every: int = knob(20, "ddp/pipeline: optimizer steps between checkpoints (0 = none); a retry resumes "
                                 "from the last.", minimum=0)
    checkpoint_key: str = ""  # same key = resume (an Airflow retry); "" = a fresh key per run
    uncovered: str = knob("prior", "Rows every LF abstained on: drop (not trained on), prior (target = their class "
                          "distribution measured on gold), self_train (prior, then the first model's confident "
                          "predictions; strategy single).", enum=["drop", "prior", "self_train"])
    rebalance: bool = knob(True, "Weigh the training rows to the corpus class balance measured on gold.")
    operating_point: str = knob("f1", "Decision threshold chosen on held-out gold: f1 (F1-optimal), precision (the "
                                "lowest reaching precision_target) or argmax (0.5).", enum=["f1", "precision", "argmax"])
    precision_target: float = knob(0.9, "operating_point=precision: the dev-gold precision to reach.",
                                   exclusiveMinimum=0, maximum=1)

    def __post_init__(self):
        from mlsys.model.featurizer import MAX_CHAR_NGRAM, valid_char_ngrams

        check_knobs(self)
        sizes = _parts(self.char_ngrams)
        require(all(p.isdigit() for p in sizes) and valid_char_ngrams([int(p) for p in sizes]), "TrainSpec",
                "char_ngrams", self.char_ngrams, f"give increasing sizes between 1 and {MAX_CHAR_NGRAM} separated by commas, "
                "e.g. '2,3', or '' for none")
        require(all(c.isalnum() or c in "-_." for c in self.checkpoint_key), "TrainSpec", "checkpoint_key",
                self.checkpoint_key, "use letters, digits, '-', '_' and '.' only")
        require(self.uncovered != "self_train" or self.strategy == "single", "TrainSpec", "uncovered", self.uncovered,
                "self_train runs with strategy=single; use prior with ddp or pipeline")
        plan.check_job("TrainSpec", strategy=self.strategy, strategies=plan.STRATEGIES, device=self.device,
                       nproc=self.nproc, batch_size=self.batch_size, checkpoint_every=self.checkpoint_every)
        if self.strategy != "pipeline":
            return
        parts = _parts(self.balance)
        require(all(p.isdigit() and int(p) >= 1 for p in parts), "TrainSpec", "balance", self.balance,
                "give positive layer counts separated by commas, e.g. '2,2'")
        plan.check_pipeline("TrainSpec", nproc=self.nproc, replicas=self.replicas, depth=self.depth,
                            batch_size=self.batch_size, microbatches=self.microbatches, schedule=self.schedule,
                            balance=self.balance_counts, balance_value=self.balance)

    @property
    def char_ngram_sizes(self) -> tuple[int, ...]:
        return tuple(int(p) for p in _parts(self.char_ngrams))

    @property
    def balance_counts(self) -> tuple[int, ...]:
        return tuple(int(p) for p in _parts(self.balance))


def _parts(text: str) -> list[str]:
    """The items of a comma-separated param, spaces ignored: "2, 3" -> ["2", "3"]; "" -> []."""
    text = text.replace(" ", "")
    return text.split(",") if text else []


@dataclass(frozen=True)
class TrainResult:
    dataset: DatasetRef
    model_uri: str
    run_id: str | None
    train_rows: int
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset.to_json(), "model_uri": self.model_uri, "run_id": self.run_id,
                "train_rows": self.train_rows, "metrics": self.metrics}


def run(spec: TrainSpec) -> TrainResult:
    import mlflow
    import numpy as np
    import torch

    from mlsys.model import HashingFeaturizer, TextClassifier, TextClassifierConfig
    from mlsys.tracking import tracker
    from mlsys.training import examples
    from mlsys.training.trainer import TrainConfig, train

    store = DatasetStore(spec.storage_uri or None)
    ref = store.ref(LABELED, spec.dataset_version)
    df = store.read(LABELED, ref.version)
    missing = {"text", "label_proba", "weight", "label_source"} - set(df.columns)
    if missing:
        raise DataError(f"{ref.label}: missing column(s) {sorted(missing)}; it must come from the label stage")
    if "label" not in df.columns:  # a dataset written without hard labels: the argmax of its soft ones
        hard = np.stack(df["label_proba"].to_numpy()).argmax(axis=1)
        df["label"] = np.where(df["label_source"] == "unlabeled", -1, hard)
    ex = examples.prepare(df, ref.extra or {}, spec.uncovered, spec.rebalance, spec.seed)
    df = ex.train
    if df.empty or not (df["weight"] > 0).any():
        raise DataError(f"{ref.label}: no row has weight > 0; the label stage produced no usable labels")

    featurizer = HashingFeaturizer(num_buckets=spec.num_buckets, char_ngrams=spec.char_ngram_sizes)
    mcfg = TextClassifierConfig(num_buckets=spec.num_buckets, dim=spec.dim, depth=spec.depth)
    if spec.strategy != "single":
        model, metrics = _run_distributed(spec, store, ref, df, featurizer, mcfg)
        return _finish(spec, ref, ex, model, featurizer, mcfg, metrics)
    tcfg = TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed)
    torch.manual_seed(spec.seed)
    model = TextClassifier(mcfg)
    proba = torch.tensor(np.stack(df["label_proba"].to_numpy()), dtype=torch.float32)
    weight = torch.tensor(df["weight"].to_numpy(), dtype=torch.float32)

    tracking = mlflow.active_run() is not None
    if tracking:
        tracker.log_input(ref, "training")
        mlflow.log_params({**mcfg.to_json(), **{k: getattr(tcfg, k) for k in ("epochs", "batch_size", "lr", "seed")},
                           "char_ngrams": spec.char_ngrams, "strategy": "single", "train_rows": len(df)})

    log.info("training on %d rows of %s: %s, %d epochs", len(df), ref.label, spec.strategy, spec.epochs)

    def on_metrics(metrics: dict, step: int) -> None:
        if "epoch" in metrics:  # the task log shows the progress, MLflow the curve
            log.info("epoch %d/%d: train loss %.4f, %.0f rows/s", metrics["epoch"] + 1, spec.epochs,
                     metrics["train_loss"], metrics["samples_per_s"])
        if tracking:
            mlflow.log_metrics(metrics, step=step)

    summary = train(model, featurizer, df["text"].tolist(), proba, weight, tcfg, on_metrics)
    if spec.uncovered == "self_train" and len(ex.uncovered):
        from mlsys.model.text_classifier import predict_proba

        pseudo = examples.pseudo_labels(ex.uncovered, predict_proba(model, featurizer, ex.uncovered["text"].tolist())
                                        .numpy(), float((ref.extra or {}).get("weak_quality") or 0.0))
        df = examples.prepare_self_training(ex, pseudo, spec.rebalance)
        confident = int((pseudo["label_source"] == "self_train").sum())
        log.info("self-training: %d of %d uncovered rows confidently predicted; retraining on %d rows",
                 confident, len(ex.uncovered), len(df))
        torch.manual_seed(spec.seed)
        model = TextClassifier(mcfg)
        summary = train(model, featurizer, df["text"].tolist(),
                        torch.tensor(np.stack(df["label_proba"].to_numpy()), dtype=torch.float32),
                        torch.tensor(df["weight"].to_numpy(), dtype=torch.float32), tcfg, on_metrics)
        ex.notes["self_train_rows"] = confident
    metrics = {"final_train_loss": summary["final_loss"], "steps": float(summary["steps"])}
    if tracking:
        _log_curve(summary["history"])
    return _finish(spec, ref, ex, model, featurizer, mcfg, metrics)


def _finish(spec: TrainSpec, ref: DatasetRef, ex, model, featurizer, mcfg, metrics: dict) -> TrainResult:
    """Choose the operating point on dev gold, log quality and the model, return the result."""
    import mlflow

    from mlsys.model.pyfunc import log_model
    from mlsys.model.text_classifier import predict_proba
    from mlsys.tracking import tracker
    from mlsys.training import operating_point

    point = None
    if model.config.num_classes == 2:
        p1 = predict_proba(model, featurizer, ex.dev["text"].tolist()).numpy()[:, 1] if len(ex.dev) else []
        point = operating_point.choose(ex.dev["label"].to_numpy(), p1, spec.operating_point, spec.precision_target)
        metrics |= {"threshold": point.threshold, **{f"dev_{k}": v for k, v in point.metrics.items()}}
        log.info("operating point: threshold %.3f (%s) on %d dev gold rows: precision %.3f, recall %.3f, F1 %.3f",
                 point.threshold, point.rule, point.dev_rows, point.metrics["precision"], point.metrics["recall"],
                 point.metrics["f1"])
    model_uri = ""
    if mlflow.active_run() is not None:
        mlflow.log_params({"uncovered": spec.uncovered, "rebalance": spec.rebalance,
                           "operating_point": point.rule if point else "argmax",
                           "class_balance_source": ex.class_balance_source or "none"})
        mlflow.log_metrics({**metrics, **{f"class_balance_{c}": p for c, p in enumerate(ex.class_balance)},
                            **{f"label_{k}": float(v) for k, v in (ref.extra or {}).items()
                               if k == "weak_quality" and v is not None}})
        mlflow.log_dict({**ex.notes, "operating_point": point.to_json() if point else None}, "training_examples.json")
        if point is not None and len(ex.dev):
            operating_point.log_plots(ex.dev["label"].to_numpy(), p1, point)
        model_uri = log_model(model, featurizer, mcfg, ex.train["text"].head(5).tolist(),
                              operating_point=point.to_json() if point else None)
    failpoint("train.logged")  # the fault suite kills the task here: the retry's run replaces this one
    return TrainResult(dataset=ref, model_uri=model_uri, run_id=tracker.active_run_id(), train_rows=len(ex.train),
                       metrics=metrics)


def _job_config(spec: TrainSpec, mcfg, checkpoint_uri: str):
    from mlsys.training.parallel.job import JobConfig

    plan.check_devices("TrainSpec", spec.device, spec.nproc)
    try:
        return JobConfig(model=mcfg.to_json(), strategy=spec.strategy, nproc=spec.nproc, epochs=spec.epochs,
                         batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed, microbatches=spec.microbatches,
                         schedule=spec.schedule, balance=spec.balance_counts, replicas=spec.replicas,
                         rematerialize=spec.rematerialize,
                         device=spec.device, checkpoint_uri=checkpoint_uri, checkpoint_every=spec.checkpoint_every)
    except ValueError as exc:
        raise SpecError(f"TrainSpec: {exc}") from exc


def checkpoint_uri(spec: TrainSpec, store: DatasetStore, ref: DatasetRef) -> str:
    """<storage root>/checkpoints/train/<key>-<digest>: the spec's key, or a fresh one (no resume).

    The digest covers the spec and the dataset version this run resolved, not the name it asked for:
    a retry after ``validated`` moved never resumes a checkpoint cut on other data, and a changed spec
    never resumes another's state.
    """
    key = spec.checkpoint_key or f"{ref.version[:12]}-{uuid.uuid4().hex[:12]}"
    fields = {**spec.__dict__, "checkpoint_key": "", "storage_uri": "", "dataset_version": f"{ref.name}@{ref.version}"}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:8]
    return f"{store.root_uri.rstrip('/')}/checkpoints/train/{key}-{digest}"


# The torchrun watchdog: no log line from any rank for 15 min is a hang (NCCL's own 10 min collective timeout
# fails first, with its message; gloo's is 30 min); the whole job ends before DEFAULT_ARGS' 2 h execution_timeout.
JOB_SILENCE_S = 15 * 60.0
JOB_TIMEOUT_S = 100 * 60.0


def _run_distributed(spec: TrainSpec, store: DatasetStore, ref: DatasetRef, df, featurizer, mcfg):
    """Launch the torchrun job, stream its log, track rank 0's events; return (the model from its weights, metrics)."""
    import mlflow
    import numpy as np
    import torch

    from mlsys.model.text_classifier import TextClassifier
    from mlsys.tracking import tracker
    from mlsys.training.parallel import report
    from mlsys.training.parallel.launcher import launch, parse_event

    ckpt = checkpoint_uri(spec, store, ref) if spec.checkpoint_every else ""
    cfg = _job_config(spec, mcfg, ckpt)  # every bad input fails here, before a process is spawned
    tracking = mlflow.active_run() is not None
    if tracking:
        tracker.log_input(ref, "training")
        mlflow.log_params({**mcfg.to_json(), "epochs": spec.epochs, "batch_size": spec.batch_size, "lr": spec.lr,
                           "seed": spec.seed, "char_ngrams": spec.char_ngrams, "strategy": spec.strategy,
                           "train_rows": len(df), "nproc": spec.nproc,
                           "device": spec.device, "checkpoint_every": spec.checkpoint_every, "checkpoint_uri": ckpt})
        if spec.strategy == "pipeline":
            mlflow.log_params({"microbatches": spec.microbatches, "schedule": spec.schedule,
                               "rematerialize": spec.rematerialize, "replicas": spec.replicas,
                               "stages": spec.nproc // spec.replicas})

    def on_line(line: str) -> None:
        print(line, end="", flush=True)  # the job's log, streamed into the task's log
        event = parse_event(line)
        if event and tracking:
            if event["kind"] == "metrics":
                mlflow.log_metrics(event["metrics"], step=event["step"])
            elif event["kind"] == "partition":
                report.log_partition(event)

    work = Path(tempfile.mkdtemp(prefix="mlsys-train-"))
    try:
        ids, bag = featurizer.encode_padded(df["text"].tolist())
        torch.save({"ids": ids, "bag": bag, "weight": torch.tensor(df["weight"].to_numpy(), dtype=torch.float32),
                    "proba": torch.tensor(np.stack(df["label_proba"].to_numpy()), dtype=torch.float32)},
                   work / "data.pt")
        (work / "job.json").write_text(json.dumps(cfg.to_json()))
        launch(["-m", "mlsys.training.parallel.job", str(work)], spec.nproc, on_line=on_line,
               timeout_s=JOB_TIMEOUT_S, silence_s=JOB_SILENCE_S)
        summary = json.loads((work / "result.json").read_text())
        weights = torch.load(work / "result.pt", weights_only=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    model = TextClassifier(mcfg)
    for i, layer in enumerate(model.pipeline_layers()):
        layer.load_state_dict(weights[i])
    metrics = {"final_train_loss": summary["final_loss"], "steps": float(summary["steps"]),
               "throughput_samples_per_s": summary["samples_per_s"]}
    if tracking:
        _log_curve(summary["history"])
        if summary.get("timeline"):
            report.log_timeline(summary["timeline"])
    return model, metrics


def _log_curve(history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["epoch"] for h in history], [h["train_loss"] for h in history], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("noise-aware train loss")
    ax.set_title("Training curve")
    fig.tight_layout()
    mlflow.log_figure(fig, "training_curve.png")
    plt.close(fig)
