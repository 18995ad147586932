"""evaluate and register: challenger vs champion on held-out data, aliases in the MLflow registry."""

from mlsys.registry.stage import EvaluateResult, EvaluateSpec, classification_metrics, run

__all__ = ["EvaluateResult", "EvaluateSpec", "classification_metrics", "run"]
