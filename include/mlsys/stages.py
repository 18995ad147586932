"""The stage registry: name -> (spec class, run function), shared by the CLI and the DAGs.

Imports are lazy: listing the stages costs nothing, running one imports its module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from mlsys.errors import SpecError


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    spec: str
    run_fn: str = "run"
    help: str = ""

    def load(self) -> tuple[type, Callable[[Any], Any]]:
        mod = importlib.import_module(self.module)
        return getattr(mod, self.spec), getattr(mod, self.run_fn)


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("ingest", "mlsys.ingest.stage", "IngestSpec", help="raw CSVs -> unlabeled, gold and test datasets"),
        Stage("label", "mlsys.labeling.stage", "LabelSpec", help="labeling functions + LabelModel + gold -> weighted labels"),
        Stage("validate", "mlsys.validation.stage", "ValidateSpec", help="check a dataset against its schema (GX); quarantine on failure"),
        Stage("train", "mlsys.training.stage", "TrainSpec", help="train the text classifier on weighted soft labels"),
        Stage("evaluate", "mlsys.registry.stage", "EvaluateSpec", help="register as challenger; promote to champion if it wins"),
        Stage("select", "mlsys.training.selection", "SelectionSpec", help="train a grid of configurations at once (SHARP), keep the best on validation"),
        Stage("batch", "mlsys.inference.batch", "BatchSpec", help="score a dataset with the champion -> predictions dataset"),
        Stage("batch_shard", "mlsys.inference.batch", "ShardSpec", "run_shard", help="score one shard of a dataset -> predictions_shards"),
        Stage("batch_merge", "mlsys.inference.batch", "MergeSpec", "run_merge", help="concatenate scored shards -> predictions dataset"),
        Stage("stream", "mlsys.streaming.stage", "StreamSpec", help="video segments -> per-frame predictions (Krypton)"),
    )
}


def get(name: str) -> Stage:
    if name not in STAGES:
        raise SpecError(f"unknown stage {name!r}; stages are {sorted(STAGES)}")
    return STAGES[name]


def run_stage(name: str, params: dict[str, Any]) -> Any:
    """Build the stage's spec from params (unknown keys and None ignored) and run it."""
    from mlsys.spec import from_params

    spec_cls, run = get(name).load()
    return run(from_params(spec_cls, params))
