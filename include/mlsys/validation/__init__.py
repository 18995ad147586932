"""validate: statistics, an inferred and versioned schema compiled to a GX suite, anomalies, drift and skew, the gate."""

from mlsys.validation.anomalies import Anomaly
from mlsys.validation.evolution import SchemaRegistry
from mlsys.validation.infer import infer
from mlsys.validation.schema import Schema
from mlsys.validation.stage import ValidateResult, ValidateSpec, check, run
from mlsys.validation.statistics import DatasetStatistics, compute

__all__ = ["Anomaly", "DatasetStatistics", "Schema", "SchemaRegistry", "ValidateResult", "ValidateSpec", "check",
           "compute", "infer", "run"]
