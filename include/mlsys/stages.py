"""The stage registry: name -> (spec class, run function), shared by the CLI and the DAGs.

A stage is a frozen spec (validated at construction) and a ``run(spec) -> Result``;
``mlsys <stage>`` and the DAG task ``run_in_task(stage, params)`` call the same pair.
Imports are lazy: listing the stages costs nothing, running one imports its module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from mlsys.catalog import Entry, index, lookup


@dataclass(frozen=True)
class Stage(Entry):
    spec: str = ""
    run_fn: str = "run"

    def load(self) -> tuple[type, Callable[[Any], Any]]:
        return self.attr(self.spec), self.attr(self.run_fn)


STAGES: dict[str, Stage] = index((
    Stage("ingest", "mlsys.ingest.stage", "raw CSVs -> unlabeled, gold and test datasets", spec="IngestSpec"),
    Stage("label", "mlsys.labeling.stage", "labeling functions + LabelModel + gold -> weighted labels",
          spec="LabelSpec"),
    Stage("validate", "mlsys.validation.stage", "check a dataset against its schema (GX); quarantine on failure",
          spec="ValidateSpec"),
    Stage("train", "mlsys.training.stage", "train the text classifier on weighted soft labels", spec="TrainSpec"),
    Stage("evaluate", "mlsys.registry.stage", "register as challenger; promote to champion if it wins",
          spec="EvaluateSpec"),
    Stage("select", "mlsys.training.selection",
          "train a grid of configurations at once (SHARP), keep the best on validation", spec="SelectionSpec"),
    Stage("batch", "mlsys.serving.batch.stage", "score a dataset with the champion -> predictions dataset",
          spec="BatchSpec"),
    Stage("batch_shard", "mlsys.serving.batch.stage", "score one shard of a dataset -> predictions_shards",
          spec="ShardSpec", run_fn="run_shard"),
    Stage("batch_merge", "mlsys.serving.batch.stage", "concatenate scored shards -> predictions dataset",
          spec="MergeSpec", run_fn="run_merge"),
    Stage("stream", "mlsys.streaming.stage", "video segments -> per-frame predictions (Krypton)", spec="StreamSpec"),
))


def get(name: str) -> Stage:
    return lookup(STAGES, "stage", name)


def run_stage(name: str, params: dict[str, Any]) -> Any:
    """Build the stage's spec from params (unknown keys and None ignored) and run it."""
    from mlsys.spec import from_params

    spec_cls, run = get(name).load()
    return run(from_params(spec_cls, params))
