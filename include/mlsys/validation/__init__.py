"""validate: schema (YAML) -> GX suite -> pass, or stop and quarantine."""

from mlsys.validation.schema import Schema
from mlsys.validation.stage import ValidateResult, ValidateSpec, check, run

__all__ = ["Schema", "ValidateResult", "ValidateSpec", "check", "run"]
