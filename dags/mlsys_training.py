"""
### mlsys training: train → evaluate and register

Runs when validated labels arrive (the `comments_labeled` Asset), or on demand.

1. **train** fits the PyTorch text classifier on the validated labels with a
   noise-aware loss (soft `label_proba` targets, per-row `weight`), and logs
   the model to MLflow with a signature and an input example. `strategy`
   picks `single` (in the task), `ddp` or `pipeline` (GPipe / 1F1B): those
   launch `nproc` processes with **torchrun**, stream their log into the task
   log, checkpoint every `checkpoint_every` steps, and an Airflow retry of the
   same DAG run resumes from the last checkpoint. With
   `MLSYS_TRAIN_QUEUE=gpu` in the environment (the scale-out deployment) the
   task runs on the `gpu` queue and pool.
2. **evaluate_register** scores it on the held-out test split, registers it as
   `challenger`, and moves `champion` to it only if it beats the current
   champion on `gate_metric` (or there is none). Emits `champion_model`,
   which triggers **mlsys_batch_inference**.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from mlsys.orchestration import CHAMPION_MODEL, DEFAULT_ARGS, LABELED, run_in_task
from mlsys.registry.stage import METRICS as GATE_METRICS
from mlsys.registry.stage import EvaluateSpec
from mlsys.settings import settings
from mlsys.training.parallel import plan
from mlsys.training.stage import TrainSpec

# Scale-out deployment: MLSYS_TRAIN_QUEUE=gpu sends train to the GPU Celery worker (and its pool).
TRAIN_QUEUE = settings().train_queue
TRAIN_PLACEMENT = {"queue": TRAIN_QUEUE, "pool": TRAIN_QUEUE} if TRAIN_QUEUE else {}


@dag(
    dag_id="mlsys_training",
    schedule=[LABELED],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mlsys", "train", "registry"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    params={
        "dataset_version": Param(TrainSpec.dataset_version, type="string", description="comments_labeled version: 'validated' (last to pass validation) or a version id."),
        "epochs": Param(TrainSpec.epochs, type="integer", minimum=1, description="Training epochs."),
        "batch_size": Param(TrainSpec.batch_size, type="integer", minimum=1, description="Rows per optimizer step."),
        "lr": Param(TrainSpec.lr, type="number", exclusiveMinimum=0, description="AdamW learning rate."),
        "dim": Param(TrainSpec.dim, type="integer", minimum=2, description="Embedding and block width."),
        "depth": Param(TrainSpec.depth, type="integer", minimum=0, description="Number of residual blocks."),
        "seed": Param(TrainSpec.seed, type="integer", description="Seed for initialisation and shuffling."),
        "char_ngrams": Param(TrainSpec.char_ngrams, type="string", description="Character n-gram sizes hashed with the words and bigrams, e.g. '2,3'; empty = words and bigrams only."),
        "strategy": Param(TrainSpec.strategy, enum=list(plan.STRATEGIES), description="single: one process; ddp: DistributedDataParallel over nproc processes; pipeline: GPipe-style pipeline over nproc stages."),
        "nproc": Param(TrainSpec.nproc, type="integer", minimum=1, description="Processes per node for ddp/pipeline (DDP replicas, or pipeline stages x replicas); at most the devices available."),
        "replicas": Param(TrainSpec.replicas, type="integer", minimum=1, description="pipeline: data-parallel copies of the pipeline (pipeline x DDP); stages = nproc / replicas."),
        "microbatches": Param(TrainSpec.microbatches, type="integer", minimum=1, description="pipeline: micro-batches per batch (must divide batch_size)."),
        "schedule": Param(TrainSpec.schedule, enum=list(plan.SCHEDULES), description="pipeline: GPipe (fill-drain) or 1F1B (less activation memory)."),
        "balance": Param(TrainSpec.balance, type="string", description="pipeline: layers per stage, e.g. '2,2' (depth + 2 layers in all); empty = balance by profiled time."),
        "rematerialize": Param(TrainSpec.rematerialize, type="boolean", description="pipeline: recompute activations in backward (activation checkpointing)."),
        "device": Param(TrainSpec.device, enum=list(plan.DEVICES), description="cpu (gloo) or cuda (NCCL) for ddp/pipeline."),
        "checkpoint_every": Param(TrainSpec.checkpoint_every, type="integer", minimum=0, description="ddp/pipeline: optimizer steps between checkpoints (0 = none); a retry resumes from the last."),
        "gate_metric": Param(EvaluateSpec.gate_metric, enum=list(GATE_METRICS), description="Metric the challenger must beat the champion on."),
    },
)
def mlsys_training():
    @task(**TRAIN_PLACEMENT)
    def train(params=None, dag_run=None) -> dict:
        key = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{dag_run.dag_id}-{dag_run.run_id}")
        return run_in_task("train", params, checkpoint_key=key)  # retries of this run resume its checkpoints

    @task(outlets=[CHAMPION_MODEL])
    def evaluate_register(trained: dict, params=None) -> dict:
        return run_in_task("evaluate", params, model_uri=trained["model_uri"])

    evaluate_register(train())


dag = mlsys_training()
