"""evaluate and register: challenger vs champion on held-out data, aliases in the MLflow registry."""

from mlsys.registry.gate import PROMOTION_POOL, GateError
from mlsys.registry.stage import EvaluateResult, EvaluateSpec, classification_metrics, run

__all__ = ["PROMOTION_POOL", "EvaluateResult", "EvaluateSpec", "GateError", "classification_metrics", "run"]
